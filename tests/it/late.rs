//! Late-arriving and corrected source data (issue 17): the `ledger` fixture's Delta source is
//! written here with delta-rs, as an upstream team would, one commit per day; after prod is
//! built, rows land in two old days and a third day's file is deleted. `plan` must report
//! exactly those days and everything downstream of them, `--restate-late` must recompute
//! exactly them (the results equal a clean backfill from the changed source), and then nothing
//! is left to report. Rewrites (`OPTIMIZE`) and appends into days never computed are not late.

use std::path::{Path, PathBuf};

use crate::common::{copy_dir, ok, tidemark};
use crate::kinds::{Payment, append_payments, payments_of_day};

/// Micros of 2024-03-01T00:00:00Z, and a day and an hour of them.
const MARCH_1: i64 = 1_709_251_200_000_000;
const DAY: i64 = 86_400_000_000;
const HOUR: i64 = 3_600_000_000;

pub const BUILD: [&str; 4] = ["--execution-time", "2024-03-08", "plan", "--apply"];
const PLAN: [&str; 5] = ["--execution-time", "2024-03-08", "plan", "--format", "json"];
const RESTATE: [&str; 5] = [
    "--execution-time",
    "2024-03-08",
    "plan",
    "--restate-late",
    "--apply",
];

/// The ledger with its payments source written one commit (one file) per day of `days`, the
/// source's `time_column` declared, and an hourly model beside the daily ones.
pub fn project(days: std::ops::Range<i64>) -> (tempfile::TempDir, PathBuf) {
    let (t, p) = crate::kinds::ledger(0..0);
    for d in days {
        append_payments(&p.join("data/payments"), &payments_of_day(d));
    }
    let f = p.join("tidemark.toml");
    let config = std::fs::read_to_string(&f).unwrap();
    let with = config.replacen(
        "path = \"data/payments\"\nformat = \"delta\"\n",
        "path = \"data/payments\"\nformat = \"delta\"\ntime_column = \"paid_at\"\n",
        1,
    );
    assert_ne!(config, with);
    std::fs::write(&f, with).unwrap();
    std::fs::write(
        p.join("models/ledger/hourly_amounts.sql"),
        "MODEL (name ledger.hourly_amounts, kind INCREMENTAL_BY_TIME_RANGE (time_column hour, batch_size 48), cron '@hourly');\n\
         SELECT date_trunc('hour', paid_at) AS hour, COUNT(*) AS payments, SUM(amount) AS amount\n\
         FROM raw.payments WHERE paid_at BETWEEN @start_ts AND @end_ts GROUP BY 1\n",
    )
    .unwrap();
    (t, p)
}

/// Late payments of day `d` (0 = 2024-03-01): two, in its afternoon.
pub fn late_of_day(d: i64) -> Vec<Payment> {
    (0..2)
        .map(|i| Payment {
            id: 9_000 + d * 10 + i,
            account: i + 1,
            at: MARCH_1 + d * DAY + (14 + i) * HOUR,
            amount: 7 + i,
            settled: true,
        })
        .collect()
}

fn run_on(dir: &Path, f: impl std::future::Future<Output = ()>) {
    let _ = dir;
    tokio::runtime::Runtime::new().unwrap().block_on(f);
}

fn source_table(dir: &Path) -> deltalake::DeltaTable {
    let url = url::Url::from_directory_path(dir).unwrap();
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(deltalake::open_table(url))
        .unwrap()
}

/// Delete the payments of day `d` (their whole file: one commit per day wrote it).
fn delete_day(dir: &Path, d: i64) {
    let table = source_table(dir);
    run_on(dir, async {
        table
            .delete()
            .with_predicate(format!(
                "payment_id >= {} AND payment_id < {}",
                d * 100,
                d * 100 + 100
            ))
            .await
            .unwrap();
    });
}

/// Compact the source's files (`dataChange: false`).
fn optimize(dir: &Path) {
    let table = source_table(dir);
    run_on(dir, async {
        let (_, metrics) = table.optimize().await.unwrap();
        assert!(metrics.num_files_removed > 1, "{metrics:?}");
    });
}

