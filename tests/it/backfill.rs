//! Backfill operations with real processes and Delta tables: canary, circuit breaker, progress
//! records, graceful interrupt and `apply --resume`, parallel workers, racing applies, and a
//! history backfill into tables the daily run writes at the same time.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use crate::common::{csv, ok, tidemark};
use crate::kinds::{append_payments, ledger, payments_of_day};

fn progress_json(p: &Path, id: Option<&str>) -> serde_json::Value {
    let mut args = vec!["progress", "--format", "json"];
    args.extend(id);
    serde_json::from_str(&ok(p, &args)).unwrap()
}

/// `tidemark --project P PREFIX plan --apply --workers 1 --progress lines`, its stderr piped.
fn with_piped_stderr(p: &Path, prefix: &[&str]) -> std::process::Child {
    Command::new(crate::common::bin())
        .arg("--project")
        .arg(p)
        .args(prefix)
        .args(["plan", "--apply", "--workers", "1", "--progress", "lines"])
        .env("NO_COLOR", "1")
        .envs(crate::servers::child_env())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn count(v: &serde_json::Value, status: &str) -> u64 {
    v["counts"][status].as_u64().unwrap_or(0)
}

/// Add `audit` to the audits of ledger.daily_totals.
fn audit_daily_totals(p: &Path, audit: &str) {
    let f = p.join("models/ledger/daily_totals.sql");
    let text = std::fs::read_to_string(&f).unwrap();
    let text = text.replace(
        "audits (unique_values(columns := (ds)),",
        &format!("audits ({audit}, unique_values(columns := (ds)),"),
    );
    assert!(text.contains(audit));
    std::fs::write(&f, text).unwrap();
}

pub fn apply_id_of(stderr: &str) -> String {
    let at = stderr.find("apply ").expect("an apply id in the message");
    stderr[at + 6..]
        .split_whitespace()
        .next()
        .unwrap()
        .trim_end_matches(':')
        .to_string()
}

#[test]
fn a_failing_canary_stops_the_apply_before_the_fan_out() {
    let (_t, p) = ledger(0..7);
    // Every batch of daily_totals has at most 2 days of rows: the first (canary) fails.
    audit_daily_totals(&p, "number_of_rows(threshold := 100)");
    let r = tidemark(&p, &["--execution-time", "2024-03-08", "plan", "--apply"]);
    assert_eq!(r.code, 2, "{}", r.transcript());
    assert!(
        r.stderr
            .contains("a canary batch failed, so the rest did not start"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("number_of_rows"), "{}", r.stderr);
    let id = apply_id_of(&r.stderr);
    let v = progress_json(&p, Some(&id));
    assert_eq!(v["outcome"], "failed");
    assert_eq!(count(&v, "FAILED"), 1);
    let daily = v["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "ledger.daily_totals")
        .unwrap();
    assert_eq!(daily["counts"]["PENDING"], 3, "{v}");
    // Only canaries (and what they need) ran: no model got past its first batch.
    for m in v["models"].as_array().unwrap() {
        let done = m["counts"]["COMPLETE"].as_u64().unwrap_or(0);
        assert!(done <= 1, "{m}");
    }
    // Nothing is visible: no environment was created.
    let r = tidemark(&p, &["query", "SELECT 1 AS x FROM ledger.accounts"]);
    assert_eq!(r.code, 2, "{}", r.transcript());
    assert!(
        r.stderr.contains("no environment named `prod`"),
        "{}",
        r.stderr
    );
}

#[test]
fn the_circuit_breaker_stops_after_max_failures_and_says_how_to_resume() {
    let (_t, p) = ledger(0..7);
    // Batches of 2 days: [03-03, 03-05) and [03-05, 03-07) fail; the others pass.
    audit_daily_totals(
        &p,
        "forall(criteria := (ds <> '2024-03-04' AND ds <> '2024-03-06'))",
    );
    let r = tidemark(
        &p,
        &[
            "--execution-time",
            "2024-03-08",
            "plan",
            "--apply",
            "--canary",
            "0",
            "--max-failures",
            "2",
            "--workers",
            "1",
        ],
    );
    assert_eq!(r.code, 2, "{}", r.transcript());
    assert!(
        r.stderr
            .contains("the circuit breaker tripped after 2 failed batches"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("tidemark apply --resume"), "{}", r.stderr);
    let id = apply_id_of(&r.stderr);
    let v = progress_json(&p, Some(&id));
    assert_eq!(count(&v, "FAILED"), 2, "{v}");
    let failures: Vec<String> = v["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["start"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        failures,
        ["2024-03-03T00:00:00Z", "2024-03-05T00:00:00Z"],
        "{v}"
    );
    // Audits run before the commit: the failed windows were never written.
    let tables = std::fs::read_dir(p.join("warehouse/ledger")).unwrap();
    let daily = tables
        .map(|e| e.unwrap().path())
        .find(|d| {
            d.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("daily_totals__")
        })
        .unwrap();
    let partitions: Vec<String> = std::fs::read_dir(&daily)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("_tidemark_partition="))
        .collect();
    assert!(!partitions.is_empty());
    for day in ["03", "04", "05", "06"] {
        assert!(
            !partitions
                .iter()
                .any(|n| n.contains(&format!("2024-03-{day}"))),
            "{partitions:?}"
        );
    }
    // The text view lists them too.
    let text = ok(&p, &["progress", &id]);
    assert!(text.contains("failed batches:"), "{text}");
    assert!(
        text.contains("resume with: tidemark apply --resume"),
        "{text}"
    );
}

#[test]
fn an_interrupted_apply_resumes_by_id_and_skips_complete_batches() {
    let (_t, p) = ledger(0..10);
    interrupt_and_resume(&p);
}

/// The same with the warehouse on S3: the progress records and the plan `--resume` reads live
/// on the store.
#[test]
fn an_interrupted_apply_on_s3_resumes_by_id() {
    let Some(moto) = crate::s3::moto() else {
        return;
    };
    let (_t, p) = ledger(0..10);
    moto.warehouse(&p, "resume");
    interrupt_and_resume(&p);
}

/// SIGINT after the first batch, then `apply --resume ID`: complete batches skipped, the same
/// contents as an uninterrupted apply.
fn interrupt_and_resume(p: &Path) {
    let p = p.to_path_buf();
    let mut child = with_piped_stderr(&p, &["--execution-time", "2024-03-11"]);
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = String::new();
    // After the first completed batch, ask it to stop (SIGINT, like Ctrl-C).
    for l in lines.by_ref() {
        let l = l.unwrap();
        seen.push_str(&l);
        seen.push('\n');
        if l.contains("[1/") && l.contains("rows") {
            let pid = child.id().to_string();
            let s = Command::new("kill").args(["-INT", &pid]).status().unwrap();
            assert!(s.success());
            break;
        }
    }
    for l in lines {
        seen.push_str(&l.unwrap());
        seen.push('\n');
    }
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(2), "{seen}");
    assert!(seen.contains("stopping: no new batch starts"), "{seen}");
    assert!(seen.contains("paused: interrupted"), "{seen}");
    let id = apply_id_of(&seen[seen.find("error:").unwrap()..]);
    let before = progress_json(&p, Some(&id));
    let complete = count(&before, "COMPLETE");
    let total: u64 = ["COMPLETE", "PENDING", "RUNNING", "FAILED"]
        .iter()
        .map(|s| count(&before, s))
        .sum();
    assert!(complete >= 1 && complete < total, "{before}");
    assert_eq!(before["outcome"], "paused");

    let r = tidemark(
        &p,
        &["--execution-time", "2024-03-11", "apply", "--resume", &id],
    );
    assert_eq!(r.code, 0, "{}", r.transcript());
    assert!(
        r.stderr.contains(&format!(
            "resuming apply {id}: {complete} of {total} batches already complete"
        )),
        "{}",
        r.stderr
    );
    let after = progress_json(&p, Some(&id));
    assert_eq!(after["outcome"], "complete");
    assert_eq!(count(&after, "COMPLETE"), total);
    // Same contents as an uninterrupted apply.
    let (_t2, q) = ledger(0..10);
    ok(&q, &["--execution-time", "2024-03-11", "plan", "--apply"]);
    for sql in [
        "SELECT ds, payments, amount_eur FROM ledger.daily_totals ORDER BY ds",
        "SELECT * FROM ledger.running_balance ORDER BY ds",
        "SELECT * FROM ledger.latest_payment ORDER BY account_id",
    ] {
        assert_eq!(csv(&p, "prod", sql), csv(&q, "prod", sql), "{sql}");
    }
    // The log shows one apply, complete.
    let log = ok(&p, &["log"]);
    assert!(
        log.contains(&id) && log.contains("complete (revision 1)"),
        "{log}"
    );
}

#[test]
fn two_applies_of_one_environment_race_and_one_wins() {
    let (_t, p) = ledger(0..7);
    let plan = p.join("plan.json");
    ok(
        &p,
        &[
            "--execution-time",
            "2024-03-08",
            "plan",
            "--out",
            plan.to_str().unwrap(),
        ],
    );
    let spawn = || {
        Command::new(crate::common::bin())
            .args([
                "--project",
                p.to_str().unwrap(),
                "--execution-time",
                "2024-03-08",
                "apply",
                plan.to_str().unwrap(),
            ])
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let codes = [a.status.code(), b.status.code()];
    let won = codes.iter().filter(|c| **c == Some(0)).count();
    assert_eq!(
        won,
        1,
        "exactly one wins: {codes:?}\n--- a\n{}\n--- b\n{}",
        String::from_utf8_lossy(&a.stderr),
        String::from_utf8_lossy(&b.stderr)
    );
    let loser = if a.status.code() == Some(0) { &b } else { &a };
    assert_eq!(loser.status.code(), Some(2));
    let err = String::from_utf8_lossy(&loser.stderr);
    assert!(
        (err.contains("`prod` changed while this apply") || err.contains("the plan is stale"))
            && err.contains("hint:"),
        "{err}"
    );
    // No duplicates: one row per day and per key.
    assert_eq!(
        csv(
            &p,
            "prod",
            "SELECT COUNT(*) AS n, COUNT(DISTINCT ds) AS d FROM ledger.daily_totals"
        ),
        "n,d\n7,7\n"
    );
    assert_eq!(
        csv(
            &p,
            "prod",
            "SELECT COUNT(*) AS n, COUNT(DISTINCT account_id) AS k FROM ledger.latest_payment"
        ),
        "n,k\n5,5\n"
    );
}

#[test]
fn a_history_backfill_in_dev_and_the_daily_run_in_prod_write_one_table_at_once() {
    // prod holds 03-01..03-07. History from February arrives; dev moves the start back (a
    // metadata change: same physical tables) and backfills February while prod's daily run
    // computes 03-08..03-10 into the same tables.
    let (_t, p) = ledger(0..7);
    ok(&p, &["--execution-time", "2024-03-08", "plan", "--apply"]);
    let feb: Vec<_> = (-29..0).flat_map(payments_of_day).collect();
    let later: Vec<_> = (7..10).flat_map(payments_of_day).collect();
    append_payments(&p.join("data/payments"), &feb);
    append_payments(&p.join("data/payments"), &later);
    let toml = p.join("tidemark.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    std::fs::write(
        &toml,
        text.replace("start = \"2024-03-01\"", "start = \"2024-02-01\""),
    )
    .unwrap();
    let shared_before =
        crate::common::table_of(&crate::common::env_json(&p, "prod"), "ledger.daily_totals");

    let spawn = |args: &[&str]| {
        let mut all = vec![
            "--project",
            p.to_str().unwrap(),
            "--execution-time",
            "2024-03-11",
        ];
        all.extend_from_slice(args);
        Command::new(crate::common::bin())
            .args(&all)
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let dev = spawn(&[
        "plan",
        "dev",
        "--apply",
        "--start",
        "2024-02-01",
        "--end",
        "2024-03-07",
    ]);
    let run = spawn(&["run", "prod"]);
    let (dev, run) = (
        dev.wait_with_output().unwrap(),
        run.wait_with_output().unwrap(),
    );
    assert_eq!(
        dev.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&dev.stderr)
    );
    assert_eq!(
        run.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    // Writers of one table take turns (the table lock): no commit of either is refused, so
    // neither the history backfill nor the daily run spends an attempt, whatever the timing.
    for (who, out) in [("dev", &dev), ("run", &run)] {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !err.contains("retrying"),
            "{who} lost a commit to the other writer:\n{err}"
        );
    }
    let dev_env = crate::common::env_json(&p, "dev");
    assert_eq!(
        crate::common::table_of(&dev_env, "ledger.daily_totals"),
        shared_before,
        "the start change is metadata only: dev shares prod's table"
    );
    // prod: exactly 03-01..03-10 in its range, once each, with the right counts.
    let expected = |days: std::ops::Range<i64>| -> String {
        let mut s = "ds,n\n".to_string();
        for d in days {
            let n = payments_of_day(d).iter().filter(|p| p.settled).count();
            let day =
                chrono::NaiveDate::from_ymd_opt(2024, 3, 1).unwrap() + chrono::Duration::days(d);
            s.push_str(&format!("{day},{n}\n"));
        }
        s
    };
    assert_eq!(
        csv(
            &p,
            "prod",
            "SELECT ds, payments AS n FROM ledger.daily_totals WHERE ds >= '2024-03-01' ORDER BY ds"
        ),
        expected(0..10)
    );
    // dev: February and the first week, once each.
    assert_eq!(
        csv(
            &p,
            "dev",
            "SELECT ds, payments AS n FROM ledger.daily_totals WHERE ds < '2024-03-08' ORDER BY ds"
        ),
        expected(-29..7)
    );
    assert_eq!(
        csv(
            &p,
            "dev",
            "SELECT COUNT(*) AS n, COUNT(DISTINCT ds) AS d FROM ledger.daily_totals"
        )
        .lines()
        .nth(1)
        .map(|l| {
            let v: Vec<&str> = l.split(',').collect();
            v[0] == v[1]
        }),
        Some(true),
        "no duplicated day"
    );
}

#[test]
fn reconcile_proves_what_was_written_and_finds_differences() {
    let (_t, p) = ledger(0..7);
    ok(&p, &["--execution-time", "2024-03-08", "plan", "--apply"]);
    for m in [
        "ledger.daily_totals",
        "ledger.running_balance",
        "ledger.latest_payment",
        "ledger.tier_balances",
    ] {
        let out = ok(&p, &["reconcile", m]);
        assert!(
            out.contains("against recorded") && out.contains(", 0 differ"),
            "{m}: {out}"
        );
    }
    // Records from a build that checksummed with another hash (bare hex) compare rows only.
    let applies = p.join("warehouse/_tidemark/applies");
    let mut rewritten = 0;
    for rel in crate::bad_input::tree(&applies).into_keys() {
        let e = applies.join(rel);
        let text = std::fs::read_to_string(&e).unwrap();
        if text.contains("\"x64:") {
            std::fs::write(&e, text.replace("\"x64:", "\"")).unwrap();
            rewritten += 1;
        }
    }
    assert!(rewritten > 0);
    let out = ok(&p, &["reconcile", "ledger.daily_totals"]);
    assert!(
        out.contains(", 0 differ") && out.contains("only their row counts were compared"),
        "{out}"
    );
    // A logic change in dev: the partitions of its window differ from prod's, exit 1.
    let f = p.join("models/ledger/daily_totals.sql");
    let text = std::fs::read_to_string(&f).unwrap();
    std::fs::write(
        &f,
        text.replace("COUNT(*) AS payments", "COUNT(*) + 1 AS payments"),
    )
    .unwrap();
    ok(
        &p,
        &["--execution-time", "2024-03-08", "plan", "dev", "--apply"],
    );
    let r = tidemark(
        &p,
        &[
            "reconcile",
            "ledger.daily_totals",
            "--env",
            "dev",
            "--against",
            "prod",
            "--start",
            "2024-03-02",
            "--end",
            "2024-03-05",
            "--format",
            "json",
        ],
    );
    assert_eq!(r.code, 1, "{}", r.transcript());
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["compared"], 3);
    let units: Vec<&str> = v["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["unit"].as_str().unwrap())
        .collect();
    assert_eq!(units, ["2024-03-02", "2024-03-03", "2024-03-04"]);
    assert!(!v["samples"].as_array().unwrap().is_empty());
    // An unchanged model shares its table: nothing differs.
    let r = tidemark(
        &p,
        &[
            "reconcile",
            "ledger.latest_payment",
            "--env",
            "dev",
            "--against",
            "prod",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.transcript());
}

#[test]
fn json_progress_events_and_plan_estimates_from_recorded_batches() {
    let (_t, p) = ledger(0..7);
    let r = tidemark(
        &p,
        &[
            "--execution-time",
            "2024-03-08",
            "plan",
            "--apply",
            "--progress",
            "json",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.transcript());
    // Every stderr line is one event of the versioned format.
    let events = crate::common::events(&r.stderr);
    assert!(events.iter().all(|e| e["format"] == "tidemark.events/v1"));
    let of = |kind: &str| events.iter().filter(|e| e["event"] == kind).count();
    let id = events[0]["apply"].as_str().unwrap().to_string();
    let batches = count(&progress_json(&p, Some(&id)), "COMPLETE") as usize;
    assert!(batches > 0);
    assert_eq!(of("started"), batches);
    assert_eq!(of("completed"), batches);
    assert_eq!(of("failed"), 0);
    // daily_totals' unique_values audit ran on each of its batches and passed.
    let audits: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["event"] == "audit" && e["model"] == "ledger.daily_totals")
        .collect();
    assert!(!audits.is_empty());
    assert!(
        audits
            .iter()
            .all(|a| a["failures"] == 0 && a["blocking"] == true)
    );
    let summary = events.last().unwrap();
    assert_eq!(summary["event"], "summary", "{summary}");
    assert_eq!(summary["outcome"], "complete");
    let daily_rows: u64 = events
        .iter()
        .filter(|e| e["event"] == "completed" && e["model"] == "ledger.daily_totals")
        .map(|e| e["rows"].as_u64().unwrap())
        .sum();
    assert!(daily_rows > 0);

    // The estimate line of daily_totals in the plan restating it from `start`.
    let estimate = |start: &str| {
        let mut args = vec![
            "--execution-time",
            "2024-03-08",
            "plan",
            "--restate-model",
            "ledger.daily_totals",
        ];
        if !start.is_empty() {
            args.extend(["--start", start]);
        }
        let text = ok(&p, &args);
        assert!(
            text.contains("estimates (from batches of earlier applies):"),
            "{text}"
        );
        text.lines()
            .find(|l| l.trim_start().starts_with("ledger.daily_totals:"))
            .unwrap_or_else(|| panic!("{text}"))
            .to_string()
    };
    // The whole history: the estimate is what its batches recorded.
    let line = estimate("");
    assert!(
        line.contains(&format!("7 partitions, ~{daily_rows} rows")),
        "{line}"
    );
    // Three of the seven days: three sevenths of the rows.
    let line = estimate("2024-03-05");
    assert!(
        line.contains(&format!(
            "3 partitions, ~{} rows",
            (daily_rows as f64 * 3.0 / 7.0).round() as u64
        )),
        "{line}"
    );
}

#[test]
fn a_source_appended_to_during_a_backfill_is_read_at_one_pinned_version() {
    use crate::kinds::{Payment, check_all};
    let (_t, p) = ledger(0..7);
    let mut child = with_piped_stderr(&p, &["--execution-time", "2024-03-08"]);
    // Another writer appends a day of payments (one Delta version each) after each of the
    // first three completed batches.
    let later: Vec<Payment> = (7..10).flat_map(payments_of_day).collect();
    let mut appended = 0;
    let mut after_last_append = 0;
    let mut seen = String::new();
    for l in BufReader::new(child.stderr.take().unwrap()).lines() {
        let l = l.unwrap();
        seen.push_str(&l);
        seen.push('\n');
        let completed = l.contains(" rows, ");
        if completed && appended == 3 {
            after_last_append += 1;
        }
        if completed && appended < 3 {
            append_payments(&p.join("data/payments"), &payments_of_day(7 + appended));
            appended += 1;
        }
    }
    assert!(child.wait().unwrap().success(), "{seen}");
    assert_eq!(appended, 3, "{seen}");
    assert!(
        after_last_append > 0,
        "the apply ended before the appends: {seen}"
    );

    // Every batch that read the source read version 0, the version pinned when it started.
    let applies = p.join("warehouse/_tidemark/applies");
    let apply = std::fs::read_dir(&applies)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut readers = 0;
    for f in std::fs::read_dir(apply.join("batches")).unwrap() {
        let r: serde_json::Value =
            serde_json::from_slice(&std::fs::read(f.unwrap().path()).unwrap()).unwrap();
        if let Some(v) = r["inputs"].get("raw.payments") {
            assert_eq!(v, 0, "{r}");
            readers += 1;
        }
    }
    assert!(readers > 0);
    let first: Vec<Payment> = (0..7).flat_map(payments_of_day).collect();
    check_all(&p, &first);
    assert_eq!(
        crate::common::env_json(&p, "prod")["source_versions"]["raw.payments"],
        0
    );

    // The next run reads the newest version (3) and picks up exactly the appended days: every
    // day once, nothing missing at the boundary.
    ok(&p, &["--execution-time", "2024-03-11", "run"]);
    let all: Vec<Payment> = first.iter().chain(&later).copied().collect();
    check_all(&p, &all);
    assert_eq!(
        crate::common::env_json(&p, "prod")["source_versions"]["raw.payments"],
        3
    );
}
