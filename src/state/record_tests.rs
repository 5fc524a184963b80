//! [`ModelRecord::describes`] agrees with [`ModelRecord::of`]: true for the record built from
//! the model, false as soon as any one field differs.

use super::*;
use crate::project::Project;

#[test]
fn a_record_describes_its_model_and_no_record_that_differs_in_one_field() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("models")).unwrap();
    std::fs::write(
        dir.path().join("tidemark.toml"),
        "[project]\nname = \"r\"\n\n[model_defaults]\nstart = \"2024-01-01\"\n\n[sources.\"src.orders\"]\npath = \"data/orders.parquet\"\nformat = \"parquet\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("models/daily.sql"),
        "MODEL (name mart.daily, kind INCREMENTAL_BY_TIME_RANGE (time_column ds, batch_size 3), owner 'data', tags (a, b), grain (ds), audits (not_null(columns := [n])));\nSELECT ds, count(*) AS n FROM src.orders WHERE ds BETWEEN @start_ds AND @end_ds GROUP BY ds",
    )
    .unwrap();
    let project = Project::load_without_cache(&dir.path().join("tidemark.toml")).unwrap();
    let m = project.models.values().next().unwrap();
    let record = ModelRecord::of(m, false);
    assert!(record.describes(m, false));
    assert!(!record.describes(m, true), "self_referencing");

    type Edit = fn(&mut ModelRecord);
    let edits: Vec<(&str, Edit)> = vec![
        ("file", |r| r.file.push('x')),
        ("kind", |r| r.kind = Kind::Full),
        ("cron", |r| r.cron = "@hourly".into()),
        ("interval_unit", |r| {
            r.interval_unit = crate::interval::IntervalUnit::Hour
        }),
        ("start", |r| r.start = None),
        ("end", |r| r.end = r.start),
        ("owner", |r| r.owner = None),
        ("tags", |r| {
            r.tags.insert("c".into());
        }),
        ("audits", |r| r.audits.clear()),
        ("gates", |r| {
            r.gates.push(crate::project::model::GateCall {
                name: "steady".into(),
                args: Default::default(),
            })
        }),
        ("grain", |r| r.grain.clear()),
        ("declared_dialect", |r| {
            r.declared_dialect = Some("duckdb".into())
        }),
        ("metadata", |r| {
            r.metadata.insert("k".into(), "v".into());
        }),
        ("stamp", |r| r.stamp = Some("s".into())),
        ("partitioned_by", |r| r.partitioned_by.push("p".into())),
        ("columns", |r| r.columns.push(("c".into(), "INT".into()))),
        ("forward_only", |r| r.forward_only = !r.forward_only),
        ("allow_partials", |r| r.allow_partials = !r.allow_partials),
        ("self_referencing", |r| {
            r.self_referencing = !r.self_referencing
        }),
        ("sql", |r| r.sql.push(' ')),
        ("seed_hash", |r| r.seed_hash = Some("h".into())),
        ("dialect", |r| r.dialect = crate::sql::Dialect::Spark),
    ];
    for (field, edit) in edits {
        let mut other = record.clone();
        edit(&mut other);
        assert_ne!(other, record, "{field}: the edit changed nothing");
        assert!(!other.describes(m, false), "{field}");
    }
}
