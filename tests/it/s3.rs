//! The state store on a real S3 server: moto's server (PyPI `moto[s3]`), run by
//! [`crate::servers`]. `.ci/run` installs moto into a virtual environment in the build cache,
//! so CI always runs these tests; elsewhere they are skipped, saying how to install it, when
//! `moto_server` is not found. `TIDEMARK_MOTO_SERVER` names the executable explicitly.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, OnceLock};

use object_store::aws::AmazonS3Builder;
use tidemark::interval::{Interval, IntervalSet, IntervalUnit, parse_instant};
use tidemark::names::TableId;
use tidemark::project::ModelName;
use tidemark::state::storage::ObjectStorage;
use tidemark::state::{Action, PhysicalTable, StateStore};

use crate::servers;

/// A running moto server.
pub struct Moto {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
}

/// The moto server of this test binary, started on first use; `None` (with a message) when
/// moto is not installed outside CI.
pub fn moto() -> Option<&'static Moto> {
    static MOTO: OnceLock<Option<Moto>> = OnceLock::new();
    MOTO.get_or_init(|| {
        let port = match servers::find("TIDEMARK_MOTO_SERVER", "venv-moto/bin/moto_server", "moto_server") {
            Some(bin) => servers::start(&bin, &["-H", "127.0.0.1", "-p", "{port}"]),
            None => servers::missing(
                "moto's S3 server",
                "python3 -m venv ~/.cache/tidemark/venv-moto && ~/.cache/tidemark/venv-moto/bin/pip install 'moto[s3]==5.2.5' flask flask-cors",
            )?,
        };
        Some(Moto {
            endpoint: format!("http://127.0.0.1:{port}"),
        })
    })
    .as_ref()
}

impl Moto {
    /// Create a bucket (moto accepts an unsigned `PUT /bucket`).
    pub fn bucket(&self, name: &str) {
        let addr = self.endpoint.trim_start_matches("http://");
        let mut s = TcpStream::connect(addr).unwrap();
        write!(
            s,
            "PUT /{name} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).unwrap();
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    }

    /// Storage under `prefix` of `bucket`, through object_store's S3 client.
    pub fn storage(&self, bucket: &str, prefix: &str) -> ObjectStorage {
        ObjectStorage::new(Arc::new(self.client(bucket)), prefix).unwrap()
    }
}

impl Moto {
    /// Point the project at `p` at a fresh warehouse on this server: a new bucket named
    /// `bucket`, credentials and endpoint as `[storage]` options.
    pub fn warehouse(&self, p: &std::path::Path, bucket: &str) {
        self.bucket(bucket);
        crate::common::set_warehouse(p, &format!("s3://{bucket}/wh"), &self.options(SECRET));
    }