pub fn late_of(plan_json: &str) -> Option<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_str(plan_json).unwrap();
    v.get("late_data").cloned()
}

/// Days (`2024-03-DD`) a list of windows touches.
fn days_of(windows: &serde_json::Value) -> Vec<String> {
    let mut days: Vec<String> = windows
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["start"].as_str().unwrap()[..10].to_string())
        .collect();
    days.dedup();
    days
}

const MODELS: [(&str, &str); 5] = [
    ("ledger.daily_totals", "ds"),
    ("ledger.running_balance", "ds"),
    ("ledger.latest_payment", "account_id"),
    ("ledger.tier_balances", "tier"),
    ("ledger.hourly_amounts", "hour"),
];

pub fn contents(p: &Path) -> Vec<String> {
    MODELS
        .iter()
        .map(|(m, by)| {
            ok(
                p,
                &[
                    "query",
                    "--format",
                    "csv",
                    &format!("SELECT * FROM {m} ORDER BY {by}"),
                ],
            )
        })
        .collect()
}

/// The tables of a clean build, at `now`, of a fresh project over a copy of `source`.
pub fn clean_contents(source: &Path, now: &str) -> Vec<String> {
    let (_t, clean) = project(0..0);
    std::fs::remove_dir_all(clean.join("data/payments")).unwrap();
    copy_dir(source, &clean.join("data/payments"));
    ok(&clean, &["--execution-time", now, "plan", "--apply"]);
    contents(&clean)
}

#[test]
fn late_and_corrected_source_data_is_found_shown_and_restated_exactly() {
    let (_t, p) = project(0..7);
    let source = p.join("data/payments");
    ok(&p, &BUILD);
    assert_eq!(late_of(&ok(&p, &PLAN)), None, "nothing changed yet");

    // An append only into a day never computed (2024-03-08) is new data, not late data.
    append_payments(&source, &payments_of_day(7));
    assert_eq!(late_of(&ok(&p, &PLAN)), None, "new days are not late");

    // Late rows into 03-02 and 03-04, and 03-06's file deleted (a corrected delivery).
    append_payments(&source, &late_of_day(1));
    append_payments(&source, &late_of_day(3));
    delete_day(&source, 5);
    let late = late_of(&ok(&p, &PLAN)).expect("a late-data section");
    let sources = late["sources"].as_array().unwrap();
    assert_eq!(sources.len(), 1, "{late}");
    let s = &sources[0];
    assert_eq!(s["source"], "raw.payments");
    assert_eq!(s["versions"], serde_json::json!([9, 10, 11]), "{s}");
    assert_eq!(
        days_of(&s["windows"]),
        ["2024-03-02", "2024-03-04", "2024-03-06"],
        "{s}"
    );
    assert_eq!(
        (
            &s["files_added"],
            &s["rows_added"],
            &s["files_removed"],
            &s["rows_removed"]
        ),
        (
            &serde_json::json!(2),
            &serde_json::json!(4),
            &serde_json::json!(1),
            &serde_json::json!(6)
        ),
        "{s}"
    );
    assert!(s.get("untracked").is_none(), "{s}");
    assert_eq!(late["not_tracked"][0]["source"], "raw.fx", "{late}");
    let restates: std::collections::BTreeMap<String, serde_json::Value> = s["restates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["model"].as_str().unwrap().to_string(),
                r["windows"].clone(),
            )
        })
        .collect();
    assert_eq!(
        days_of(&restates["ledger.daily_totals"]),
        ["2024-03-02", "2024-03-04", "2024-03-06"]
    );
    assert_eq!(
        days_of(&restates["ledger.hourly_amounts"]),
        ["2024-03-02", "2024-03-04", "2024-03-06"]
    );
    // A self-reference restates through its end; a merge its history; FULL and the view whole.
    assert_eq!(days_of(&restates["ledger.running_balance"]), ["2024-03-02"]);
    assert_eq!(days_of(&restates["ledger.latest_payment"]), ["2024-03-01"]);
    assert!(
        restates.contains_key("ledger.tier_balances"),
        "{restates:?}"
    );
    // Shown for review, with the command that restates it.
    let text = ok(&p, &["--execution-time", "2024-03-08", "plan"]);
    assert!(
        text.contains("Late or corrected source data")
            && text.contains("raw.payments: versions 9–11")
            && text.contains("--restate-late"),
        "{text}"
    );
    let check = tidemark(&p, &["--execution-time", "2024-03-08", "plan", "--check"]);
    assert_eq!(check.code, 1, "{}", check.transcript());

    // Restated exactly: the same results as a clean backfill from the changed source.
    let applied = ok(&p, &RESTATE);
    assert!(applied.contains("ledger.daily_totals"), "{applied}");
    assert_eq!(contents(&p), clean_contents(&source, "2024-03-08"));
    // Nothing left to report; a compaction of the source is not a change either.
    assert_eq!(late_of(&ok(&p, &PLAN)), None);
    optimize(&source);
    assert_eq!(late_of(&ok(&p, &PLAN)), None, "a rewrite is not late data");
}

