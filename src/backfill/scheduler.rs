//! Running a batch graph on a bounded pool of worker threads.
//!
//! Invariants:
//! - A batch starts only when every batch it depends on completed, its model has fewer than its
//!   `batch_concurrency` batches running, every external source it reads has fewer than the
//!   source limit of readers, and — unless it is a canary (or needed by one) — every canary
//!   batch completed.
//! - Among startable batches the order is: canaries first, then by window start (oldest first,
//!   or newest first on request), then by position in the graph (dependency order). So a long
//!   chain pipelines: day 1 of every model before day 2 of any.
//! - A transient failure (commit conflict, I/O) is retried with exponential backoff, up to the
//!   retry limit; every other failure is final at once.
//! - When the last canary batch completes (or, on a resume, before anything starts if the
//!   canaries completed earlier), the review runs alone: no other batch starts until it
//!   answers, and a refusal stops the run before the fan-out.
//! - A worker that finds no batch it may start while others run does side work first (`idle`:
//!   the apply's clones and canary diffs), one task at a time, then looks again; it waits only
//!   when there is none. So side work fills the gaps of the batch graph instead of competing
//!   with batches for `--workers` threads.
//! - Once the circuit breaker trips (max failures reached, a canary failed), the time box is
//!   spent, or a stop is requested, no new batch starts; running batches finish and are
//!   reported. Dependents of a failed batch never start.
//! - The result does not depend on thread timing beyond which batches ran before a stop: each
//!   batch's outcome is reported exactly once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use super::batches::Batch;
use crate::error::Error;
use crate::project::ModelName;

/// Limits and policies of one run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Worker threads.
    pub workers: std::num::NonZeroUsize,
    /// Extra attempts for transient failures.
    pub retries: u32,
    /// Failed batches that stop everything.
    pub max_failures: std::num::NonZeroUsize,
    /// Run the newest windows first.
    pub newest_first: bool,
    /// No batch starts after this instant.
    pub deadline: Option<Instant>,
    /// Concurrent batches reading one external source (`None`: no limit).
    pub max_source_reads: Option<std::num::NonZeroUsize>,
    /// Backoff before the first retry; doubled for each further one (capped at 30 s).
    pub backoff: Duration,
}

/// Why a run stopped before every batch ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The circuit breaker tripped: too many failed batches.
    Failures,
    /// A canary batch failed.
    Canary,
    /// The review after the canary batches refused the fan-out (`--canary-gate`).
    CanaryReview,
    /// The time box was spent.
    Deadline,
    /// Interrupted (SIGINT/SIGTERM).
    Interrupted,
}

/// Something that happened, reported from the worker thread it happened on.
pub enum Event<'a, R> {
    /// A batch attempt starts.
    Started {
        batch: &'a Batch,
        /// 1-based attempt in this run.
        attempt: u32,
    },
    /// A transient failure; the batch will be tried again after `wait`.
    Retrying {
        batch: &'a Batch,
        /// The attempt that failed.
        attempt: u32,
        /// Its error.
        error: &'a Error,
        /// Backoff before the next attempt.
        wait: Duration,
    },
    Completed {
        batch: &'a Batch,
        /// What the work returned.
        result: &'a R,
        /// Seconds of the successful attempt.
        seconds: f64,
        /// Attempts it took.
        attempts: u32,
    },
    /// Failed for good.
    Failed {
        batch: &'a Batch,
        /// The last error.
        error: &'a Error,
        /// Attempts made.
        attempts: u32,
    },
}

/// The outcome of a run.
pub struct Finished<R> {
    /// Per batch: `None` not run, `Some(Ok)` complete (now or before), `Some(Err)` failed.
    pub results: Vec<Option<std::result::Result<R, Error>>>,
    /// Why it stopped early, if it did.
    pub stopped: Option<Stop>,
}

