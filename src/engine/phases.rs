//! Where this process's local batches spend their time, summed over all batches
//! (microseconds of wall time on the worker that ran them), for benchmarks: the phase breakdown
//! `cargo bench --bench backfill` prints and `docs/performance.md` quotes.
//!
//! Invariants:
//! - Timing only: nothing reads these totals to decide anything, and they never fail a batch.
//! - The top-level phases of one batch do not overlap (each [`Clock::lap`] adds the time since
//!   the previous lap); [`Phase::PinnedLoads`], [`Phase::Listed`] and [`Phase::Checkpoint`] are
//!   parts of [`Phase::Inputs`] and [`Phase::Commit`], timed on their own.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// A phase of a local batch.
#[derive(Clone, Copy, Debug)]
pub enum Phase {
    /// Following the table's log since the last batch and checking the transaction id.
    Open,
    /// Registering the inputs (tables at their pinned versions, sources, views).
    Inputs,
    /// Of [`Phase::Inputs`]: loading tables at a pinned version through delta-rs.
    PinnedLoads,
    /// Of [`Phase::Inputs`]: tables at a pinned version from the followed file list.
    Listed,
    /// Parsing the model's query into a logical plan.
    LogicalPlan,
    /// Optimising the logical plan and planning its execution (each Delta scan's file
    /// selection included).
    PhysicalPlan,
    /// Computing the rows and streaming them into Parquet files (checksums included).
    Write,
    /// Finishing the open Parquet files.
    Flush,
    /// Running the audits on the written files.
    Audits,
    /// The commit, including a checkpoint on the interval.
    Commit,
    /// Of [`Phase::Commit`]: writing the checkpoint.
    Checkpoint,
    /// Reporting: bytes, versions, the open table kept.
    Finish,
}

/// Every phase, in the order they are reported.
pub const ALL: [Phase; 12] = [
    Phase::Open,
    Phase::Inputs,
    Phase::PinnedLoads,
    Phase::Listed,
    Phase::LogicalPlan,
    Phase::PhysicalPlan,
    Phase::Write,
    Phase::Flush,
    Phase::Audits,
    Phase::Commit,
    Phase::Checkpoint,
    Phase::Finish,
];

static TOTALS: [AtomicU64; ALL.len()] = [const { AtomicU64::new(0) }; ALL.len()];
static BATCHES: AtomicU64 = AtomicU64::new(0);

impl Phase {
    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Open => "open",
            Phase::Inputs => "inputs",
            Phase::PinnedLoads => "  of which pinned loads",
            Phase::Listed => "  of which file lists",
            Phase::LogicalPlan => "SQL to logical plan",
            Phase::PhysicalPlan => "optimise + physical plan",
            Phase::Write => "compute + write",
            Phase::Flush => "flush",
            Phase::Audits => "audits",
            Phase::Commit => "commit",
            Phase::Checkpoint => "  of which checkpoints",
            Phase::Finish => "finish",
        }
    }

    /// Add the time since `since` to this phase.
    pub fn add(self, since: Instant) {
        let us = u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX);
        TOTALS[self as usize].fetch_add(us, Ordering::Relaxed);
    }
}

/// Laps of one batch's phases.
pub struct Clock(Instant);

impl Clock {
    /// Start timing.
    pub fn start() -> Clock {
        Clock(Instant::now())
    }

    /// Add the time since the last lap to `phase`.
    pub fn lap(&mut self, phase: Phase) {
        phase.add(self.0);
        self.0 = Instant::now();
    }
}

/// Count one local batch.
pub fn batch_done() {
    BATCHES.fetch_add(1, Ordering::Relaxed);
}

/// Local batches run by this process, and the seconds of each phase, in [`ALL`]'s order.
pub fn totals() -> (u64, Vec<(&'static str, f64)>) {
    let phases = ALL
        .iter()
        .map(|p| {
            let us = TOTALS[*p as usize].load(Ordering::Relaxed);
            (p.name(), us as f64 / 1e6)
        })
        .collect();
    (BATCHES.load(Ordering::Relaxed), phases)
}
