//! Promotion gates (issue 18): `promote` compares what it would publish with what the target
//! has and refuses violations before the pointer swap; `--accept` with a reason promotes and
//! the history keeps who accepted what and why.

use std::path::Path;

use crate::common::{env_json, ok, tidemark};

const BUILD: [&str; 4] = ["--execution-time", "2024-03-08", "plan", "--apply"];
const DEV: [&str; 5] = ["--execution-time", "2024-03-08", "plan", "dev", "--apply"];

/// The ledger with a row-level model of the payments guarded by `gates`.
fn project(gates: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let (t, p) = crate::kinds::ledger(0..7);
    std::fs::write(
        p.join("models/ledger/payments.sql"),
        format!(
            "MODEL (name ledger.payments, kind INCREMENTAL_BY_TIME_RANGE (time_column paid_at), gates ({gates}));\n\
             SELECT payment_id, account_id, paid_at, amount\nFROM raw.payments\n\
             WHERE paid_at BETWEEN @start_ts AND @end_ts\n"
        ),
    )
    .unwrap();
    (t, p)
}

/// `promote dev` at the fixed execution time, with `extra` arguments.
fn promote(p: &Path, extra: &[&str]) -> crate::common::Run {
    let mut args = vec!["--execution-time", "2024-03-08", "promote", "dev"];
    args.extend_from_slice(extra);
    tidemark(p, &args)
}

/// [`promote`], which must succeed; its stdout.
fn promoted(p: &Path, extra: &[&str]) -> String {
    let r = promote(p, extra);
    assert_eq!(r.code, 0, "{}", r.transcript());
    r.stdout
}

fn edit(p: &Path, from: &str, to: &str) {
    let f = p.join("models/ledger/payments.sql");
    let text = std::fs::read_to_string(&f).unwrap();
    assert!(text.contains(from), "{text}");
    std::fs::write(&f, text.replace(from, to)).unwrap();
}

#[test]
fn a_promotion_that_drops_rows_is_refused_until_accepted_with_a_reason() {
    let (_t, p) = project(
        "row_count_change(max_pct := 20), no_missing_partitions, \
         column_sum_change(column := amount, max_pct := 5), \
         null_fraction_change(column := amount, max_points := 1)",
    );
    ok(&p, &BUILD);
    let prod_before = env_json(&p, "prod");
    // dev drops 2 of each day's 6 payments from 2024-03-05 on (−33 %).
    edit(
        &p,
        "WHERE paid_at",
        "WHERE NOT (payment_id % 100 < 2 AND paid_at >= TIMESTAMP '2024-03-05 00:00:00') AND paid_at",
    );
    ok(&p, &DEV);
    let check = promote(&p, &["--check"]);
    assert_eq!(check.code, 1, "{}", check.transcript());
    let refused = promote(&p, &[]);
    assert_eq!(refused.code, 1, "{}", refused.transcript());
    assert!(
        refused.stderr.contains("promotion gates refuse `dev`")
            && refused.stderr.contains("nothing was promoted")
            && refused.stderr.contains("hint:"),
        "{}",
        refused.stderr
    );
    for day in ["2024-03-05", "2024-03-06", "2024-03-07"] {
        let line = refused
            .stdout
            .lines()
            .find(|l| l.contains("row_count_change") && l.contains(day))
            .unwrap_or_else(|| panic!("{day}: {}", refused.stdout));
        assert!(
            line.contains("within ±20% of 6 rows") && line.contains("4 rows (-33.3%)"),
            "{line}"
        );
    }
    assert!(
        !refused.stdout.contains("2024-03-04  "),
        "an unchanged day is not a violation: {}",
        refused.stdout
    );
    // In total −14.3 % of the rows: within the gate; but the amounts' sum over the partitions
    // that differ moves more than 5 %.
    let totals: Vec<&str> = refused
        .stdout
        .lines()
        .filter(|l| l.contains("(3 partitions)"))
        .collect();
    assert_eq!(totals.len(), 1, "{}", refused.stdout);
    assert!(
        totals[0].contains("column_sum_change")
            && totals[0].contains("2024-03-05 … 2024-03-07")
            && totals[0].contains("(-30.0%)"),
        "{}",
        totals[0]
    );
    assert!(
        !refused.stdout.contains("null_fraction_change"),
        "{}",
        refused.stdout
    );
    assert!(
        refused.stdout.contains("4 aggregate queries"),
        "{}",
        refused.stdout
    );
    assert_eq!(env_json(&p, "prod"), prod_before, "prod unchanged");
    // An acceptance needs a reason, and must match a violation.
    let no_reason = promote(&p, &["--accept", "ledger.payments:row_count_change"]);
    assert_eq!(no_reason.code, 2, "{}", no_reason.transcript());
    assert!(
        no_reason.stderr.contains("needs a reason"),
        "{}",
        no_reason.stderr
    );
    let typo = promote(
        &p,
        &[
            "--accept",
            "ledger.payments:no_missing_partitions",
            "--reason",
            "x",
        ],
    );
    assert_eq!(typo.code, 2, "{}", typo.transcript());
    assert_eq!(env_json(&p, "prod"), prod_before, "prod unchanged");
    // Accepted: promoted, and the history says who accepted what and why.
    let accepted = promoted(
        &p,
        &[
            "--accept",
            "ledger.payments:row_count_change",
            "--accept",
            "ledger.payments:column_sum_change",
            "--reason",
            "test accounts removed on purpose",
        ],
    );
    assert!(accepted.contains("(accepted)"), "{accepted}");
    assert_ne!(env_json(&p, "prod"), prod_before);
    let history = ok(&p, &["env", "history", "prod"]);
    assert!(
        history.contains(
            "accepted: row_count_change(max_pct := 20) of `ledger.payments` (3 violations)"
        ) && history.contains("accepted: column_sum_change(column := amount, max_pct := 5)")
            && history.contains("test accounts removed on purpose"),
        "{history}"
    );
    let log = ok(&p, &["log", "--env", "prod"]);
    assert!(log.contains("accepted gate row_count_change"), "{log}");
}

