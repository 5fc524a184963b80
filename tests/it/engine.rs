//! Apply, query, run, promote, rollback and restatement on the bundled example project, with
//! real Delta tables in temp directories.

use std::path::PathBuf;

use crate::common::{copy_dir, csv, env_json, fix_discount, ok, sushi, table_of, tidemark};

/// The example project (config, models, seeds, audits) copied into a temp dir.
fn example() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dst = tmp.path().join("sushi");
    for d in ["models", "seeds", "audits"] {
        copy_dir(&sushi().join(d), &dst.join(d));
    }
    std::fs::copy(sushi().join("tidemark.toml"), dst.join("tidemark.toml")).unwrap();
    (tmp, dst)
}

const TOTALS: &str =
    "SELECT COUNT(*) AS n, SUM(amount) AS amount FROM sushi.fact_sales_transactions";
const PER_DAY: &str = "SELECT transaction_date, COUNT(*) AS n FROM sushi.fact_sales_transactions GROUP BY 1 ORDER BY 1";

#[test]
fn initial_apply_writes_partitioned_tables_and_a_second_apply_computes_nothing() {
    let (_t, p) = example();
    let out = ok(&p, &["--execution-time", "2024-01-08", "plan", "--apply"]);
    assert!(out.contains("`prod` is now at revision 1"), "{out}");
    let per_day = csv(&p, "prod", PER_DAY);
    let expected: String = std::iter::once("transaction_date,n\n".to_string())
        .chain((1..=7).map(|d| format!("2024-01-0{d},200\n")))
        .collect();
    assert_eq!(per_day, expected);
    assert_eq!(
        csv(&p, "prod", "SELECT COUNT(*) AS n FROM sushi.locations"),
        "n\n5\n"
    );
    // A view reads through to the environment's tables.
    assert_eq!(
        csv(
            &p,
            "prod",
            "SELECT SUM(days_open) AS d FROM sushi.location_performance"
        ),
        "d\n35\n"
    );
    // Physically partitioned by the day.
    let env = env_json(&p, "prod");
    let fact = p
        .join("warehouse")
        .join(table_of(&env, "sushi.fact_sales_transactions"));
    let parts: Vec<String> = std::fs::read_dir(&fact)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("_tidemark_partition="))
        .collect();
    assert_eq!(parts.len(), 7, "{parts:?}");
    let r = tidemark(&p, &["--execution-time", "2024-01-08", "plan", "--apply"]);
    assert_eq!(r.code, 0);
    assert!(r.stderr.contains("nothing to apply"), "{}", r.stderr);
}

#[test]
fn tables_read_back_with_delta_rs_independently() {
    let (_t, p) = example();
    ok(&p, &["--execution-time", "2024-01-08", "plan", "--apply"]);
    let env = env_json(&p, "prod");
    let m = env["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "sushi.fact_sales_transactions")
        .unwrap()
        .clone();
    let uri = url::Url::parse(m["uri"].as_str().unwrap()).unwrap();
    let version = m["delta_version"].as_u64().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let table = deltalake::open_table_with_version(uri, version)
            .await
            .unwrap();
        let snapshot = table.snapshot().unwrap();
        assert_eq!(
            snapshot.metadata().partition_columns().to_vec(),
            vec!["_tidemark_partition".to_string()]
        );
        let names: Vec<String> = snapshot
            .schema()
            .fields()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(
            names,
            [
                "transaction_date",
                "transaction_id",
                "location_id",
                "location_name",
                "customer_id",
                "product_id",
                "quantity",
                "amount",
                "_tidemark_partition"
            ]
        );
        let ctx = datafusion::prelude::SessionContext::new();
        table.update_datafusion_session(&ctx.state()).unwrap();
        ctx.register_table("t", table.table_provider().await.unwrap())
            .unwrap();
        let batches = ctx
            .sql("SELECT _tidemark_partition, COUNT(*) FROM t GROUP BY 1")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        assert_eq!(rows, 7);
    });
}

