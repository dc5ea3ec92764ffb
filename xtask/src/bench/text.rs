//! Text generators for the benchmark tree: source-like code in a few
//! languages, Markdown, JSON lines, application logs and CSV exports. All
//! output is varied but compressible, and fully determined by the `Rng`.

use std::io::Write;

use super::rng::Rng;

const WORDS: &[&str] = &[
    "account", "adapter", "address", "alpha", "archive", "array", "async", "atomic", "backend", "batch", "beta",
    "binary", "block", "bucket", "buffer", "builder", "cache", "channel", "chunk", "client", "cluster", "codec",
    "commit", "config", "context", "counter", "cursor", "data", "debug", "decode", "delta", "device", "digest",
    "dispatch", "domain", "driver", "encode", "engine", "entry", "error", "event", "export", "factory", "field",
    "filter", "format", "frame", "gamma", "graph", "handle", "hash", "header", "helper", "index", "input", "item",
    "job", "journal", "kernel", "key", "layer", "layout", "ledger", "limit", "link", "list", "loader", "lock", "log",
    "manager", "map", "matrix", "merge", "message", "meta", "metric", "mode", "model", "module", "monitor", "mutex",
    "node", "object", "offset", "option", "order", "output", "owner", "packet", "page", "parser", "patch", "path",
    "peer", "pipeline", "plan", "pool", "port", "prefix", "queue", "range", "reader", "record", "region", "registry",
    "reply", "request", "resolver", "result", "route", "rule", "sample", "scanner", "schema", "scope", "segment",
    "server", "service", "session", "shard", "signal", "slot", "snapshot", "socket", "source", "span", "stack",
    "state", "status", "store", "stream", "string", "table", "target", "task", "thread", "timer", "token", "trace",
    "tracker", "tree", "update", "user", "value", "vector", "version", "view", "window", "worker", "writer", "zone",
];

const LEVELS: &[&str] = &["INFO", "INFO", "INFO", "INFO", "DEBUG", "DEBUG", "WARN", "ERROR"];
const REGIONS: &[&str] = &["eu-west-1", "eu-central-1", "us-east-1", "us-west-2", "ap-south-1", "sa-east-1"];
const STATUSES: &[&str] = &["ok", "ok", "ok", "pending", "refunded", "failed"];

/// What kind of text a file holds; also decides its extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    Rust,
    Python,
    C,
    Markdown,
    Json,
}

impl Lang {
    pub const ALL: [Lang; 5] = [Lang::Rust, Lang::Python, Lang::C, Lang::Markdown, Lang::Json];

    pub fn ext(self) -> &'static str {
        match self {
            Lang::Rust => "rs",
            Lang::Python => "py",
            Lang::C => "c",
            Lang::Markdown => "md",
            Lang::Json => "jsonl",
        }
    }
}

pub fn word(r: &mut Rng) -> &'static str {
    WORDS[r.below(WORDS.len() as u64) as usize]
}

/// A snake_case identifier of one to three words.
pub fn ident(r: &mut Rng) -> String {
    let n = r.range(1, 3);
    let mut s = String::new();
    for i in 0..n {
        if i > 0 {
            s.push('_');
        }
        s.push_str(word(r));
    }
    s
}

fn camel(r: &mut Rng) -> String {
    let mut s = String::new();
    for _ in 0..r.range(1, 3) {
        let w = word(r);
        s.push_str(&w[..1].to_ascii_uppercase());
        s.push_str(&w[1..]);
    }
    s
}

fn sentence(r: &mut Rng, out: &mut Vec<u8>, min: u64, max: u64) {
    for i in 0..r.range(min, max) {
        if i > 0 {
            out.push(b' ');
        }
        out.extend_from_slice(word(r).as_bytes());
    }
}

/// Source-like text of exactly `size` bytes.
pub fn source(r: &mut Rng, lang: Lang, size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(size + 512);
    let header: &[u8] = match lang {
        Lang::Rust | Lang::C => b"// SPDX-License-Identifier: MIT OR Apache-2.0\n// Copyright the project authors.\n\n",
        Lang::Python => b"# SPDX-License-Identifier: MIT OR Apache-2.0\n# Copyright the project authors.\n\n",
        Lang::Markdown | Lang::Json => b"",
    };
    out.extend_from_slice(header);
    while out.len() < size {
        match lang {
            Lang::Rust => rust_block(r, &mut out),
            Lang::Python => python_block(r, &mut out),
            Lang::C => c_block(r, &mut out),
            Lang::Markdown => markdown_block(r, &mut out),
            Lang::Json => json_line(r, &mut out),
        }
    }
    out.truncate(size);
    out
}

