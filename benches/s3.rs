//! Benchmarks against an S3 server: with `TIDEMARK_BENCH_S3=http://127.0.0.1:PORT` (a running
//! moto server, e.g. `~/.cache/tidemark/venv-moto/bin/moto_server -H 127.0.0.1 -p 5000`), the
//! generated projects put their warehouse in a fresh bucket there instead of a local directory.

use std::io::{Read, Write};
use std::path::Path;

/// The S3 endpoint to use, if any.
pub fn endpoint() -> Option<String> {
    std::env::var("TIDEMARK_BENCH_S3")
        .ok()
        .filter(|s| !s.is_empty())
}

/// "local disk" or "S3 (moto)".
pub fn label() -> &'static str {
    if endpoint().is_some() {
        "S3 (moto)"
    } else {
        "local disk"
    }
}

/// Point the project at `p` at a new bucket on the endpoint (when one is set).
pub fn place(p: &Path) {
    let Some(endpoint) = endpoint() else { return };
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let bucket = format!(
        "bench-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    );
    let addr = endpoint.trim_start_matches("http://").to_string();
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        s,
        "PUT /{bucket} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let f = p.join("tidemark.toml");
    let config: String = std::fs::read_to_string(&f)
        .unwrap()
        .lines()
        .filter(|l| !l.trim_start().starts_with("warehouse"))
        .map(|l| format!("{l}\n"))
        .collect();
    let config = config.replacen(
        "[project]\n",
        &format!("[project]\nwarehouse = \"s3://{bucket}/wh\"\n"),
        1,
    ) + &format!(
        "\n[storage]\nendpoint = \"{endpoint}\"\nallow_http = \"true\"\nregion = \"us-east-1\"\naccess_key_id = \"bench\"\nsecret_access_key = \"bench\"\n"
    );
    std::fs::write(f, config).unwrap();
}