#[test]
fn dev_is_isolated_until_promoted_and_rollback_restores_prod_exactly() {
    let (_t, p) = example();
    ok(&p, &["--execution-time", "2024-01-10", "plan", "--apply"]);
    let prod_before = csv(&p, "prod", TOTALS);
    let prod_days = csv(&p, "prod", PER_DAY);
    fix_discount(&p);
    ok(
        &p,
        &[
            "--execution-time",
            "2024-01-10",
            "plan",
            "dev",
            "--start",
            "2024-01-05",
            "--end",
            "2024-01-09",
            "--apply",
        ],
    );
    let dev = csv(&p, "dev", TOTALS);
    assert!(dev.starts_with("n,amount\n1000,"), "{dev}");
    assert_eq!(
        csv(&p, "prod", TOTALS),
        prod_before,
        "prod changed before promotion"
    );

    // Unchanged models share prod's physical tables; changed ones have their own.
    let (pe, de) = (env_json(&p, "prod"), env_json(&p, "dev"));
    for same in [
        "raw.pos_transactions",
        "sushi.locations",
        "sushi.menu_items",
    ] {
        assert_eq!(table_of(&pe, same), table_of(&de, same), "{same}");
    }
    for changed in [
        "sushi.stg_transactions",
        "sushi.fact_sales_transactions",
        "sushi.customers",
    ] {
        assert_ne!(table_of(&pe, changed), table_of(&de, changed), "{changed}");
    }

    let check = tidemark(
        &p,
        &[
            "--execution-time",
            "2024-01-10",
            "promote",
            "dev",
            "--check",
        ],
    );
    assert_eq!(check.code, 1, "{}", check.transcript());
    assert_eq!(csv(&p, "prod", TOTALS), prod_before);
    ok(&p, &["--execution-time", "2024-01-10", "promote", "dev"]);
    let promoted = csv(&p, "prod", TOTALS);
    assert!(promoted.starts_with("n,amount\n1800,"), "{promoted}");
    assert_ne!(promoted, prod_before);
    assert_eq!(
        csv(&p, "prod", PER_DAY),
        prod_days,
        "the promotion filled prod's whole range"
    );
    // Customers (FULL) were recomputed over the whole history, consistent with the facts.
    let amount = promoted
        .lines()
        .nth(1)
        .unwrap()
        .split(',')
        .nth(1)
        .unwrap()
        .to_string();
    assert_eq!(
        csv(
            &p,
            "prod",
            "SELECT SUM(lifetime_revenue) AS amount FROM sushi.customers"
        ),
        format!("amount\n{amount}\n")
    );

    ok(&p, &["rollback", "prod"]);
    assert_eq!(csv(&p, "prod", TOTALS), prod_before);
    assert_eq!(csv(&p, "prod", PER_DAY), prod_days);
}

#[test]
fn run_computes_exactly_the_new_intervals() {
    let (_t, p) = example();
    ok(&p, &["--execution-time", "2024-01-08", "plan", "--apply"]);
    let r = tidemark(&p, &["--execution-time", "2024-01-11", "run"]);
    assert_eq!(r.code, 0, "{}", r.transcript());
    for model in [
        "raw.pos_transactions",
        "sushi.stg_transactions",
        "sushi.daily_sales_by_location",
    ] {
        assert!(
            r.stderr.contains(&format!(
                "{model} [1/1] [2024-01-08T00:00:00Z, 2024-01-11T00:00:00Z)"
            )),
            "{model}: {}",
            r.stderr
        );
    }
    // lookback 1: the fact table recomputes the day before, too.
    assert!(r.stderr.contains(
        "sushi.fact_sales_transactions [1/1] [2024-01-07T00:00:00Z, 2024-01-11T00:00:00Z)"
    ));
    assert_eq!(
        csv(
            &p,
            "prod",
            "SELECT COUNT(DISTINCT transaction_date) AS d, COUNT(*) AS n, COUNT(DISTINCT transaction_id) AS k FROM sushi.fact_sales_transactions"
        ),
        "d,n,k\n10,2000,2000\n"
    );
    assert_eq!(
        csv(
            &p,
            "prod",
            "SELECT COUNT(*) AS n FROM sushi.daily_sales_by_location"
        ),
        "n\n50\n"
    );
    let again = tidemark(&p, &["--execution-time", "2024-01-11", "run"]);
    assert!(again.stderr.contains("nothing to run"), "{}", again.stderr);
}

