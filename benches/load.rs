//! Benchmark: load + parse + DAG + fingerprint of synthetic projects.
//!
//! Run: `cargo bench --bench load` (optionally `-- 1000 10000` to choose sizes). Prints, per size,
//! the median and best of several runs of each stage, with the file cache warm.

// Harness code: a failed setup step should abort loudly.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod synth;

use std::time::{Duration, Instant};

use tidemark::dag::Dag;
use tidemark::fingerprint::fingerprint_all;
use tidemark::project::Project;

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![1_000, 10_000]
    } else {
        sizes
    };
    let runs = 7;
    println!(
        "threads: {}",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    for n in sizes {
        let tmp = tempfile::tempdir().expect("tempdir");
        let stats = synth::generate(tmp.path(), n, 42).expect("generate");
        let config = tmp.path().join("tidemark.toml");
        let mut load = Vec::new();
        let mut dag = Vec::new();
        let mut fp = Vec::new();
        let mut total = Vec::new();
        for _ in 0..runs {
            let t0 = Instant::now();
            let project = Project::load(&config).expect("load");
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
        println!(
            "models: {n} ({:.1} MB of SQL, {}-{} lines each)",
            stats.bytes as f64 / 1e6,
            stats.min_lines,
            stats.max_lines
        );
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
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