#[test]
fn unchanged_holds_for_a_new_column_and_trips_when_existing_columns_move() {
    let (_t, p) = project("unchanged, amounts_never_grow");
    // A custom gate: a query over both sides returning the offending rows.
    std::fs::create_dir_all(p.join("gates")).unwrap();
    std::fs::write(
        p.join("gates/amounts_never_grow.sql"),
        "SELECT n.payment_id FROM @this_env AS n JOIN @target_env AS o ON n.payment_id = o.payment_id\n\
         WHERE n.amount > o.amount\n",
    )
    .unwrap();
    ok(&p, &BUILD);
    // A new column, the existing ones as they were: the gate passes.
    edit(
        &p,
        "paid_at, amount\n",
        "paid_at, amount, amount * 2 AS doubled\n",
    );
    ok(&p, &DEV);
    let promoted = promoted(&p, &[]);
    assert!(promoted.contains("2 gates of 1 model passed"), "{promoted}");
    // Called non-breaking, but an existing column moves: the gate refuses.
    edit(
        &p,
        "paid_at, amount, amount * 2",
        "paid_at, amount + 1 AS amount, amount * 2",
    );
    ok(
        &p,
        &[
            "--execution-time",
            "2024-03-08",
            "plan",
            "dev",
            "--non-breaking",
            "ledger.payments",
            "--apply",
        ],
    );
    let refused = promote(&p, &["--format", "json"]);
    assert_eq!(refused.code, 1, "{}", refused.transcript());
    let v: serde_json::Value = serde_json::from_str(&refused.stdout).unwrap();
    let violations = v["gates"]["violations"].as_array().unwrap();
    // The custom gate finds every payment; and every day's rows moved (the columns are the
    // same on both sides: per partition).
    assert_eq!(violations.len(), 8, "{v}");
    assert_eq!(violations[0]["gate"], "amounts_never_grow");
    assert_eq!(violations[0]["found"], "42 offending rows");
    assert!(
        violations[1..]
            .iter()
            .all(|x| x["gate"] == "unchanged" && x["accepted"] == false),
        "{v}"
    );
    assert_eq!(violations[1]["window"], "2024-03-01");
}