fn rust_block(r: &mut Rng, out: &mut Vec<u8>) {
    out.extend_from_slice(b"/// ");
    sentence(r, out, 4, 12);
    out.extend_from_slice(b".\n");
    let _ = writeln!(out, "pub fn {}({}: &{}, limit: usize) -> Result<{}> {{", ident(r), ident(r), camel(r), camel(r));
    for _ in 0..r.range(2, 9) {
        let _ = match r.below(5) {
            0 => writeln!(out, "    let {} = {}.{}({})?;", ident(r), ident(r), ident(r), r.below(1000)),
            1 => writeln!(
                out,
                "    if {} > {} {{\n        return Err(Error::{});\n    }}",
                ident(r),
                r.below(4096),
                camel(r)
            ),
            2 => writeln!(
                out,
                "    for {} in {}.iter().take(limit) {{\n        {}.push({});\n    }}",
                ident(r),
                ident(r),
                ident(r),
                ident(r)
            ),
            3 => {
                out.extend_from_slice(b"    // ");
                sentence(r, out, 3, 10);
                writeln!(out)
            }
            _ => writeln!(out, "    self.{} = {}::new({}, {});", ident(r), camel(r), ident(r), r.below(64)),
        };
    }
    let _ = writeln!(out, "    Ok({}::default())\n}}\n", camel(r));
}

fn python_block(r: &mut Rng, out: &mut Vec<u8>) {
    let _ = writeln!(out, "def {}(self, {}, {}=None):", ident(r), ident(r), ident(r));
    out.extend_from_slice(b"    \"\"\"");
    sentence(r, out, 4, 12);
    out.extend_from_slice(b".\"\"\"\n");
    for _ in 0..r.range(2, 8) {
        let _ = match r.below(4) {
            0 => writeln!(out, "    {} = self.{}.get(\"{}\", {})", ident(r), ident(r), word(r), r.below(100)),
            1 => writeln!(out, "    if {} is None:\n        raise {}Error(\"{}\")", ident(r), camel(r), word(r)),
            2 => writeln!(out, "    for {} in {}:\n        {}.append({})", word(r), ident(r), ident(r), word(r)),
            _ => writeln!(out, "    log.debug(\"{} %s\", {})", word(r), ident(r)),
        };
    }
    let _ = writeln!(out, "    return {}\n\n", ident(r));
}

fn c_block(r: &mut Rng, out: &mut Vec<u8>) {
    let _ = writeln!(out, "static int {}(struct {} *{}, size_t n)\n{{", ident(r), word(r), word(r));
    for _ in 0..r.range(2, 8) {
        let _ = match r.below(4) {
            0 => writeln!(out, "\t{}->{} = {};", word(r), ident(r), r.below(65536)),
            1 => writeln!(out, "\tif ({} < n)\n\t\treturn -E{};", ident(r), word(r).to_ascii_uppercase()),
            2 => writeln!(out, "\tmemcpy({}, {}, sizeof(*{}));", word(r), word(r), word(r)),
            _ => writeln!(out, "\t{}({}, {});", ident(r), word(r), r.below(16)),
        };
    }
    let _ = writeln!(out, "\treturn 0;\n}}\n");
}

fn markdown_block(r: &mut Rng, out: &mut Vec<u8>) {
    let _ = write!(out, "## {} {}\n\n", camel(r), word(r));
    for _ in 0..r.range(2, 6) {
        sentence(r, out, 8, 16);
        out.extend_from_slice(b".\n");
    }
    out.push(b'\n');
    for _ in 0..r.range(0, 4) {
        out.extend_from_slice(b"- ");
        sentence(r, out, 2, 7);
        out.push(b'\n');
    }
    out.push(b'\n');
}

fn json_line(r: &mut Rng, out: &mut Vec<u8>) {
    let _ = writeln!(
        out,
        "{{\"id\": {}, \"name\": \"{}\", \"kind\": \"{}\", \"enabled\": {}, \"weight\": {}.{:02}, \"tags\": [\"{}\", \"{}\"]}}",
        r.below(1_000_000),
        ident(r),
        word(r),
        r.chance(0.7),
        r.below(100),
        r.below(100),
        word(r),
        word(r)
    );
}

/// Log lines with increasing timestamps, starting from `t` (seconds).
pub fn log_lines(r: &mut Rng, t: &mut u64, size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(size + 256);
    while out.len() < size {
        *t += r.below(3);
        let (d, h, m, s) = (*t / 86_400 % 28 + 1, *t / 3600 % 24, *t / 60 % 60, *t % 60);
        let _ = write!(
            out,
            "2024-05-{d:02}T{h:02}:{m:02}:{s:02}.{:03}Z {:<5} {}::{}: ",
            r.below(1000),
            r.pick(LEVELS),
            word(r),
            word(r)
        );
        sentence(r, &mut out, 3, 9);
        let _ = writeln!(out, " request_id={:016x} latency_ms={}", r.next_u64(), r.log_range(1, 5000));
    }
    out.truncate(size);
    out
}

/// A CSV export of exactly `size` bytes.
pub fn csv(r: &mut Rng, size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(size + 256);
    out.extend_from_slice(b"id,timestamp,user,region,amount,quantity,status\n");
    let mut id = r.below(100_000);
    let mut ts = 1_700_000_000 + r.below(10_000_000);
    while out.len() < size {
        id += 1;
        ts += r.below(120);
        let _ = writeln!(
            out,
            "{id},{ts},{}{},{},{}.{:02},{},{}",
            word(r),
            r.below(10_000),
            r.pick(REGIONS),
            r.log_range(1, 20_000),
            r.below(100),
            r.range(1, 12),
            r.pick(STATUSES)
        );
    }
    out.truncate(size);
    out
}