struct Shared<R> {
    waiting_on: Vec<usize>,
    ready: BTreeSet<(bool, i64, usize)>,
    running_model: BTreeMap<ModelName, usize>,
    running_source: BTreeMap<ModelName, usize>,
    canaries_left: usize,
    in_flight: usize,
    failures: usize,
    stopped: Option<Stop>,
    results: Vec<Option<std::result::Result<R, Error>>>,
}

/// Run `batches` with `work`. `done` marks batches completed earlier (skipped, their value
/// kept); `limit` gives each model's concurrency (absent: unlimited); `review` is asked once
/// the canary batches completed whether the rest may start; `idle` is side work a worker does
/// when no batch can start but others run (`true`: it did some, and may have more).
#[allow(clippy::too_many_arguments)]
pub fn run<R: Send>(
    batches: &[Batch],
    done: Vec<Option<R>>,
    limit: &BTreeMap<ModelName, usize>,
    settings: &Settings,
    interrupt: &AtomicBool,
    work: &(dyn Fn(&Batch, u32) -> std::result::Result<R, Error> + Sync),
    on: &(dyn Fn(Event<'_, R>) + Sync),
    review: &(dyn Fn() -> bool + Sync),
    idle: &(dyn Fn() -> bool + Sync),
) -> Finished<R> {
    let n = batches.len();
    let mut dependents = vec![Vec::new(); n];
    for b in batches {
        for &d in &b.deps {
            dependents[d].push(b.id);
        }
    }
    let key = |b: &Batch| {
        let t = b.window.start.timestamp();
        (!b.canary, if settings.newest_first { -t } else { t }, b.id)
    };
    let results: Vec<Option<std::result::Result<R, Error>>> = done
        .into_iter()
        .map(|d| d.map(Ok))
        .chain(std::iter::repeat_with(|| None))
        .take(n)
        .collect();
    let is_done = |results: &Vec<Option<std::result::Result<R, Error>>>, i: usize| {
        matches!(results[i], Some(Ok(_)))
    };
    let mut waiting_on = vec![0; n];
    let mut ready = BTreeSet::new();
    let mut canaries_left = 0;
    for b in batches {
        if is_done(&results, b.id) {
            continue;
        }
        canaries_left += usize::from(b.canary);
        waiting_on[b.id] = b.deps.iter().filter(|&&d| !is_done(&results, d)).count();
        if waiting_on[b.id] == 0 {
            ready.insert(key(b));
        }
    }
    // Canaries that completed in an earlier run: the review comes first.
    if canaries_left == 0 && batches.iter().any(|b| b.canary) && !review() {
        return Finished {
            results,
            stopped: Some(Stop::CanaryReview),
        };
    }
    let shared = Mutex::new(Shared {
        waiting_on,
        ready,
        running_model: BTreeMap::new(),
        running_source: BTreeMap::new(),
        canaries_left,
        in_flight: 0,
        failures: 0,
        stopped: None,
        results,
    });
    let wake = Condvar::new();
    let workers = settings.workers.get();
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                worker(
                    batches,
                    &dependents,
                    limit,
                    settings,
                    interrupt,
                    &shared,
                    &wake,
                    &key,
                    work,
                    on,
                    review,
                    idle,
                )
            });
        }
    });
    let shared = shared.into_inner().unwrap_or_else(|p| p.into_inner());
    Finished {
        results: shared.results,
        stopped: shared.stopped,
    }
}