#[test]
fn restatement_writes_a_new_generation_and_old_readers_keep_their_data() {
    let (_t, p) = example();
    ok(&p, &["--execution-time", "2024-01-08", "plan", "--apply"]);
    let before = env_json(&p, "prod");
    let totals = csv(&p, "prod", TOTALS);
    let r = tidemark(
        &p,
        &[
            "--execution-time",
            "2024-01-08",
            "plan",
            "--restate-model",
            "raw.pos_transactions",
            "--start",
            "2024-01-03",
            "--end",
            "2024-01-03",
            "--apply",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.transcript());
    assert!(r.stderr.contains("cloned from"), "{}", r.stderr);
    let after = env_json(&p, "prod");
    let (old, new) = (
        table_of(&before, "raw.pos_transactions"),
        table_of(&after, "raw.pos_transactions"),
    );
    assert_eq!(new, format!("{old}__g1"));
    // The old generation is untouched and still complete; the new one has every day too.
    assert!(
        p.join("warehouse")
            .join(&old)
            .join("_tidemark_partition=2024-01-03")
            .exists()
    );
    assert_eq!(csv(&p, "prod", TOTALS), totals, "same logic, same data");
    assert_eq!(
        csv(&p, "prod", "SELECT COUNT(*) AS n FROM raw.pos_transactions"),
        "n\n1400\n"
    );
    ok(&p, &["rollback", "prod"]);
    assert_eq!(table_of(&env_json(&p, "prod"), "raw.pos_transactions"), old);
}

#[test]
fn an_interrupted_apply_resumes_to_the_same_contents() {
    let (_a, clean) = example();
    ok(
        &clean,
        &["--execution-time", "2024-01-20", "plan", "--apply"],
    );
    let (_b, p) = example();
    let mut child = std::process::Command::new(crate::common::bin())
        .args([
            "--project",
            p.to_str().unwrap(),
            "--execution-time",
            "2024-01-20",
            "plan",
            "--apply",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill it once the third table of the sushi schema exists (mid-apply).
    let stg = p.join("warehouse/sushi");
    let started = std::time::Instant::now();
    while !std::fs::read_dir(&stg)
        .map(|d| d.count() >= 3)
        .unwrap_or(false)
        && started.elapsed() < std::time::Duration::from_secs(60)
    {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let mid = tidemark(&p, &["env", "list"]);
    assert!(
        !mid.stdout.contains("prod "),
        "prod must not exist after a killed first apply: {}",
        mid.stdout
    );
    ok(&p, &["--execution-time", "2024-01-20", "plan", "--apply"]);
    for sql in [
        PER_DAY,
        TOTALS,
        "SELECT COUNT(*) - COUNT(DISTINCT transaction_id) AS dup FROM sushi.fact_sales_transactions",
        "SELECT * FROM sushi.daily_sales_by_location ORDER BY transaction_date, location_id",
        "SELECT * FROM sushi.customers ORDER BY customer_id",
    ] {
        assert_eq!(csv(&p, "prod", sql), csv(&clean, "prod", sql), "{sql}");
    }
}

#[test]
fn a_saved_plan_is_refused_once_the_environment_moved() {
    let (_t, p) = example();
    ok(&p, &["--execution-time", "2024-01-08", "plan", "--apply"]);
    fix_discount(&p);
    let saved = p.join("plan.json");
    ok(
        &p,
        &[
            "--execution-time",
            "2024-01-08",
            "plan",
            "--out",
            saved.to_str().unwrap(),
        ],
    );
    ok(&p, &["--execution-time", "2024-01-10", "run"]);
    let r = tidemark(&p, &["apply", saved.to_str().unwrap()]);
    assert_eq!(r.code, 2, "{}", r.transcript());
    assert!(r.stderr.contains("the plan is stale"), "{}", r.stderr);
    // A fresh plan applies.
    ok(
        &p,
        &[
            "--execution-time",
            "2024-01-10",
            "plan",
            "--out",
            saved.to_str().unwrap(),
        ],
    );
    let r = tidemark(&p, &["apply", saved.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.transcript());
}

#[test]
fn janitor_removes_expired_environments_and_their_tables_only() {
    let (_t, p) = example();
    ok(&p, &["--execution-time", "2024-01-08", "plan", "--apply"]);
    fix_discount(&p);
    ok(
        &p,
        &["--execution-time", "2024-01-08", "plan", "dev", "--apply"],
    );
    let dev_fact = table_of(&env_json(&p, "dev"), "sushi.fact_sales_transactions");
    let prod_before = csv(&p, "prod", TOTALS);
    // Not expired yet: nothing goes.
    let out = ok(
        &p,
        &["--execution-time", "2024-01-09", "janitor", "--dry-run"],
    );
    assert!(
        out.contains("would delete 0 environments, 0 tables"),
        "{out}"
    );
    // Past the 7-day TTL (the clock of the test is the real one: use a far future).
    let out = ok(
        &p,
        &["--execution-time", "2099-01-01", "janitor", "--dry-run"],
    );
    assert!(
        out.contains("would delete expired environment `dev`"),
        "{out}"
    );
    assert!(p.join("warehouse").join(&dev_fact).exists());
    let out = ok(&p, &["--execution-time", "2099-01-01", "janitor"]);
    assert!(
        out.contains(&format!("deleted table `{dev_fact}`")),
        "{out}"
    );
    assert!(!p.join("warehouse").join(&dev_fact).exists());
    assert!(!ok(&p, &["env", "list"]).contains("dev "));
    assert_eq!(csv(&p, "prod", TOTALS), prod_before);
}

/// A first apply creates every table; batches of one new table must not fail each other's
/// commits on the way (they did: "attempt 1 failed, retrying … Metadata changed since last
/// commit" on every first apply of the example, 3 runs out of 3).
#[test]
fn the_first_apply_of_the_example_shows_no_failure() {
    for _ in 0..3 {
        let (_t, p) = example();
        let run = tidemark(
            &p,
            &[
                "--execution-time",
                "2024-01-31",
                "plan",
                "--apply",
                "--workers",
                "4",
            ],
        );
        assert_eq!(run.code, 0, "{}", run.transcript());
        assert!(!run.stderr.contains("failed"), "{}", run.stderr);
    }
}
