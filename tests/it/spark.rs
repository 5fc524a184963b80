//! The Spark Connect engine's first steps through the CLI, against Sail (PyPI `pysail`) in
//! local-cluster mode (a driver and 2 workers talking over RPC), run by [`crate::servers`].
//! `.ci/run` installs it into the build cache, so CI always runs these tests; elsewhere they
//! are skipped, saying how to install it. `TIDEMARK_SAIL` names the executable explicitly.

use std::sync::OnceLock;

use std::path::Path;

use crate::common::{copy_dir, copy_project, repo, sushi, tidemark};
use crate::servers;

/// `sc://127.0.0.1:PORT` of this test binary's Sail, started on first use. When moto runs (it
/// does in CI), the server gets its endpoint and credentials, as a Spark cluster gets its
/// object store's, so it reads and writes warehouses on it.
pub fn sail() -> Option<&'static str> {
    static SAIL: OnceLock<Option<String>> = OnceLock::new();
    SAIL.get_or_init(|| {
        let port = match servers::find("TIDEMARK_SAIL", "venv-sail/bin/sail", "sail") {
            Some(bin) => {
                let bin = bin.to_string_lossy().into_owned();
                let mut args: Vec<String> = vec![
                    "SAIL_MODE=local-cluster".into(),
                    "SAIL_CLUSTER__WORKER_INITIAL_COUNT=2".into(),
                ];
                if let Some(m) = crate::s3::moto() {
                    for (k, v) in m.options(crate::s3::SECRET) {
                        let var = match k {
                            "endpoint" => "AWS_ENDPOINT",
                            "allow_http" => "AWS_ALLOW_HTTP",
                            "region" => "AWS_REGION",
                            "access_key_id" => "AWS_ACCESS_KEY_ID",
                            "secret_access_key" => "AWS_SECRET_ACCESS_KEY",
                            _ => continue,
                        };
                        args.push(format!("{var}={v}"));
                    }
                }
                args.extend(
                    [&bin, "spark", "server", "--ip", "127.0.0.1", "--port", "{port}"]
                        .map(str::to_string),
                );
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                servers::start(Path::new("/usr/bin/env"), &args)
            }
            None => servers::missing(
                "Sail",
                "python3 -m venv ~/.cache/tidemark/venv-sail && ~/.cache/tidemark/venv-sail/bin/pip install pysail==0.7.2",
            )?,
        };
        Some(format!("sc://127.0.0.1:{port}"))
    })
    .as_deref()
}

