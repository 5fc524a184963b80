//! Helpers: run the CLI, locate fixtures, copy projects into temp dirs.

use std::path::{Path, PathBuf};
use std::process::Command;

/// What a run of the CLI produced.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// exit code, stdout and stderr in one text, for snapshots.
    pub fn transcript(&self) -> String {
        let mut s = format!("exit: {}\n", self.code);
        if !self.stdout.is_empty() {
            s.push_str("--- stdout\n");
            s.push_str(&self.stdout);
        }
        if !self.stderr.is_empty() {
            s.push_str("--- stderr\n");
            s.push_str(&self.stderr);
        }
        s
    }
}

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The README's walkthrough change in a copy of the example: the loyalty discount becomes 15 %
/// (a breaking change of `sushi.stg_transactions`).
pub fn fix_discount(p: &Path) {
    let f = p.join("models/sushi/stg_transactions.sql");
    let text = std::fs::read_to_string(&f).unwrap();
    assert!(text.contains("THEN 0.9 ELSE"));
    std::fs::write(&f, text.replace("THEN 0.9 ELSE", "THEN 0.85 ELSE")).unwrap();
}

/// The bundled example project (`examples/sushi`).
pub fn sushi() -> PathBuf {
    repo().join("examples/sushi")
}

/// A fixture directory.
pub fn fixture(rel: &str) -> PathBuf {
    repo().join("fixtures").join(rel)
}

/// Run `tidemark ARGS` in `cwd` with a fixed environment (no colour, no inherited NO_COLOR games).
/// The binary under test: `TIDEMARK_BIN` when set (the long crash run uses a release build
/// copied aside, so rebuilding meanwhile does not change what runs), else this build's.
pub fn bin() -> PathBuf {
    std::env::var_os("TIDEMARK_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_tidemark")))
}

pub fn tidemark_in(cwd: &Path, args: &[&str]) -> Run {
    let out = Command::new(crate::common::bin())
        .args(args)
        .current_dir(cwd)
        .env("NO_COLOR", "1")
        .envs(crate::servers::child_env())
        .output()
        .expect("run tidemark");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Run `tidemark --project DIR ARGS`.
pub fn tidemark(project: &Path, args: &[&str]) -> Run {
    let mut all = vec!["--project", project.to_str().expect("utf-8 path")];
    all.extend_from_slice(args);
    tidemark_in(&repo(), &all)
}

/// Copy a directory tree into a fresh temp dir; returns the guard and the copy's path.
pub fn copy_project(src: &Path) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dst = tmp.path().join("project");
    copy_dir(src, &dst);
    (tmp, dst)
}

/// Copy a directory tree.
pub fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).expect("mkdir");
    for e in std::fs::read_dir(src).expect("read_dir") {
        let e = e.expect("entry");
        let to = dst.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), &to).expect("copy");
        }
    }
}

/// Parse `info --format json` output.
pub fn info_json(project: &Path) -> serde_json::Value {
    let run = tidemark(project, &["info", "--format", "json"]);
    assert_eq!(run.code, 0, "{}", run.transcript());
    serde_json::from_str(&run.stdout).expect("info json")
}

/// name → data fingerprint from `info --format json`.
pub fn data_hashes(project: &Path) -> std::collections::BTreeMap<String, String> {
    let json = info_json(project);
    json["models"]
        .as_array()
        .expect("models")
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap().to_string(),
                m["fingerprint"]["data"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Run `tidemark --project DIR ARGS` and require exit code 0.
pub fn succeed(project: &Path, args: &[&str]) -> Run {
    let run = tidemark(project, args);
    assert_eq!(run.code, 0, "{}", run.transcript());
    run
}

/// Run `tidemark --project DIR ARGS` and require exit code 2 with `needle` in stderr.
pub fn fail_with(project: &Path, args: &[&str], needle: &str) -> Run {
    let run = tidemark(project, args);
    assert_eq!(run.code, 2, "{}", run.transcript());
    assert!(run.stderr.contains(needle), "{}", run.stderr);
    run
}

/// Run `tidemark --project DIR ARGS`, require exit code 0, return stdout.
pub fn ok(p: &Path, args: &[&str]) -> String {
    let r = tidemark(p, args);
    assert_eq!(r.code, 0, "tidemark {args:?}\n{}", r.transcript());
    r.stdout
}

/// `query --env ENV --format csv SQL`.
pub fn csv(p: &Path, env: &str, sql: &str) -> String {
    ok(p, &["query", "--env", env, "--format", "csv", sql])
}

/// The events of a `--progress json` stderr, each line checked to be one JSON event.
pub fn events(stderr: &str) -> Vec<serde_json::Value> {
    stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// `env show ENV --format json`.
pub fn env_json(p: &Path, env: &str) -> serde_json::Value {
    serde_json::from_str(&ok(p, &["env", "show", env, "--format", "json"])).unwrap()
}

/// The physical table of `model` in `env show` JSON.
pub fn table_of(env: &serde_json::Value, model: &str) -> String {
    env["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == model)
        .map(|m| m["table"].as_str().unwrap_or("").to_string())
        .unwrap()
}

/// Point the project at `p` at `warehouse` with `[storage]` `options` (replacing any
/// `warehouse` line and `[storage]` table, which must come last, of its `tidemark.toml`).
pub fn set_warehouse(p: &Path, warehouse: &str, options: &[(&str, String)]) {
    let config = std::fs::read_to_string(p.join("tidemark.toml")).unwrap();
    let config = config.split("\n[storage]\n").next().unwrap_or_default();
    let mut config: String = config
        .lines()
        .filter(|l| !l.trim_start().starts_with("warehouse"))
        .map(|l| format!("{l}\n"))
        .collect::<String>()
        .replacen(
            "[project]\n",
            &format!("[project]\nwarehouse = \"{warehouse}\"\n"),
            1,
        );
    config.push_str("\n[storage]\n");
    for (k, v) in options {
        config.push_str(&format!("{k} = \"{v}\"\n"));
    }
    std::fs::write(p.join("tidemark.toml"), config).unwrap();
}

/// The number in the environment variable `var`, else `default` (trial counts of the long runs).
pub fn env_count(var: &str, default: u64) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}
