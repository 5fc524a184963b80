//! The whole product on object stores: the example project's life (plan, apply, query, a dev
//! change, promote, rollback, restatement, run, janitor) on moto's S3 and on Azurite, compared
//! step by step with the same life on a local warehouse. The local run is the reference: every
//! query must return exactly what it returns there.

use std::path::Path;

use crate::azure::azurite;
use crate::common::{copy_project, env_json, fix_discount, ok, sushi, table_of, tidemark};
use crate::s3::moto;

/// What every step shows: the queries' answers.
pub const QUERIES: [&str; 4] = [
    "SELECT transaction_date, location_id, transactions, items_sold, revenue FROM sushi.daily_sales_by_location ORDER BY 1, 2",
    "SELECT count(*) AS n, sum(amount) AS amount FROM sushi.fact_sales_transactions",
    "SELECT * FROM sushi.top_products_daily ORDER BY 1, 2, 3",
    "SELECT count(*) AS n FROM sushi.customers",
];

fn at<'a>(time: &'a str, args: &[&'a str]) -> Vec<&'a str> {
    let mut all = vec!["--execution-time", time];
    all.extend_from_slice(args);
    all
}

fn answers(p: &Path, env: &str) -> String {
    QUERIES
        .iter()
        .map(|q| ok(p, &["query", "--env", env, "--format", "csv", q]))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The example's life on the warehouse of `p`; returns every step's answers and every
/// command's transcript.
fn lifecycle(p: &Path) -> (Vec<String>, Vec<String>) {
    let mut seen = Vec::new();
    let mut transcripts = Vec::new();
    let mut run = |args: Vec<&str>| {
        let r = tidemark(p, &args);
        assert_eq!(r.code, 0, "tidemark {args:?}\n{}", r.transcript());
        transcripts.push(r.transcript());
    };
    run(at(
        "2024-01-31",
        &["plan", "--apply", "--progress", "lines"],
    ));
    seen.push(answers(p, "prod"));
    fix_discount(p);
    run(at(
        "2024-01-31",
        &["plan", "dev", "--apply", "--progress", "lines"],
    ));
    seen.push(answers(p, "dev"));
    run(at("2024-01-31", &["promote", "dev"]));
    seen.push(answers(p, "prod"));
    run(vec!["rollback"]);
    seen.push(answers(p, "prod"));
    run(at(
        "2024-01-31",
        &[
            "plan",
            "--restate-model",
            "sushi.stg_transactions",
            "--start",
            "2024-01-10",
            "--end",
            "2024-01-12",
            "--apply",
        ],
    ));
    seen.push(answers(p, "prod"));
    run(at("2024-02-04", &["run"]));
    seen.push(answers(p, "prod"));
    run(vec!["progress", "--format", "json"]);
    // Past the environments' TTL (they expire by the wall clock): dev and the generations
    // outside the rollback horizon go.
    let later = (chrono::Utc::now() + chrono::Duration::days(30)).to_rfc3339();
    run(at(&later, &["janitor"]));
    seen.push(answers(p, "prod"));
    (seen, transcripts)
}

/// A project copy whose warehouse is `warehouse` with `[storage]` `options`.
fn on_store(
    warehouse: &str,
    options: &[(&str, String)],
) -> (tempfile::TempDir, std::path::PathBuf) {
    let (t, p) = copy_project(&sushi());
    crate::common::set_warehouse(&p, warehouse, options);
    (t, p)
}

/// The reference: the same life on a local warehouse (computed once).
fn reference() -> &'static Vec<String> {
    static REF: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    REF.get_or_init(|| {
        let (_t, p) = copy_project(&sushi());
        lifecycle(&p).0
    })
}

/// Run the life on an object-store project and check it against the local reference; returns
/// the tables janitor deleted.
pub fn check(p: &Path, scheme: &str, secret: &str) -> Vec<String> {
    let (seen, transcripts) = lifecycle(p);
    let expected = reference();
    for (i, (got, want)) in seen.iter().zip(expected.iter()).enumerate() {
        assert_eq!(got, want, "step {i} differs from the local warehouse");
    }
    assert_eq!(seen.len(), expected.len());
    // `env show` names each table by its object-store URL.
    let prod = env_json(p, "prod");
    let uri = prod["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "sushi.daily_sales_by_location")
        .map(|m| m["uri"].as_str().unwrap().to_string())
        .unwrap();
    assert!(uri.starts_with(&format!("{scheme}://")), "{uri}");
    assert!(uri.ends_with(&format!(
        "{}/",
        table_of(&prod, "sushi.daily_sales_by_location")
    )));
    // No secret anywhere: outputs, the state, the progress records (shown by `progress`).
    let exported = ok(p, &["state", "export"]);
    for o in transcripts.iter().chain([&exported]) {
        assert!(!o.contains(secret), "a secret was shown:\n{o}");
    }
    let dropped: Vec<String> = transcripts
        .iter()
        .flat_map(|t| t.lines())
        .filter_map(|l| l.strip_prefix("deleted table `"))
        .filter_map(|l| l.strip_suffix('`'))
        .map(str::to_string)
        .collect();
    assert!(!dropped.is_empty(), "janitor deleted no table");
    dropped
}

#[test]
fn the_example_lives_on_s3_exactly_as_on_a_local_disk() {
    let Some(moto) = moto() else { return };
    moto.bucket("lakehouse");
    const SECRET: &str = "sekrit-s3-do-not-print-4711";
    let (_t, p) = on_store("s3://lakehouse/wh", &moto.options(SECRET));
    let dropped = check(&p, "s3", SECRET);
    // The deleted tables are gone from the bucket, every object of them.
    let keys = crate::s3::keys_of(moto, "lakehouse");
    for t in &dropped {
        let prefix = format!("wh/{t}/");
        assert!(
            !keys.iter().any(|k| k.starts_with(&prefix)),
            "{t} left objects"
        );
    }
    assert!(keys.iter().any(|k| k.contains("_delta_log/")), "{keys:?}");
    // The same options, under the `aws_` names the Python package's object_store reads.
    let options: Vec<(String, String)> = moto
        .options(SECRET)
        .into_iter()
        .map(|(k, v)| (format!("aws_{k}"), v))
        .collect();
    independent_reader(&p, &options);
}

/// The Python `deltalake` package's reader, pinned by `.ci/run`.
const PY_DELTALAKE: &str = "1.6.6";

/// A Python with `deltalake` importable (the moto venv, where `.ci/run` installs it).
fn python_with_deltalake() -> Option<std::path::PathBuf> {
    let python = crate::servers::find("TIDEMARK_PYTHON", "venv-moto/bin/python", "python3")?;
    let ok = std::process::Command::new(&python)
        .args(["-c", "import deltalake; print(deltalake.__version__)"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == PY_DELTALAKE)
        .unwrap_or(false);
    if ok {
        return Some(python);
    }
    crate::servers::missing(
        &format!("Python `deltalake` {PY_DELTALAKE}"),
        &format!("~/.cache/tidemark/venv-moto/bin/pip install deltalake=={PY_DELTALAKE}"),
    )?;
    None
}

/// Every table of prod read by another Delta implementation (delta-rs's Python package, which
/// shares no code path with tidemark's reads: its own log replay, its own DataFusion) at the
/// URI and version `env show` gives: the same number of rows as tidemark's `query` returns.
fn independent_reader(p: &Path, storage: &[(String, String)]) {
    let Some(python) = python_with_deltalake() else {
        return;
    };
    let prod = env_json(p, "prod");
    let script = r#"
import json, sys
from deltalake import DeltaTable, QueryBuilder
env, options = json.load(sys.stdin)
out = {}
for m in env["models"]:
    if not m.get("uri"):
        continue
    dt = DeltaTable(m["uri"], version=m["delta_version"], storage_options=options)
    t = QueryBuilder().register("t", dt).execute("SELECT count(*) AS n FROM t").read_all()
    out[m["name"]] = t.column("n")[0].as_py()
print(json.dumps(out, sort_keys=True))
"#;
    let options: serde_json::Map<String, serde_json::Value> = storage
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.clone())))
        .collect();
    let input = serde_json::json!([prod, options]).to_string();
    let mut child = std::process::Command::new(python)
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let counts: std::collections::BTreeMap<String, u64> =
        serde_json::from_slice(&out.stdout).unwrap();
    assert!(counts.len() >= 7, "{counts:?}");
    for (model, n) in &counts {
        let ours = ok(
            p,
            &[
                "query",
                "--format",
                "csv",
                &format!("SELECT count(*) AS n FROM {model}"),
            ],
        );
        assert_eq!(ours, format!("n\n{n}\n"), "{model}");
    }
    eprintln!(
        "python deltalake {PY_DELTALAKE} read {} tables: {counts:?}",
        counts.len()
    );
}

