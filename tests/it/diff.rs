//! `diff --base GIT_REV`: two revisions of a project compared offline, from git.

use std::path::Path;
use std::process::Command;

use crate::common::{copy_project, fail_with, fixture, succeed};

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn diff_between_revisions_without_a_warehouse() {
    // The project lives in a subdirectory of the repository, as in a monorepo.
    let (_t, dir) = copy_project(&fixture("projects/plan"));
    let repo = dir.parent().unwrap();
    git(repo, &["init", "-q", "-b", "main"]);
    git(repo, &["add", "."]);
    git(repo, &["commit", "-q", "-m", "base"]);
    let p = dir.join("models/core/users.sql");
    let text = std::fs::read_to_string(&p).unwrap();
    std::fs::write(&p, text.replace("v.name\n", "v.name, 1 AS one\n")).unwrap();

    let run = succeed(
        &dir,
        &[
            "--execution-time",
            "2024-01-08",
            "diff",
            "--base",
            "main",
            "--format",
            "json",
        ],
    );
    let plan: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(plan["environment"], "working tree");
    assert_eq!(plan["base_environment"], "main");
    let models = plan["models"].as_array().unwrap();
    let users = models.iter().find(|m| m["name"] == "core.users").unwrap();
    assert_eq!(users["category"], "non_breaking");
    assert_eq!(users["backfill"]["action"], "full_refresh");
    let ue = models
        .iter()
        .find(|m| m["name"] == "mart.user_events")
        .unwrap();
    assert_eq!(ue["category"], "indirect_non_breaking");
    assert!(ue["backfill"].is_null());
    assert!(
        !dir.join("warehouse").exists(),
        "diff must not touch a warehouse"
    );

    // Committed, then compared revision to revision, with a window.
    git(repo, &["commit", "-q", "-am", "head"]);
    let run = succeed(
        &dir,
        &[
            "--execution-time",
            "2024-01-08",
            "diff",
            "--base",
            "HEAD~1",
            "--head",
            "HEAD",
            "--start",
            "2024-01-06",
            "--end",
            "2024-01-07",
        ],
    );
    assert!(
        run.stdout.contains("core.users (non breaking)"),
        "{}",
        run.stdout
    );
    let run = succeed(
        &dir,
        &[
            "--execution-time",
            "2024-01-08",
            "diff",
            "--base",
            "HEAD",
            "--format",
            "markdown",
        ],
    );
    assert!(run.stdout.contains("No changes"), "{}", run.stdout);
    fail_with(
        &dir,
        &["diff", "--base", "no-such-branch"],
        "unknown git revision `no-such-branch`",
    );
}
