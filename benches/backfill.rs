//! Benchmark: end-to-end `plan --apply` backfills with real Delta tables.
//!
//! Run: `cargo bench --bench backfill` (optionally `-- wide partitions chain memory` to pick
//! scenarios). Each scenario generates a project in a temp dir and runs the apply in a child
//! process (this same executable), so that its wall time and peak memory (VmHWM) are its own.
//! - `wide`: 20 models × 90 days × 100,000 rows/day: one generator model and 19 models reading
//!   it (10 row-preserving transforms, 9 aggregations). Reports rows/s end to end.
//! - `partitions`: 1,095 daily partitions of a tiny model, one batch each: overhead per
//!   partition (target ≤ 15 ms).
//! - `chain`: the same tiny model over 365 days, alone and with one daily child reading it:
//!   the per-batch cost of reading an upstream table at the version just written.
//!
//! With `TIDEMARK_BENCH_S3=http://127.0.0.1:PORT` the warehouse is on that S3 server (see
//! `benches/s3.rs`), which gives the object-store latency of each scenario. With
//! `TIDEMARK_BENCH_SPARK=sc://127.0.0.1:PORT` the projects run on that Spark Connect server
//! (their generator in Spark SQL), and each scenario also reports where the remote batches
//! spent their time: on the engine, reading staged files back, committing.
//! With `TIDEMARK_BENCH_PHASES=1` each scenario also prints where its local batches spent
//! their time, per batch (`tidemark::local_batch_phases`). With `TIDEMARK_BENCH_PROJECT=DIR
//! TIDEMARK_BENCH_AT=YYYY-MM-DD` it runs only `plan --apply` of that project (a copy of the
//! side-by-side harness's, say), with the same report.
//! - `memory`: one batch of 1, 7, 90 and 365 days (100,000 rows/day) of the generator: peak
//!   memory of each, and its ratio to one day's.
//! - `full`, `merge`: the same rows computed by a FULL model (one whole-table batch) or an
//!   INCREMENTAL_BY_UNIQUE_KEY model (one MERGE batch) of 1, 7, 90 and 365 days: peak memory of
//!   each, and its ratio to one day's.
//! - `seed`: a SEED model of a CSV file of 0.1, 1 and 4 million rows (5 columns, types
//!   inferred): peak memory of each load, and its ratio to the smallest's.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod s3;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use clap::Parser;

const GENERATOR: &str = "MODEL (
  name raw.events,
  kind INCREMENTAL_BY_TIME_RANGE (time_column ds, batch_size BATCH)
);
SELECT
  CAST(d.day AS DATE) AS ds,
  s.n AS event_id,
  (s.n * 7919) % 1000 AS user_id,
  CAST((s.n * 104729) % 50 AS INT) AS category,
  CAST((s.n * 31) % 997 AS DOUBLE) / 10.0 AS amount
FROM unnest(generate_series(@start_dt, @end_dt, INTERVAL '1 day')) AS d(day)
CROSS JOIN unnest(generate_series(1, ROWS)) AS s(n)
";

/// The generator in Spark SQL.
const SPARK_GENERATOR: &str = "MODEL (
  name raw.events,
  kind INCREMENTAL_BY_TIME_RANGE (time_column ds, batch_size BATCH)
);
SELECT
  CAST(d.day AS DATE) AS ds,
  s.n AS event_id,
  (s.n * 7919) % 1000 AS user_id,
  CAST((s.n * 104729) % 50 AS INT) AS category,
  CAST((s.n * 31) % 997 AS DOUBLE) / 10.0 AS amount
FROM (SELECT explode(sequence(@start_dt, @end_dt, INTERVAL 1 DAY)) AS day) AS d
CROSS JOIN (SELECT explode(sequence(CAST(1 AS BIGINT), CAST(ROWS AS BIGINT))) AS n) AS s
";

/// The Spark Connect server to run on, if any.
fn spark() -> Option<String> {
    std::env::var("TIDEMARK_BENCH_SPARK")
        .ok()
        .filter(|s| !s.is_empty())
}