/// Late data a `run` finds but does not restate is not forgotten when the run moves on; with
/// `[run] restate_late = true` the next run restates it.
#[test]
fn late_data_a_run_does_not_restate_is_kept_until_restated() {
    let (_t, p) = project(0..7);
    let source = p.join("data/payments");
    ok(&p, &BUILD);
    append_payments(&source, &late_of_day(2));
    let run = tidemark(&p, &["--execution-time", "2024-03-09", "run"]);
    assert_eq!(run.code, 0, "{}", run.transcript());
    assert!(
        run.stderr
            .contains("late or corrected data in `raw.payments`"),
        "{}",
        run.stderr
    );
    let plan = ["--execution-time", "2024-03-09", "plan", "--format", "json"];
    let late = late_of(&ok(&p, &plan)).expect("still reported after the run");
    assert_eq!(
        days_of(&late["sources"][0]["windows"]),
        ["2024-03-03"],
        "{late}"
    );
    let f = p.join("tidemark.toml");
    let config = std::fs::read_to_string(&f).unwrap();
    std::fs::write(&f, format!("{config}\n[run]\nrestate_late = true\n")).unwrap();
    let run = tidemark(&p, &["--execution-time", "2024-03-09", "run"]);
    assert_eq!(run.code, 0, "{}", run.transcript());
    assert!(run.stderr.contains("restating"), "{}", run.stderr);
    assert_eq!(late_of(&ok(&p, &plan)), None);
    let total = ok(
        &p,
        &[
            "query",
            "--format",
            "csv",
            "SELECT payments FROM ledger.hourly_amounts WHERE hour = TIMESTAMP '2024-03-03 14:00:00'",
        ],
    );
    assert_eq!(total, "payments\n1\n", "the late row is in");
}

