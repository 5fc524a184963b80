//! `tidemark render`: macro substitution, windows, EMBEDDED inlining, errors.

use crate::common::{fixture, repo, tidemark};

#[test]
fn render_daily_window_dates_are_inclusive() {
    let run = tidemark(
        &repo(),
        &[
            "render",
            "sushi.fact_sales_transactions",
            "--start",
            "2024-01-01",
            "--end",
            "2024-01-07",
        ],
    );
    assert_eq!(run.code, 0, "{}", run.transcript());
    insta::assert_snapshot!("render_fact_sales_week", run.transcript());
}

#[test]
fn render_hourly_default_window_is_last_complete_interval() {
    let p = fixture("projects/all_kinds");
    let run = tidemark(
        &p,
        &[
            "--execution-time",
            "2024-03-05 10:17:00",
            "render",
            "shop.orders",
        ],
    );
    assert_eq!(run.code, 0, "{}", run.transcript());
    assert!(
        run.stdout
            .contains("TIMESTAMP '2024-03-05 09:00:00' AND TIMESTAMP '2024-03-05 09:59:59.999999'"),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr
            .contains("[2024-03-05T09:00:00Z, 2024-03-05T10:00:00Z)"),
        "{}",
        run.stderr
    );
}

#[test]
fn render_widens_to_whole_intervals_and_accepts_timestamp_ends() {
    let p = fixture("projects/all_kinds");
    let run = tidemark(
        &p,
        &[
            "render",
            "shop.orders",
            "--start",
            "2024-03-05 10:30",
            "--end",
            "2024-03-05 12:00:00",
        ],
    );
    assert_eq!(run.code, 0, "{}", run.transcript());
    assert!(
        run.stderr
            .contains("[2024-03-05T10:00:00Z, 2024-03-05T12:00:00Z)"),
        "{}",
        run.stderr
    );
}

#[test]
fn render_inlines_embedded_models_and_names_this_model() {
    let p = fixture("projects/all_kinds");
    let run = tidemark(
        &p,
        &[
            "--execution-time",
            "2024-04-01",
            "render",
            "shop.daily_revenue",
            "--start",
            "2024-03-01",
            "--end",
            "2024-03-03",
        ],
    );
    assert_eq!(run.code, 0, "{}", run.transcript());
    insta::assert_snapshot!("render_embedded", run.transcript());
    let run = tidemark(
        &p,
        &[
            "--execution-time",
            "2024-04-01T08:00:00Z",
            "render",
            "shop.customers",
        ],
    );
    assert_eq!(run.code, 0, "{}", run.transcript());
    assert!(
        run.stdout.contains("'2024-04-01' AS loaded_on"),
        "{}",
        run.stdout
    );
}

#[test]
fn render_errors() {
    let p = fixture("projects/all_kinds");
    let run = tidemark(&p, &["render", "shop.order"]);
    assert_eq!(run.code, 2);
    insta::assert_snapshot!("render_unknown_model", run.transcript());
    let run = tidemark(&p, &["render", "shop.products"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("is a SEED model"), "{}", run.stderr);
    let run = tidemark(
        &p,
        &[
            "render",
            "shop.orders",
            "--start",
            "2024-03-05",
            "--end",
            "2024-03-01",
        ],
    );
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("the window is empty"), "{}", run.stderr);
    let run = tidemark(&p, &["render", "events"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("is a source, not a model"),
        "{}",
        run.stderr
    );
}