/// With `[engine] kind = "spark"`, `query` runs on the server even before the first apply (the
/// server's version comes back); SQL the server rejects is an error with its message under
/// `Caused by:`; an unreachable server is an error with a hint that never shows the token.
#[test]
fn query_runs_on_spark_connect_and_a_token_is_never_shown() {
    let Some(remote) = sail() else { return };
    let (_t, p) = copy_project(&sushi());
    let config = std::fs::read_to_string(p.join("tidemark.toml")).unwrap();
    let with = |remote: &str| {
        std::fs::write(
            p.join("tidemark.toml"),
            format!("{config}\n[engine]\nkind = \"spark\"\nremote = \"{remote}\"\n"),
        )
        .unwrap();
    };
    with(remote);
    let r = tidemark(
        &p,
        &[
            "query",
            "--format",
            "csv",
            "SELECT version() AS v, 1 + 1 AS two",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.transcript());
    assert_eq!(r.stdout, "v,two\n0.7.2,2\n");
    let r = tidemark(&p, &["query", "SELECT nope FROM nowhere"]);
    assert_eq!(r.code, 2, "{}", r.transcript());
    assert!(
        r.stderr.contains("Caused by:")
            && r.stderr.contains("nowhere")
            && r.stderr.contains("hint:"),
        "{}",
        r.stderr
    );
    with("sc://127.0.0.1:1/;user_id=etl;token=hush-spark-5");
    let r = tidemark(&p, &["query", "SELECT 1"]);
    assert_eq!(r.code, 2, "{}", r.transcript());
    assert!(r.stderr.contains("hint:"), "{}", r.stderr);
    assert!(
        !r.transcript().contains("hush-spark-5"),
        "{}",
        r.transcript()
    );
}

/// The Spark version of the example (`examples/sushi-spark`) in a temporary directory, on the
/// test's Sail.
pub fn spark_example(remote: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let (t, p) = copy_project(&repo().join("examples/sushi-spark"));
    point_at(&p, remote);
    (t, p)
}

/// Name `remote` under `[engine]` in the project at `p`.
fn point_at(p: &Path, remote: &str) {
    let f = p.join("tidemark.toml");
    let config = std::fs::read_to_string(&f).unwrap();
    assert!(config.contains("kind = \"spark\"\n"), "{config}");
    std::fs::write(
        &f,
        config.replacen(
            "kind = \"spark\"\n",
            &format!("kind = \"spark\"\nremote = \"{remote}\"\n"),
            1,
        ),
    )
    .unwrap();
}

/// A team moves its project to Spark: prod was built by the DataFusion engine from the
/// DataFusion SQL of the example; the same project in Spark SQL, on Sail, is planned into
/// `dev` (every model is a new version: the dialect is part of its fingerprint) and built
/// there. Every model's table reconciles with prod's partition by partition (row counts and
/// checksums equal) and with what its batches recorded; every query answers the same.
#[test]
fn tables_built_on_spark_reconcile_with_the_same_tables_built_locally() {
    let Some(remote) = sail() else { return };
    let (_t, p) = copy_project(&sushi());
    let at = ["--execution-time", "2024-01-31"];
    let run = |args: &[&str]| {
        let r = tidemark(&p, args);
        assert_eq!(r.code, 0, "tidemark {args:?}\n{}", r.transcript());
        r
    };
    run(&[&at[..], &["plan", "--apply", "--progress", "lines"]].concat());
    std::fs::remove_dir_all(p.join("models")).unwrap();
    copy_dir(
        &repo().join("examples/sushi-spark/models"),
        &p.join("models"),
    );
    std::fs::copy(
        repo().join("examples/sushi-spark/tidemark.toml"),
        p.join("tidemark.toml"),
    )
    .unwrap();
    point_at(&p, remote);
    let applied = run(&[&at[..], &["plan", "dev", "--apply", "--progress", "lines"]].concat());
    assert!(
        applied.stderr.contains("sushi.stg_transactions"),
        "{}",
        applied.transcript()
    );
    for model in [
        "raw.pos_transactions",
        "sushi.stg_transactions",
        "sushi.fact_sales_transactions",
        "sushi.daily_sales_by_location",
        "sushi.top_products_daily",
        "sushi.customers",
        "sushi.locations",
    ] {
        let r = run(&[
            "reconcile",
            model,
            "--env",
            "dev",
            "--against",
            "prod",
            "--format",
            "json",
        ]);
        let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        assert!(v["compared"].as_u64().unwrap() > 0, "{model}: {}", r.stdout);
        assert_eq!(
            v["differences"],
            serde_json::json!([]),
            "{model}: {}",
            r.stdout
        );
        assert_eq!(
            v["rows_only"].as_u64().unwrap_or(0),
            0,
            "{model}: {}",
            r.stdout
        );
        run(&["reconcile", model, "--env", "dev"]);
    }
    // Queries on Spark and on the built-in engine (`--engine local`) over the same pinned
    // files answer alike, and as prod (built and read by DataFusion) does.
    for q in crate::lakehouse::QUERIES {
        let dev = crate::common::ok(&p, &["query", "--env", "dev", "--format", "csv", q]);
        assert!(dev.lines().count() > 1, "{q}: {dev}");
        let args = ["query", "--engine", "local", "--format", "csv"];
        let local = crate::common::ok(&p, &[&args[..], &["--env", "dev", q]].concat());
        assert_eq!(dev, local, "{q}");
        let prod = crate::common::ok(&p, &[&args[..], &["--env", "prod", q]].concat());
        assert_eq!(dev, prod, "{q}");
    }
}

/// The Spark example's whole life (plan, apply, a dev change, promote, rollback, restatement,
/// run, janitor) on Sail over the moto S3 warehouse answers every query exactly as the
/// DataFusion example on a local disk.
#[test]
fn the_spark_example_on_s3_lives_exactly_as_the_local_one() {
    let Some(remote) = sail() else { return };
    let Some(m) = crate::s3::moto() else { return };
    let (_t, p) = spark_example(remote);
    m.warehouse(&p, "spark-life");
    crate::lakehouse::check(&p, "s3", crate::s3::SECRET);
}

/// The ledger fixture (every kind: a Delta and a CSV source, SEED, EMBEDDED, time ranges with a
/// string time column, a self-referencing model, UNIQUE_KEY, FULL, VIEW) in Spark SQL on the
/// test's Sail: `to_char` becomes `date_format`, the rest is the same SQL.
pub fn spark_ledger(
    remote: &str,
    days: std::ops::Range<i64>,
) -> (tempfile::TempDir, std::path::PathBuf) {
    let (t, p) = crate::kinds::ledger(days);
    let f = p.join("models/ledger/daily_totals.sql");
    let text = std::fs::read_to_string(&f).unwrap();
    let spark = text.replace(
        "to_char(s.paid_at, '%Y-%m-%d')",
        "date_format(s.paid_at, 'yyyy-MM-dd')",
    );
    assert_ne!(text, spark);
    std::fs::write(&f, spark).unwrap();
    let config = std::fs::read_to_string(p.join("tidemark.toml")).unwrap();
    std::fs::write(
        p.join("tidemark.toml"),
        format!("{config}\n[engine]\nkind = \"spark\"\nremote = \"{remote}\"\n"),
    )
    .unwrap();
    (t, p)
}

/// Every kind on Spark, applied then run after new source data: exact contents, nothing
/// duplicated, and every table reconciles with what its batches recorded.
#[test]
fn every_kind_runs_on_spark_with_exact_results() {
    use crate::kinds::{Payment, append_payments, check_all, payments_of_day};
    let Some(remote) = sail() else { return };
    let (_t, p) = spark_ledger(remote, 0..7);
    let first: Vec<Payment> = (0..7).flat_map(payments_of_day).collect();
    let out = crate::common::ok(&p, &["--execution-time", "2024-03-08", "plan", "--apply"]);
    assert!(out.contains("`prod` is now at revision 1"), "{out}");
    check_all(&p, &first);
    let later: Vec<Payment> = (7..10).flat_map(payments_of_day).collect();
    append_payments(&p.join("data/payments"), &later);
    let out = crate::common::ok(&p, &["--execution-time", "2024-03-11", "run"]);
    assert!(out.contains("`prod` is now at revision 2"), "{out}");
    let all: Vec<Payment> = first.iter().chain(&later).copied().collect();
    check_all(&p, &all);
    assert_eq!(
        crate::common::csv(
            &p,
            "prod",
            "SELECT COUNT(*) AS n, COUNT(DISTINCT account_id) AS k FROM ledger.latest_payment"
        ),
        "n,k\n5,5\n"
    );
    for m in [
        "ledger.daily_totals",
        "ledger.running_balance",
        "ledger.latest_payment",
        "ledger.tier_balances",
        "ledger.accounts",
    ] {
        let r = tidemark(&p, &["reconcile", m, "--env", "prod"]);
        assert_eq!(r.code, 0, "{m}: {}", r.transcript());
    }
    // No staging directory is left behind: every one holds committed files only.
    let wh = p.join("warehouse");
    for table in std::fs::read_dir(wh.join("ledger")).unwrap() {
        for entry in std::fs::read_dir(table.unwrap().path()).unwrap() {
            let entry = entry.unwrap().path();
            let name = entry.file_name().unwrap().to_string_lossy().into_owned();
            if name.starts_with("staging-") {
                let mut stack = vec![entry.clone()];
                while let Some(d) = stack.pop() {
                    for e in std::fs::read_dir(&d).unwrap() {
                        let e = e.unwrap().path();
                        if e.is_dir() {
                            assert!(
                                !e.to_string_lossy().contains("__outside__"),
                                "{}",
                                e.display()
                            );
                            stack.push(e);
                        } else {
                            assert!(
                                e.extension().is_some_and(|x| x == "parquet"),
                                "{}",
                                e.display()
                            );
                        }
                    }
                }
            }
        }
    }
}

/// SIGKILL of tidemark at random moments of an apply on Spark (batches in flight on the
/// engine), then resume: exact contents, nothing duplicated, every table reconciles.
/// `TIDEMARK_CRASH_TRIALS_SPARK` sets the trials (default 2).
#[test]
fn an_apply_on_spark_killed_at_random_moments_resumes_to_the_uninterrupted_result() {
    let Some(remote) = sail() else { return };
    crate::crash::apply_trials(
        "apply on Spark",
        crate::common::env_count("TIDEMARK_CRASH_TRIALS_SPARK", 2),
        |_| spark_ledger(remote, 0..10),
    );
}

/// A model the engine rejects (an unknown column; a time-range model whose query lost its time
/// column) fails the apply before its first batch: `file:line` of the query, the engine's
/// message under `Caused by:`, a hint; no environment changes and no table is written, not
/// even those of the models upstream of it.
#[test]
fn a_model_spark_rejects_fails_the_apply_and_changes_nothing() {
    let Some(remote) = sail() else { return };
    // Each case: a model file, the text from which on it is replaced and by what, what stderr
    // must name. The second model's columns are only known to the engine (`*` of a seed).
    let cases = [
        (
            "models/sushi/customers.sql",
            (
                "SUM(amount) AS lifetime_revenue",
                "SUM(no_such_column) AS lifetime_revenue\nFROM sushi.fact_sales_transactions\nGROUP BY customer_id\n",
            ),
            [
                "`sushi.customers`",
                "--> models/sushi/customers.sql:9:1",
                "no_such_column",
            ],
        ),
        (
            "models/sushi/daily_sales_by_location.sql",
            (
                "SELECT\n",
                "SELECT * FROM sushi.locations WHERE @start_date <= @end_date\n",
            ),
            [
                "`sushi.daily_sales_by_location`",
                "--> models/sushi/daily_sales_by_location.sql:10:1",
                "no column `transaction_date`",
            ],
        ),
    ];
    for (file, (from, to), expected) in cases {
        let (_t, p) = spark_example(remote);
        let f = p.join(file);
        let text = std::fs::read_to_string(&f).unwrap();
        let at = text.find(from).unwrap();
        std::fs::write(&f, format!("{}{to}", &text[..at])).unwrap();
        let r = tidemark(&p, &["--execution-time", "2024-01-31", "plan", "--apply"]);
        assert_eq!(r.code, 2, "{}", r.transcript());
        for e in expected {
            assert!(r.stderr.contains(e), "{e}: {}", r.stderr);
        }
        assert!(r.stderr.contains("hint:"), "{}", r.stderr);
        let envs = crate::common::ok(&p, &["env", "list", "--format", "json"]);
        assert!(!envs.contains("\"prod\""), "{envs}");
        // Checked before the first batch: no model's table was written, upstream ones neither.
        let mut written = Vec::new();
        let mut dirs = vec![p.join("warehouse")];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let path = e.path();
                let name = e.file_name().to_string_lossy().into_owned();
                if name == "_delta_log" || name.starts_with("staging-") {
                    written.push(path);
                } else if path.is_dir() {
                    dirs.push(path);
                }
            }
        }
        assert!(written.is_empty(), "{written:?}");
    }
}