#[test]
fn the_example_lives_on_azure_exactly_as_on_a_local_disk() {
    let Some(az) = azurite() else { return };
    az.container("lakehouse");
    let options = az.project_options();
    let secret = options
        .iter()
        .find(|(k, _)| *k == "access_key")
        .map(|(_, v)| v.clone())
        .unwrap();
    let (_t, p) = on_store("az://lakehouse/wh", &options);
    check(&p, "az", &secret);
}

/// Sources on S3 (a Delta table, the same rows as Parquet files, a CSV file) read by a
/// project whose warehouse is on S3 too: every model holds what the rows imply.
#[test]
fn sources_on_s3_are_read_in_place() {
    use crate::kinds::{Payment, check_all, ledger, payments_of_day};
    let Some(moto) = moto() else { return };
    let rows: Vec<Payment> = (0..5).flat_map(payments_of_day).collect();
    let (_t, p) = ledger(0..5);
    moto.warehouse(&p, "sources");
    moto.upload("sources", "raw/payments", &p.join("data/payments"), "");
    moto.upload("sources", "raw/files", &p.join("data/payments"), ".parquet");
    moto.upload("sources", "raw/fx", &p.join("data/fx.csv"), "");
    let config = std::fs::read_to_string(p.join("tidemark.toml")).unwrap();
    let config = config
        .replace(
            "path = \"data/payments\"",
            "path = \"s3://sources/raw/payments\"",
        )
        .replace(
            "path = \"data/fx.csv\"",
            "path = \"s3://sources/raw/fx/fx.csv\"",
        )
        + "\n[sources.\"raw.payment_files\"]\npath = \"s3://sources/raw/files/\"\nformat = \"parquet\"\n";
    std::fs::write(p.join("tidemark.toml"), config).unwrap();
    std::fs::remove_dir_all(p.join("data")).unwrap();
    std::fs::write(
        p.join("models/ledger/payment_files.sql"),
        "MODEL (name ledger.payment_files, kind FULL);\nSELECT COUNT(*) AS n, CAST(SUM(amount) AS BIGINT) AS s FROM raw.payment_files\n",
    )
    .unwrap();
    ok(&p, &["--execution-time", "2024-03-06", "plan", "--apply"]);
    check_all(&p, &rows);
    let from_files = ok(
        &p,
        &[
            "query",
            "--format",
            "csv",
            "SELECT n, s FROM ledger.payment_files",
        ],
    );
    let from_delta = ok(
        &p,
        &[
            "query",
            "--format",
            "csv",
            "SELECT COUNT(*) AS n, CAST(SUM(amount) AS BIGINT) AS s FROM raw.payments",
        ],
    );
    assert_eq!(from_files, from_delta);
    assert!(
        from_files
            .lines()
            .nth(1)
            .is_some_and(|l| l.starts_with(&rows.len().to_string())),
        "{from_files}"
    );
}

