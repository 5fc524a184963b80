//! Every materialized kind end to end on the `ledger` fixture: a Delta source written here with
//! delta-rs, INCREMENTAL_BY_UNIQUE_KEY merges, a self-referencing model, SEED, EMBEDDED, FULL,
//! VIEW. Expected values are computed independently in Rust from the generated source rows.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::{
    Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};

use crate::common::{copy_project, csv, env_json, fixture, ok};

/// One generated payment.
#[derive(Debug, Clone, Copy)]
pub struct Payment {
    pub id: i64,
    pub account: i64,
    /// Microseconds since the epoch.
    pub at: i64,
    /// Whole units, so that sums stay exact.
    pub amount: i64,
    pub settled: bool,
}

/// Micros of 2024-03-01T00:00:00Z.
const MARCH_1: i64 = 1_709_251_200_000_000;
const DAY: i64 = 86_400_000_000;
const HOUR: i64 = 3_600_000_000;

/// The payments of day `d` (0 = 2024-03-01): deterministic, six per day.
pub fn payments_of_day(d: i64) -> Vec<Payment> {
    (0..6)
        .map(|i| Payment {
            id: d * 100 + i,
            account: (d * 7 + i * 3).rem_euclid(5) + 1,
            at: MARCH_1 + d * DAY + (i * 3 + 1) * HOUR,
            amount: (d * 13 + i * 29).rem_euclid(50) + 1,
            settled: (d + i).rem_euclid(4) != 0,
        })
        .collect()
}

/// Append `rows` to the Delta table at `dir` (created on first use): one commit.
pub fn append_payments(dir: &Path, rows: &[Payment]) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("payment_id", DataType::Int64, false),
        Field::new("account_id", DataType::Int64, false),
        Field::new(
            "paid_at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("amount", DataType::Float64, false),
        Field::new("status", DataType::Utf8, false),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|p| p.id))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|p| p.account))),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(rows.iter().map(|p| p.at))
                    .with_timezone("UTC"),
            ),
            Arc::new(Float64Array::from_iter_values(
                rows.iter().map(|p| p.amount as f64),
            )),
            Arc::new(StringArray::from_iter_values(
                rows.iter()
                    .map(|p| if p.settled { "settled" } else { "void" }),
            )),
        ],
    )
    .unwrap();
    std::fs::create_dir_all(dir).unwrap();
    let url = url::Url::from_directory_path(dir).unwrap();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let table = deltalake::DeltaTable::try_from_url(url).await.unwrap();
        table
            .write(vec![batch])
            .with_save_mode(deltalake::protocol::SaveMode::Append)
            .await
            .unwrap();
    });
}

/// The ledger fixture in a temp dir, with the payments of `days` already in its Delta source.
pub fn ledger(days: std::ops::Range<i64>) -> (tempfile::TempDir, PathBuf) {
    let (t, p) = copy_project(&fixture("projects/ledger"));
    let rows: Vec<Payment> = days.flat_map(payments_of_day).collect();
    append_payments(&p.join("data/payments"), &rows);
    (t, p)
}

/// [`ledger`] with its warehouse on an object store: `place` points the project at a fresh
/// bucket or container named `{tag}-{pid}-{i}` (e.g. `Moto::warehouse`).
pub fn ledger_on(
    days: std::ops::Range<i64>,
    tag: &str,
    i: u64,
    place: impl Fn(&Path, &str),
) -> (tempfile::TempDir, PathBuf) {
    let (t, p) = ledger(days);
    place(&p, &format!("{tag}-{}-{i}", std::process::id()));
    (t, p)
}

/// Rate of an account's currency (seeds/accounts.csv, data/fx.csv), doubled to stay integral.
fn twice_rate(account: i64) -> i64 {
    match account {
        2 | 3 => 1, // USD at 0.5
        _ => 2,     // EUR at 1.0
    }
}

fn day_of(p: &Payment) -> String {
    let d = (p.at - MARCH_1) / DAY;
    format!("2024-03-{:02}", d + 1)
}

/// Expected `ds,payments,twice_eur` per day and `ds,twice_balance` per day.
fn expected_daily(rows: &[Payment]) -> (String, String) {
    let mut per_day: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for p in rows.iter().filter(|p| p.settled) {
        let e = per_day.entry(day_of(p)).or_default();
        e.0 += 1;
        e.1 += p.amount * twice_rate(p.account);
    }
    let mut daily = "ds,payments,twice_eur\n".to_string();
    let mut running = "ds,twice_balance\n".to_string();
    let mut balance = 0;
    for (ds, (n, twice)) in &per_day {
        daily.push_str(&format!("{ds},{n},{twice}\n"));
        balance += twice;
        running.push_str(&format!("{ds},{balance}\n"));
    }
    (daily, running)
}

