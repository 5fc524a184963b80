//! Fuzzing the model-file reader (MODEL header + query) on stable Rust, with proptest.
//!
//! Two generators: real model files (the example project and every fixture) mutated at random
//! — slices deleted, duplicated, truncated, fragments spliced in — and the regression corpus in
//! `fixtures/fuzz/`. Properties: reading never panics, and every error names a location inside
//! the file (or the file itself).
//!
//! `TIDEMARK_FUZZ_CASES` sets the number of mutated inputs (default 256, seconds on CI); the long
//! run in docs/reliability.md uses millions.

use std::path::{Path, PathBuf};

use proptest::prelude::*;

use super::config::ModelDefaults;
use super::model::{Loaded, build};

/// Every `.sql` file under `dir`, recursively, sorted.
fn sql_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            sql_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "sql") {
            out.push(p);
        }
    }
}

/// The texts the mutations start from.
fn seeds() -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    sql_files(&root.join("examples/sushi/models"), &mut files);
    sql_files(&root.join("fixtures"), &mut files);
    files
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .collect()
}

/// Fragments spliced into model files: the header's and SQL's structural characters and words,
/// macros, quotes, comments, deep nesting, and non-ASCII.
const FRAGMENTS: &[&str] = &[
    "(",
    ")",
    "[",
    "]",
    ",",
    ";",
    "'",
    "\"",
    "`",
    ":=",
    "=",
    "@",
    "@start_ds",
    "@end_ts",
    "@this_model",
    "@each(",
    "MODEL (",
    "name",
    "kind",
    "VIEW",
    "SEED",
    "FULL",
    "INCREMENTAL_BY_TIME_RANGE",
    "INCREMENTAL_BY_UNIQUE_KEY (unique_key (",
    "time_column",
    "batch_size 0",
    "cron '@daily'",
    "cron '61 * * * *'",
    "start '2024-02-30'",
    "end '1900-01-01'",
    "grain",
    "audits (",
    "columns (",
    "not_null(columns := (",
    "SELECT",
    "FROM",
    "WHERE",
    "JOIN",
    "UNION ALL",
    "WITH x AS (",
    "/*",
    "*/",
    "--",
    "\n",
    "\r\n",
    "\t",
    "\u{0}",
    "\u{1b}[31m",
    "é",
    "\u{202e}",
    "𝔘",
    "..",
    "../../etc",
    "\\",
    "1e999",
    "-9223372036854775809",
    "((((((((((((((((((((((((((((((((((((((((",
];

fn mutate(text: &str, ops: &[(u8, usize, usize, usize)]) -> String {
    let mut s: Vec<char> = text.chars().collect();
    for &(op, at, len, frag) in ops {
        let n = s.len();
        let at = if n == 0 { 0 } else { at % (n + 1) };
        let end = (at + len % 40).min(n);
        match op % 5 {
            0 => {
                s.drain(at..end);
            }
            1 => {
                let piece: Vec<char> = s[at..end].to_vec();
                s.splice(at..at, piece);
            }
            2 => s.truncate(at),
            _ => {
                let f = FRAGMENTS[frag % FRAGMENTS.len()];
                s.splice(at..at, f.chars());
            }
        }
    }
    s.into_iter().collect()
}

/// Read `text` as the model file `models/s/m.sql`, checking the properties.
fn check(text: &str) {
    let file = Path::new("models/s/m.sql");
    let lines = text.split('\n').count() as u64;
    let loaded = build(
        Path::new("/nonexistent"),
        file,
        text,
        &ModelDefaults::default(),
        crate::sql::Dialect::DataFusion,
    );
    let diagnostics = match &loaded {
        Loaded::Model(_, warnings) => warnings.clone(),
        Loaded::Failed(d) => {
            assert!(!d.is_empty(), "a failure without a message");
            d.clone()
        }
        Loaded::Disabled(_) => Vec::new(),
    };
    for d in diagnostics {
        assert!(!d.message.is_empty());
        if let Some(l) = &d.location {
            assert_eq!(l.file, file, "{}", d.message);
            assert!(l.line <= lines, "line {} of {lines}: {}", l.line, d.message);
        }
    }
}

fn cases() -> u32 {
    std::env::var("TIDEMARK_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(256)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]
    #[test]
    fn mutated_model_files_never_panic_and_errors_point_inside(
        seed in any::<prop::sample::Index>(),
        ops in prop::collection::vec((any::<u8>(), any::<usize>(), any::<usize>(), any::<usize>()), 1..12),
    ) {
        let seeds = seeds();
        let text = seeds[seed.index(seeds.len())].clone();
        check(&mutate(&text, &ops));
    }
}

#[test]
fn the_regression_corpus_reads_without_panics() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/fuzz");
    let mut files = Vec::new();
    sql_files(&dir, &mut files);
    assert!(
        files.len() >= 10,
        "the corpus is missing: {}",
        dir.display()
    );
    for f in files {
        let bytes = std::fs::read(&f).unwrap_or_default();
        check(&String::from_utf8_lossy(&bytes));
    }
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    for depth in [100usize, 10_000, 200_000] {
        let header = format!(
            "MODEL (name s.m, tags {}x{});\nSELECT 1 AS x",
            "(".repeat(depth),
            ")".repeat(depth)
        );
        check(&header);
        let query = format!(
            "MODEL (name s.m);\nSELECT {}1{} AS x",
            "(".repeat(depth),
            ")".repeat(depth)
        );
        check(&query);
    }
}
