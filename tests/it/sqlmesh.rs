//! SQLMesh projects (issue 19): fixture projects written the way SQLMesh users write them load
//! unchanged, plan, and apply with the rows SQLMesh produces.

use crate::common::{copy_project, csv, fixture, ok, tidemark};

/// `sqlmesh init`'s example, files unchanged (a `tidemark.toml` instead of `config.yaml`):
/// a SEED with a path relative to its model, trailing commas, an audit file with an `AUDIT`
/// header, `dialect duckdb` in the defaults.
#[test]
fn the_sqlmesh_init_example_loads_plans_and_applies() {
    let (_t, p) = copy_project(&fixture("projects/sqlmesh_init"));
    let info = tidemark(&p, &["info"]);
    assert_eq!(info.code, 0, "{}", info.transcript());
    assert!(info.stderr.is_empty(), "no warning: {}", info.stderr);
    ok(&p, &["--execution-time", "2020-01-08", "plan", "--apply"]);
    assert_eq!(
        csv(
            &p,
            "prod",
            "SELECT item_id, num_orders FROM sqlmesh_example.full_model ORDER BY item_id"
        ),
        "item_id,num_orders\n1,5\n2,1\n3,1\n"
    );
    assert_eq!(
        csv(
            &p,
            "prod",
            "SELECT COUNT(*) AS n, MIN(event_date) AS lo, MAX(event_date) AS hi FROM sqlmesh_example.incremental_model"
        ),
        "n,lo,hi\n7,2020-01-01,2020-01-07\n"
    );
    // The audit is an `AUDIT (...)` file: a negative item id fails the batch before its commit.
    let seed = p.join("seeds/seed_data.csv");
    let text = std::fs::read_to_string(&seed).unwrap();
    std::fs::write(&seed, format!("{text}8,-1,2020-01-07\n")).unwrap();
    let r = tidemark(&p, &["--execution-time", "2020-01-08", "plan", "--apply"]);
    assert_eq!(r.code, 2, "{}", r.transcript());
    assert!(
        r.stderr
            .contains("audit `assert_positive_order_ids` failed"),
        "{}",
        r.stderr
    );
}