/// Expected `account_id,payment_id,amount`: each account's latest settled payment.
fn expected_latest(rows: &[Payment]) -> String {
    let mut latest: BTreeMap<i64, Payment> = BTreeMap::new();
    for p in rows.iter().filter(|p| p.settled) {
        let e = latest.entry(p.account).or_insert(*p);
        if (p.at, p.id) > (e.at, e.id) {
            *e = *p;
        }
    }
    let mut s = "account_id,payment_id,amount\n".to_string();
    for (a, p) in &latest {
        s.push_str(&format!("{a},{},{}\n", p.id, p.amount));
    }
    s
}

const DAILY: &str = "SELECT ds, payments, CAST(amount_eur * 2 AS BIGINT) AS twice_eur FROM ledger.daily_totals ORDER BY ds";
const RUNNING: &str = "SELECT ds, CAST(balance * 2 AS BIGINT) AS twice_balance FROM ledger.running_balance ORDER BY ds";
const LATEST: &str = "SELECT account_id, payment_id, CAST(amount AS BIGINT) AS amount FROM ledger.latest_payment ORDER BY account_id";

pub fn check_all(p: &Path, rows: &[Payment]) {
    check_env(p, "prod", rows);
}

/// daily_totals and running_balance (what a change to daily_totals rebuilds) of `env` hold
/// exactly what `rows` imply.
pub fn check_changed(p: &Path, env: &str, rows: &[Payment]) {
    let (daily, running) = expected_daily(rows);
    assert_eq!(csv(p, env, DAILY), daily, "{env}");
    assert_eq!(csv(p, env, RUNNING), running, "{env}");
}

/// Every model of environment `env` holds exactly what `rows` imply.
pub fn check_env(p: &Path, env: &str, rows: &[Payment]) {
    check_changed(p, env, rows);
    assert_eq!(csv(p, env, LATEST), expected_latest(rows), "{env}");
    // The FULL model and the view agree with the merged table.
    assert_eq!(
        csv(
            p,
            env,
            "SELECT SUM(accounts) AS n, CAST(SUM(last_amounts) AS BIGINT) AS s FROM ledger.tier_balances"
        ),
        csv(
            p,
            env,
            "SELECT COUNT(last_amount) AS n, CAST(SUM(last_amount) AS BIGINT) AS s FROM ledger.account_overview"
        )
    );
}

#[test]
fn every_kind_applies_and_runs_with_exact_results() {
    let (_t, p) = ledger(0..7);
    let first: Vec<Payment> = (0..7).flat_map(payments_of_day).collect();
    let out = ok(&p, &["--execution-time", "2024-03-08", "plan", "--apply"]);
    assert!(out.contains("`prod` is now at revision 1"), "{out}");
    check_all(&p, &first);
    let env = env_json(&p, "prod");
    assert_eq!(env["source_versions"]["raw.payments"], 0, "{env}");

    // New payments land in the source (Delta version 1); `run` three days later picks up
    // exactly those: the merge updates accounts in place, the running balance continues from
    // its own previous output.
    let later: Vec<Payment> = (7..10).flat_map(payments_of_day).collect();
    append_payments(&p.join("data/payments"), &later);
    let out = ok(&p, &["--execution-time", "2024-03-11", "run"]);
    assert!(out.contains("`prod` is now at revision 2"), "{out}");
    let all: Vec<Payment> = first.iter().chain(&later).copied().collect();
    assert_ne!(expected_latest(&first), expected_latest(&all));
    check_all(&p, &all);
    let env = env_json(&p, "prod");
    assert_eq!(env["source_versions"]["raw.payments"], 1, "{env}");

    // Nothing duplicated: one row per key and per day.
    assert_eq!(
        csv(
            &p,
            "prod",
            "SELECT COUNT(*) AS n, COUNT(DISTINCT account_id) AS k FROM ledger.latest_payment"
        ),
        "n,k\n5,5\n"
    );
    assert_eq!(
        csv(
            &p,
            "prod",
            "SELECT COUNT(*) AS n, COUNT(DISTINCT ds) AS k FROM ledger.running_balance"
        ),
        "n,k\n10,10\n"
    );

    // `query` resolves what the SQL reads, quoted names and CTEs included, and runs only a
    // SELECT.
    assert_eq!(
        csv(
            &p,
            "prod",
            r#"WITH x AS (SELECT * FROM "ledger"."latest_payment") SELECT COUNT(*) AS n FROM x"#
        ),
        "n\n5\n"
    );
    let r = crate::common::tidemark(&p, &["query", "DROP TABLE ledger.accounts"]);
    assert_eq!(r.code, 2, "{}", r.transcript());
    assert!(r.stderr.contains("runs one SELECT"), "{}", r.stderr);
}