#[allow(clippy::too_many_arguments)]
fn worker<R: Send>(
    batches: &[Batch],
    dependents: &[Vec<usize>],
    limit: &BTreeMap<ModelName, usize>,
    settings: &Settings,
    interrupt: &AtomicBool,
    shared: &Mutex<Shared<R>>,
    wake: &Condvar,
    key: &(dyn Fn(&Batch) -> (bool, i64, usize) + Sync),
    work: &(dyn Fn(&Batch, u32) -> std::result::Result<R, Error> + Sync),
    on: &(dyn Fn(Event<'_, R>) + Sync),
    review: &(dyn Fn() -> bool + Sync),
    idle: &(dyn Fn() -> bool + Sync),
) {
    loop {
        // Pick a batch, or leave.
        let picked = {
            let mut st = shared.lock().unwrap_or_else(|p| p.into_inner());
            // Side work was looked for since the last wait and there was none.
            let mut idled = false;
            loop {
                if st.stopped.is_none() {
                    if interrupt.load(Ordering::SeqCst) {
                        st.stopped = Some(Stop::Interrupted);
                    } else if settings.deadline.is_some_and(|d| Instant::now() >= d)
                        && !st.ready.is_empty()
                    {
                        st.stopped = Some(Stop::Deadline);
                    }
                }
                if st.stopped.is_some() {
                    wake.notify_all();
                    return;
                }
                let found = st.ready.iter().copied().find(|&(_, _, id)| {
                    let b = &batches[id];
                    let model_ok = limit.get(&b.model).is_none_or(|&l| {
                        st.running_model.get(&b.model).copied().unwrap_or(0) < l.max(1)
                    });
                    let sources_ok = settings.max_source_reads.is_none_or(|l| {
                        b.sources
                            .iter()
                            .all(|s| st.running_source.get(s).copied().unwrap_or(0) < l.get())
                    });
                    let gate_ok = b.canary || st.canaries_left == 0;
                    model_ok && sources_ok && gate_ok
                });
                if let Some(k) = found {
                    st.ready.remove(&k);
                    let b = &batches[k.2];
                    *st.running_model.entry(b.model.clone()).or_default() += 1;
                    for s in &b.sources {
                        *st.running_source.entry(s.clone()).or_default() += 1;
                    }
                    st.in_flight += 1;
                    break k.2;
                }
                if st.in_flight == 0 {
                    // Nothing runs and nothing can start: finished (or blocked by failures).
                    wake.notify_all();
                    return;
                }
                if !idled {
                    // Nothing can start yet: side work in the meantime, then look again
                    // (without the lock, so that others complete and start batches meanwhile).
                    drop(st);
                    idled = !idle();
                    st = shared.lock().unwrap_or_else(|p| p.into_inner());
                    continue;
                }
                idled = false;
                st = wake
                    .wait_timeout(st, Duration::from_millis(200))
                    .map(|(g, _)| g)
                    .unwrap_or_else(|p| p.into_inner().0);
            }
        };
        let b = &batches[picked];
        let (outcome, attempts, seconds) = attempt_all(b, settings, interrupt, work, on);
        match &outcome {
            Ok(r) => on(Event::Completed {
                batch: b,
                result: r,
                seconds,
                attempts,
            }),
            Err(e) => on(Event::Failed {
                batch: b,
                error: e,
                attempts,
            }),
        }
        let mut st = shared.lock().unwrap_or_else(|p| p.into_inner());
        st.in_flight -= 1;
        if let Some(c) = st.running_model.get_mut(&b.model) {
            *c -= 1;
        }
        for s in &b.sources {
            if let Some(c) = st.running_source.get_mut(s) {
                *c -= 1;
            }
        }
        match outcome {
            Ok(r) => {
                st.results[picked] = Some(Ok(r));
                if b.canary && st.canaries_left == 1 && st.stopped.is_none() {
                    // The last canary: review while nothing else can start (canaries_left is
                    // still 1, so the gate stays shut for every other worker).
                    drop(st);
                    let go_on = review();
                    st = shared.lock().unwrap_or_else(|p| p.into_inner());
                    if !go_on && st.stopped.is_none() {
                        st.stopped = Some(Stop::CanaryReview);
                    }
                }
                st.canaries_left -= usize::from(b.canary);
                for &d in &dependents[picked] {
                    st.waiting_on[d] -= 1;
                    if st.waiting_on[d] == 0 {
                        let k = key(&batches[d]);
                        st.ready.insert(k);
                    }
                }
            }
            Err(e) => {
                st.results[picked] = Some(Err(e));
                st.failures += 1;
                if st.stopped.is_none() {
                    if b.canary {
                        st.stopped = Some(Stop::Canary);
                    } else if st.failures >= settings.max_failures.get() {
                        st.stopped = Some(Stop::Failures);
                    }
                }
            }
        }
        wake.notify_all();
    }
}

/// Every attempt of one batch: (outcome, attempts made, seconds of the last attempt).
fn attempt_all<R>(
    b: &Batch,
    settings: &Settings,
    interrupt: &AtomicBool,
    work: &(dyn Fn(&Batch, u32) -> std::result::Result<R, Error> + Sync),
    on: &(dyn Fn(Event<'_, R>) + Sync),
) -> (std::result::Result<R, Error>, u32, f64) {
    let mut attempt = 1;
    loop {
        on(Event::Started { batch: b, attempt });
        let started = Instant::now();
        let r = work(b, attempt);
        let seconds = started.elapsed().as_secs_f64();
        match r {
            Err(e)
                if e.is_transient()
                    && attempt <= settings.retries
                    && !interrupt.load(Ordering::SeqCst) =>
            {
                let wait = settings
                    .backoff
                    .saturating_mul(1 << (attempt - 1).min(16))
                    .min(Duration::from_secs(30));
                on(Event::Retrying {
                    batch: b,
                    attempt,
                    error: &e,
                    wait,
                });
                let until = Instant::now() + wait;
                while Instant::now() < until && !interrupt.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(20).min(wait));
                }
                attempt += 1;
            }
            other => return (other, attempt, seconds),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::batches::{ModelWork, Node, Upstream, build};
    use super::*;
    use crate::error::Diagnostic;
    use crate::interval::Interval;
    use chrono::{TimeZone, Utc};
    use std::sync::atomic::AtomicUsize;

    fn n(s: &str) -> ModelName {
        ModelName::parse(s).unwrap()
    }

    fn chain(models: &[&str], days: u32, canary: bool) -> Vec<Batch> {
        let d = |x: u32| Utc.with_ymd_and_hms(2024, 1, x, 0, 0, 0).unwrap();
        let mut parents = BTreeMap::new();
        let mut nodes = BTreeMap::new();
        for (i, m) in models.iter().enumerate() {
            nodes.insert(n(m), Node::Table);
            if i > 0 {
                parents.insert(n(m), vec![n(models[i - 1])]);
            }
        }
        let work: Vec<ModelWork> = models
            .iter()
            .enumerate()
            .map(|(i, m)| ModelWork {
                name: n(m),
                windows: (1..=days).map(|x| Interval::new(d(x), d(x + 1))).collect(),
                windowed: true,
                sequential: false,
                concurrency: 8,
                canary: canary && i == 0,
            })
            .collect();
        build(
            &work,
            &Upstream {
                nodes: &nodes,
                parents: &parents,
            },
            1,
        )
    }

    fn settings(workers: usize) -> Settings {
        Settings {
            workers: std::num::NonZeroUsize::new(workers).unwrap(),
            retries: 2,
            max_failures: std::num::NonZeroUsize::MIN,
            newest_first: false,
            deadline: None,
            max_source_reads: None,
            backoff: Duration::from_millis(1),
        }
    }

    #[test]
    fn a_worker_with_nothing_to_start_does_side_work_while_others_run() {
        // One day of a chain: the second worker has no batch it may start while the first runs.
        let g = chain(&["s.a", "s.b"], 1, false);
        let stop = AtomicBool::new(false);
        let running = AtomicUsize::new(0);
        let (side, during) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let work = |b: &Batch, _| {
            running.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(60));
            running.fetch_sub(1, Ordering::SeqCst);
            Ok::<usize, Error>(b.id)
        };
        // Three side tasks, then none.
        let idle = || {
            if side.fetch_add(1, Ordering::SeqCst) >= 3 {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
            if running.load(Ordering::SeqCst) > 0 {
                during.fetch_add(1, Ordering::SeqCst);
            }
            true
        };
        let f = run(
            &g,
            Vec::new(),
            &BTreeMap::new(),
            &settings(2),
            &stop,
            &work,
            &|_| {},
            &|| true,
            &idle,
        );
        assert!(f.stopped.is_none());
        assert!(f.results.iter().all(|r| matches!(r, Some(Ok(_)))));
        assert!(side.load(Ordering::SeqCst) > 3, "every side task was taken");
        assert!(
            during.load(Ordering::SeqCst) >= 2,
            "side work ran while a batch ran"
        );
    }

    #[test]
    fn every_batch_runs_once_after_its_dependencies() {
        let g = chain(&["s.a", "s.b", "s.c"], 20, false);
        let finished_at: Vec<AtomicUsize> = (0..g.len()).map(|_| AtomicUsize::new(0)).collect();
        let clock = AtomicUsize::new(1);
        let stop = AtomicBool::new(false);
        let work = |b: &Batch, _| {
            for &d in &b.deps {
                assert_ne!(
                    finished_at[d].load(Ordering::SeqCst),
                    0,
                    "dependency not done"
                );
            }
            finished_at[b.id].store(clock.fetch_add(1, Ordering::SeqCst), Ordering::SeqCst);
            Ok::<usize, Error>(b.id)
        };
        let f = run(
            &g,
            Vec::new(),
            &BTreeMap::new(),
            &settings(4),
            &stop,
            &work,
            &|_| {},
            &|| true,
            &|| false,
        );
        assert!(f.stopped.is_none());
        assert!(
            f.results
                .iter()
                .enumerate()
                .all(|(i, r)| matches!(r, Some(Ok(x)) if *x == i))
        );
    }

    #[test]
    fn transient_failures_are_retried_and_the_breaker_stops_new_work() {
        let g = chain(&["s.a", "s.b"], 10, false);
        let stop = AtomicBool::new(false);
        let tries = AtomicUsize::new(0);
        // Batch 0 fails transiently twice, then succeeds; batch 3 fails for good.
        let work = |b: &Batch, attempt: u32| {
            if b.id == 0 && attempt < 3 {
                tries.fetch_add(1, Ordering::SeqCst);
                return Err(Error::transient(Diagnostic::error("conflict")));
            }
            if b.id == 3 {
                return Err(Error::from(Diagnostic::error("bad sql")));
            }
            Ok(())
        };
        let f = run(
            &g,
            Vec::new(),
            &BTreeMap::new(),
            &settings(1),
            &stop,
            &work,
            &|_| {},
            &|| true,
            &|| false,
        );
        assert_eq!(tries.load(Ordering::SeqCst), 2);
        assert_eq!(f.stopped, Some(Stop::Failures));
        assert!(matches!(f.results[3], Some(Err(_))));
        // b's batch of day 4 (id 13) needs a's day 4 (id 3): never started.
        assert!(f.results[13].is_none());
        // With one worker and oldest-first order, nothing after the failure started.
        let run_count = f.results.iter().filter(|r| r.is_some()).count();
        assert!(run_count < g.len());
    }

    #[test]
    fn a_failing_canary_stops_before_the_fan_out_and_done_batches_are_skipped() {
        let g = chain(&["s.a", "s.b"], 10, true);
        let stop = AtomicBool::new(false);
        let ran = AtomicUsize::new(0);
        let work = |b: &Batch, _| {
            ran.fetch_add(1, Ordering::SeqCst);
            if b.id == 0 {
                Err(Error::from(Diagnostic::error("audit failed")))
            } else {
                Ok(())
            }
        };
        let f = run(
            &g,
            Vec::new(),
            &BTreeMap::new(),
            &settings(2),
            &stop,
            &work,
            &|_| {},
            &|| true,
            &|| false,
        );
        assert_eq!(f.stopped, Some(Stop::Canary));
        assert_eq!(ran.load(Ordering::SeqCst), 1, "nothing else started");

        // Resume with the first 5 done: they are not run again.
        let ran = AtomicUsize::new(0);
        let work = |b: &Batch, _| {
            assert!(b.id >= 5);
            ran.fetch_add(1, Ordering::SeqCst);
            Ok(())
        };
        let done = (0..5).map(|_| Some(())).collect();
        let f = run(
            &g,
            done,
            &BTreeMap::new(),
            &settings(2),
            &stop,
            &work,
            &|_| {},
            &|| true,
            &|| false,
        );
        assert!(f.stopped.is_none());
        assert_eq!(ran.load(Ordering::SeqCst), g.len() - 5);
    }

    #[test]
    fn the_review_runs_once_after_the_last_canary_and_alone_and_a_refusal_stops_the_fan_out() {
        let g = chain(&["s.a", "s.b"], 6, true);
        let canaries = g.iter().filter(|b| b.canary).count();
        let stop = AtomicBool::new(false);
        let ran = AtomicUsize::new(0);
        let reviews = AtomicUsize::new(0);
        let work = |_: &Batch, _| {
            ran.fetch_add(1, Ordering::SeqCst);
            Ok(())
        };
        let (ran, reviews) = (&ran, &reviews);
        let review = |answer: bool| {
            move || {
                reviews.fetch_add(1, Ordering::SeqCst);
                // Only the canaries ran, and nothing else starts while the review runs.
                let before = ran.load(Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(30));
                assert_eq!(ran.load(Ordering::SeqCst), before);
                answer
            }
        };
        let refuse = review(false);
        let f = run(
            &g,
            Vec::new(),
            &BTreeMap::new(),
            &settings(3),
            &stop,
            &work,
            &|_| {},
            &refuse,
            &|| false,
        );
        assert_eq!(f.stopped, Some(Stop::CanaryReview));
        assert_eq!(reviews.load(Ordering::SeqCst), 1);
        assert_eq!(
            ran.load(Ordering::SeqCst),
            canaries,
            "only the canaries ran"
        );
        // A resume with the canaries done asks again before anything starts.
        let done: Vec<Option<()>> = f.results.iter().map(|r| r.as_ref().map(|_| ())).collect();
        let accept = review(true);
        let f = run(
            &g,
            done,
            &BTreeMap::new(),
            &settings(3),
            &stop,
            &work,
            &|_| {},
            &accept,
            &|| false,
        );
        assert!(f.stopped.is_none());
        assert_eq!(reviews.load(Ordering::SeqCst), 2);
        assert_eq!(ran.load(Ordering::SeqCst), g.len());
    }

    #[test]
    fn per_model_concurrency_and_interrupts_are_respected() {
        let g = chain(&["s.a"], 12, false);
        let stop = AtomicBool::new(false);
        let now = AtomicUsize::new(0);
        let peak = AtomicUsize::new(0);
        let work = |_: &Batch, _| {
            let c = now.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(c, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(5));
            now.fetch_sub(1, Ordering::SeqCst);
            Ok(())
        };
        let limit = BTreeMap::from([(n("s.a"), 2)]);
        let f = run(
            &g,
            Vec::new(),
            &limit,
            &settings(6),
            &stop,
            &work,
            &|_| {},
            &|| true,
            &|| false,
        );
        assert!(f.stopped.is_none());
        assert!(peak.load(Ordering::SeqCst) <= 2);
        let stop = AtomicBool::new(true);
        let f = run(
            &g,
            Vec::new(),
            &limit,
            &settings(2),
            &stop,
            &work,
            &|_| {},
            &|| true,
            &|| false,
        );
        assert_eq!(f.stopped, Some(Stop::Interrupted));
        assert!(f.results.iter().all(Option::is_none));
    }
}