/// Recall of a bad load: every environment's batches that read its version are listed (a dev
/// environment that rebuilt a model after it, prod's run that read it), and nothing else;
/// `--plan` makes the restatement of exactly those windows.
#[test]
fn recall_lists_exactly_the_batches_that_read_a_version() {
    let (_t, p) = project(0..7);
    let source = p.join("data/payments");
    ok(&p, &BUILD);
    // Version 8: a bad load (late rows into 03-02).
    append_payments(&source, &late_of_day(1));
    let recall = |extra: &[&str]| {
        let mut args = vec!["--execution-time", "2024-03-09", "recall", "raw.payments"];
        args.extend_from_slice(extra);
        let out = ok(&p, &args);
        serde_json::from_str::<serde_json::Value>(&out).unwrap()
    };
    let hits_of = |v: &serde_json::Value| -> Vec<(String, String, Vec<String>)> {
        v["hits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| {
                (
                    h["environment"].as_str().unwrap().to_string(),
                    h["model"].as_str().unwrap().to_string(),
                    days_of(&h["windows"]),
                )
            })
            .collect()
    };
    let none = recall(&["--version", "8", "--format", "json"]);
    assert_eq!(hits_of(&none), [], "nothing read version 8 yet: {none}");
    // dev rebuilds daily_totals after the bad load: its batches read version 8.
    let f = p.join("models/ledger/daily_totals.sql");
    let text = std::fs::read_to_string(&f).unwrap();
    std::fs::write(
        &f,
        text.replace(
            "COUNT(*) AS payments,",
            "COUNT(*) AS payments,\n  MAX(s.amount) AS largest,",
        ),
    )
    .unwrap();
    ok(
        &p,
        &["--execution-time", "2024-03-08", "plan", "dev", "--apply"],
    );
    let dev = recall(&["--version", "8", "--format", "json"]);
    assert_eq!(
        hits_of(&dev),
        [(
            "dev".to_string(),
            "ledger.daily_totals".to_string(),
            vec!["2024-03-01".to_string()]
        )],
        "{dev}"
    );
    // prod's next run reads version 8 for 03-08 in every model reading the source.
    let run = tidemark(&p, &["--execution-time", "2024-03-09", "run"]);
    assert_eq!(run.code, 0, "{}", run.transcript());
    let both = recall(&["--version", "8", "--format", "json"]);
    let hits = hits_of(&both);
    let day8 = vec!["2024-03-08".to_string()];
    // (running_balance reads daily_totals, not the source: restating follows it, recall does
    // not list it.)
    for model in [
        "ledger.daily_totals",
        "ledger.hourly_amounts",
        "ledger.latest_payment",
    ] {
        assert!(
            hits.contains(&("prod".to_string(), model.to_string(), day8.clone())),
            "{model}: {hits:?}"
        );
    }
    // dev shares prod's tables of the models it did not change, pinned before the run: the
    // run's new versions of daily_totals and hourly_amounts are not in dev; its merge into
    // latest_payment changed nothing (no new version), so what dev reads is that batch's result.
    assert!(
        hits.contains(&("dev".into(), "ledger.latest_payment".into(), day8.clone())),
        "{hits:?}"
    );
    assert_eq!(hits.len(), 5, "{hits:?}");
    // A range starting at the first build's version reaches every batch.
    let all = hits_of(&recall(&["--version", "7..8", "--format", "json"]));
    assert!(
        all.contains(&(
            "prod".into(),
            "ledger.latest_payment".into(),
            vec!["2024-03-01".into()]
        )),
        "{all:?}"
    );
    // Version 9 and later: nothing read them.
    assert_eq!(
        hits_of(&recall(&["--version", "9", "--format", "json"])),
        []
    );
    // The restatement of exactly those windows of prod, from the current version.
    let planned = recall(&["--version", "8", "--plan", "prod", "--format", "json"]);
    let models: Vec<(String, Vec<String>)> = planned["plan"]["models"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["restated"] == true && m["backfill"].is_object())
        .map(|m| {
            (
                m["name"].as_str().unwrap().to_string(),
                days_of(&m["backfill"]["intervals"]),
            )
        })
        .collect();
    assert!(
        models.contains(&("ledger.daily_totals".to_string(), day8.clone())),
        "{models:?}"
    );
    assert!(
        models.contains(&("ledger.hourly_amounts".to_string(), day8.clone())),
        "{models:?}"
    );
    let text = ok(
        &p,
        &[
            "--execution-time",
            "2024-03-09",
            "recall",
            "raw.payments",
            "--version",
            "8",
        ],
    );
    assert!(
        text.contains("prod · ledger.daily_totals · [2024-03-08, 2024-03-09)"),
        "{text}"
    );
    // By time: every commit since long ago is every version; none after now is none.
    let since = recall(&["--since", "2000-01-01", "--format", "json"]);
    assert_eq!(since["from_version"], 0, "{since}");
    assert_eq!(hits_of(&since).len(), 6, "{since}");
    let future = recall(&["--since", "2999-01-01", "--format", "json"]);
    assert_eq!(hits_of(&future), [], "{future}");
}

