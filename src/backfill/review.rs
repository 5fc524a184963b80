//! The canary review: each subject's diff computed as soon as its canary batches completed,
//! then, once every canary batch did, the diffs printed in order and the gates checked.
//!
//! Invariants:
//! - A subject's diff starts only when every one of its canary batches completed; a worker
//!   with no batch to start computes it while other batches run (it only reads, each side at a
//!   fixed version, and only the canary partitions, which nothing else of the model writes
//!   before the review).
//! - The review answers alone, as before (see [`super::scheduler`]): the diffs are printed,
//!   in subject order, and the gates checked only once every canary batch completed. A diff no
//!   worker has started by then (or every diff, on a resume whose canaries completed
//!   earlier) is computed by the review itself, `--workers` at a time.
//! - Each diff is computed exactly once; a panic in one is reported as a bug, not lost.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Condvar, Mutex};

use super::ApplyRun;
use super::canary::{self, CanaryDiff, Subject};
use super::display::EventLine;
use super::gates;
use super::track::Tracker;
use crate::engine::Checksum;
use crate::error::{Error, Result};

enum Slot {
    /// Canary batches still to complete (or nobody took it yet).
    Waiting,
    /// Being computed.
    Computing,
    Done(Result<CanaryDiff>),
    /// Handed to the review.
    Taken,
}

struct Progress {
    /// Per subject: its canary batches not yet completed.
    left: Vec<usize>,
    /// Subjects whose canary batches all completed, not yet taken.
    ready: VecDeque<usize>,
    slots: Vec<Slot>,
}

/// The diffs of one apply's subjects, as they become computable.
pub(super) struct Early<'s> {
    subjects: &'s [Subject],
    /// Canary batch id → the subjects it belongs to.
    of_batch: BTreeMap<usize, Vec<usize>>,
    progress: Mutex<Progress>,
    changed: Condvar,
}