/// A project of one hourly model (partition values with `:`, which Delta stores URL-encoded).
pub fn hourly() -> (tempfile::TempDir, std::path::PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("hourly");
    std::fs::create_dir_all(p.join("models/h")).unwrap();
    std::fs::write(
        p.join("tidemark.toml"),
        "[project]\nname = \"hourly\"\n\n[model_defaults]\nstart = \"2024-01-01\"\ncron = \"@hourly\"\n",
    )
    .unwrap();
    std::fs::write(
        p.join("models/h/events.sql"),
        "MODEL (name h.events, kind INCREMENTAL_BY_TIME_RANGE (time_column ts, batch_size 12));\n\
         SELECT d.ts AS ts, CAST(EXTRACT(HOUR FROM d.ts) AS BIGINT) AS h\n\
         FROM unnest(generate_series(@start_ts, @end_ts, INTERVAL '1 hour')) AS d(ts)\n",
    )
    .unwrap();
    (t, p)
}

/// Restating a window of an hourly model clones its table (a new generation) and rewrites the
/// window; every other partition is read from the clone's copies of the files.
pub fn restate_hourly(p: &Path) {
    ok(p, &["--execution-time", "2024-01-02", "plan", "--apply"]);
    let all = "SELECT count(*) AS n, sum(h) AS s FROM h.events";
    let before = ok(p, &["query", "--format", "csv", all]);
    assert_eq!(before, "n,s\n24,276\n");
    ok(
        p,
        &[
            "--execution-time",
            "2024-01-02",
            "plan",
            "--restate-model",
            "h.events",
            "--start",
            "2024-01-01 05:00:00",
            "--end",
            "2024-01-01 07:00:00",
            "--apply",
        ],
    );
    let prod = env_json(p, "prod");
    assert!(table_of(&prod, "h.events").ends_with("__g1"), "{prod}");
    assert_eq!(ok(p, &["query", "--format", "csv", all]), before);
}

#[test]
fn an_hourly_table_is_cloned_with_every_partition() {
    let (_t, p) = hourly();
    restate_hourly(&p);
    // The clone keeps the source's properties: a checkpoint every 10 commits, not delta-rs's 100.
    let prod = env_json(&p, "prod");
    let first = p
        .join("warehouse")
        .join(table_of(&prod, "h.events"))
        .join("_delta_log/00000000000000000000.json");
    let commit = std::fs::read_to_string(&first).unwrap();
    assert!(
        commit.contains(r#""delta.checkpointInterval":"10""#),
        "{commit}"
    );
}

#[test]
fn an_hourly_table_on_s3_is_cloned_with_every_partition() {
    let Some(moto) = moto() else { return };
    let (_t, p) = hourly();
    moto.warehouse(&p, "hourly");
    restate_hourly(&p);
}
