//! The analysis cache never serves a stale analysis: an edit, a config change, another build,
//! a broken entry or a concurrent writer all give what parsing from scratch gives.

use std::path::Path;

use super::*;
use crate::project::{Project, config, read_model_files};

const TOML: &str = "[project]\nname = \"c\"\n\n[model_defaults]\nstart = \"2024-01-01\"\n";

const ORDERS: &str = "MODEL (name raw.orders, kind INCREMENTAL_BY_TIME_RANGE (time_column ds));\nSELECT CAST(ds AS DATE) AS ds, id, upper(item) AS item, @fee AS fee FROM src.orders WHERE ds BETWEEN @start_ds AND @end_ds";

const DAILY: &str = "MODEL (name mart.daily, kind FULL, audits (not_null(columns := [n])));\n-- the daily count\nSELECT ds, count(*) AS n FROM raw.orders GROUP BY ds";

fn project(dir: &Path, fee: &str) {
    std::fs::create_dir_all(dir.join("models/raw")).unwrap();
    std::fs::create_dir_all(dir.join("models/mart")).unwrap();
    std::fs::write(
        dir.join("tidemark.toml"),
        format!("{TOML}\n[variables]\nfee = {fee}\n\n[sources.\"src.orders\"]\npath = \"data/orders.parquet\"\nformat = \"parquet\"\ncolumns = {{ ds = \"DATE\", id = \"BIGINT\", item = \"VARCHAR\" }}\n"),
    )
    .unwrap();
    std::fs::write(dir.join("models/raw/orders.sql"), ORDERS).unwrap();
    std::fs::write(dir.join("models/mart/daily.sql"), DAILY).unwrap();
}

/// Load `dir` through the cache of build `build` (`None`: no cache).
fn load(dir: &Path, build: Option<&str>) -> Project {
    try_load(dir, build).unwrap()
}

fn try_load(dir: &Path, build: Option<&str>) -> crate::error::Result<Project> {
    let config = config::load_config(&dir.join("tidemark.toml")).unwrap();
    let files = read_model_files(&config).unwrap();
    Project::from_files_with(config, files, |c| match build {
        Some(b) => Cache::with_build(c.root.join(PACK), c, b),
        None => Cache::off(),
    })
}

/// Everything a load produced, as text; queries compared as ASTs and as SQL.
fn summary(p: &Project) -> String {
    let models = serde_json::to_string_pretty(&p.models).unwrap();
    let queries: Vec<String> = p
        .models
        .values()
        .map(|m| format!("{:?}", m.query().map(crate::sql::canonical)))
        .collect();
    format!(
        "{models}\n{queries:?}\n{:?}\n{:?}\n{:?}",
        p.parents, p.self_referencing, p.warnings
    )
}

fn entries(dir: &Path) -> usize {
    std::fs::File::open(dir.join(PACK))
        .ok()
        .and_then(|f| read_index(&f))
        .map_or(0, |i| i.len())
}

#[test]
fn a_warm_load_is_the_cold_load() {
    let dir = tempfile::tempdir().unwrap();
    project(dir.path(), "1");
    let fresh = load(dir.path(), None);
    let cold = load(dir.path(), Some("b1"));
    assert_eq!(entries(dir.path()), 2);
    let warm = load(dir.path(), Some("b1"));
    assert_eq!(summary(&fresh), summary(&cold));
    assert_eq!(summary(&fresh), summary(&warm));
    // The lazily parsed query of a cached model is the query the file gave.
    for (name, m) in &warm.models {
        assert_eq!(m.query(), fresh.models[name].query(), "{name}");
        assert!(m.query().is_some());
    }
    // Positions of function calls are the file's, not the canonical SQL's.
    let upper = &warm.models[&crate::names::ModelName::parse("raw.orders").unwrap()].functions;
    assert!(upper.contains(&("upper".to_string(), 2, 36)), "{upper:?}");
}