    /// `[storage]` options reaching this server, with `secret` as the secret key.
    pub fn options(&self, secret: &str) -> Vec<(&'static str, String)> {
        vec![
            ("endpoint", self.endpoint.clone()),
            ("allow_http", "true".into()),
            ("region", "us-east-1".into()),
            ("access_key_id", "tidemark-test".into()),
            ("secret_access_key", secret.into()),
        ]
    }
}

/// The secret key of the test projects on moto (moto accepts any).
pub const SECRET: &str = "tidemark-test-secret";

fn day(d: u32) -> chrono::DateTime<chrono::Utc> {
    parse_instant(&format!("2024-01-{d:02}")).unwrap().at
}

fn table(id: &TableId) -> Action {
    Action::PutTable {
        table: PhysicalTable {
            id: id.clone(),
            name: ModelName::parse("s.m").unwrap(),
            version: "v".into(),
            generation: 0,
            interval_unit: IntervalUnit::Day,
            intervals: IntervalSet::new(),
            created_at: day(1),
        },
    }
}

#[test]
fn the_state_on_s3_passes_the_probe_and_writers_racing_on_it_never_lose_a_commit() {
    let Some(moto) = moto() else { return };
    moto.bucket("state-race");
    let id = TableId::parse("s/m__v").unwrap();
    StateStore::on_object_store(moto.storage("state-race", "wh"))
        .transact("t", |_| Ok(vec![table(&id)]))
        .unwrap();
    let probes = moto.storage("state-race", "wh");
    use tidemark::state::Storage;
    assert!(
        probes
            .get(tidemark::state::probe::MARKER)
            .unwrap()
            .is_some(),
        "the probe passed and left its marker"
    );
    // Four writers with stores of their own, ten commits each, all racing for the next number.
    std::thread::scope(|scope| {
        for w in 0..4u32 {
            let (moto, id) = (moto, id.clone());
            scope.spawn(move || {
                let store = StateStore::on_object_store(moto.storage("state-race", "wh"));
                for i in 0..10u32 {
                    let d = 1 + (w * 10 + i) % 27;
                    store
                        .transact("w", |_| {
                            Ok(vec![Action::AddIntervals {
                                table: id.clone(),
                                intervals: IntervalSet::of(Interval::new(day(d), day(d + 1))),
                            }])
                        })
                        .unwrap();
                }
            });
        }
    });
    let s = StateStore::on_object_store(moto.storage("state-race", "wh"))
        .read()
        .unwrap();
    assert_eq!(s.seq, 41, "every commit landed once");
    assert_eq!(
        s.intervals("s/m__v"),
        IntervalSet::of(Interval::new(day(1), day(28)))
    );
}

#[test]
fn a_missing_bucket_is_an_error_with_a_hint_and_no_secret() {
    let Some(moto) = moto() else { return };
    let store = StateStore::on_object_store(moto.storage("no-such-bucket", "wh"));
    let err = store
        .transact("t", |_| Ok(vec![table(&TableId::parse("s/m__v").unwrap())]))
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("error: cannot "), "{err}");
    assert!(err.contains("hint: "), "{err}");
    assert!(!err.contains(SECRET), "{err}");
}

/// The state of a project on S3 through the CLI: an exported state imported into an S3
/// warehouse reads back the same; no `[storage]` secret appears in any output.
#[test]
fn the_cli_keeps_the_state_on_s3_and_never_shows_a_secret() {
    use crate::common::{copy_project, sushi, tidemark};
    let Some(moto) = moto() else { return };
    moto.bucket("cli-state");
    let (_t, p) = copy_project(&sushi());
    let at = ["--execution-time", "2024-01-31"];
    let run = |args: &[&str]| {
        let mut all = at.to_vec();
        all.extend_from_slice(args);
        tidemark(&p, &all)
    };
    assert_eq!(run(&["plan", "--apply", "--progress", "lines"]).code, 0);
    let exported = run(&["state", "export"]);
    assert_eq!(exported.code, 0, "{}", exported.transcript());
    let file = p.join("state.json");
    std::fs::write(&file, &exported.stdout).unwrap();

    const SECRET: &str = "sekrit-do-not-print-4711";
    let config = std::fs::read_to_string(p.join("tidemark.toml")).unwrap();
    let config = config.replacen(
        "[project]\n",
        "[project]\nwarehouse = \"s3://cli-state/warehouse\"\n",
        1,
    ) + &format!(
        "\n[storage]\nendpoint = \"{}\"\nallow_http = \"true\"\nregion = \"us-east-1\"\naccess_key_id = \"tidemark-test\"\nsecret_access_key = \"{SECRET}\"\n",
        moto.endpoint
    );
    std::fs::write(p.join("tidemark.toml"), config).unwrap();

    let mut outputs = Vec::new();
    let imported = run(&["state", "import", file.to_str().unwrap()]);
    assert_eq!(imported.code, 0, "{}", imported.transcript());
    outputs.push(imported.transcript());
    let listed = run(&["env", "list"]);
    assert_eq!(listed.code, 0, "{}", listed.transcript());
    assert!(listed.stdout.contains("prod"), "{}", listed.stdout);
    outputs.push(listed.transcript());
    let back = run(&["state", "export"]);
    assert_eq!(back.code, 0, "{}", back.transcript());
    let (a, b): (serde_json::Value, serde_json::Value) = (
        serde_json::from_str(&exported.stdout).unwrap(),
        serde_json::from_str(&back.stdout).unwrap(),
    );
    assert_eq!(a["environments"], b["environments"]);
    assert_eq!(a["snapshots"], b["snapshots"]);
    assert_eq!(a["tables"], b["tables"]);
    outputs.push(back.transcript());

    // A wrong key: an error with a hint, and still no secret.
    let config = std::fs::read_to_string(p.join("tidemark.toml")).unwrap();
    std::fs::write(
        p.join("tidemark.toml"),
        config.replace("[storage]\n", "[storage]\nendpiont = \"x\"\n"),
    )
    .unwrap();
    let typo = run(&["env", "list"]);
    assert_eq!(typo.code, 2, "{}", typo.transcript());
    assert!(
        typo.stderr
            .contains("unknown `[storage]` option `endpiont`"),
        "{}",
        typo.stderr
    );
    outputs.push(typo.transcript());
    for o in &outputs {
        assert!(!o.contains(SECRET), "a secret was shown:\n{o}");
    }
}

