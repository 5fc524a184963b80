//! Benchmark: load + parse + DAG + fingerprint of synthetic projects.
//!
//! Run: `cargo bench --bench load` (optionally `-- 1000 10000` to choose sizes). Prints, per size,
//! the median and best of several runs of each stage, with the file cache warm.
//! With `TIDEMARK_BENCH_DIR=DIR`, projects are generated into `DIR/<size>` and kept (and reused
//! when already there), so a profiler can watch loading alone.

// Harness code: a failed setup step should abort loudly.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod synth;

use std::time::{Duration, Instant};

use tidemark::dag::Dag;
use tidemark::fingerprint::fingerprint_all;
use tidemark::project::Project;

fn main() {
    let sizes = synth::sizes_from_args();
    let runs = 7;
    println!(
        "threads: {}",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    for n in sizes {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = match std::env::var_os("TIDEMARK_BENCH_DIR") {
            Some(d) => std::path::PathBuf::from(d).join(n.to_string()),
            None => tmp.path().to_path_buf(),
        };
        std::fs::create_dir_all(&dir).expect("mkdir");
        let stats = if dir.join("tidemark.toml").exists() {
            None
        } else {
            Some(synth::generate(&dir, n, 42).expect("generate"))
        };
        if std::env::var_os("TIDEMARK_BENCH_BREAKDOWN").is_some() {
            breakdown(&dir);
        }
        match stats {
            Some(s) => println!(
                "models: {n} ({:.1} MB of SQL, {}-{} lines each)",
                s.bytes as f64 / 1e6,
                s.min_lines,
                s.max_lines
            ),
            None => println!("models: {n} (reused {})", dir.display()),
        }
        for mode in [Cache::Off, Cache::Cold, Cache::Warm] {
            measure(&dir, n, runs, mode);
        }
    }
}

/// How the analysis cache is used in a run.
#[derive(Clone, Copy, Debug)]
enum Cache {
    /// Turned off: every file parsed.
    Off,
    /// Emptied before each run: every file parsed and stored.
    Cold,
    /// Filled by the run before: nothing parsed.
    Warm,
}

fn measure(dir: &std::path::Path, n: usize, runs: usize, mode: Cache) {
    let config = dir.join("tidemark.toml");
    let cache_dir = dir.join(tidemark::project::cache::PACK);
    let _ = std::fs::remove_file(&cache_dir);
    if matches!(mode, Cache::Warm) {
        Project::load(&config).expect("load");
    }
    println!("  analysis cache: {mode:?}");
    let mut load = Vec::new();
    let mut dag = Vec::new();
    let mut fp = Vec::new();
    let mut total = Vec::new();
    for _ in 0..runs {
        if matches!(mode, Cache::Cold) {
            let _ = std::fs::remove_file(&cache_dir);
        }
        let t0 = Instant::now();
        let project = match mode {
            Cache::Off => Project::load_without_cache(&config),
            _ => Project::load(&config),
        }
        .expect("load");
        let t1 = Instant::now();
        let graph = Dag::build(&project).expect("dag");
        let t2 = Instant::now();
        let prints = fingerprint_all(&project, &graph);
        let t3 = Instant::now();
        assert_eq!(prints.len(), n + 1);
        load.push(t1 - t0);
        dag.push(t2 - t1);
        fp.push(t3 - t2);
        total.push(t3 - t0);
    }
    for (label, v) in [
        ("load+parse", &mut load),
        ("dag", &mut dag),
        ("fingerprint", &mut fp),
        ("total", &mut total),
    ] {
        v.sort();
        println!(
            "  {label:<12} median {:>8.1} ms   best {:>8.1} ms",
            ms(v[v.len() / 2]),
            ms(v[0])
        );
    }
}

/// Single-threaded cost of each step of reading one model, over every file of `dir`
/// (`TIDEMARK_BENCH_BREAKDOWN=1`).
fn breakdown(dir: &std::path::Path) {
    use datafusion::sql::sqlparser::parser::Parser;
    use datafusion::sql::sqlparser::tokenizer::Tokenizer;
    use tidemark::project::header::{Src, split};
    let mut files = Vec::new();
    let mut stack = vec![dir.join("models")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p)
            } else {
                files.push(std::fs::read_to_string(&p).expect("read"))
            }
        }
    }
    let mut t = [Duration::ZERO; 5];
    for text in &files {
        let a = Instant::now();
        let s = split(Src {
            file: std::path::Path::new("m.sql"),
            text,
        })
        .expect("split");
        let b = Instant::now();
        let tokens = Tokenizer::new(&tidemark::sql::DIALECT, &s.body)
            .tokenize_with_location()
            .expect("tokenize");
        let c = Instant::now();
        let stmts = Parser::new(&tidemark::sql::DIALECT)
            .with_tokens_with_locations(tokens)
            .parse_statements()
            .expect("parse");
        let d = Instant::now();
        let canonical = stmts[0].to_string();
        let e = Instant::now();
        let q = tidemark::sql::parse_query(
            std::path::Path::new("m.sql"),
            &s.body,
            tidemark::sql::Dialect::DataFusion,
        )
        .expect("q");
        let _ = tidemark::sql::analyze(&q);
        let f = Instant::now();
        std::hint::black_box(canonical);
        for (i, dt) in [b - a, c - b, d - c, e - d, f - e].into_iter().enumerate() {
            t[i] += dt;
        }
    }
    for (label, d) in [
        "header split",
        "tokenize",
        "parse",
        "to_string",
        "parse_query+analyze",
    ]
    .iter()
    .zip(t)
    {
        println!(
            "  {label:<20} {:>8.1} ms total, {:>6.1} µs/file",
            ms(d),
            d.as_secs_f64() * 1e6 / files.len() as f64
        );
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