#[test]
fn an_edit_a_config_change_and_another_build_are_never_served_stale() {
    let dir = tempfile::tempdir().unwrap();
    project(dir.path(), "1");
    let orders = crate::names::ModelName::parse("raw.orders").unwrap();
    let first = load(dir.path(), Some("b1"));
    assert!(first.models[&orders].canonical_sql.contains("1 AS fee"));

    // An edit of the file.
    std::fs::write(
        dir.path().join("models/raw/orders.sql"),
        ORDERS.replace("upper(item)", "lower(item)"),
    )
    .unwrap();
    let edited = load(dir.path(), Some("b1"));
    assert!(edited.models[&orders].canonical_sql.contains("lower(item)"));
    assert_eq!(summary(&edited), summary(&load(dir.path(), None)));

    // A config change: the variable's value is in the query.
    project(dir.path(), "2");
    let changed = load(dir.path(), Some("b1"));
    assert!(changed.models[&orders].canonical_sql.contains("2 AS fee"));
    assert_eq!(summary(&changed), summary(&load(dir.path(), None)));

    // Another build never reads this build's entries: an entry made to look like build b1's
    // analysis of the current file is served to b1 only.
    let config = config::load_config(&dir.path().join("tidemark.toml")).unwrap();
    let b1 = Cache::with_build(dir.path().join(PACK), &config, "b1");
    let b2 = Cache::with_build(dir.path().join(PACK), &config, "b2");
    let rel = Path::new("models/raw/orders.sql");
    let bytes = std::fs::read(dir.path().join(rel)).unwrap();
    assert_ne!(b1.key(rel, &bytes), b2.key(rel, &bytes));
    assert!(b1.get(&b1.key(rel, &bytes)).is_some());
    assert!(b2.get(&b2.key(rel, &bytes)).is_none());
    let planted = Loaded::Disabled(None);
    b2.put(&b2.key(rel, &bytes), &planted);
    b2.finish();
    let b2 = Cache::with_build(dir.path().join(PACK), &config, "b2");
    assert!(matches!(
        b2.get(&b2.key(rel, &bytes)),
        Some(Loaded::Disabled(None))
    ));
    assert!(b1.get(&b1.key(rel, &bytes)).is_some());
    // (And a planted entry is served only under its own key: b1 and b3 parse the file.)
    assert_eq!(
        summary(&load(dir.path(), Some("b1"))),
        summary(&load(dir.path(), None))
    );
    let other = load(dir.path(), Some("b3"));
    assert_eq!(summary(&other), summary(&load(dir.path(), None)));
}

#[test]
fn broken_entries_are_misses_and_failed_files_are_not_stored() {
    let dir = tempfile::tempdir().unwrap();
    project(dir.path(), "1");
    load(dir.path(), Some("b1"));
    // An entry's body swapped for another's (another key inside), and the pack cut short in
    // the middle of the other entry.
    let pack = std::fs::read(dir.path().join(PACK)).unwrap();
    let idx = read_index(&std::fs::File::open(dir.path().join(PACK)).unwrap()).unwrap();
    assert_eq!(idx.len(), 2);
    let mut ranges: Vec<std::ops::Range<usize>> = idx
        .values()
        .map(|r| r.start as usize..r.end as usize)
        .collect();
    ranges.sort_by_key(|r| r.start);
    let (first, second) = (ranges[0].clone(), ranges[1].clone());
    let mut swapped = pack[..first.start].to_vec();
    let other = &pack[second.clone()];
    let body = if other.len() >= first.len() {
        other[..first.len()].to_vec()
    } else {
        let mut b = other.to_vec();
        b.resize(first.len(), b' ');
        b
    };
    swapped.extend_from_slice(&body);
    swapped.extend_from_slice(&pack[first.end..second.start + second.len() / 2]);
    std::fs::write(dir.path().join(PACK), &swapped).unwrap();
    assert_eq!(
        summary(&load(dir.path(), Some("b1"))),
        summary(&load(dir.path(), None))
    );
    // The load wrote a whole pack again.
    assert_eq!(entries(dir.path()), 2);
    std::fs::write(dir.path().join(PACK), b"something else\n").unwrap();
    assert_eq!(
        summary(&load(dir.path(), Some("b1"))),
        summary(&load(dir.path(), None))
    );
    // A pack cut short inside its index: nothing is served from it, and it is written whole
    // again.
    let pack = std::fs::read(dir.path().join(PACK)).unwrap();
    let index_at = FORMAT.len()
        + 1
        + pack[FORMAT.len() + 1..]
            .iter()
            .position(|b| *b == b'\n')
            .unwrap()
        + 1;
    std::fs::write(dir.path().join(PACK), &pack[..index_at + 70]).unwrap();
    assert_eq!(entries(dir.path()), 0);
    assert_eq!(
        summary(&load(dir.path(), Some("b1"))),
        summary(&load(dir.path(), None))
    );
    assert_eq!(entries(dir.path()), 2);
    // An index that points past the end of the file (a huge length or offset) is damaged:
    // nothing is served and nothing is allocated for it.
    let pack = std::fs::read(dir.path().join(PACK)).unwrap();
    let head = FORMAT.len() + 1;
    let nl = head + pack[head..].iter().position(|b| *b == b'\n').unwrap();
    let len: usize = std::str::from_utf8(&pack[head..nl])
        .unwrap()
        .parse()
        .unwrap();
    let index = std::str::from_utf8(&pack[nl + 1..nl + 1 + len]).unwrap();
    let data = &pack[nl + 1 + len..];
    let mut records: Vec<String> = index.lines().map(str::to_string).collect();
    let key = records[0].split(' ').next().unwrap().to_string();
    records[0] = format!("{key} 0 18446744073709551000");
    let index = records.iter().map(|r| format!("{r}\n")).collect::<String>();
    let mut damaged = format!("{FORMAT}\n{}\n{index}", index.len()).into_bytes();
    damaged.extend_from_slice(data);
    std::fs::write(dir.path().join(PACK), damaged).unwrap();
    assert_eq!(entries(dir.path()), 0);
    assert_eq!(
        summary(&load(dir.path(), Some("b1"))),
        summary(&load(dir.path(), None))
    );

    // A file with an error is parsed (and reported) every time.
    std::fs::write(
        dir.path().join("models/mart/bad.sql"),
        "MODEL (name mart.bad);\nSELEC 1",
    )
    .unwrap();
    let config = config::load_config(&dir.path().join("tidemark.toml")).unwrap();
    let cache = Cache::with_build(dir.path().join(PACK), &config, "b1");
    for _ in 0..2 {
        let err = try_load(dir.path(), Some("b1")).unwrap_err();
        assert!(err.to_string().contains("bad.sql:2"), "{err}");
    }
    let rel = Path::new("models/mart/bad.sql");
    assert!(
        cache
            .get(&cache.key(rel, b"MODEL (name mart.bad);\nSELEC 1"))
            .is_none()
    );
}