#[test]
fn a_seed_with_declared_columns_is_read_with_those_types() {
    let (_t, p) = ledger(0..7);
    let f = p.join("models/ledger/accounts.sql");
    let text = std::fs::read_to_string(&f).unwrap();
    let declared = text.replace(
        "grain account_id",
        "grain account_id, columns (account_id INT, name VARCHAR, tier VARCHAR, currency VARCHAR)",
    );
    assert_ne!(text, declared);
    std::fs::write(&f, declared).unwrap();
    ok(&p, &["--execution-time", "2024-03-08", "plan", "--apply"]);
    assert_eq!(
        csv(
            &p,
            "prod",
            "SELECT arrow_typeof(account_id) AS t, COUNT(*) AS n FROM ledger.accounts GROUP BY 1"
        ),
        "t,n\nInt32,5\n"
    );
    check_all(&p, &(0..7).flat_map(payments_of_day).collect::<Vec<_>>());
}

/// The actions of commit `version` of the Delta table at `dir`, as JSON.
fn delta_commit(dir: &Path, version: u64) -> Vec<serde_json::Value> {
    let f = dir.join(format!("_delta_log/{version:020}.json"));
    std::fs::read_to_string(&f)
        .unwrap_or_else(|e| panic!("{}: {e}", f.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The last version of the Delta table at `dir`.
fn last_version(dir: &Path) -> u64 {
    std::fs::read_dir(dir.join("_delta_log"))
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            name.strip_suffix(".json")?.parse().ok()
        })
        .max()
        .unwrap()
}

/// The paths of the `kind` actions (`add` or `remove`) of a commit, sorted.
fn paths(actions: &[serde_json::Value], kind: &str) -> Vec<String> {
    let mut out: Vec<String> = actions
        .iter()
        .filter_map(|a| a[kind]["path"].as_str().map(str::to_string))
        .collect();
    out.sort();
    out
}

/// The Parquet files under `dir`, committed or not, sorted.
fn parquet_files(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".parquet"))
        .collect();
    out.sort();
    out
}

#[test]
fn a_full_model_streams_into_one_commit_that_replaces_its_whole_table() {
    let (_t, p) = ledger(0..7);
    ok(&p, &["--execution-time", "2024-03-08", "plan", "--apply"]);
    let dir = p.join("warehouse").join(crate::common::table_of(
        &env_json(&p, "prod"),
        "ledger.tier_balances",
    ));
    // Created empty (version 0), then the rows in one commit of tidemark's own log writer,
    // which streams them into files instead of collecting them.
    let first = last_version(&dir);
    assert_eq!(first, 1);
    let actions = delta_commit(&dir, first);
    let info = actions.iter().find_map(|a| a.get("commitInfo")).unwrap();
    assert!(
        info["engineInfo"]
            .as_str()
            .unwrap()
            .starts_with("tidemark:"),
        "{info}"
    );
    assert_eq!(info["operationParameters"]["mode"], "Overwrite", "{info}");
    assert!(
        actions.iter().any(|a| a.get("txn").is_some()),
        "{actions:?}"
    );
    let written = paths(&actions, "add");
    assert!(!written.is_empty());
    assert!(paths(&actions, "remove").is_empty());

    // New payments: `run` recomputes the FULL model in one commit that removes every file
    // of the previous one and adds the new rows; the results are exact.
    let later: Vec<Payment> = (7..10).flat_map(payments_of_day).collect();
    append_payments(&p.join("data/payments"), &later);
    ok(&p, &["--execution-time", "2024-03-11", "run"]);
    let second = last_version(&dir);
    assert_eq!(second, first + 1);
    let actions = delta_commit(&dir, second);
    assert_eq!(paths(&actions, "remove"), written);
    let rewritten = paths(&actions, "add");
    assert!(!rewritten.is_empty());
    let all: Vec<Payment> = (0..10).flat_map(payments_of_day).collect();
    check_all(&p, &all);

    // A failing blocking audit refuses the batch: the new table gets no rows commit, and the
    // files streamed before the audit ran are deleted.
    let f = p.join("models/ledger/tier_balances.sql");
    let text = std::fs::read_to_string(&f).unwrap();
    let changed = text
        .replace(
            "grain tier);",
            "grain tier, audits (number_of_rows(threshold := 100)));",
        )
        .replace("COUNT(*) AS accounts", "COUNT(*) + 0 AS accounts");
    assert_ne!(text, changed);
    std::fs::write(&f, changed).unwrap();
    let r = crate::common::tidemark(&p, &["--execution-time", "2024-03-11", "plan", "--apply"]);
    assert_eq!(r.code, 2, "{}", r.transcript());
    assert!(r.stderr.contains("number_of_rows"), "{}", r.stderr);
    let mut refused = 0;
    for t in p.join("warehouse/ledger").read_dir().unwrap() {
        let t = t.unwrap().path();
        if t != dir
            && t.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("tier_balances__")
        {
            refused += 1;
            assert_eq!(last_version(&t), 0, "{}", t.display());
            assert!(parquet_files(&t).is_empty(), "{:?}", parquet_files(&t));
        }
    }
    assert_eq!(refused, 1);
    // The old table is untouched, and prod still reads it.
    assert_eq!(last_version(&dir), second);
    check_all(&p, &all);
}