/// An S3 endpoint in front of `upstream` that drops the conditions of every request
/// (`If-None-Match`, `If-Match`) before forwarding it: a store that ignores conditional writes,
/// as s3rver does. One request per connection; returns `http://127.0.0.1:PORT`.
pub fn ignoring_conditions(upstream: &str) -> String {
    use std::net::TcpListener;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let upstream = upstream.trim_start_matches("http://").to_string();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let upstream = upstream.clone();
            std::thread::spawn(move || {
                let _ = forward(client, &upstream);
            });
        }
    });
    format!("http://127.0.0.1:{port}")
}

/// The head (up to the blank line) and what was read beyond it.
fn read_head(s: &mut TcpStream) -> std::io::Result<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            return Ok((head, buf[end + 4..].to_vec()));
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// `head` without the headers named in `drop` and with `Connection: close`.
fn rewrite(head: &str, drop: &[&str]) -> String {
    let mut lines: Vec<&str> = head.split("\r\n").collect();
    lines.retain(|l| {
        let name = l
            .split(':')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        !drop.contains(&name.as_str()) && name != "connection"
    });
    format!("{}\r\nConnection: close\r\n\r\n", lines.join("\r\n"))
}

fn forward(mut client: TcpStream, upstream: &str) -> std::io::Result<()> {
    let (head, mut body) = read_head(&mut client)?;
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())
                .flatten()
        })
        .unwrap_or(0);
    while body.len() < length {
        let mut chunk = vec![0u8; length - body.len()];
        let n = client.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    let mut server = TcpStream::connect(upstream)?;
    server.write_all(rewrite(&head, &["if-none-match", "if-match"]).as_bytes())?;
    server.write_all(&body)?;
    let mut reply = Vec::new();
    server.read_to_end(&mut reply)?;
    let end = reply
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(reply.len().saturating_sub(4));
    let head = String::from_utf8_lossy(&reply[..end]).into_owned();
    client.write_all(rewrite(&head, &[]).as_bytes())?;
    client.write_all(&reply[(end + 4).min(reply.len())..])?;
    client.flush()
}

impl Moto {
    /// object_store's client of `bucket` on this server.
    fn client(&self, bucket: &str) -> object_store::aws::AmazonS3 {
        AmazonS3Builder::new()
            .with_endpoint(&self.endpoint)
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_bucket_name(bucket)
            .with_access_key_id("tidemark-test")
            .with_secret_access_key(SECRET)
            .build()
            .unwrap()
    }

