//! The canary review (issue 18): after the canary batches of a directly modified model, the
//! diff against its previous version is printed (and emitted as an event) before the fan-out;
//! `--canary-gate` checks the model's gates on the canary and stops before the fan-out until a
//! fix or an `--accept`.

use crate::backfill::apply_id_of;
use crate::common::{env_json, ok, tidemark};
use crate::kinds::payments_of_day;

const BUILD: [&str; 4] = ["--execution-time", "2024-03-08", "plan", "--apply"];

/// The ledger with a row-level model of the payments, one day a batch, keyed on
/// `payment_id`, guarded by a row-count gate.
fn project() -> (tempfile::TempDir, std::path::PathBuf) {
    with_payments_model(crate::kinds::ledger(0..7))
}

/// `ledger` with [`project`]'s model of the payments.
fn with_payments_model(
    (t, p): (tempfile::TempDir, std::path::PathBuf),
) -> (tempfile::TempDir, std::path::PathBuf) {
    std::fs::write(
        p.join("models/ledger/payments.sql"),
        "MODEL (name ledger.payments, kind INCREMENTAL_BY_TIME_RANGE (time_column paid_at, batch_size 1),\n\
         grain payment_id, gates (row_count_change(max_pct := 10)));\n\
         SELECT payment_id, account_id, paid_at, amount\nFROM raw.payments\n\
         WHERE paid_at BETWEEN @start_ts AND @end_ts\n",
    )
    .unwrap();
    (t, p)
}

/// The canary's figures computed from the raw rows of the first day: rows before and after,
/// amounts changed, the sums of `account_id` and `amount` before and after.
fn expected() -> (u64, u64, u64, (i64, i64), (i64, i64)) {
    let day = payments_of_day(0);
    let kept: Vec<_> = day.iter().filter(|p| p.id % 100 != 5).collect();
    let doubled = kept.iter().filter(|p| p.id % 3 == 0).count() as u64;
    let accounts = (
        day.iter().map(|p| p.account).sum(),
        kept.iter().map(|p| p.account).sum(),
    );
    let amounts = (
        day.iter().map(|p| p.amount).sum(),
        kept.iter()
            .map(|p| {
                if p.id % 3 == 0 {
                    p.amount * 2
                } else {
                    p.amount
                }
            })
            .sum(),
    );
    (
        day.len() as u64,
        kept.len() as u64,
        doubled,
        accounts,
        amounts,
    )
}

#[test]
fn a_breaking_change_shows_its_canary_diff_and_the_canary_gate_holds_the_fan_out_until_accepted() {
    let (_t, p) = project();
    held_then_accepted(&p);
}

/// The same on Spark Connect: the diff's and the gates' queries run on the engine.
#[test]
fn the_canary_review_runs_on_spark() {
    let Some(remote) = crate::spark::sail() else {
        return;
    };
    let (_t, p) = with_payments_model(crate::spark::spark_ledger(remote, 0..7));
    held_then_accepted(&p);
}