/// A project of one model computing the generator's rows for `days` days from 2023-01-01 in
/// one batch: FULL (`keyed` false), or INCREMENTAL_BY_UNIQUE_KEY on `(ds, event_id)` (`keyed`).
/// Returns the execution time that makes the batch due.
fn one_batch_project(p: &Path, days: u32, keyed: bool) -> String {
    project(p, "2023-01-01", 0, 1, 0, 0);
    let from = chrono::NaiveDate::from_ymd_opt(2023, 1, 1).unwrap();
    let to = from + chrono::Duration::days(i64::from(days) - 1);
    let generator = if spark().is_some() {
        SPARK_GENERATOR
    } else {
        GENERATOR
    };
    let (_, query) = generator.split_once(");\n").unwrap();
    let query = query.replace("ROWS", "100000");
    let model = if keyed {
        format!(
            "MODEL (name raw.keyed, kind INCREMENTAL_BY_UNIQUE_KEY (unique_key (ds, event_id), batch_size {days}));\n{query}"
        )
    } else {
        let query = query
            .replace("@start_dt", &format!("CAST('{from}' AS TIMESTAMP)"))
            .replace("@end_dt", &format!("CAST('{to}' AS TIMESTAMP)"));
        format!("MODEL (name raw.snapshot, kind FULL);\n{query}")
    };
    std::fs::remove_file(p.join("models/raw/events.sql")).unwrap();
    write(p, "models/raw/one.sql", &model);
    (to + chrono::Duration::days(1)).to_string()
}

fn write(p: &Path, rel: &str, text: &str) {
    let f = p.join(rel);
    std::fs::create_dir_all(f.parent().unwrap()).unwrap();
    std::fs::write(f, text).unwrap();
}

/// A project: the generator (`rows` per day, `batch` days per batch) plus `transforms`
/// row-preserving models and `aggregates` daily aggregations reading it.
fn project(p: &Path, start: &str, rows: u64, batch: u32, transforms: usize, aggregates: usize) {
    write(
        p,
        "tidemark.toml",
        &format!(
            "[project]\nname = \"bench\"\n\n[model_defaults]\nstart = \"{start}\"\ncron = \"@daily\"\n{}",
            spark()
                .map(|r| format!("\n[engine]\nkind = \"spark\"\nremote = \"{r}\"\n"))
                .unwrap_or_default()
        ),
    );
    let generator = if spark().is_some() {
        SPARK_GENERATOR
    } else {
        GENERATOR
    };
    write(
        p,
        "models/raw/events.sql",
        &generator
            .replace("BATCH", &batch.to_string())
            .replace("ROWS", &rows.to_string()),
    );
    for i in 0..transforms {
        write(
            p,
            &format!("models/bench/t{i:02}.sql"),
            &format!(
                "MODEL (name bench.t{i:02}, kind INCREMENTAL_BY_TIME_RANGE (time_column ds, batch_size {batch}));
SELECT ds, event_id, user_id, category, amount * {f} AS amount, amount > {i}0 AS big
FROM raw.events WHERE ds BETWEEN @start_ds AND @end_ds\n",
                f = i + 1
            ),
        );
    }
    for i in 0..aggregates {
        write(
            p,
            &format!("models/bench/a{i:02}.sql"),
            &format!(
                "MODEL (name bench.a{i:02}, kind INCREMENTAL_BY_TIME_RANGE (time_column ds, batch_size {batch}));
SELECT ds, (user_id + {i}) % 100 AS bucket, COUNT(*) AS n, SUM(amount) AS amount
FROM raw.events WHERE ds BETWEEN @start_ds AND @end_ds GROUP BY 1, 2\n"
            ),
        );
    }
    s3::place(p);
}

/// In the child: run tidemark's CLI in process, then print peak memory.
fn child(project: &str, now: &str) {
    let cli = tidemark::cli::Cli::try_parse_from([
        "tidemark",
        "--project",
        project,
        "--execution-time",
        now,
        "plan",
        "--apply",
    ])
    .unwrap();
    let mut out = Vec::new();
    let status = tidemark::run(cli, tidemark::printer::Printer::plain(), &mut out).unwrap();
    assert_eq!(status, tidemark::ExitStatus::Success);
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|k| k.parse::<u64>().ok())
        .unwrap_or(0);
    println!("hwm_kib={hwm}");
    let (n, engine, read_back, commit) = tidemark::remote_batch_phases();
    println!("phases={n},{engine},{read_back},{commit}");
    let (n, local) = tidemark::local_batch_phases();
    let local: Vec<String> = local.iter().map(|(_, s)| s.to_string()).collect();
    println!("local={n},{}", local.join(","));
}