#[test]
fn seeds_relative_starts_and_custom_gates_follow_what_they_read() {
    let dir = tempfile::tempdir().unwrap();
    project(dir.path(), "1");
    std::fs::create_dir_all(dir.path().join("seeds")).unwrap();
    std::fs::write(dir.path().join("seeds/items.csv"), "id,name\n1,a\n").unwrap();
    std::fs::write(
        dir.path().join("models/raw/items.sql"),
        "MODEL (name raw.items, kind SEED (path '$root/seeds/items.csv'), columns (id BIGINT, name VARCHAR))",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("models/raw/recent.sql"),
        "MODEL (name raw.recent, kind FULL, start '1 year ago');\nSELECT 1 AS x",
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("gates")).unwrap();
    std::fs::write(dir.path().join("gates/steady.sql"), "SELECT 1 WHERE false").unwrap();
    std::fs::write(
        dir.path().join("models/mart/gated.sql"),
        "MODEL (name mart.gated, kind FULL, gates (steady));\nSELECT 1 AS x",
    )
    .unwrap();
    let items = crate::names::ModelName::parse("raw.items").unwrap();
    let first = load(dir.path(), Some("b1"));
    // Seeds and relative starts are not stored: the CSV and the clock are read every time.
    assert_eq!(entries(dir.path()), 3);
    std::fs::write(dir.path().join("seeds/items.csv"), "id,name\n1,a\n2,b\n").unwrap();
    let second = load(dir.path(), Some("b1"));
    assert_ne!(
        first.models[&items].seed_hash,
        second.models[&items].seed_hash
    );
    assert_eq!(summary(&second), summary(&load(dir.path(), None)));
    // Removing a custom gate's file makes the model that names it fail, cache or not.
    std::fs::remove_file(dir.path().join("gates/steady.sql")).unwrap();
    let err = try_load(dir.path(), Some("b1")).unwrap_err();
    assert!(err.to_string().contains("unknown gate `steady`"), "{err}");
}

#[test]
fn concurrent_loads_into_an_empty_cache_agree() {
    let dir = tempfile::tempdir().unwrap();
    project(dir.path(), "1");
    for i in 0..20 {
        std::fs::write(
            dir.path().join(format!("models/mart/m{i}.sql")),
            format!("MODEL (name mart.m{i}, kind VIEW);\nSELECT ds, n + {i} AS n FROM mart.daily"),
        )
        .unwrap();
    }
    let expected = summary(&load(dir.path(), None));
    let got: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..6)
            .map(|_| s.spawn(|| summary(&load(dir.path(), Some("b1")))))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for g in got {
        assert_eq!(g, expected);
    }
    // Whichever run wrote last, the pack is whole and serves the same.
    assert!(entries(dir.path()) <= 22);
    assert_eq!(summary(&load(dir.path(), Some("b1"))), expected);
    assert_eq!(entries(dir.path()), 22);
    assert_eq!(summary(&load(dir.path(), Some("b1"))), expected);
}