/// Build prod, change the payments model (breaking), apply it to dev with `--canary-gate`:
/// held after the canary with the diff computed by hand; resumed with an acceptance.
fn held_then_accepted(p: &std::path::Path) {
    let p = p.to_path_buf();
    ok(&p, &BUILD);
    let prod = env_json(&p, "prod");
    // Breaking: one payment a day dropped, every third amount doubled.
    let f = p.join("models/ledger/payments.sql");
    let text = std::fs::read_to_string(&f).unwrap().replace(
        "paid_at, amount\nFROM raw.payments\nWHERE paid_at",
        "paid_at, CASE WHEN payment_id % 3 = 0 THEN amount * 2 ELSE amount END AS amount\n\
         FROM raw.payments\nWHERE payment_id % 100 <> 5 AND paid_at",
    );
    std::fs::write(&f, text).unwrap();
    let (before, after, doubled, accounts, amounts) = expected();
    let held = tidemark(
        &p,
        &[
            "--execution-time",
            "2024-03-08",
            "plan",
            "dev",
            "--apply",
            "--canary-gate",
        ],
    );
    assert_eq!(held.code, 2, "{}", held.transcript());
    let e = &held.stderr;
    let pct = |o: i64, n: i64| format!("{:+.1}%", (n - o) as f64 * 100.0 / o as f64);
    for line in [
        "canary diff of ledger.payments (directly modified) against its previous version"
            .to_string(),
        format!(
            "  rows: {before} → {after} ({})",
            pct(before as i64, after as i64)
        ),
        format!("    2024-03-01  {before} → {after}\n"),
        format!(
            "  matched on payment_id: {after} rows; 0 only in the canary, {} only in the previous version",
            before - after
        ),
        "  payment_id  key\n".to_string(),
        format!(
            "  account_id  0.0% changed (0)  sum {} → {} ({})\n",
            accounts.0,
            accounts.1,
            pct(accounts.0, accounts.1)
        ),
        "  paid_at     0.0% changed (0)\n".to_string(),
        format!(
            "  amount      {:.1}% changed ({doubled})  sum {} → {} ({})\n",
            doubled as f64 * 100.0 / after as f64,
            amounts.0,
            amounts.1,
            pct(amounts.0, amounts.1)
        ),
    ] {
        assert!(e.contains(&line), "missing {line:?} in\n{e}");
    }
    // The gate: the canary day and its total, then the stop before the fan-out.
    assert!(
        e.contains("Canary gates:")
            && e.contains("row_count_change(max_pct := 10)  2024-03-01")
            && e.contains(&format!(
                "{after} rows ({})",
                pct(before as i64, after as i64)
            )),
        "{e}"
    );
    assert!(
        e.contains("violate their model's gates (`--canary-gate`), so the rest did not start")
            && e.contains("--accept MODEL:GATE"),
        "{e}"
    );
    let id = apply_id_of(&e[e.find("error: apply").unwrap()..]);
    let progress: serde_json::Value =
        serde_json::from_str(&ok(&p, &["progress", &id, "--format", "json"])).unwrap();
    let payments = progress["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "ledger.payments")
        .unwrap();
    assert_eq!(
        payments["counts"]["COMPLETE"], 1,
        "only the canary ran: {progress}"
    );
    assert_eq!(payments["counts"]["PENDING"], 6, "{progress}");
    assert!(
        tidemark(&p, &["env", "show", "dev"]).code != 0,
        "dev was not created"
    );
    assert_eq!(env_json(&p, "prod"), prod, "prod unchanged");

    // A resume reviews again; an acceptance with a reason lets it fan out.
    let resumed = tidemark(
        &p,
        &[
            "--execution-time",
            "2024-03-08",
            "apply",
            "--resume",
            &id,
            "--canary-gate",
            "--accept",
            "ledger.payments:row_count_change",
            "--reason",
            "payment 5 is a test payment",
            "--progress",
            "json",
        ],
    );
    assert_eq!(resumed.code, 0, "{}", resumed.transcript());
    let events: Vec<serde_json::Value> = resumed
        .stderr
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let diff = &events
        .iter()
        .find(|v| v["event"] == "canary_diff")
        .unwrap_or_else(|| panic!("{}", resumed.stderr))["diff"];
    assert_eq!(diff["rows_previous"], before);
    assert_eq!(diff["rows_canary"], after);
    assert_eq!(diff["matched"], after);
    let amount = diff["columns"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["column"] == "amount")
        .unwrap();
    assert_eq!(amount["changed"], doubled);
    assert_eq!(amount["sum_previous"].as_f64(), Some(amounts.0 as f64));
    assert_eq!(amount["sum_canary"].as_f64(), Some(amounts.1 as f64));
    let gate = events.iter().find(|v| v["event"] == "canary_gate").unwrap();
    assert!(
        gate["violations"]
            .as_array()
            .unwrap()
            .iter()
            .all(|v| v["accepted"] == true),
        "{gate}"
    );
    assert_eq!(
        env_json(&p, "dev")["models"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["name"] == "ledger.payments")
            .count(),
        1
    );
    let log = ok(&p, &["log", "--env", "dev"]);
    assert!(
        log.contains("accepted gate row_count_change(max_pct := 10) of ledger.payments by")
            && log.contains("payment 5 is a test payment"),
        "{log}"
    );
}

#[test]
fn a_restatement_that_changes_nothing_shows_every_canary_partition_identical() {
    // The canary side comes from the rows and checksums its batches measured while writing;
    // the previous side is read back from Parquet. Equal rows must give equal figures.
    let (_t, p) = project();
    ok(&p, &BUILD);
    // Restate three days of payments, all three canary batches, with `extra` arguments.
    let restate = |extra: &[&str]| {
        let mut args = vec![
            "--execution-time",
            "2024-03-08",
            "plan",
            "--restate-model",
            "ledger.payments",
            "--start",
            "2024-03-02",
            "--end",
            "2024-03-04",
            "--apply",
            "--canary",
            "3",
        ];
        args.extend_from_slice(extra);
        tidemark(&p, &args)
    };
    let out = restate(&[]);
    assert_eq!(out.code, 0, "{}", out.transcript());
    let e = &out.stderr;
    assert!(
        e.contains("canary diff of ledger.payments (restated)"),
        "{e}"
    );
    let n = payments_of_day(1).len();
    for day in ["2024-03-02", "2024-03-03", "2024-03-04"] {
        let line = format!("{day}  {n} → {n}  identical\n");
        assert!(e.contains(&line), "missing {line:?} in\n{e}");
    }
    let rows = 3 * n;
    assert!(
        e.contains(&format!(
            "matched on payment_id: {rows} rows; 0 only in the canary, 0 only in the previous version"
        )),
        "{e}"
    );
    // Again with JSON events: stderr carries only events, the new generation among them.
    let out = restate(&["--progress", "json"]);
    assert_eq!(out.code, 0, "{}", out.transcript());
    let events = crate::common::events(&out.stderr);
    let generation = events
        .iter()
        .find(|e| e["event"] == "generation" && e["model"] == "ledger.payments")
        .unwrap_or_else(|| panic!("no generation event in {events:?}"));
    let table = generation["table"].as_str().unwrap();
    assert!(table.ends_with("__g2"), "{generation}");
    assert!(
        generation["cloned_from"]
            .as_str()
            .is_some_and(|f| f.ends_with("__g1")),
        "{generation}"
    );
    assert!(generation["table_version"].is_u64(), "{generation}");
    let diff = events
        .iter()
        .find(|e| e["event"] == "canary_diff" && e["model"] == "ledger.payments")
        .unwrap_or_else(|| panic!("no canary diff in {events:?}"));
    let partitions = diff["diff"]["partitions"].as_array().unwrap();
    assert_eq!(partitions.len(), 3, "{diff}");
    assert!(partitions.iter().all(|p| p["identical"] == true), "{diff}");
}

#[test]
fn accept_without_the_canary_gate_is_refused() {
    let (_t, p) = project();
    let r = tidemark(
        &p,
        &[
            "plan",
            "--apply",
            "--accept",
            "ledger.payments:row_count_change",
            "--reason",
            "x",
        ],
    );
    assert_eq!(r.code, 2, "{}", r.transcript());
    assert!(r.stderr.contains("add `--canary-gate`"), "{}", r.stderr);
}

/// A grain that repeats (`account_id` holds several payments a day): the keyed join repeats
/// rows, so the diff reads each side's sums on its own; they are the raw rows' sums exactly.
#[test]
fn a_grain_that_repeats_still_gives_each_sides_exact_sums() {
    let (_t, p) = project();
    let f = p.join("models/ledger/payments.sql");
    let text = std::fs::read_to_string(&f).unwrap();
    std::fs::write(&f, text.replace("grain payment_id", "grain account_id")).unwrap();
    ok(&p, &BUILD);
    let text = std::fs::read_to_string(&f).unwrap().replace(
        "paid_at, amount\nFROM raw.payments\nWHERE paid_at",
        "paid_at, CASE WHEN payment_id % 3 = 0 THEN amount * 2 ELSE amount END AS amount\n\
         FROM raw.payments\nWHERE payment_id % 100 <> 5 AND paid_at",
    );
    std::fs::write(&f, text).unwrap();
    let day = payments_of_day(0);
    assert!(
        day.iter()
            .any(|a| day.iter().filter(|b| b.account == a.account).count() > 1),
        "the test needs an account with several payments a day"
    );
    let (_, _, _, _, amounts) = expected();
    let out = tidemark(
        &p,
        &["--execution-time", "2024-03-08", "plan", "dev", "--apply"],
    );
    assert_eq!(out.code, 0, "{}", out.transcript());
    let line = format!("sum {} → {} (", amounts.0, amounts.1);
    assert!(
        out.stderr.contains("  account_id  key\n") && out.stderr.contains(&line),
        "missing {line:?} in\n{}",
        out.stderr
    );
}