impl<'s> Early<'s> {
    /// `done`: per batch id, completed in an earlier run.
    pub(super) fn new(subjects: &'s [Subject], done: &[bool]) -> Early<'s> {
        let mut of_batch: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        let mut left = vec![0; subjects.len()];
        for (i, s) in subjects.iter().enumerate() {
            for &b in s.batches() {
                if !done.get(b).copied().unwrap_or(false) {
                    of_batch.entry(b).or_default().push(i);
                    left[i] += 1;
                }
            }
        }
        Early {
            subjects,
            of_batch,
            progress: Mutex::new(Progress {
                left,
                ready: VecDeque::new(),
                slots: subjects.iter().map(|_| Slot::Waiting).collect(),
            }),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Progress> {
        // A poisoned lock only means a diff panicked elsewhere; the slots stay consistent.
        self.progress.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Batch `id` completed (call after the tracker recorded it).
    pub(super) fn completed(&self, id: usize) {
        let Some(subjects) = self.of_batch.get(&id) else {
            return;
        };
        let mut p = self.lock();
        for &i in subjects {
            p.left[i] = p.left[i].saturating_sub(1);
            if p.left[i] == 0 {
                p.ready.push_back(i);
            }
        }
        self.changed.notify_all();
    }

    /// Side work for an idle worker: compute the next diff whose canary batches all completed;
    /// `false`: none is ready.
    pub(super) fn next(&self, cx: &ApplyRun<'_>, tracker: &Tracker<'_, '_>) -> bool {
        let i = {
            let mut p = self.lock();
            loop {
                let Some(i) = p.ready.pop_front() else {
                    return false;
                };
                if matches!(p.slots[i], Slot::Waiting) {
                    p.slots[i] = Slot::Computing;
                    break i;
                }
            }
        };
        let d = self.compute(cx, tracker, i);
        let mut p = self.lock();
        p.slots[i] = Slot::Done(d);
        self.changed.notify_all();
        true
    }

    fn compute(
        &self,
        cx: &ApplyRun<'_>,
        tracker: &Tracker<'_, '_>,
        i: usize,
    ) -> Result<CanaryDiff> {
        let s = &self.subjects[i];
        let run = std::panic::AssertUnwindSafe(|| canary::diff(cx.engine, s, measured(tracker, s)));
        std::panic::catch_unwind(run).unwrap_or_else(|_| {
            Err(Error::Bug(format!(
                "the canary diff of {} panicked",
                s.model()
            )))
        })
    }

    /// Every subject's diff, in order: those not started are computed now, `--workers` at a
    /// time; those a worker is computing are waited for.
    fn all(&self, cx: &ApplyRun<'_>, tracker: &Tracker<'_, '_>) -> Vec<Result<CanaryDiff>> {
        let mine: Vec<usize> = {
            let mut p = self.lock();
            (0..self.subjects.len())
                .filter(|&i| {
                    let free = matches!(p.slots[i], Slot::Waiting);
                    if free {
                        p.slots[i] = Slot::Computing;
                    }
                    free
                })
                .collect()
        };
        let computed = super::in_parallel(cx.options.workers.get(), &mine, |&i| {
            self.compute(cx, tracker, i)
        });
        let mut p = self.lock();
        for (&i, d) in mine.iter().zip(computed) {
            p.slots[i] = Slot::Done(d.unwrap_or_else(|| {
                Err(Error::Bug(format!(
                    "the canary diff of {} panicked",
                    self.subjects[i].model()
                )))
            }));
        }
        let mut out = Vec::with_capacity(self.subjects.len());
        for i in 0..self.subjects.len() {
            while matches!(p.slots[i], Slot::Computing) {
                p = self.changed.wait(p).unwrap_or_else(|e| e.into_inner());
            }
            out.push(match std::mem::replace(&mut p.slots[i], Slot::Taken) {
                Slot::Done(d) => d,
                _ => Err(Error::Bug(format!(
                    "the canary diff of {} was taken twice",
                    self.subjects[i].model()
                ))),
            });
        }
        out
    }
}

/// The canary side of `s` per partition as its batches measured it, if every one of them did
/// (their windows are disjoint, so each partition comes from one batch).
fn measured(tracker: &Tracker<'_, '_>, s: &Subject) -> Option<BTreeMap<String, Checksum>> {
    let mut out = BTreeMap::new();
    for id in s.batches() {
        for (k, c) in tracker.measured(*id)? {
            if out.insert(k, c).is_some() {
                return None;
            }
        }
    }
    Some(out)
}

/// The review the scheduler runs once the canary batches completed: print (or emit) each
/// subject's diff, then with `--canary-gate` check their gates; `true`: the rest may start.
pub(super) fn review(cx: &ApplyRun<'_>, early: &Early<'_>, tracker: &Tracker<'_, '_>) -> bool {
    let subjects = early.subjects;
    let diffs = early.all(cx, tracker);
    for (s, d) in subjects.iter().zip(diffs) {
        match d {
            Ok(d) => {
                for line in canary::text(&d).lines() {
                    tracker.note(line);
                }
                tracker.emit(EventLine {
                    model: Some(d.model.to_string()),
                    diff: Some(d),
                    ..EventLine::new("canary_diff", &cx.apply.id)
                });
            }
            Err(e) => tracker.note(&format!(
                "warning: no canary diff of {}: {}",
                s.model(),
                e.summary()
            )),
        }
    }
    if !cx.options.canary_gate {
        return true;
    }
    let verdict = match canary::gate(cx, subjects) {
        Ok(v) => v,
        Err(e) => {
            tracker.note(&format!(
                "error: the canary gates could not be checked, so nothing fans out: {}",
                e.summary()
            ));
            return false;
        }
    };
    if verdict.report.checked.is_empty() {
        tracker.note(
            "canary gates: no model with canary batches and a previous version declares gates",
        );
        return true;
    }
    for line in gates::table(&verdict.report, "Canary gates", false)
        .trim()
        .lines()
    {
        tracker.note(line);
    }
    tracker.emit(EventLine {
        violations: Some(verdict.report.violations.clone()),
        ..EventLine::new("canary_gate", &cx.apply.id)
    });
    if !verdict.accepted.is_empty()
        && let Err(e) = cx.progress.accept(&cx.apply.id, &verdict.accepted)
    {
        tracker.note(&format!(
            "error: the acceptance could not be recorded, so nothing fans out: {}",
            e.summary()
        ));
        return false;
    }
    verdict.report.blocking() == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(e: &Early<'_>) -> Vec<usize> {
        e.lock().ready.iter().copied().collect()
    }

    #[test]
    fn a_diff_becomes_ready_when_the_last_of_its_canary_batches_completes() {
        let subjects = [
            Subject::with_batches("s.a", vec![0, 1]),
            Subject::with_batches("s.b", vec![2]),
            // Its canary completed in an earlier run: the review computes it, not an idle worker.
            Subject::with_batches("s.c", vec![3]),
        ];
        let e = Early::new(&subjects, &[false, false, false, true, false]);
        e.completed(0);
        assert!(ready(&e).is_empty(), "s.a still has a canary batch running");
        e.completed(4);
        assert!(ready(&e).is_empty(), "batch 4 is nobody's canary");
        e.completed(2);
        assert_eq!(ready(&e), [1]);
        e.completed(1);
        assert_eq!(ready(&e), [1, 0]);
        e.completed(3);
        assert_eq!(ready(&e), [1, 0]);
    }
}