    /// Upload `from` (a file, or every file under a directory whose name ends in `suffix`) to
    /// `bucket` under `prefix`.
    pub fn upload(&self, bucket: &str, prefix: &str, from: &std::path::Path, suffix: &str) {
        use object_store::ObjectStoreExt;
        let s3 = self.client(bucket);
        let rt = runtime();
        let (dir, mut stack) = match from.is_file() {
            true => (from.parent().unwrap().to_path_buf(), vec![]),
            false => (from.to_path_buf(), vec![from.to_path_buf()]),
        };
        let mut files: Vec<std::path::PathBuf> = if from.is_file() {
            vec![from.to_path_buf()]
        } else {
            vec![]
        };
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let path = e.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.to_string_lossy().ends_with(suffix) {
                    files.push(path);
                }
            }
        }
        {
            for path in files {
                let rel = path
                    .strip_prefix(&dir)
                    .unwrap()
                    .to_string_lossy()
                    .replace('\\', "/");
                let key = object_store::path::Path::from(format!("{prefix}/{rel}"));
                let bytes = std::fs::read(&path).unwrap();
                rt.block_on(s3.put(&key, bytes.into())).unwrap();
            }
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Every key in `bucket`, through moto directly.
pub fn keys_of(moto: &Moto, bucket: &str) -> Vec<String> {
    use futures::TryStreamExt;
    use object_store::ObjectStore;
    let s3 = moto.client(bucket);
    let rt = runtime();
    let mut keys: Vec<String> = rt
        .block_on(
            s3.list(None)
                .map_ok(|m| m.location.to_string())
                .try_collect(),
        )
        .unwrap();
    keys.sort();
    keys
}

/// Through the CLI, on a store that ignores conditional writes: the apply is refused by the
/// probe with an error and a hint, and nothing but the probe's own key is written.
#[test]
fn an_apply_on_a_store_ignoring_conditional_writes_is_refused_and_writes_nothing() {
    use crate::common::{copy_project, sushi, tidemark};
    let Some(moto) = moto() else { return };
    let (_t, p) = copy_project(&sushi());
    moto.warehouse(&p, "ignoring");
    let proxy = ignoring_conditions(&moto.endpoint);
    let config = std::fs::read_to_string(p.join("tidemark.toml")).unwrap();
    std::fs::write(
        p.join("tidemark.toml"),
        config.replace(&moto.endpoint, &proxy),
    )
    .unwrap();
    let r = tidemark(&p, &["--execution-time", "2024-01-31", "plan", "--apply"]);
    assert_eq!(r.code, 2, "{}", r.transcript());
    assert!(
        r.stderr.contains("does not honour conditional writes"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("hint:"), "{}", r.stderr);
    assert!(!r.stderr.contains(SECRET), "{}", r.stderr);
    let keys = keys_of(moto, "ignoring");
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(keys[0].starts_with("wh/_tidemark/probes/"), "{keys:?}");
    // The same warehouse through the real endpoint: the apply goes through.
    let config = std::fs::read_to_string(p.join("tidemark.toml")).unwrap();
    std::fs::write(
        p.join("tidemark.toml"),
        config.replace(&proxy, &moto.endpoint),
    )
    .unwrap();
    let r = tidemark(&p, &["--execution-time", "2024-01-31", "plan", "--apply"]);
    assert_eq!(r.code, 0, "{}", r.transcript());
}

/// Bad object-store settings through the CLI: each is exit 2 with `error:` and a `hint:`, no
/// panic, no secret, and nothing written.
#[test]
fn a_missing_bucket_an_unreachable_endpoint_or_an_unknown_scheme_is_an_error_with_a_hint() {
    use crate::common::{copy_project, set_warehouse, sushi, tidemark};
    let Some(moto) = moto() else { return };
    const HUSH: &str = "hush-do-not-print-0815";
    let (_t, p) = copy_project(&sushi());
    let apply = ["--execution-time", "2024-01-31", "plan", "--apply"];
    let unreachable: Vec<(&str, String)> = moto
        .options(HUSH)
        .into_iter()
        .map(|(k, v)| match k {
            "endpoint" => (k, "http://127.0.0.1:1".to_string()),
            _ => (k, v),
        })
        .collect();
    type Options = Vec<(&'static str, String)>;
    let cases: [(&str, Options, &str); 3] = [
        (
            "s3://no-such-bucket-cli/wh",
            moto.options(HUSH),
            "no-such-bucket-cli",
        ),
        ("s3://unreachable/wh", unreachable, "unreachable"),
        (
            "ftp://files/wh",
            moto.options(HUSH),
            "unsupported URL scheme `ftp`",
        ),
    ];
    for (warehouse, options, needle) in cases {
        set_warehouse(&p, warehouse, &options);
        let started = std::time::Instant::now();
        let r = tidemark(&p, &apply);
        let t = r.transcript();
        assert_eq!(r.code, 2, "{warehouse}: {t}");
        assert!(r.stderr.starts_with("error: "), "{warehouse}: {t}");
        assert!(r.stderr.contains("hint: "), "{warehouse}: {t}");
        assert!(r.stderr.contains(needle), "{warehouse}: {t}");
        assert!(
            !t.contains("panicked") && !t.contains(HUSH),
            "{warehouse}: {t}"
        );
        eprintln!(
            "{warehouse}: refused in {:.1} s: {}",
            started.elapsed().as_secs_f64(),
            r.stderr.lines().next().unwrap_or_default()
        );
    }
    assert!(!p.join("warehouse").exists(), "nothing was written locally");
}
