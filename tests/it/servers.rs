//! Local servers the tests run against (moto for S3, Azurite for Azure): found in the build
//! cache where `.ci/run` installs them, started once per test binary on a free port of
//! 127.0.0.1, and stopped by PID when the test binary exits (a small shell watchdog kills the
//! server once this process is gone).

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The executable `name`: `$var` when set, else under the build cache, else on `PATH`.
pub fn find(var: &str, cached: &str, name: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(var) {
        return Some(PathBuf::from(p));
    }
    let in_cache = std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".cache/tidemark").join(cached))
        .filter(|p| p.exists());
    in_cache.or_else(|| {
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path)
            .map(|d| d.join(name))
            .find(|p| p.exists())
    })
}

/// `None` with a message when a server is missing outside CI; under CI a missing server is a
/// failure, since `.ci/run` installs it.
pub fn missing(what: &str, install: &str) -> Option<u16> {
    assert!(
        std::env::var_os("CI").is_none(),
        "{what} is not installed, but CI must run its tests: .ci/run installs it"
    );
    eprintln!("skipped: these tests need {what} ({install})");
    None
}

/// Start `bin` with `args` (in which `{port}` stands for a free port) and wait until it
/// listens; returns the port.
pub fn start(bin: &std::path::Path, args: &[&str]) -> u16 {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let name = bin.file_name().unwrap_or_default().to_string_lossy();
    let log = std::env::temp_dir().join(format!("tidemark-{name}-{port}.log"));
    let args: Vec<String> = args
        .iter()
        .map(|a| shell_quote(&a.replace("{port}", &port.to_string())))
        .collect();
    // The watchdog stops the server by its PID once this test binary has exited.
    let script = format!(
        "{} {} >{} 2>&1 & m=$!; while kill -0 {} 2>/dev/null; do sleep 1; done; kill $m",
        shell_quote(&bin.to_string_lossy()),
        args.join(" "),
        shell_quote(&log.to_string_lossy()),
        std::process::id()
    );
    // Not waited for: the watchdog runs until this process has exited, by design.
    #[allow(clippy::zombie_processes)]
    std::process::Command::new("sh")
        .args(["-c", &script])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start a test server");
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{name} did not listen on 127.0.0.1:{port}; see {}",
            log.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    port
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Environment variables every `tidemark` process of the tests gets (a server's address that
/// a client reads from the environment only, e.g. `AZURITE_BLOB_STORAGE_URL`).
static CHILD_ENV: std::sync::Mutex<Vec<(String, String)>> = std::sync::Mutex::new(Vec::new());

/// Give every later `tidemark` process `key=value`.
pub fn set_child_env(key: &str, value: &str) {
    CHILD_ENV
        .lock()
        .unwrap()
        .push((key.to_string(), value.to_string()));
}

/// The variables of [`set_child_env`].
pub fn child_env() -> Vec<(String, String)> {
    CHILD_ENV.lock().unwrap().clone()
}
