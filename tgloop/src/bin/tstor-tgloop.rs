//! Runs the loopback Telegram server until interrupted and prints what a
//! client session needs: address, DC id and auth key.
//!
//! Usage: `tstor-tgloop [--listen ADDR] [--key-file PATH] [--info-file PATH]`
//! - `--listen`: address to bind (default 127.0.0.1:0, a free port);
//! - `--key-file`: 256-byte auth key, created if missing, so restarts keep sessions valid;
//! - `--info-file`: where to also write the connection facts as JSON.

use std::path::PathBuf;
use std::process::ExitCode;

use tstor_tgloop::{Config, Server};

fn usage() -> ExitCode {
    eprintln!("usage: tstor-tgloop [--listen ADDR] [--key-file PATH] [--info-file PATH]");
    ExitCode::from(2)
}

fn load_or_create_key(path: &PathBuf) -> std::io::Result<[u8; 256]> {
    match std::fs::read(path) {
        Ok(bytes) => bytes
            .try_into()
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "a key file holds exactly 256 bytes")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = tstor_tgloop::random_auth_key();
            std::fs::write(path, key)?;
            Ok(key)
        }
        Err(e) => Err(e),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let mut config = Config::default();
    let mut info_file = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let Some(value) = args.next() else { return usage() };
        match arg.as_str() {
            "--listen" => match value.parse() {
                Ok(addr) => config.listen = addr,
                Err(_) => return usage(),
            },
            "--key-file" => match load_or_create_key(&PathBuf::from(value)) {
                Ok(key) => config.auth_key = Some(key),
                Err(e) => {
                    eprintln!("tstor-tgloop: key file: {e}");
                    return ExitCode::FAILURE;
                }
            },
            "--info-file" => info_file = Some(PathBuf::from(value)),
            _ => return usage(),
        }
    }
    let server = match Server::start_with(config).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("tstor-tgloop: cannot listen: {e}");
            return ExitCode::FAILURE;
        }
    };
    let info = server.info_json();
    println!("{info}");
    if let Some(path) = info_file {
        if let Err(e) = std::fs::write(&path, format!("{info}\n")) {
            eprintln!("tstor-tgloop: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
    ExitCode::SUCCESS
}