/// Run the apply in a child process: (seconds, peak MiB); prints where remote batches spent
/// their time, if any ran.
fn measure(project: &Path, now: &str) -> (f64, f64) {
    let started = Instant::now();
    let out = Command::new(std::env::current_exe().unwrap())
        .env("TIDEMARK_BENCH_CHILD", project)
        .env("TIDEMARK_BENCH_NOW", now)
        .stderr(std::process::Stdio::null())
        .output()
        .unwrap();
    let secs = started.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let kib: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("hwm_kib="))
        .and_then(|k| k.parse().ok())
        .unwrap_or(0.0);
    let phases: Vec<f64> = text
        .lines()
        .find_map(|l| l.strip_prefix("phases="))
        .map(|p| p.split(',').filter_map(|v| v.parse().ok()).collect())
        .unwrap_or_default();
    let local: Vec<f64> = text
        .lines()
        .find_map(|l| l.strip_prefix("local="))
        .map(|p| p.split(',').filter_map(|v| v.parse().ok()).collect())
        .unwrap_or_default();
    if let Some((&n, seconds)) = local.split_first()
        && n > 0.0
        && std::env::var_os("TIDEMARK_BENCH_PHASES").is_some()
    {
        let (_, names) = tidemark::local_batch_phases();
        println!("  local batches: {n:.0}; per batch:");
        for ((name, _), s) in names.iter().zip(seconds) {
            println!("    {name:<24} {:6.2} ms", s * 1000.0 / n);
        }
    }
    if let [n, engine, read_back, commit] = phases[..]
        && n > 0.0
    {
        println!(
            "  remote batches: {n:.0}; per batch: engine {:.1} ms, read-back {:.1} ms, commit {:.1} ms",
            engine * 1000.0 / n,
            read_back * 1000.0 / n,
            commit * 1000.0 / n
        );
    }
    (secs, kib / 1024.0)
}

