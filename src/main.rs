//! The `tstor` command; everything lives in the library's `cli` module.

fn main() -> std::process::ExitCode {
    tstor::cli::main()
}