/// A Delta source partitioned by its time column needs no statistics: the partition value of
/// each added or removed file places it (here a day re-delivered: its partition overwritten).
#[test]
fn a_source_partitioned_by_its_time_column_is_placed_by_partition_value() {
    use datafusion::arrow::array::{Date32Array, Int64Array, RecordBatch};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("parts");
    std::fs::create_dir_all(p.join("models/m")).unwrap();
    std::fs::create_dir_all(p.join("data/events")).unwrap();
    std::fs::write(
        p.join("tidemark.toml"),
        "[project]\nname = \"parts\"\n\n[model_defaults]\nstart = \"2024-03-01\"\n\n\
         [sources.\"raw.events\"]\npath = \"data/events\"\nformat = \"delta\"\ntime_column = \"day\"\n",
    )
    .unwrap();
    std::fs::write(
        p.join("models/m/daily.sql"),
        "MODEL (name m.daily, kind INCREMENTAL_BY_TIME_RANGE (time_column day));\n\
         SELECT day, COUNT(*) AS events FROM raw.events WHERE day BETWEEN @start_date AND @end_date GROUP BY day\n",
    )
    .unwrap();
    // 2024-03-01 is day 19783 since the epoch.
    let write =
        |days: &[i32], ids: &[i64], mode: deltalake::protocol::SaveMode, replace: Option<&str>| {
            let schema = Arc::new(Schema::new(vec![
                Field::new("id", DataType::Int64, false),
                Field::new("day", DataType::Date32, false),
            ]));
            let batch = RecordBatch::try_new(
                schema,
                vec![
                    Arc::new(Int64Array::from(ids.to_vec())),
                    Arc::new(Date32Array::from(
                        days.iter().map(|d| 19_783 + d).collect::<Vec<_>>(),
                    )),
                ],
            )
            .unwrap();
            let url = url::Url::from_directory_path(p.join("data/events")).unwrap();
            tokio::runtime::Runtime::new().unwrap().block_on(async {
                let table = deltalake::DeltaTable::try_from_url(url).await.unwrap();
                let mut w = table
                    .write(vec![batch])
                    .with_save_mode(mode)
                    .with_partition_columns(["day"]);
                if let Some(r) = replace {
                    w = w.with_replace_where(r.to_string());
                }
                w.await.unwrap();
            });
        };
    use deltalake::protocol::SaveMode;
    write(
        &[0, 1, 2, 3, 4, 5, 6],
        &[1, 2, 3, 4, 5, 6, 7],
        SaveMode::Append,
        None,
    );
    ok(&p, &BUILD);
    // 2024-03-03 re-delivered with two rows instead of one.
    write(
        &[2, 2],
        &[30, 31],
        SaveMode::Overwrite,
        Some("day = '2024-03-03'"),
    );
    let late = late_of(&ok(&p, &PLAN)).expect("a late-data section");
    let s = &late["sources"][0];
    assert_eq!(days_of(&s["windows"]), ["2024-03-03"], "{s}");
    assert_eq!(s["windows"][0]["end"], "2024-03-04T00:00:00Z", "{s}");
    assert_eq!(
        (&s["files_added"], &s["files_removed"]),
        (&serde_json::json!(1), &serde_json::json!(1)),
        "{s}"
    );
    ok(&p, &RESTATE);
    let n = ok(
        &p,
        &[
            "query",
            "--format",
            "csv",
            "SELECT events FROM m.daily WHERE day = DATE '2024-03-03'",
        ],
    );
    assert_eq!(n, "events\n2\n");
}

/// Detection reads a source's log on an object store the same way (moto's S3).
#[test]
fn late_data_of_a_source_on_s3_is_found() {
    let Some(moto) = crate::s3::moto() else {
        return;
    };
    let (_t, p) = project(0..7);
    let local = p.join("data/payments");
    moto.warehouse(&p, "late-data");
    moto.upload("late-data", "raw/payments", &local, "");
    let f = p.join("tidemark.toml");
    let config = std::fs::read_to_string(&f).unwrap();
    std::fs::write(
        &f,
        config.replace(
            "path = \"data/payments\"",
            "path = \"s3://late-data/raw/payments\"",
        ),
    )
    .unwrap();
    ok(&p, &BUILD);
    assert_eq!(late_of(&ok(&p, &PLAN)), None);
    append_payments(&local, &late_of_day(3));
    moto.upload("late-data", "raw/payments", &local, "");
    let late = late_of(&ok(&p, &PLAN)).expect("a late-data section");
    assert_eq!(
        days_of(&late["sources"][0]["windows"]),
        ["2024-03-04"],
        "{late}"
    );
    ok(&p, &RESTATE);
    assert_eq!(late_of(&ok(&p, &PLAN)), None);
}
