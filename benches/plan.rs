//! Benchmark: `plan` on a synthetic project with years of daily intervals in the state.
//!
//! Run: `cargo bench --bench plan` (optionally `-- 1000 10000`). Per size it generates the
//! project (benches/synth.rs), deploys it to prod through the library exactly as a completed
//! apply would record it (start 2021-01-01), appends 55 daily `run`-style commits that each mark
//! one more day complete in every table (so the state has a checkpoint plus a tail to replay),
//! then times, with the file cache warm:
//! - a no-op plan: load + parse + DAG + fingerprints, read the state, build the plan;
//! - the plan after one breaking change at a root model (its whole subtree rebuilt);
//! - `tidemark plan` (both cases) and `tidemark info` end to end: the release binary on the
//!   project, as a user runs it (the state is read while the project loads; output discarded).
//!
//! With `TIDEMARK_BENCH_KEEP=1` the generated project (breaking change included) is kept for
//! profiling the CLI on it.
//!
//! With `TIDEMARK_BENCH_S3=http://127.0.0.1:PORT` the state lives on that S3 server (see
//! `benches/s3.rs`): the `state` column is then the object-store read.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod s3;
mod synth;

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tidemark::dag::Dag;
use tidemark::fingerprint::fingerprint_all;
use tidemark::interval::{Interval, IntervalSet, parse_instant};
use tidemark::plan::{Options, build, completed_actions};
use tidemark::project::Project;
use tidemark::state::{Action, StateStore};

fn t(s: &str) -> DateTime<Utc> {
    parse_instant(s).unwrap().at
}

struct Timing {
    load: Duration,
    state: Duration,
    plan: Duration,
}

fn plan_once(
    config: &std::path::Path,
    now: DateTime<Utc>,
    cached: bool,
) -> (Timing, tidemark::plan::Plan) {
    let t0 = Instant::now();
    let project = if cached {
        Project::load(config)
    } else {
        Project::load_without_cache(config)
    }
    .unwrap();
    let dag = Dag::build(&project).unwrap();
    let fps = fingerprint_all(&project, &dag);
    let t1 = Instant::now();
    let store = StateStore::open_with(&project.config.warehouse, &project.config.storage).unwrap();
    let state = store.read().unwrap();
    let t2 = Instant::now();
    let plan = build(
        &project,
        &fps,
        &state,
        &Options::new(&tidemark::names::EnvName::prod(), now),
    )
    .unwrap();
    let t3 = Instant::now();
    (
        Timing {
            load: t1 - t0,
            state: t2 - t1,
            plan: t3 - t2,
        },
        plan,
    )
}

/// Median and best wall time of the release `tidemark` binary run `runs` times with `args` on the
/// project in `dir` at `now` (output discarded): what a user waits for, process start, the
/// state read alongside the project load, and output included.
fn cli(dir: &std::path::Path, now: DateTime<Utc>, args: &[&str], runs: usize) -> (f64, f64) {
    let now = tidemark::interval::format_ts(now);
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let t0 = Instant::now();
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_tidemark"))
                .arg("--project")
                .arg(dir)
                .args(["--execution-time", &now])
                .args(args)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .expect("run tidemark");
            assert!(
                out.code().is_some_and(|c| c <= 1),
                "tidemark {args:?}: {out}"
            );
            t0.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    (times[times.len() / 2], times[0])
}

fn report_cli(label: &str, (median, best): (f64, f64)) {
    println!("  {label:<16} end to end (CLI) median {median:>7.1} ms (best {best:.1})");
}

fn report(label: &str, runs: &mut [Timing]) {
    let med = |f: &dyn Fn(&Timing) -> Duration, runs: &mut [Timing]| {
        let mut v: Vec<Duration> = runs.iter().map(f).collect();
        v.sort();
        (v[v.len() / 2].as_secs_f64() * 1e3, v[0].as_secs_f64() * 1e3)
    };
    let (l, _) = med(&|x| x.load, runs);
    let (s, _) = med(&|x| x.state, runs);
    let (p, _) = med(&|x| x.plan, runs);
    let (tot, best) = med(&|x| x.load + x.state + x.plan, runs);
    println!(
        "  {label:<16} load {l:>7.1} ms  state {s:>6.1} ms  plan {p:>6.1} ms  total median {tot:>7.1} ms (best {best:.1})"
    );
}

