//! Benchmark: the cost late-data detection adds to `plan` (issue 17).
//!
//! Run: `cargo bench --bench late`. Per case it writes a Delta source of `history` commits with
//! delta-rs (one small file each, rows of one day, no checkpoint: the worst case for reading a
//! log), builds prod from it through the CLI (a daily model over three years), appends `new`
//! commits of late rows into days already computed, and times `tidemark plan --format json`
//! (median of 5, file cache warm), which reads the source's log from the version prod read.
//! The figure to compare is the plan with and without the detection's work: a source without
//! new commits costs one listing of its log.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Date32Array, Int64Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema};

/// Days since 1970-01-01 of 2020-01-01.
const START: i32 = 18_262;

fn append(dir: &Path, rt: &tokio::runtime::Runtime, day: i32, id: i64) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("day", DataType::Date32, false),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(vec![id])),
            Arc::new(Date32Array::from(vec![START + day])),
        ],
    )
    .unwrap();
    let url = url::Url::from_directory_path(dir).unwrap();
    rt.block_on(async {
        let table = deltalake::DeltaTable::try_from_url(url).await.unwrap();
        table
            .write(vec![batch])
            .with_save_mode(deltalake::protocol::SaveMode::Append)
            .await
            .unwrap();
    });
}

fn tidemark(p: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .arg("--project")
        .arg(p)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.code().is_some_and(|c| c <= 1),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn case(history: usize, new: usize) -> (Duration, Duration) {
    let t = tempfile::tempdir().unwrap();
    let p = t.path();
    std::fs::create_dir_all(p.join("models/m")).unwrap();
    std::fs::create_dir_all(p.join("data/events")).unwrap();
    std::fs::write(
        p.join("tidemark.toml"),
        "[project]\nname = \"late\"\n\n[model_defaults]\nstart = \"2020-01-01\"\n\n\
         [sources.\"raw.events\"]\npath = \"data/events\"\nformat = \"delta\"\ntime_column = \"day\"\n",
    )
    .unwrap();
    std::fs::write(
        p.join("models/m/daily.sql"),
        "MODEL (name m.daily, kind INCREMENTAL_BY_TIME_RANGE (time_column day, batch_size 366));\n\
         SELECT day, COUNT(*) AS events FROM raw.events WHERE day BETWEEN @start_date AND @end_date GROUP BY day\n",
    )
    .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let source = p.join("data/events");
    for i in 0..history - new {
        append(&source, &rt, (i % 1_000) as i32, i as i64);
    }
    let now = ["--execution-time", "2023-01-01"];
    tidemark(p, &[&now[..], &["plan", "--apply"]].concat());
    let plan = [&now[..], &["plan", "--format", "json"]].concat();
    let time = |expect_late: bool| {
        let runs: Vec<Duration> = (0..5)
            .map(|_| {
                let t0 = Instant::now();
                let out = tidemark(p, &plan);
                let d = t0.elapsed();
                assert_eq!(out.contains("\"late_data\""), expect_late);
                d
            })
            .collect();
        median(runs)
    };
    let before = time(false);
    for i in 0..new {
        append(&source, &rt, (i * 7 % 1_000) as i32, 1_000_000 + i as i64);
    }
    (before, time(new > 0))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    println!("late-data detection: `plan` with a Delta source (median of 5, release build)");
    println!(
        "| source commits | new since prod read it | plan, nothing new | plan, with the new commits |"
    );
    println!("|---:|---:|---:|---:|");
    for (history, new) in [(10, 1), (1_000, 1), (1_000, 10), (1_000, 100)] {
        let (before, after) = case(history, new);
        println!(
            "| {history} | {new} | {:.1} ms | {:.1} ms |",
            before.as_secs_f64() * 1e3,
            after.as_secs_f64() * 1e3
        );
    }
}