/// `tidemark --project p ARGS` with the extra environment `envs`.
fn tidemark_with(p: &Path, envs: &[(&str, &str)], args: &[&str]) -> crate::common::Run {
    let mut all = vec!["--project", p.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = std::process::Command::new(crate::common::bin())
        .args(&all)
        .current_dir(crate::common::repo())
        .env("NO_COLOR", "1")
        .envs(crate::servers::child_env())
        .envs(envs.iter().copied())
        .output()
        .unwrap();
    crate::common::Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The ledger's life (apply, new payments, run) with every unique-key batch staged on local
/// disk and merged by sorting (`TIDEMARK_MERGE_IN_MEMORY_MIB=0`), checked against the rows.
fn staged_merges_are_exact(p: &Path) {
    const STAGED: (&str, &str) = ("TIDEMARK_MERGE_IN_MEMORY_MIB", "0");
    let first: Vec<Payment> = (0..7).flat_map(payments_of_day).collect();
    let r = tidemark_with(
        p,
        &[STAGED],
        &["--execution-time", "2024-03-08", "plan", "--apply"],
    );
    assert_eq!(r.code, 0, "{}", r.transcript());
    check_all(p, &first);
    let later: Vec<Payment> = (7..10).flat_map(payments_of_day).collect();
    append_payments(&p.join("data/payments"), &later);
    let r = tidemark_with(p, &[STAGED], &["--execution-time", "2024-03-11", "run"]);
    assert_eq!(r.code, 0, "{}", r.transcript());
    let all: Vec<Payment> = first.iter().chain(&later).copied().collect();
    check_all(p, &all);
}

#[test]
fn unique_key_batches_staged_on_disk_merge_exactly_locally_and_on_s3() {
    let (_t, p) = ledger(0..7);
    staged_merges_are_exact(&p);
    if let Some(moto) = crate::s3::moto() {
        let (_t, p) = ledger_on(0..7, "staged", 0, |p, b| moto.warehouse(p, b));
        staged_merges_are_exact(&p);
    }

    // The staged path is the one taken: with nowhere to stage, the batch fails with our
    // error, and the same apply merging in memory (the default limit) succeeds.
    let (t, p) = ledger(0..7);
    let not_a_dir = t.path().join("not-a-directory");
    std::fs::write(&not_a_dir, "").unwrap();
    let tmp = not_a_dir.to_str().unwrap();
    let args = ["--execution-time", "2024-03-08", "plan", "--apply"];
    let r = tidemark_with(
        &p,
        &[("TIDEMARK_MERGE_IN_MEMORY_MIB", "0"), ("TMPDIR", tmp)],
        &args,
    );
    assert_ne!(r.code, 0, "{}", r.transcript());
    assert!(
        r.stderr
            .contains("cannot stage the rows of a batch of `ledger.latest_payment` on local disk"),
        "{}",
        r.transcript()
    );
    let r = tidemark_with(&p, &[("TMPDIR", tmp)], &args);
    assert_eq!(r.code, 0, "{}", r.transcript());
    check_all(&p, &(0..7).flat_map(payments_of_day).collect::<Vec<_>>());

    // A value that is not a number of MiB is refused before anything runs.
    let (_t, p) = ledger(0..7);
    let r = tidemark_with(&p, &[("TIDEMARK_MERGE_IN_MEMORY_MIB", "lots")], &args);
    assert_eq!(r.code, 2, "{}", r.transcript());
    assert!(
        r.stderr
            .contains("error: `TIDEMARK_MERGE_IN_MEMORY_MIB` is `lots`, not a number of MiB"),
        "{}",
        r.stderr
    );
}
