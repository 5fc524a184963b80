//! The analysis cache never changes a plan: after any sequence of edits (queries, formatting,
//! variables, headers, new and deleted models), the plan made from a project loaded through
//! the cache (cold for the edited files, then warm) is the plan made by parsing every file,
//! byte for byte — and so are the errors when an edit breaks the project.

use std::path::Path;

use proptest::prelude::*;

use crate::dag::Dag;
use crate::fingerprint::fingerprint_all;
use crate::interval::parse_instant;
use crate::names::EnvName;
use crate::plan::{Options, build, completed_actions, file::to_json};
use crate::project::Project;
use crate::state::StateStore;

const MODELS: [(&str, &str); 6] = [
    (
        "raw/orders.sql",
        "MODEL (name raw.orders, kind INCREMENTAL_BY_TIME_RANGE (time_column ds), grain id);\nSELECT ds, id, item, qty * @fee AS amount FROM src.orders WHERE ds BETWEEN @start_ds AND @end_ds AND qty > 0",
    ),
    (
        "raw/items.sql",
        "MODEL (name raw.items, kind FULL);\nSELECT DISTINCT item, upper(item) AS label FROM src.orders",
    ),
    (
        "mart/daily.sql",
        "MODEL (name mart.daily, kind INCREMENTAL_BY_TIME_RANGE (time_column ds), audits (not_null(columns := [n])));\nSELECT ds, count(*) AS n, sum(amount) AS amount FROM raw.orders WHERE ds BETWEEN @start_ds AND @end_ds GROUP BY ds",
    ),
    (
        "mart/by_item.sql",
        "MODEL (name mart.by_item, kind FULL);\n@DEF(top, 10);\nSELECT o.item, i.label, sum(o.amount) AS amount FROM raw.orders AS o JOIN raw.items AS i ON i.item = o.item GROUP BY o.item, i.label ORDER BY amount DESC LIMIT @top",
    ),
    (
        "mart/recent.sql",
        "MODEL (name mart.recent, kind VIEW);\nSELECT * FROM mart.daily WHERE n > 0",
    ),
    (
        "report/summary.sql",
        "MODEL (name report.summary, kind FULL);\nSELECT count(*) AS days, max(n) AS peak FROM mart.daily",
    ),
];

fn toml(fee: u8) -> String {
    format!(
        "[project]\nname = \"eq\"\n\n[model_defaults]\nstart = \"2024-01-01\"\n\n[variables]\nfee = {fee}\n\n[sources.\"src.orders\"]\npath = \"data/orders\"\nformat = \"delta\"\ncolumns = {{ ds = \"DATE\", id = \"BIGINT\", item = \"VARCHAR\", qty = \"BIGINT\" }}\n"
    )
}

/// One edit of the project.
#[derive(Debug, Clone)]
enum Edit {
    /// A query's meaning: the first `0` or `>` operand, or an added filter.
    Meaning(usize, u8),
    /// Formatting only: a comment and blank lines.
    Format(usize, u8),
    /// The variable's value.
    Variable(u8),
    /// A header property (the owner).
    Owner(usize, u8),
    /// A new model reading another one.
    Add(u8, usize),
    /// A model deleted (its readers then fail to load).
    Delete(usize),
    /// A model file broken (a syntax error), or mended.
    Break(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (0..MODELS.len(), any::<u8>()).prop_map(|(i, v)| Edit::Meaning(i, v)),
        (0..MODELS.len(), any::<u8>()).prop_map(|(i, v)| Edit::Format(i, v)),
        any::<u8>().prop_map(Edit::Variable),
        (0..MODELS.len(), any::<u8>()).prop_map(|(i, v)| Edit::Owner(i, v)),
        (0u8..4, 0..MODELS.len()).prop_map(|(n, p)| Edit::Add(n, p)),
        (0..MODELS.len()).prop_map(Edit::Delete),
        (0..MODELS.len()).prop_map(Edit::Break),
    ]
}

fn model_name(file: &str) -> String {
    file.trim_end_matches(".sql").replace('/', ".")
}