fn main() {
    let sizes = synth::sizes_from_args();
    let runs = 5;
    for n in sizes {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        if std::env::var_os("TIDEMARK_BENCH_KEEP").is_some() {
            // Kept for profiling the CLI on it (`tidemark plan` in that directory).
            println!("project kept in {}", tmp.keep().display());
        }
        synth::generate(&dir, n, 42).expect("generate");
        s3::place(&dir);
        let config = dir.join("tidemark.toml");

        // Deploy, then 55 daily runs.
        let deployed_at = t("2025-11-01");
        let setup = Instant::now();
        let project = Project::load(&config).unwrap();
        let dag = Dag::build(&project).unwrap();
        let fps = fingerprint_all(&project, &dag);
        let store =
            StateStore::open_with(&project.config.warehouse, &project.config.storage).unwrap();
        let state = store.read().unwrap();
        let plan = build(
            &project,
            &fps,
            &state,
            &Options::new(&tidemark::names::EnvName::prod(), deployed_at),
        )
        .unwrap();
        store
            .transact("deploy", |s| {
                completed_actions(
                    &plan,
                    s,
                    deployed_at,
                    &Default::default(),
                    &Default::default(),
                )
            })
            .unwrap();
        let tables: Vec<tidemark::names::TableId> = plan
            .target
            .values()
            .filter_map(|t| t.table.clone())
            .collect();
        let mut day = deployed_at;
        for _ in 0..55 {
            let next = day + chrono::Duration::days(1);
            let actions: Vec<Action> = tables
                .iter()
                .map(|id| Action::AddIntervals {
                    table: id.clone(),
                    intervals: IntervalSet::of(Interval::new(day, next)),
                })
                .collect();
            store.transact("run", |_| Ok(actions.clone())).unwrap();
            day = next;
        }
        let now = day;
        let state = store.read().unwrap();
        let sample = state.tables.values().next().unwrap();
        println!(
            "models: {n}, state on {}; state: {} commits, {} tables, e.g. {} = {} ({} ranges); setup {:.1} s",
            s3::label(),
            state.seq,
            state.tables.len(),
            sample.id,
            sample.intervals,
            sample.intervals.ranges().len(),
            setup.elapsed().as_secs_f64()
        );

        // Without the analysis cache (every file parsed), then with it warm (the first load
        // below fills it).
        Project::load(&config).unwrap();
        for cached in [false, true] {
            let mut noop: Vec<Timing> = Vec::new();
            for _ in 0..runs {
                let (timing, plan) = plan_once(&config, now, cached);
                assert!(plan.models.is_empty(), "no-op plan has changes");
                noop.push(timing);
            }
            report(
                if cached {
                    "no-op, cache"
                } else {
                    "no-op, no cache"
                },
                &mut noop,
            );
        }

        report_cli("no-op plan", cli(&dir, now, &["plan"], runs));
        report_cli("info", cli(&dir, now, &["info"], runs));

        // One breaking change at the root.
        let root = walk(&dir.join("models"))
            .into_iter()
            .find(|p| {
                std::fs::read_to_string(p)
                    .unwrap()
                    .starts_with("-- Synthetic model 0.\n")
            })
            .unwrap();
        let text = std::fs::read_to_string(&root).unwrap();
        std::fs::write(
            &root,
            text.replacen(
                "a.amount IS NOT NULL",
                "a.amount IS NOT NULL AND a.amount > 0",
                1,
            ),
        )
        .unwrap();
        let mut affected = 0;
        let mut partitions = 0;
        for cached in [false, true] {
            let mut breaking: Vec<Timing> = Vec::new();
            for _ in 0..runs {
                let (timing, plan) = plan_once(&config, now, cached);
                affected = plan.models.len();
                partitions = plan.summary.partitions;
                breaking.push(timing);
            }
            report(
                if cached {
                    "breaking, cache"
                } else {
                    "breaking, no cache"
                },
                &mut breaking,
            );
        }
        report_cli("breaking plan", cli(&dir, now, &["plan"], runs));
        println!("  breaking root: {affected} models affected, {partitions} partitions to compute");
    }
}

fn walk(d: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(d).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
