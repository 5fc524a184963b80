//! `tidemark render`: macro substitution, windows, EMBEDDED inlining, errors.

use crate::common::{fail_with, fixture, succeed, sushi};

#[test]
fn render_daily_window_dates_are_inclusive() {
    let run = succeed(
        &sushi(),
        &[
            "render",
            "sushi.fact_sales_transactions",
            "--start",
            "2024-01-01",
            "--end",
            "2024-01-07",
        ],
    );
    insta::assert_snapshot!("render_fact_sales_week", run.transcript());
}

#[test]
fn render_hourly_default_window_is_last_complete_interval() {
    let p = fixture("projects/all_kinds");
    let run = succeed(
        &p,
        &[
            "--execution-time",
            "2024-03-05 10:17:00",
            "render",
            "shop.orders",
        ],
    );
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
    let run = succeed(
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
    let run = succeed(
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
    insta::assert_snapshot!("render_embedded", run.transcript());
    let run = succeed(
        &p,
        &[
            "--execution-time",
            "2024-04-01T08:00:00Z",
            "render",
            "shop.customers",
        ],
    );
    assert!(
        run.stdout.contains("'2024-04-01' AS loaded_on"),
        "{}",
        run.stdout
    );
}

#[test]
fn render_errors() {
    let p = fixture("projects/all_kinds");
    let run = fail_with(&p, &["render", "shop.order"], "no model named");
    insta::assert_snapshot!("render_unknown_model", run.transcript());
    fail_with(&p, &["render", "shop.products"], "is a SEED model");
    fail_with(
        &p,
        &[
            "render",
            "shop.orders",
            "--start",
            "2024-03-05",
            "--end",
            "2024-03-01",
        ],
        "the window is empty",
    );
    fail_with(&p, &["render", "events"], "is a source, not a model");
}
