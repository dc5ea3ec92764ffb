//! The `tstor` command; everything lives in the library's `cli` module.

fn main() -> std::process::ExitCode {
    // glibc gives each thread that allocates its own heap arena; with chunk
    // buffers allocated on one thread and freed on another, that keeps tens of
    // MiB of freed memory resident. One arena costs nothing measurable here
    // (allocations are per chunk, not per byte) and lowers peak memory.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
    tstor::cli::main()
}
