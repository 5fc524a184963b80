//! One snapshot per user-visible command's output, taken on the bundled example through its
//! whole life (plan and apply, run, a dev change, promote, rollback, environments, janitor,
//! log, progress, reconcile), and every command's `--help`.
//!
//! Filters keep the snapshots stable: the temp project path becomes `[project]`, durations
//! `[s]`, byte sizes `[bytes]`, apply ids `[apply]`, 16-digit hex ids (plans, snapshots, model
//! versions) `[id]`, and wall-clock timestamps `[time]`.

use std::path::Path;

use crate::common::{Run, copy_project, fix_discount, sushi, tidemark, tidemark_in};

const NOW: &str = "2024-01-31";

/// The volatile parts of an output and what they become in a snapshot.
const FILTERS: [(&str, &str); 9] = [
    // Wall-clock timestamps (created, updated, expires, log entries); the execution time and
    // the model windows are fixed and stay.
    (r"\b20[3-9]\d-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", "[time]"),
    (r"\b202[5-9]-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", "[time]"),
    (r"\b\d{8}T\d{6}Z-[0-9a-f]{8}-[0-9a-f]{4}\b", "[apply]"),
    (r" *\b\d+(\.\d+)? (B|KiB|MiB|GiB)\b", " [bytes]"),
    (r"\b\d+\.\d\d s\b", "[s]"),
    (r"\b(\d+ h )?(\d+ min )?\d+ s\b", "[s]"),
    (r"(?m)( +)\d+\.\d\d$", "$1[s]"),
    (r"\b[0-9a-f]{16}\b", "[id]"),
    // Whoever runs the tests.
    (r"\bby [^ ,\n]+", "by [user]"),
];

/// Exit status, stdout and stderr, with the temp project path as `[project]`.
fn stable(p: &Path, run: &Run) -> String {
    run.transcript().replace(p.to_str().unwrap(), "[project]")
}

fn run(p: &Path, args: &[&str]) -> Run {
    if args.contains(&"--execution-time") {
        return tidemark(p, args);
    }
    let mut all = vec!["--execution-time", NOW];
    all.extend_from_slice(args);
    tidemark(p, &all)
}

fn snap(name: &str, p: &Path, args: &[&str]) -> Run {
    let r = run(p, args);
    let mut settings = insta::Settings::clone_current();
    for (re, to) in FILTERS {
        settings.add_filter(re, to);
    }
    settings.bind(|| insta::assert_snapshot!(name, stable(p, &r)));
    r
}

#[test]
fn every_command_output_on_the_example() {
    let (_t, p) = copy_project(&sushi());
    // One worker, so that progress lines come in one order.
    let r = snap("apply_summary", &p, &["plan", "--apply", "--workers", "1"]);
    assert_eq!(r.code, 0);
    snap("run_nothing_to_do", &p, &["run"]);
    snap(
        "run_next_day",
        &p,
        &["--execution-time", "2024-02-02", "run", "--workers", "1"],
    );
    fix_discount(&p);
    snap(
        "plan_dev_apply",
        &p,
        &[
            "plan",
            "dev",
            "--start",
            "2024-01-22",
            "--end",
            "2024-01-28",
            "--apply",
            "--workers",
            "1",
        ],
    );
    snap("promote_check", &p, &["promote", "dev", "--check"]);
    snap("promote", &p, &["promote", "dev", "--workers", "1"]);
    snap("env_list", &p, &["env", "list"]);
    snap("env_show", &p, &["env", "show", "prod"]);
    snap("env_history", &p, &["env", "history", "prod"]);
    snap("rollback", &p, &["rollback", "prod"]);
    snap("janitor_dry_run", &p, &["janitor", "--dry-run"]);
    snap("log", &p, &["log"]);
    snap("progress", &p, &["progress"]);
    snap(
        "reconcile",
        &p,
        &["reconcile", "sushi.fact_sales_transactions"],
    );
    snap(
        "reconcile_against",
        &p,
        &[
            "reconcile",
            "sushi.daily_sales_by_location",
            "--against",
            "dev",
        ],
    );
}

/// Every subcommand's `--help`, so a changed flag or description shows in review.
#[test]
fn help_of_every_command() {
    let commands: [&[&str]; 23] = [
        &[],
        &["info"],
        &["dag"],
        &["render"],
        &["plan"],
        &["diff"],
        &["state"],
        &["state", "export"],
        &["state", "import"],
        &["apply"],
        &["query"],
        &["run"],
        &["promote"],
        &["rollback"],
        &["progress"],
        &["reconcile"],
        &["recall"],
        &["log"],
        &["janitor"],
        &["test"],
        &["init"],
        &["env", "list"],
        &["env", "show"],
    ];
    for c in commands {
        let mut args: Vec<&str> = c.to_vec();
        args.push("--help");
        let r = tidemark_in(&sushi(), &args);
        assert_eq!(r.code, 0, "{}", r.transcript());
        let name = if c.is_empty() {
            "help".to_string()
        } else {
            format!("help_{}", c.join("_"))
        };
        insta::assert_snapshot!(name, r.stdout);
    }
}