fn main() {
    if let (Ok(p), Ok(now)) = (
        std::env::var("TIDEMARK_BENCH_CHILD"),
        std::env::var("TIDEMARK_BENCH_NOW"),
    ) {
        child(&p, &now);
        return;
    }
    let picked: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let want = |s: &str| picked.is_empty() || picked.iter().any(|p| p == s);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "workers: {cores} (default: one per core); warehouse on {}; engine: {}",
        s3::label(),
        spark().map_or("DataFusion (in process)".to_string(), |r| format!(
            "Spark Connect at {r}"
        ))
    );
    if let Ok(project) = std::env::var("TIDEMARK_BENCH_PROJECT") {
        // Any project, e.g. the side-by-side harness's: `plan --apply` at TIDEMARK_BENCH_AT.
        let now = std::env::var("TIDEMARK_BENCH_AT").expect("TIDEMARK_BENCH_AT=YYYY-MM-DD");
        let (secs, mib) = measure(Path::new(&project), &now);
        println!("project {project}: {secs:.1} s, peak {mib:.0} MiB");
        return;
    }
    if want("wide") {
        let tmp = tempfile::tempdir().unwrap();
        project(tmp.path(), "2024-01-01", 100_000, 30, 10, 9);
        let (secs, mib) = measure(tmp.path(), "2024-03-31");
        let rows = 90.0 * 100_000.0 * 11.0; // generator + 10 row-preserving models
        println!(
            "wide: 20 models x 90 days x 100,000 rows/day: {secs:.1} s, {:.2} M rows written/s \
             (9.0 M source rows, {:.0} M rows written incl. aggregates' inputs read), peak {mib:.0} MiB",
            rows / secs / 1e6,
            rows / 1e6
        );
    }
    if want("partitions") {
        let tmp = tempfile::tempdir().unwrap();
        project(tmp.path(), "2021-01-01", 10, 1, 0, 0);
        let (secs, mib) = measure(tmp.path(), "2024-01-01");
        println!(
            "partitions: 1,095 daily partitions of a tiny model, one batch each: {secs:.1} s, \
             {:.1} ms per partition, peak {mib:.0} MiB",
            secs * 1000.0 / 1095.0
        );
    }
    if want("chain") {
        let alone = tempfile::tempdir().unwrap();
        project(alone.path(), "2023-01-01", 10, 1, 0, 0);
        let (s1, _) = measure(alone.path(), "2024-01-01");
        let chain = tempfile::tempdir().unwrap();
        project(chain.path(), "2023-01-01", 10, 1, 0, 1);
        let (s2, mib) = measure(chain.path(), "2024-01-01");
        println!(
            "chain: 365 daily partitions of a tiny model alone {s1:.1} s; with a daily child \
             reading it {s2:.1} s: {:.1} ms per child batch, peak {mib:.0} MiB",
            (s2 - s1) * 1000.0 / 365.0
        );
    }
    if want("memory") {
        // One batch of 1, 7, 90 and 365 days of 100,000 rows a day: peak memory should follow
        // the flush bound, not the batch.
        let now = chrono::NaiveDate::from_ymd_opt(2024, 1, 1).unwrap();
        let mut one_day = None;
        for days in [1u32, 7, 90, 365] {
            let tmp = tempfile::tempdir().unwrap();
            let start = now - chrono::Duration::days(i64::from(days));
            project(tmp.path(), &start.to_string(), 100_000, days, 0, 0);
            let (secs, mib) = measure(tmp.path(), &now.to_string());
            let base = *one_day.get_or_insert(mib);
            println!(
                "memory: one {days}-day batch ({:.1} M rows): peak {mib:.0} MiB, {:.2}x one day's ({secs:.1} s)",
                f64::from(days) * 0.1,
                mib / base
            );
        }
    }
    for (scenario, keyed, kind) in [("full", false, "FULL"), ("merge", true, "UNIQUE_KEY")] {
        if !want(scenario) {
            continue;
        }
        // The same rows from a FULL or a unique-key model, in one batch.
        let mut one_day = None;
        for days in [1u32, 7, 90, 365] {
            let tmp = tempfile::tempdir().unwrap();
            let now = one_batch_project(tmp.path(), days, keyed);
            let (secs, mib) = measure(tmp.path(), &now);
            let base = *one_day.get_or_insert(mib);
            println!(
                "{scenario}: one {days}-day {kind} batch ({:.1} M rows): peak {mib:.0} MiB, {:.2}x one day's ({secs:.1} s)",
                f64::from(days) * 0.1,
                mib / base
            );
        }
    }
    if want("seed") {
        // A seed's CSV streams into the table: memory should not follow the file.
        let mut smallest = None;
        for rows in [100_000u64, 1_000_000, 4_000_000] {
            let tmp = tempfile::tempdir().unwrap();
            seed_project(tmp.path(), rows);
            let (secs, mib) = measure(tmp.path(), "2023-01-02");
            let base = *smallest.get_or_insert(mib);
            let csv = std::fs::metadata(tmp.path().join("seeds/big.csv"))
                .unwrap()
                .len();
            println!(
                "seed: a {:.1} M-row CSV ({:.0} MiB): peak {mib:.0} MiB, {:.2}x the 0.1 M-row load's ({secs:.1} s)",
                rows as f64 / 1e6,
                csv as f64 / 1_048_576.0,
                mib / base
            );
        }
    }
}

/// A project of one SEED model: a CSV file of `rows` rows and 5 columns (id, date, text,
/// integer, decimal), types inferred.
fn seed_project(p: &Path, rows: u64) {
    use std::io::Write;
    project(p, "2023-01-01", 0, 1, 0, 0);
    std::fs::remove_file(p.join("models/raw/events.sql")).unwrap();
    write(
        p,
        "models/raw/big.sql",
        "MODEL (name raw.big, kind SEED (path '../../seeds/big.csv'));\n",
    );
    std::fs::create_dir_all(p.join("seeds")).unwrap();
    let f = std::fs::File::create(p.join("seeds/big.csv")).unwrap();
    let mut out = std::io::BufWriter::new(f);
    writeln!(out, "id,day,region,units,amount").unwrap();
    for n in 0..rows {
        writeln!(
            out,
            "{n},2023-01-{:02},region_{},{},{}.{:02}",
            n % 28 + 1,
            (n * 7919) % 50,
            (n * 104_729) % 1000,
            (n * 31) % 997,
            n % 100
        )
        .unwrap();
    }
    out.flush().unwrap();
}
