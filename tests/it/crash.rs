//! Crash consistency: real applies, runs, promotions, rollbacks and janitor passes killed with
//! SIGKILL at random moments, then resumed, many times over.
//!
//! `TIDEMARK_CRASH_TRIALS` sets the number of trials per scenario (default 3, so CI stays
//! short; the long run uses 50), `TIDEMARK_CRASH_SEED` the first seed (default 1). Every trial
//! prints its seed and kill delays, so a failure can be replayed with the same seed.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{env_count, env_json, ok, tidemark};
use crate::kinds::{Payment, append_payments, check_all, ledger, ledger_on, payments_of_day};

fn trials() -> u64 {
    env_count("TIDEMARK_CRASH_TRIALS", 3)
}

fn first_seed() -> u64 {
    env_count("TIDEMARK_CRASH_SEED", 1)
}

/// xorshift64*: a small seeded generator (no dependency needed for kill delays).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `[0, max)`.
    fn below(&mut self, max: Duration) -> Duration {
        let ms = max.as_millis().max(1) as u64;
        Duration::from_millis(self.next() % ms)
    }
}

/// Run `tidemark ARGS` on `p`, SIGKILL it after `delay` unless it finished; `true` if killed.
fn run_and_kill(p: &Path, args: &[&str], delay: Duration) -> bool {
    let mut child = Command::new(crate::common::bin())
        .arg("--project")
        .arg(p)
        .args(args)
        .env("NO_COLOR", "1")
        .envs(crate::servers::child_env())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        if started.elapsed() >= delay {
            child.kill().unwrap();
            child.wait().unwrap();
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

const APPLY: &[&str] = &[
    "--execution-time",
    "2024-03-11",
    "plan",
    "--apply",
    "--workers",
    "2",
];

/// After a kill, the state is readable and `prod` is either absent or complete.
fn prod_absent_or_complete(p: &Path, rows: &[Payment]) {
    let r = tidemark(p, &["env", "list", "--format", "json"]);
    assert_eq!(r.code, 0, "the state is unreadable: {}", r.transcript());
    let envs: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let has_prod = envs["environments"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["name"] == "prod");
    if has_prod {
        check_all(p, rows);
    }
}

/// Every incremental model's tables match what their batches recorded.
fn reconciles(p: &Path) {
    for m in ["ledger.daily_totals", "ledger.running_balance"] {
        let r = tidemark(p, &["reconcile", m, "--env", "prod"]);
        assert_eq!(r.code, 0, "{m}: {}", r.transcript());
    }
}

/// Apply trials on projects made by `project(seed)`: kill, kill again, resume, compare.
pub fn apply_trials(
    what: &str,
    trials: u64,
    project: impl Fn(u64) -> (tempfile::TempDir, std::path::PathBuf),
) {
    let rows: Vec<Payment> = (0..10).flat_map(payments_of_day).collect();
    let full = {
        let (_t, p) = project(0);
        let started = Instant::now();
        ok(&p, APPLY);
        started.elapsed()
    };
    let (mut kills, mut trials_run) = (0, 0);
    for seed in first_seed()..first_seed() + trials {
        let mut rng = Rng::new(seed);
        let (_t, p) = project(seed);
        // Up to three kills in a row (a kill during the resume, too), then a clean resume.
        let mut delays = Vec::new();
        for _ in 0..1 + rng.next() % 3 {
            let d = rng.below(full + full / 4);
            delays.push(d);
            if run_and_kill(&p, APPLY, d) {
                kills += 1;
                prod_absent_or_complete(&p, &rows);
            }
        }
        eprintln!("{what} seed {seed}: kills after {delays:?}");
        ok(&p, APPLY);
        check_all(&p, &rows);
        reconciles(&p);
        trials_run += 1;
    }
    eprintln!(
        "{what}: {trials_run} trial(s), {kills} kill(s), uninterrupted apply {:.2} s",
        full.as_secs_f64()
    );
}

#[test]
fn an_apply_killed_at_random_moments_resumes_to_the_uninterrupted_result() {
    apply_trials("apply", trials(), |_| ledger(0..10));
}

/// The same on S3 (moto): every table and the state on the object store.
/// `TIDEMARK_CRASH_TRIALS_S3` sets the trials (default 2).
#[test]
fn an_apply_on_s3_killed_at_random_moments_resumes_to_the_uninterrupted_result() {
    let Some(moto) = crate::s3::moto() else {
        return;
    };
    apply_trials(
        "apply on S3",
        env_count("TIDEMARK_CRASH_TRIALS_S3", 2),
        |seed| ledger_on(0..10, "crash", seed, |p, b| moto.warehouse(p, b)),
    );
}

/// The same on Azure (Azurite). `TIDEMARK_CRASH_TRIALS_AZURE` sets the trials (default 2).
#[test]
fn an_apply_on_azure_killed_at_random_moments_resumes_to_the_uninterrupted_result() {
    let Some(az) = crate::azure::azurite() else {
        return;
    };
    apply_trials(
        "apply on Azure",
        env_count("TIDEMARK_CRASH_TRIALS_AZURE", 2),
        |seed| ledger_on(0..10, "crash", seed, |p, c| az.warehouse(p, c)),
    );
}

#[test]
fn run_promote_rollback_and_janitor_killed_leave_environments_before_or_after() {
    let first: Vec<Payment> = (0..7).flat_map(payments_of_day).collect();
    let later: Vec<Payment> = (7..10).flat_map(payments_of_day).collect();
    let all: Vec<Payment> = first.iter().chain(&later).copied().collect();
    let run_args = ["--execution-time", "2024-03-11", "run"];
    let base = ["--execution-time", "2024-03-08", "plan", "--apply"];
    let run_time = {
        let (_t, p) = ledger(0..7);
        ok(&p, &base);
        append_payments(&p.join("data/payments"), &later);
        let started = Instant::now();
        ok(&p, &run_args);
        started.elapsed()
    };
    let mut kills = 0;
    for seed in first_seed()..first_seed() + trials() {
        let mut rng = Rng::new(seed ^ 0xC0FF_EE00);
        let (_t, p) = ledger(0..7);
        ok(&p, &base);
        append_payments(&p.join("data/payments"), &later);

        // `run`: prod is at revision 1 with the old data, or at 2 with all of it.
        let d = rng.below(run_time + run_time / 4);
        kills += u64::from(run_and_kill(&p, &run_args, d));
        let revision = env_json(&p, "prod")["revision"].as_u64().unwrap();
        match revision {
            1 => check_all(&p, &first),
            2 => check_all(&p, &all),
            r => panic!("seed {seed}: prod at revision {r}"),
        }
        ok(&p, &run_args);
        check_all(&p, &all);

        // `rollback` to revision 1: before or after, never between.
        let d = rng.below(Duration::from_millis(400));
        kills += u64::from(run_and_kill(&p, &["rollback", "--to", "1"], d));
        let after_rollback = env_json(&p, "prod")["revision"].as_u64().unwrap();
        match after_rollback {
            2 => check_all(&p, &all),
            3 => check_all(&p, &first),
            r => panic!("seed {seed}: prod at revision {r} after a rollback"),
        }
        if after_rollback == 2 {
            ok(&p, &["rollback", "--to", "1"]);
        }

        // `promote` of a dev environment built from the new data: before or after.
        ok(
            &p,
            &["--execution-time", "2024-03-11", "plan", "dev", "--apply"],
        );
        let before = env_json(&p, "prod")["revision"].as_u64().unwrap();
        let d = rng.below(Duration::from_millis(600));
        kills += u64::from(run_and_kill(
            &p,
            &["--execution-time", "2024-03-11", "promote", "dev"],
            d,
        ));
        let now = env_json(&p, "prod")["revision"].as_u64().unwrap();
        if now == before {
            check_all(&p, &first);
        } else {
            assert_eq!(now, before + 1, "seed {seed}");
            check_all(&p, &all);
        }

        // `janitor`: whatever it got to, every environment still reads all of its data.
        let d = rng.below(Duration::from_millis(400));
        kills += u64::from(run_and_kill(&p, &["janitor"], d));
        if now == before {
            check_all(&p, &first);
        } else {
            check_all(&p, &all);
        }
        eprintln!("seed {seed}: run, rollback, promote and janitor survived");
    }
    eprintln!(
        "run/rollback/promote/janitor: {} trial(s), {kills} kill(s)",
        trials()
    );
}
