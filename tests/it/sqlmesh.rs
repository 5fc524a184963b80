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

/// A project in SQLMesh's style (see its tidemark.toml): loads without a warning, applies, and
/// gives the rows computed here by hand from `data/orders.csv`.
#[test]
fn a_sqlmesh_style_project_applies_with_the_expected_rows() {
    let (_t, p) = copy_project(&fixture("projects/sqlmesh_style"));
    let info = tidemark(&p, &["info"]);
    assert_eq!(info.code, 0, "{}", info.transcript());
    assert!(info.stderr.is_empty(), "no warning: {}", info.stderr);
    ok(&p, &["--execution-time", "2024-01-04", "plan", "--apply"]);
    // EUR at 0.5: 10 → (100 + 40 + 60) / 2, 11 → (20.5 + 12) / 2, 12 → 7.5 / 2.
    assert_eq!(
        csv(
            &p,
            "prod",
            "SELECT customer_id, segment, total_eur, orders FROM shop.customer_totals ORDER BY 1"
        ),
        "customer_id,segment,total_eur,orders\n10,gold,100.0,3\n11,silver,16.25,2\n12,bronze,3.75,1\n"
    );
    // A relative start (`'1 week ago'`) is no change from one day to the next.
    let next_day = ok(
        &p,
        &["--execution-time", "2024-01-05", "plan", "--format", "json"],
    );
    let next_day: serde_json::Value = serde_json::from_str(&next_day).unwrap();
    assert!(
        next_day["models"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["change"] == "unchanged"),
        "{next_day}"
    );
    // A variable's value is part of the fingerprint of the models using it, and only theirs.
    let f = p.join("tidemark.toml");
    let config = std::fs::read_to_string(&f).unwrap();
    std::fs::write(
        &f,
        config.replace(
            "reporting_currency = \"EUR\"",
            "reporting_currency = \"USD\"",
        ),
    )
    .unwrap();
    let plan = ok(
        &p,
        &["--execution-time", "2024-01-04", "plan", "--format", "json"],
    );
    let plan: serde_json::Value = serde_json::from_str(&plan).unwrap();
    let changed: Vec<(&str, &str)> = plan["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["name"].as_str().unwrap(), m["change"].as_str().unwrap()))
        .collect();
    assert_eq!(
        changed,
        [("shop.customer_totals", "directly_modified")],
        "{plan}"
    );
    std::fs::write(&f, &config).unwrap();
    // A variable in a header value.
    let info: serde_json::Value =
        serde_json::from_str(&ok(&p, &["info", "--format", "json"])).unwrap();
    let stg = info["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "shop.stg_orders")
        .unwrap();
    assert_eq!(stg["owner"], "data-team", "{stg}");
    // Unaliased casts are named after their column; camelCase source columns read unquoted.
    assert_eq!(
        csv(
            &p,
            "prod",
            "SELECT order_id, customerid, orderedat FROM shop.stg_orders WHERE order_id = 4"
        ),
        "order_id,customerid,orderedat\n4,12,2024-01-02\n"
    );
}

/// What cannot load is said precisely: a Python model nobody declared, a model that failed to
/// load (never "unknown table", never a model suggested to itself), real Jinja, a statement
/// that is not a query (the word as written, and a hint).
#[test]
fn what_cannot_load_is_named_precisely() {
    let (_t, p) = copy_project(&fixture("projects/sqlmesh_style"));
    let config = std::fs::read_to_string(p.join("tidemark.toml")).unwrap();
    let without_fx = &config[..config.find("# What the Python model").unwrap()];
    std::fs::write(p.join("tidemark.toml"), without_fx).unwrap();
    let r = tidemark(&p, &["info"]);
    assert_eq!(r.code, 2, "{}", r.transcript());
    assert!(
        r.stderr.contains("error: `shop.fx_rates` is the Python model `models/shop/fx_rates.py`, which tidemark does not run\n  --> models/shop/customer_totals.sql:16:6")
            && r.stderr.contains("[sources.\"shop.fx_rates\"]"),
        "{}",
        r.stderr
    );
    // Read by nobody, it is still reported, as a warning.
    let totals = p.join("models/shop/customer_totals.sql");
    let text = std::fs::read_to_string(&totals).unwrap();
    std::fs::remove_file(&totals).unwrap();
    let r = tidemark(&p, &["info"]);
    assert_eq!(r.code, 0, "{}", r.transcript());
    assert!(
        r.stderr.starts_with("warning: `models/shop/fx_rates.py` is the Python model `shop.fx_rates`, which tidemark does not run\n  --> models/shop/fx_rates.py:8:1"),
        "{}",
        r.stderr
    );
    std::fs::write(&totals, &text).unwrap();
    std::fs::write(p.join("tidemark.toml"), &config).unwrap();

    // stg_orders fails to load: its readers are told so.
    let stg = p.join("models/shop/stg_orders.sql");
    let good = std::fs::read_to_string(&stg).unwrap();
    std::fs::write(
        &stg,
        good.replace("grain order_id,", "grain order_id, kind FULL,"),
    )
    .unwrap();
    let r = tidemark(&p, &["info"]);
    assert_eq!(r.code, 2, "{}", r.transcript());
    assert!(
        r.stderr.contains(
            "`shop.stg_orders` is defined in `models/shop/stg_orders.sql`, which failed to load"
        ) && !r.stderr.contains("unknown table"),
        "{}",
        r.stderr
    );
    // A reader of an unknown table is never offered itself.
    std::fs::write(&stg, &good).unwrap();
    std::fs::write(
        &totals,
        text.replace("FROM shop.stg_orders", "FROM shop.customer_total"),
    )
    .unwrap();
    let r = tidemark(&p, &["info"]);
    assert!(
        r.stderr.contains("unknown table `shop.customer_total`")
            && !r.stderr.contains("did you mean `shop.customer_totals`"),
        "{}",
        r.stderr
    );
    std::fs::write(&totals, &text).unwrap();

    // Real Jinja: refused at its line.
    std::fs::write(
        &stg,
        good.replace("FROM raw.orders", "FROM {{ var('orders') }}"),
    )
    .unwrap();
    let r = tidemark(&p, &["info"]);
    assert_eq!(r.code, 2, "{}", r.transcript());
    assert!(
        r.stderr
            .contains("error: Jinja is not supported\n  --> models/shop/stg_orders.sql:31:6"),
        "{}",
        r.stderr
    );
    // A wrapper keyword SQLMesh knows but written wrong: the word as written, and a hint.
    std::fs::write(
        &stg,
        good.replace("JINJA_QUERY_BEGIN;", "JINJA_QUERY_BEGINS;"),
    )
    .unwrap();
    let r = tidemark(&p, &["info"]);
    assert!(
        r.stderr.contains("found: JINJA_QUERY_BEGINS") && r.stderr.contains("hint:"),
        "{}",
        r.stderr
    );
}

/// Bugs found bringing SQLMesh projects: a seed with a header and no rows; a FULL model over
/// an incremental model with no interval yet; `query --format csv` on nested values.
#[test]
fn empty_seeds_unbuilt_parents_and_nested_csv_work() {
    let (_t, p) = copy_project(&fixture("projects/sqlmesh_init"));
    std::fs::write(p.join("seeds/seed_data.csv"), "id,item_id,event_date\n").unwrap();
    ok(&p, &["--execution-time", "2020-01-08", "plan", "--apply"]);
    assert_eq!(
        csv(
            &p,
            "prod",
            "SELECT COUNT(*) AS n FROM sqlmesh_example.seed_model"
        ),
        "n\n0\n"
    );

    let (_t, p) = copy_project(&fixture("projects/sqlmesh_init"));
    let f = p.join("models/incremental_model.sql");
    let text = std::fs::read_to_string(&f).unwrap();
    std::fs::write(&f, text.replace("start '2020-01-01'", "start '2020-02-01'")).unwrap();
    ok(
        &p,
        &[
            "--execution-time",
            "2020-01-08",
            "plan",
            "--apply",
            "--workers",
            "1",
        ],
    );
    assert_eq!(
        csv(
            &p,
            "prod",
            "SELECT COUNT(*) AS n FROM sqlmesh_example.full_model"
        ),
        "n\n0\n"
    );
    assert_eq!(
        csv(
            &p,
            "prod",
            "SELECT named_struct('a', 1, 'b', 'x') AS s, [1, 2] AS l"
        ),
        "s,l\n\"{a: 1, b: x}\",\"[1, 2]\"\n"
    );
    let r = tidemark(&p, &["query", "SELECT * FROM nowhere.at_all"]);
    assert!(
        r.stderr.contains("hint:") && !r.stderr.contains("sushi"),
        "{}",
        r.stderr
    );
}

/// SQLMesh unit tests: `tidemark test` runs them in memory (nothing is written), shows a diff
/// of a failure and exits 1; `plan --run-tests` refuses to apply while one fails.
#[test]
fn unit_tests_run_in_memory_and_a_failure_blocks_the_apply() {
    let (_t, p) = copy_project(&fixture("projects/sqlmesh_init"));
    let passed = ok(&p, &["test"]);
    assert!(passed.contains("1 test: 1 passed, 0 failed"), "{passed}");
    assert!(!p.join("warehouse").exists(), "a test touches no warehouse");
    let (_u, q) = copy_project(&fixture("projects/sqlmesh_style"));
    let passed = ok(&q, &["test", "shop.customer_totals"]);
    assert!(passed.contains("2 tests: 2 passed, 0 failed"), "{passed}");

    let t = p.join("tests/test_full_model.yaml");
    let text = std::fs::read_to_string(&t).unwrap();
    std::fs::write(&t, text.replace("num_orders: 1", "num_orders: 3")).unwrap();
    let failed = tidemark(&p, &["test"]);
    assert_eq!(failed.code, 1, "{}", failed.transcript());
    insta::assert_snapshot!("unit_test_failure", failed.stdout);
    let json = tidemark(&p, &["test", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(v["failed"], 1);
    assert_eq!(v["tests"][0]["missing"], serde_json::json!([["2", "3"]]));

    let r = tidemark(
        &p,
        &[
            "--execution-time",
            "2020-01-08",
            "plan",
            "--apply",
            "--run-tests",
        ],
    );
    assert_eq!(r.code, 1, "{}", r.transcript());
    assert!(
        r.stderr
            .contains("1 unit test of the changed models failed; nothing was applied"),
        "{}",
        r.stderr
    );
    assert!(
        tidemark(&p, &["env", "show", "prod"]).code != 0,
        "nothing applied"
    );
    std::fs::write(&t, &text).unwrap();
    ok(
        &p,
        &[
            "--execution-time",
            "2020-01-08",
            "plan",
            "--apply",
            "--run-tests",
        ],
    );
}

/// `tidemark init` starts a project that runs as it is; `init --from-sqlmesh` writes the
/// `tidemark.toml` of a SQLMesh project from its config.yaml, and the project then runs.
#[test]
fn init_scaffolds_a_project_and_maps_a_sqlmesh_configuration() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("new");
    let d = dir.to_str().unwrap();
    let created = ok(t.path(), &["--execution-time", "2024-05-10", "init", d]);
    assert!(
        created.contains("tidemark.toml") && created.contains(".gitignore"),
        "{created}"
    );
    ok(&dir, &["--execution-time", "2024-05-10", "plan", "--apply"]);
    assert_eq!(
        csv(
            &dir,
            "prod",
            "SELECT COUNT(*) AS users, SUM(events) AS events FROM demo.user_totals"
        ),
        "users,events\n3,14\n"
    );
    let again = tidemark(t.path(), &["init", d]);
    assert_eq!(again.code, 2, "never overwrites: {}", again.transcript());

    let (_s, p) = copy_project(&fixture("projects/sqlmesh_init"));
    std::fs::remove_file(p.join("tidemark.toml")).unwrap();
    std::fs::write(
        p.join("external_models.yaml"),
        "- name: raw.events\n  columns:\n    id: int\n    ds: date\n",
    )
    .unwrap();
    let r = tidemark(t.path(), &["init", "--from-sqlmesh", p.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.transcript());
    assert!(
        r.stderr.contains("warning: not mapped: gateways"),
        "{}",
        r.stderr
    );
    let toml = std::fs::read_to_string(p.join("tidemark.toml")).unwrap();
    assert!(
        toml.contains("dialect = \"duckdb\"") && toml.contains("[sources.\"raw.events\"]"),
        "{toml}"
    );
    // The user says where the external data lives; then the project runs.
    std::fs::write(
        p.join("tidemark.toml"),
        toml.replace("path = \"\"", "path = \"seeds/seed_data.csv\"")
            .replace("format = \"parquet\"", "format = \"csv\""),
    )
    .unwrap();
    ok(&p, &["--execution-time", "2020-01-08", "plan", "--apply"]);
    assert_eq!(
        csv(
            &p,
            "prod",
            "SELECT SUM(num_orders) AS n FROM sqlmesh_example.full_model"
        ),
        "n\n7\n"
    );
}

/// DuckDB's and Trino's functions that DataFusion names differently run; a function that
/// exists nowhere is an error at load, at its line.
#[test]
fn other_dialects_functions_are_translated_and_unknown_ones_refused_at_load() {
    let (_t, p) = copy_project(&fixture("projects/sqlmesh_init"));
    std::fs::write(
        p.join("models/functions.sql"),
        "MODEL (name sqlmesh_example.functions, kind FULL);\n\
         SELECT strptime('2024-01-02', '%Y-%m-%d') AS t, list_value(1, 2) AS l,\n\
         arg_max(id, event_date) AS last_id, IF(COUNT(*) > 3, 'many', 'few') AS size,\n\
         date_diff('day', DATE '2024-01-01', DATE '2024-03-01') AS days,\n\
         date_diff('month', DATE '2024-01-31', DATE '2024-03-01') AS months,\n\
         regexp_matches('abc', 'b') AS matched, SAFE_CAST('x' AS INT) AS safe,\n\
         MAX('{\"a\": {\"b\": [\"x\", 2]}}' ->> '$.a.b[0]') AS j1, MAX('[5, 6]' -> 1) AS j2\n\
         FROM sqlmesh_example.seed_model\n",
    )
    .unwrap();
    ok(&p, &["--execution-time", "2020-01-08", "plan", "--apply"]);
    assert_eq!(
        csv(
            &p,
            "prod",
            "SELECT t, l, last_id, size, days, months, matched, safe, j1, j2 FROM sqlmesh_example.functions"
        ),
        "t,l,last_id,size,days,months,matched,safe,j1,j2\n2024-01-02T00:00:00,\"[1, 2]\",7,many,60,2,true,,x,6\n"
    );
    std::fs::write(
        p.join("models/functions.sql"),
        "MODEL (name sqlmesh_example.functions, kind FULL);\nSELECT\n  no_such_fn(id) AS x\nFROM sqlmesh_example.seed_model\n",
    )
    .unwrap();
    let r = tidemark(&p, &["info"]);
    assert_eq!(r.code, 2, "{}", r.transcript());
    assert!(
        r.stderr
            .starts_with("error: unknown function `no_such_fn`\n  --> models/functions.sql:3:3"),
        "{}",
        r.stderr
    );
}

/// A data-vault-style project (see its tidemark.toml): shared SQL macros, @EACH, @STAR,
/// @GENERATE_SURROGATE_KEY, a variable in a table name and an inline audit. The keys are the
/// MD5s SQLMesh's `@GENERATE_SURROGATE_KEY` gives (computed outside tidemark with Python's
/// hashlib from SQLMesh's definition: fields cast to text, NULL as
/// `_sqlmesh_surrogate_key_null_`, joined by `|`).
#[test]
fn a_data_vault_project_with_sql_macros_applies_with_sqlmeshs_keys() {
    let (_t, p) = copy_project(&fixture("projects/sqlmesh_vault"));
    let info = tidemark(&p, &["info"]);
    assert_eq!(info.code, 0, "{}", info.transcript());
    assert!(info.stderr.is_empty(), "no warning: {}", info.stderr);
    let test = tidemark(&p, &["test"]);
    assert_eq!(test.code, 0, "{}", test.transcript());
    ok(&p, &["--execution-time", "2024-01-04", "plan", "--apply"]);
    assert_eq!(
        csv(
            &p,
            "prod",
            "SELECT customer_id, customer_hk, record_source FROM vault.hub_customer WHERE customer_id IN (1, 4) ORDER BY 1"
        ),
        "customer_id,customer_hk,record_source\n1,c4ca4238a0b923820dcc509a6f75849b,crm\n4,a87ff679a2f3e71d9181a67b7542122c,crm\n"
    );
    // @STAR(c, exclude := [customerId, loadedAt]) keeps the other columns; the NULL email is
    // hashed as SQLMesh hashes it.
    assert_eq!(
        csv(
            &p,
            "prod",
            "SELECT hash_diff, email, country, tier, load_ts FROM vault.sat_customer WHERE customer_hk IN ('c4ca4238a0b923820dcc509a6f75849b', 'a87ff679a2f3e71d9181a67b7542122c') ORDER BY load_ts"
        ),
        "hash_diff,email,country,tier,load_ts\n33c88ef8318a160e4aed8e937df3b346,a@example.com,DE,gold,2024-01-01T08:00:00\n2479b6cde1e7aa291f1c6df15d1af204,,FR,bronze,2024-01-02T11:00:00\n"
    );
    // @EACH over the shared list, aliases interpolated; DE: 1, 2, 5 → gold 2 of 3.
    assert_eq!(
        csv(
            &p,
            "prod",
            "SELECT * FROM mart.tier_counts ORDER BY country"
        ),
        "country,gold_customers,silver_customers,bronze_customers,gold_share\nDE,2,1,0,0.6666666666666666\nFR,1,0,1,0.5\n"
    );
    // The inline audit runs: an empty record source fails the hub's batch before its commit.
    let f = p.join("tidemark.toml");
    let config = std::fs::read_to_string(&f).unwrap();
    std::fs::write(
        &f,
        config.replace("record_source = \"crm\"", "record_source = \"\""),
    )
    .unwrap();
    let r = tidemark(&p, &["--execution-time", "2024-01-04", "plan", "--apply"]);
    assert_eq!(r.code, 2, "{}", r.transcript());
    assert!(
        r.stderr.contains("audit `hub_has_record_source` failed"),
        "{}",
        r.stderr
    );
}

/// Load `fixture` (with exactly the `warnings` given, in order), pass its unit tests, apply it
/// at `execution_time`, and compare each query's CSV with the rows computed by hand.
fn applies_with(
    fixture_path: &str,
    execution_time: &str,
    warnings: &[&str],
    checks: &[(&str, &str)],
) -> (tempfile::TempDir, std::path::PathBuf) {
    let (t, p) = copy_project(&fixture(fixture_path));
    let info = tidemark(&p, &["info"]);
    assert_eq!(info.code, 0, "{}", info.transcript());
    let found: Vec<&str> = info
        .stderr
        .lines()
        .filter_map(|l| l.strip_prefix("warning: "))
        .collect();
    assert_eq!(found.len(), warnings.len(), "{}", info.stderr);
    for (f, w) in found.iter().zip(warnings) {
        assert!(f.contains(w), "{f} should say {w}");
    }
    let test = tidemark(&p, &["test"]);
    assert_eq!(test.code, 0, "{}", test.transcript());
    ok(&p, &["--execution-time", execution_time, "plan", "--apply"]);
    for (query, expected) in checks {
        assert_eq!(csv(&p, "prod", query), *expected, "{query}");
    }
    (t, p)
}

/// An OMOP-style project (see its tidemark.toml): @UNION of two sources with columns in
/// different orders, concept ids from variables, a multi-audit file, unaliased camelCase casts.
#[test]
fn an_omop_style_project_applies_with_the_expected_rows() {
    applies_with(
        "projects/sqlmesh_omop",
        "2024-01-04",
        &[],
        &[
            (
                "SELECT * FROM omop.person ORDER BY 1",
                "person_id,gender_concept_id,year_of_birth,caresiteid\n1,8507,1980,10\n2,8532,1975,10\n3,0,2001,20\n",
            ),
            (
                "SELECT * FROM omop.visit_occurrence ORDER BY 1",
                "visit_occurrence_id,person_id,visit_concept_id,visit_start_date,visit_end_date\n100,1,9201,2024-01-01,2024-01-03\n101,2,9201,2024-01-02,2024-01-02\n200,1,9202,2024-01-02,2024-01-02\n201,3,9202,2024-01-03,2024-01-03\n",
            ),
            (
                "SELECT * FROM omop.observation_period ORDER BY 1",
                "person_id,observation_period_start_date,observation_period_end_date,visits\n1,2024-01-01,2024-01-03,2\n2,2024-01-02,2024-01-02,1\n3,2024-01-03,2024-01-03,1\n",
            ),
        ],
    );
}

/// A BigQuery-style project: `start DATE('…')`, SAFE_CAST to FLOAT64/INT64 (unparseable text
/// becomes NULL), IF, DATE_ADD, @EACH with interpolated aliases; the partition expression is
/// the one warning.
#[test]
fn a_bigquery_style_project_applies_with_the_expected_rows() {
    applies_with(
        "projects/sqlmesh_bigquery",
        "2024-03-04",
        &["partition expression `TIMESTAMP_TRUNC(event_ts, DAY)` is ignored"],
        &[
            (
                "SELECT event_id, amount, quantity, region, follow_up_date FROM analytics.stg_events ORDER BY 1",
                "event_id,amount,quantity,region,follow_up_date\ne1,12.5,1,EU,2024-03-08\ne2,,2,other,2024-03-08\ne3,7.25,,EU,2024-03-09\ne4,100.0,4,EU,2024-03-09\ne5,3.0,1,other,2024-03-10\n",
            ),
            (
                "SELECT * FROM analytics.daily_revenue ORDER BY 1",
                "event_date,events,revenue_eu,revenue_other,unparsed_amounts\n2024-03-01,2,12.5,0.0,1\n2024-03-02,2,107.25,0.0,0\n2024-03-03,1,0.0,3.0,0\n",
            ),
        ],
    );
}

/// A T-SQL-style project: ISNULL, DATEADD with a variable, @IF on a boolean variable folded at
/// load, @EACH and a lambda macro. Turning the variable on changes the model's fingerprint and
/// brings the cancelled order in.
#[test]
fn a_tsql_style_project_applies_and_a_variable_change_is_a_change() {
    let (_t, p) = applies_with(
        "projects/sqlmesh_tsql",
        "2024-02-04",
        &[],
        &[
            (
                "SELECT * FROM sales.orders ORDER BY 1",
                "order_id,customer_id,order_date,status,amount,due_date\n1,100,2024-02-01,open,10.00,2024-03-02\n2,100,2024-02-01,shipped,25.50,2024-03-02\n4,200,2024-02-02,unknown,5.25,2024-03-03\n5,300,2024-02-03,shipped,40.00,2024-03-04\n",
            ),
            (
                "SELECT customer_id, orders, total_amount, open_amount, shipped_amount, unknown_amount, ROUND(shipped_share, 4) AS s FROM sales.customer_summary ORDER BY 1",
                "customer_id,orders,total_amount,open_amount,shipped_amount,unknown_amount,s\n100,2,35.50,10.00,25.50,0.00,0.7183\n200,1,5.25,0.00,0.00,5.25,0.0\n300,1,40.00,0.00,40.00,0.00,1.0\n",
            ),
        ],
    );
    let f = p.join("tidemark.toml");
    let config = std::fs::read_to_string(&f).unwrap();
    std::fs::write(
        &f,
        config.replace("include_cancelled = false", "include_cancelled = true"),
    )
    .unwrap();
    let plan = ok(
        &p,
        &["--execution-time", "2024-02-04", "plan", "--format", "json"],
    );
    let plan: serde_json::Value = serde_json::from_str(&plan).unwrap();
    let change = |name: &str| {
        plan["models"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == name)
            .map(|m| m["change"].as_str().unwrap_or_default().to_string())
            .unwrap_or_default()
    };
    assert_eq!(change("sales.orders"), "directly_modified", "{plan}");
    assert_eq!(
        change("sales.customer_summary"),
        "indirectly_modified",
        "{plan}"
    );
    ok(&p, &["--execution-time", "2024-02-04", "plan", "--apply"]);
    assert_eq!(
        csv(
            &p,
            "prod",
            "SELECT order_id, status FROM sales.orders WHERE order_id = 3"
        ),
        "order_id,status\n3,cancelled\n"
    );
}
