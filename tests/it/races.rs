//! Races between real processes on one warehouse: two `run`s of prod, `promote` against `run`,
//! and `janitor` against an apply that reuses a table. Each ends with one clear winner (the
//! loser exits 2 saying what changed and what to do) or with both succeeding, and never with
//! duplicated or lost rows.
//!
//! `TIDEMARK_RACE_TRIALS` (default 2) sets the trials of each racing scenario; trial `i`
//! starts the second process a seeded delay after the first, so that different trials race
//! at different moments.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::bad_input::tree;
use crate::common::{ok, tidemark};
use crate::kinds::{
    Payment, append_payments, check_all, check_changed, ledger, ledger_on, payments_of_day,
};

fn trials() -> u64 {
    crate::common::env_count("TIDEMARK_RACE_TRIALS", 2)
}

/// The delay before the second process of trial `i`: 0 first, then spread over 0–400 ms.
fn stagger(i: u64) -> Duration {
    Duration::from_millis(if i == 0 { 0 } else { (i * 7919) % 400 })
}

fn spawn(p: &Path, args: &[&str]) -> Child {
    Command::new(crate::common::bin())
        .arg("--project")
        .arg(p)
        .args(args)
        .env("NO_COLOR", "1")
        .envs(crate::servers::child_env())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

struct Done {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Start `a`, then `b` after `delay`; wait for both.
fn race(p: &Path, a: &[&str], b: &[&str], delay: Duration) -> (Done, Done) {
    let first = spawn(p, a);
    std::thread::sleep(delay);
    let second = spawn(p, b);
    (done(first), done(second))
}

fn done(c: Child) -> Done {
    let o = c.wait_with_output().unwrap();
    Done {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// A loser must exit 2 with an error saying the environment moved, and a hint.
fn won_or_lost_cleanly(d: &Done, what: &str) {
    assert!(!d.stderr.contains("panicked"), "{what}: {}", d.stderr);
    if d.code == 0 {
        return;
    }
    assert_eq!(d.code, 2, "{what}: {}", d.stderr);
    assert!(
        d.stderr.contains("changed") && d.stderr.contains("hint:"),
        "{what}: {}",
        d.stderr
    );
    assert!(!d.stderr.contains("bug"), "{what}: {}", d.stderr);
}

fn days(r: std::ops::Range<i64>) -> Vec<Payment> {
    r.flat_map(payments_of_day).collect()
}

const BASE: [&str; 4] = ["--execution-time", "2024-03-08", "plan", "--apply"];
const RUN: [&str; 3] = ["--execution-time", "2024-03-11", "run"];

/// Two runs of prod racing on projects made by `project(trial)`.
fn two_runs(what: &str, project: impl Fn(u64) -> (tempfile::TempDir, std::path::PathBuf)) {
    for i in 0..trials() {
        let (_t, p) = project(i);
        ok(&p, &BASE);
        append_payments(&p.join("data/payments"), &days(7..10));
        let (a, b) = race(&p, &RUN, &RUN, stagger(i));
        won_or_lost_cleanly(&a, "first run");
        won_or_lost_cleanly(&b, "second run");
        assert!(a.code == 0 || b.code == 0, "one run wins");
        check_all(&p, &days(0..10));
        // Whatever happened, the next run has nothing left to do.
        let again = ok(&p, &RUN);
        assert!(
            !again.contains(" batch, ") && !again.contains(" batches, "),
            "{again}"
        );
        check_all(&p, &days(0..10));
        let why = [&a, &b]
            .iter()
            .flat_map(|d| d.stderr.lines())
            .filter(|l| l.starts_with("error:") || l.starts_with("hint:"))
            .collect::<Vec<_>>()
            .join("\n  ");
        eprintln!(
            "{what} trial {i}: runs exited {} and {}\n  {why}",
            a.code, b.code
        );
    }
}

#[test]
fn two_runs_of_prod_at_once_end_with_one_result() {
    two_runs("local", |_| ledger(0..7));
}

/// The same with the warehouse on S3 (moto): the two processes share nothing but the store,
/// so only its conditional writes keep them apart.
#[test]
fn two_runs_of_prod_on_s3_at_once_end_with_one_result() {
    let Some(moto) = crate::s3::moto() else {
        return;
    };
    two_runs("S3", |i| {
        ledger_on(0..7, "race", i, |p, b| moto.warehouse(p, b))
    });
}

/// The same with the warehouse on Azure (Azurite).
#[test]
fn two_runs_of_prod_on_azure_at_once_end_with_one_result() {
    let Some(az) = crate::azure::azurite() else {
        return;
    };
    two_runs("Azure", |i| {
        ledger_on(0..7, "race", i, |p, c| az.warehouse(p, c))
    });
}

/// The same with the batches running on Spark (Sail): both runs may compute one window on the
/// engine at once; only one commit of it lands (the batch's transaction and the Delta log's
/// conflict rules), the other's staged files are never referenced.
#[test]
fn two_runs_of_prod_on_spark_at_once_end_with_one_result() {
    let Some(remote) = crate::spark::sail() else {
        return;
    };
    two_runs("Spark", |_| crate::spark::spark_ledger(remote, 0..7));
}

/// The restatement of late data racing the daily `run` of the same environment: each ends
/// cleanly (a loser exits 2 saying the environment moved), and once both are done again the
/// tables equal a clean build from the same source: nothing duplicated or lost.
#[test]
fn a_late_data_restatement_racing_the_daily_run_ends_with_all_rows_once() {
    use crate::late::{BUILD, clean_contents, contents, late_of, late_of_day, project};
    let restate = [
        "--execution-time",
        "2024-03-09",
        "plan",
        "--restate-late",
        "--apply",
    ];
    let run = ["--execution-time", "2024-03-09", "run"];
    for i in 0..trials() {
        let (_t, p) = project(0..7);
        let source = p.join("data/payments");
        ok(&p, &BUILD);
        append_payments(&source, &payments_of_day(7));
        append_payments(&source, &late_of_day(2));
        // Odd trials start the run first.
        let (a, b) = if i % 2 == 0 {
            race(&p, &restate, &run, stagger(i))
        } else {
            let (b, a) = race(&p, &run, &restate, stagger(i));
            (a, b)
        };
        won_or_lost_cleanly(&a, "restatement");
        won_or_lost_cleanly(&b, "run");
        // Whatever happened, finishing both leaves nothing to do and nothing late.
        ok(&p, &run);
        ok(&p, &restate);
        let plan = ["--execution-time", "2024-03-09", "plan", "--format", "json"];
        assert_eq!(late_of(&ok(&p, &plan)), None, "trial {i}");
        let clean = clean_contents(&source, "2024-03-09");
        assert_eq!(contents(&p), clean, "trial {i}");
        eprintln!(
            "late-data race trial {i}: restatement exited {}, run exited {}",
            a.code, b.code
        );
    }
}

/// A change that gives daily_totals (and what reads it) new tables with the same results.
fn reorder_daily_totals(p: &Path) {
    let f = p.join("models/ledger/daily_totals.sql");
    let text = std::fs::read_to_string(&f).unwrap();
    let changed = text.replace("SUM(s.amount * fx.rate)", "SUM(fx.rate * s.amount)");
    assert_ne!(text, changed);
    std::fs::write(&f, changed).unwrap();
}

#[test]
fn promote_racing_the_daily_run_on_prod_ends_with_all_rows_once() {
    for i in 0..trials() {
        let (_t, p) = ledger(0..7);
        ok(&p, &BASE);
        append_payments(&p.join("data/payments"), &days(7..10));
        reorder_daily_totals(&p);
        ok(
            &p,
            &["--execution-time", "2024-03-11", "plan", "dev", "--apply"],
        );
        check_changed(&p, "dev", &days(0..10));
        let promote = ["--execution-time", "2024-03-11", "promote", "dev"];
        let (a, b) = if i % 2 == 0 {
            race(&p, &RUN, &promote, stagger(i))
        } else {
            let (b, a) = race(&p, &promote, &RUN, stagger(i));
            (a, b)
        };
        won_or_lost_cleanly(&a, "run");
        won_or_lost_cleanly(&b, "promote");
        assert!(a.code == 0 || b.code == 0, "one of them wins");
        // Either way the changed models hold every day once (dev's tables, or prod's own
        // after the run); the next run completes the unchanged ones where promote won.
        check_changed(&p, "prod", &days(0..10));
        ok(&p, &RUN);
        check_all(&p, &days(0..10));
        eprintln!("trial {i}: run exited {}, promote {}", a.code, b.code);
    }
}

/// prod at 2024-03-08; `dev1` builds daily_totals' new tables for 7 days and expires an hour
/// later; a plan for `dev2` (saved, not applied, the default week to live) reuses them and
/// adds 3 days.
fn reuse_setup() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let (t, p) = ledger(0..10);
    ok(&p, &BASE);
    reorder_daily_totals(&p);
    let toml = p.join("tidemark.toml");
    let config = std::fs::read_to_string(&toml).unwrap();
    std::fs::write(&toml, format!("{config}\n[environments]\nttl = \"1h\"\n")).unwrap();
    ok(
        &p,
        &["--execution-time", "2024-03-08", "plan", "dev1", "--apply"],
    );
    std::fs::write(&toml, config).unwrap();
    let plan = p.join("dev2.json");
    let out = ok(
        &p,
        &[
            "--execution-time",
            "2024-03-11",
            "plan",
            "dev2",
            "--out",
            plan.to_str().unwrap(),
        ],
    );
    assert!(out.contains("ledger.daily_totals"), "{out}");
    (t, p, plan)
}

/// Two hours from now: `dev1` has expired, `dev2` (if it exists) has not.
fn janitor_time() -> String {
    (chrono::Utc::now() + chrono::Duration::hours(2)).to_rfc3339()
}

/// A janitor pass at [`janitor_time`].
fn janitor(p: &Path) -> Done {
    let d = done(spawn(p, &["--execution-time", &janitor_time(), "janitor"]));
    assert_eq!(d.code, 0, "janitor: {}", d.stderr);
    d
}

/// A live environment `dev2`, or none: the apply lost cleanly and wrote nothing to `dev2`.
fn dev2_exists(p: &Path) -> bool {
    tidemark(p, &["env", "show", "dev2", "--format", "json"]).code == 0
}

#[test]
fn janitor_first_then_the_apply_that_reused_its_tables_is_refused() {
    let (_t, p, plan) = reuse_setup();
    let out = janitor(&p).stdout;
    assert!(out.contains("deleted expired environment `dev1`"), "{out}");
    assert!(out.contains("deleted table `ledger/daily_totals"), "{out}");
    let before = tree(&p.join("warehouse"));
    let r = tidemark(&p, &["apply", plan.to_str().unwrap()]);
    assert_eq!(r.code, 2, "{}", r.transcript());
    assert!(
        r.stderr.contains("which state commit")
            && r.stderr.contains("deleted after the plan was made")
            && r.stderr
                .contains("hint: nothing was written; make the plan again"),
        "{}",
        r.stderr
    );
    assert_eq!(
        before,
        tree(&p.join("warehouse")),
        "the refused apply wrote"
    );
    // Planned again, it recomputes what the deleted tables held.
    ok(
        &p,
        &["--execution-time", "2024-03-11", "plan", "dev2", "--apply"],
    );
    check_changed(&p, "dev2", &days(0..10));
}

#[test]
fn an_interrupted_apply_keeps_its_lease_and_janitor_keeps_the_tables_it_reuses() {
    let (_t, p, plan) = reuse_setup();
    // A rate the engine cannot read: the new days fail, the apply stops with its lease held.
    let fx = p.join("data/fx.csv");
    let good = std::fs::read_to_string(&fx).unwrap();
    std::fs::write(&fx, "currency,rate\nEUR,one\nUSD,half\n").unwrap();
    let r = tidemark(
        &p,
        &[
            "apply",
            plan.to_str().unwrap(),
            "--retries",
            "0",
            "--workers",
            "1",
        ],
    );
    assert_eq!(r.code, 2, "{}", r.transcript());
    let id = r
        .stderr
        .split("apply --resume ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_else(|| panic!("a resume hint: {}", r.stderr))
        .trim_end_matches(['`', '.'])
        .to_string();
    // dev1 expires; its tables are unreachable but leased, so they stay.
    let out = janitor(&p).stdout;
    assert!(out.contains("deleted expired environment `dev1`"), "{out}");
    assert!(
        out.contains("kept table `ledger/daily_totals") && out.contains(&id),
        "{out}"
    );
    std::fs::write(&fx, good).unwrap();
    ok(&p, &["apply", "--resume", &id]);
    check_changed(&p, "dev2", &days(0..10));
    // The final commit released the lease.
    let state = ok(&p, &["state", "export"]);
    assert!(!state.contains("\"leases\""), "a lease outlived its apply");
    let out = janitor(&p).stdout;
    assert!(!out.contains("deleted table"), "{out}");
    check_changed(&p, "dev2", &days(0..10));
}

#[test]
fn janitor_racing_an_apply_that_reuses_a_table_never_leaves_gaps() {
    for i in 0..trials() {
        let (_t, p, plan) = reuse_setup();
        let apply = ["apply", plan.to_str().unwrap()];
        let later = janitor_time();
        let (a, j) = race(
            &p,
            &apply,
            &["--execution-time", &later, "janitor"],
            stagger(i),
        );
        assert_eq!(j.code, 0, "janitor: {}", j.stderr);
        assert!(!a.stderr.contains("panicked") && !a.stderr.contains("bug"));
        match a.code {
            0 => {
                // The lease landed first: the tables stayed and dev2 is complete.
                assert!(!j.stdout.contains("deleted table `ledger/daily_totals"));
                check_changed(&p, "dev2", &days(0..10));
            }
            2 => {
                assert!(
                    a.stderr.contains("deleted after the plan was made"),
                    "{}",
                    a.stderr
                );
                assert!(!dev2_exists(&p));
                ok(
                    &p,
                    &["--execution-time", "2024-03-11", "plan", "dev2", "--apply"],
                );
                check_changed(&p, "dev2", &days(0..10));
            }
            c => panic!("apply exited {c}: {}", a.stderr),
        }
        check_all(&p, &days(0..7));
        eprintln!(
            "trial {i}: apply exited {} after a janitor {}",
            a.code,
            if j.stdout.contains("kept table") {
                "that kept the leased tables"
            } else {
                "pass"
            }
        );
    }
}