fn apply(dir: &Path, e: &Edit) {
    let path = |i: usize| dir.join("models").join(MODELS[i].0);
    let edit_file = |i: usize, f: &dyn Fn(String) -> String| {
        if let Ok(text) = std::fs::read_to_string(path(i)) {
            std::fs::write(path(i), f(text)).unwrap();
        }
    };
    match e {
        Edit::Meaning(i, v) => edit_file(*i, &|t| match t.find(" 0") {
            Some(at) => format!("{}{}{}", &t[..at + 1], v % 7, &t[at + 2..]),
            None => t.replacen(" FROM ", &format!(", {v} AS k{v} FROM "), 1),
        }),
        Edit::Format(i, v) => edit_file(*i, &|t| format!("-- note {v}\n\n{t}\n")),
        Edit::Variable(v) => std::fs::write(dir.join("tidemark.toml"), toml(*v % 5)).unwrap(),
        Edit::Owner(i, v) => edit_file(*i, &|t| {
            t.replacen("MODEL (", &format!("MODEL (owner team_{}, ", v % 3), 1)
        }),
        Edit::Add(n, p) => {
            let parent = model_name(MODELS[*p].0);
            std::fs::write(
                dir.join(format!("models/mart/extra_{n}.sql")),
                format!(
                    "MODEL (name mart.extra_{n}, kind FULL);\nSELECT count(*) AS c FROM {parent}"
                ),
            )
            .unwrap();
        }
        Edit::Delete(i) => {
            let _ = std::fs::remove_file(path(*i));
        }
        Edit::Break(i) => edit_file(*i, &|t| match t.strip_suffix(" SELEC") {
            Some(mended) => mended.to_string(),
            None => format!("{t} SELEC"),
        }),
    }
}

/// The plan (as its JSON file) or the errors (as shown), for the project in `dir`.
fn plan_text(dir: &Path, project: crate::error::Result<Project>) -> String {
    let now = parse_instant("2024-01-20").unwrap().at;
    let run = || -> crate::error::Result<String> {
        let project = project?;
        let dag = Dag::build(&project)?;
        let fps = fingerprint_all(&project, &dag);
        let store = StateStore::open_with(&project.config.warehouse, &project.config.storage)?;
        let state = store.read()?;
        let plan = build(&project, &fps, &state, &Options::new(&EnvName::prod(), now))?;
        to_json(&plan)
    };
    let _ = dir;
    match run() {
        Ok(json) => json,
        Err(e) => format!("error: {e}"),
    }
}

fn fresh_project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (file, text) in MODELS {
        let p = dir.path().join("models").join(file);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    std::fs::write(dir.path().join("tidemark.toml"), toml(1)).unwrap();
    // Deployed to prod as an apply records it, so plans compare against a real state.
    let config = dir.path().join("tidemark.toml");
    let project = Project::load_without_cache(&config).unwrap();
    let dag = Dag::build(&project).unwrap();
    let fps = fingerprint_all(&project, &dag);
    let store = StateStore::open_with(&project.config.warehouse, &project.config.storage).unwrap();
    let state = store.read().unwrap();
    let at = parse_instant("2024-01-10").unwrap().at;
    let plan = build(&project, &fps, &state, &Options::new(&EnvName::prod(), at)).unwrap();
    store
        .transact("deploy", |s| {
            completed_actions(&plan, s, at, &Default::default(), &Default::default())
        })
        .unwrap();
    dir
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn plans_with_and_without_the_analysis_cache_are_identical(
        edits in prop::collection::vec(prop::collection::vec(edit(), 1..4), 1..5),
    ) {
        let dir = fresh_project();
        let config = dir.path().join("tidemark.toml");
        // The cache is filled by the first load and carries stale entries into every step.
        let _ = Project::load(&config);
        for step in &edits {
            for e in step {
                apply(dir.path(), e);
            }
            let without = plan_text(dir.path(), Project::load_without_cache(&config));
            let cold = plan_text(dir.path(), Project::load(&config));
            let warm = plan_text(dir.path(), Project::load(&config));
            prop_assert_eq!(&without, &cold, "after {:?}", step);
            prop_assert_eq!(&without, &warm, "after {:?}", step);
        }
    }
}