/// A server process stopped when dropped (a failing test leaves none behind).
struct Stopped(std::process::Child);

impl Stopped {
    fn stop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A Sail server of this test's own (a driver and 2 workers): the process and its port.
fn own_sail() -> (Stopped, u16) {
    let bin = servers::find("TIDEMARK_SAIL", "venv-sail/bin/sail", "sail").unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let child = std::process::Command::new("/usr/bin/env")
        .args([
            "SAIL_MODE=local-cluster",
            "SAIL_CLUSTER__WORKER_INITIAL_COUNT=2",
        ])
        .arg(&bin)
        .args([
            "spark",
            "server",
            "--ip",
            "127.0.0.1",
            "--port",
            &port.to_string(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "Sail did not listen");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    (Stopped(child), port)
}

/// The engine dies in the middle of an apply (killed once the first Spark batch has
/// committed, others in flight): the apply fails with exit 2 and a hint, no environment
/// changes; with a server back, the apply completes with exact contents, and every table
/// reconciles with what its batches recorded (nothing staged by the dead server was
/// committed twice or half).
#[test]
fn an_engine_that_dies_mid_apply_fails_cleanly_and_the_apply_completes_later() {
    use crate::kinds::{Payment, check_all, payments_of_day};
    use std::io::BufRead;
    if sail().is_none() {
        return;
    }
    let (mut server, port) = own_sail();
    let (_t, p) = spark_ledger(&format!("sc://127.0.0.1:{port}"), 0..10);
    let args = [
        "--execution-time",
        "2024-03-11",
        "plan",
        "--apply",
        "--progress",
        "lines",
    ];
    let mut apply = std::process::Command::new(crate::common::bin())
        .arg("--project")
        .arg(&p)
        .args(args)
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut seen = Vec::new();
    let mut killed = false;
    for line in std::io::BufReader::new(apply.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        if !killed && line.contains("ledger.daily_totals") && line.contains(" rows") {
            server.stop();
            killed = true;
        }
        seen.push(line);
    }
    let status = apply.wait().unwrap();
    let transcript = seen.join("\n");
    assert!(killed, "no Spark batch completed: {transcript}");
    assert_eq!(status.code(), Some(2), "{transcript}");
    assert!(transcript.contains("hint:"), "{transcript}");
    let envs = crate::common::ok(&p, &["env", "list", "--format", "json"]);
    assert!(!envs.contains("\"prod\""), "{envs}");

    let (_again, port) = own_sail();
    let f = p.join("tidemark.toml");
    let config = std::fs::read_to_string(&f).unwrap();
    let config: String = config
        .lines()
        .map(|l| match l.starts_with("remote = ") {
            true => format!("remote = \"sc://127.0.0.1:{port}\"\n"),
            false => format!("{l}\n"),
        })
        .collect();
    std::fs::write(&f, config).unwrap();
    crate::common::ok(&p, &args);
    let rows: Vec<Payment> = (0..10).flat_map(payments_of_day).collect();
    check_all(&p, &rows);
    for m in [
        "ledger.daily_totals",
        "ledger.running_balance",
        "ledger.latest_payment",
    ] {
        let r = tidemark(&p, &["reconcile", m, "--env", "prod"]);
        assert_eq!(r.code, 0, "{m}: {}", r.transcript());
    }
}

/// An hourly model on Spark: its partition values hold `:` (`2024-01-01T05:00`), which engines
/// write into directory names differently (Sail as it is, delta-rs and Spark escaped as `%3A`).
/// Built, read back on the engine and a window restated into a cloned generation, on a local
/// warehouse and on S3; and an hourly table built by the local engine (`%3A` in its file
/// names) read on Spark as a Delta source, its rows all found.
#[test]
fn an_hourly_model_runs_on_spark_and_a_window_is_restated() {
    let Some(remote) = sail() else { return };
    let to_spark = |p: &Path, extra: &str| {
        std::fs::write(
            p.join("models/h/events.sql"),
            "MODEL (name h.events, kind INCREMENTAL_BY_TIME_RANGE (time_column ts, batch_size 12));\n\
             SELECT ts, CAST(hour(ts) AS BIGINT) AS h\n\
             FROM (SELECT explode(sequence(@start_ts, @end_ts, INTERVAL 1 HOUR)) AS ts)\n",
        )
        .unwrap();
        let f = p.join("tidemark.toml");
        let config = std::fs::read_to_string(&f).unwrap();
        std::fs::write(
            &f,
            format!("{config}\n[engine]\nkind = \"spark\"\nremote = \"{remote}\"\n{extra}"),
        )
        .unwrap();
    };
    let (_tl, local) = crate::lakehouse::hourly();
    crate::common::ok(
        &local,
        &["--execution-time", "2024-01-02", "plan", "--apply"],
    );
    let built_locally = std::fs::read_dir(local.join("warehouse/h"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|t| t.join("_delta_log").exists())
        .unwrap();
    let escaped = std::fs::read_dir(&built_locally)
        .unwrap()
        .any(|e| e.unwrap().file_name().to_string_lossy().contains("%3A"));
    assert!(escaped, "delta-rs escapes `:` in partition directories");
    for on_s3 in [false, true] {
        let (_t, p) = crate::lakehouse::hourly();
        let source = if on_s3 {
            String::new()
        } else {
            format!(
                "\n[sources.\"ext.events\"]\npath = \"{}\"\nformat = \"delta\"\n",
                built_locally.display()
            )
        };
        to_spark(&p, &source);
        if on_s3 {
            let Some(moto) = crate::s3::moto() else {
                continue;
            };
            moto.warehouse(&p, "hourly-spark");
        }
        crate::lakehouse::restate_hourly(&p);
        let all = "SELECT count(DISTINCT h) AS hours, count(*) AS n, sum(h) AS s FROM h.events";
        let want = "hours,n,s\n24,24,276\n";
        assert_eq!(
            crate::common::ok(&p, &["query", "--format", "csv", all]),
            want
        );
        // The same rows through DataFusion over the same files (the log's paths are right).
        let local_read = ["query", "--engine", "local", "--format", "csv", all];
        assert_eq!(crate::common::ok(&p, &local_read), want, "on S3: {on_s3}");
        if !on_s3 {
            let ext = all.replace("h.events", "ext.events");
            assert_eq!(
                crate::common::ok(&p, &["query", "--format", "csv", &ext]),
                want
            );
        }
    }
}
