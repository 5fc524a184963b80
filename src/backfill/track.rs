//! Turning scheduler events into progress records and progress lines.
//!
//! Invariants:
//! - Every event of a batch is written to its progress record before the next event of that
//!   batch (events of one batch come from one worker thread, in order).
//! - A record that cannot be written is reported as a warning and never fails the batch: the
//!   Delta commit's transaction id still makes a resume safe.
//! - What the user sees (bars, lines or JSON events) is decided by [`Display`]; the records
//!   are the same whatever is shown.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use chrono::Utc;

use super::ApplyRun;
use super::batches::Batch;
use super::display::{Display, EventLine};
use super::job::BatchOut;
use super::scheduler::Event;
use crate::interval::format_ts;
use crate::printer::human_bytes;
use crate::state::progress::{BatchRecord, PROGRESS_FORMAT, Status};

/// Progress of one run of an apply.
pub struct Tracker<'c, 'a> {
    cx: &'c ApplyRun<'a>,
    lineage: Option<&'c super::lineage::Lineage<'a>>,
    earlier_attempts: Vec<u32>,
    seconds: Mutex<BTreeMap<usize, f64>>,
    /// Per canary batch id: rows and checksum per partition, as measured while writing.
    measured: Mutex<BTreeMap<usize, BTreeMap<String, crate::engine::Checksum>>>,
    finished: AtomicUsize,
    total: usize,
    display: Display,
}

impl<'c, 'a> Tracker<'c, 'a> {
    /// Rows and checksum per partition of batch `id` as it measured them while writing, if it
    /// completed in this run and did.
    pub fn measured(&self, id: usize) -> Option<BTreeMap<String, crate::engine::Checksum>> {
        self.measured.lock().ok()?.get(&id).cloned()
    }

    /// A tracker for `batches`; `earlier_attempts` counts attempts of earlier runs per batch.
    /// `done` flags the batches complete before this run.
    pub fn new(
        cx: &'c ApplyRun<'a>,
        batches: &[Batch],
        earlier_attempts: Vec<u32>,
        done: &[bool],
        lineage: Option<&'c super::lineage::Lineage<'a>>,
    ) -> Self {
        Tracker {
            cx,
            lineage,
            earlier_attempts,
            seconds: Mutex::new(BTreeMap::new()),
            measured: Mutex::new(BTreeMap::new()),
            finished: AtomicUsize::new(done.iter().filter(|d| **d).count()),
            total: batches.len(),
            display: Display::new(cx.options.progress, batches, done),
        }
    }

    /// Remove the live view (before the summary).
    pub fn close(&self) {
        self.display.close();
    }

    fn show(&self, text: &str, important: bool) {
        self.display.line(self.cx.log, text, important);
    }

    /// A message that must be seen (suspending the bars), unless events are JSON.
    pub fn note(&self, text: &str) {
        self.show(text, true);
    }

    /// Emit `e` when events are JSON.
    pub fn emit(&self, e: EventLine) {
        self.json(e);
    }

    fn json(&self, e: EventLine) {
        if self.display.is_json() {
            e.emit();
        }
    }

    /// Seconds per batch id, for batches run now.
    pub fn seconds(&self) -> Vec<f64> {
        let s = self.seconds.lock().map(|s| s.clone()).unwrap_or_default();
        (0..self.total)
            .map(|i| s.get(&i).copied().unwrap_or(0.0))
            .collect()
    }

    fn base(&self, b: &Batch) -> BatchRecord {
        BatchRecord {
            format: PROGRESS_FORMAT.to_string(),
            id: b.id,
            model: b.model.to_string(),
            start: format_ts(b.window.start),
            end: format_ts(b.window.end),
            ..BatchRecord::default()
        }
    }

    fn write(&self, r: &BatchRecord) {
        if let Err(e) = self.cx.progress.record(&self.cx.apply.id, r) {
            let text = format!(
                "warning: cannot write the progress record of batch {} (`tidemark progress` will not show it): {}",
                r.id,
                super::first_line(&e)
            );
            super::display::tell(
                self.cx,
                &text,
                EventLine {
                    batch: Some(r.id),
                    message: Some(text.clone()),
                    ..EventLine::new("warning", &self.cx.apply.id)
                },
            );
        }
    }

    fn attempts(&self, b: &Batch, attempt: u32) -> u32 {
        self.earlier_attempts.get(b.id).copied().unwrap_or(0) + attempt
    }

    /// Record and report one event.
    pub fn event(&self, e: Event<'_, BatchOut>) {
        match e {
            Event::Started { batch, attempt } => {
                if let Some(l) = self.lineage {
                    l.batch_started(batch.id, batch.model.as_str());
                }
                self.json(EventLine {
                    attempt: Some(self.attempts(batch, attempt)),
                    ..EventLine::new("started", &self.cx.apply.id).of(batch)
                });
                self.write(&BatchRecord {
                    status: Some(Status::Running),
                    attempts: self.attempts(batch, attempt),
                    started: Some(Utc::now()),
                    ..self.base(batch)
                });
            }
            Event::Retrying {
                batch,
                attempt,
                error,
                wait,
            } => {
                self.json(EventLine {
                    attempt: Some(self.attempts(batch, attempt)),
                    wait_seconds: Some(wait.as_secs_f64()),
                    error: Some(super::first_line(error)),
                    ..EventLine::new("retrying", &self.cx.apply.id).of(batch)
                });
                self.show(
                    &format!(
                        "{} {}: attempt {attempt} failed, retrying in {:.1} s: {}",
                        batch.model,
                        batch.window,
                        wait.as_secs_f64(),
                        super::first_line(error)
                    ),
                    true,
                );
            }
            Event::Completed {
                batch,
                result,
                seconds,
                attempts,
            } => {
                if let Ok(mut s) = self.seconds.lock() {
                    s.insert(batch.id, seconds);
                }
                let r = &result.report;
                if let (true, Some(p), Ok(mut m)) =
                    (batch.canary, &r.partitions, self.measured.lock())
                {
                    m.insert(batch.id, p.clone());
                }
                self.write(&BatchRecord {
                    table: result.table.clone(),
                    status: Some(Status::Complete),
                    attempts: self.attempts(batch, attempts),
                    started: Some(
                        Utc::now() - chrono::Duration::milliseconds((seconds * 1000.0) as i64),
                    ),
                    finished: Some(Utc::now()),
                    rows: r.rows,
                    dropped: r.dropped,
                    bytes: r.bytes,
                    checksum: result.table.as_ref().map(|_| r.checksum.clone()),
                    table_version: result.table.as_ref().map(|_| r.table_version),
                    already_committed: r.already_committed,
                    inputs: result.inputs.clone(),
                    warnings: result.warnings.iter().cloned().collect(),
                    ..self.base(batch)
                });
                if let Some(l) = self.lineage {
                    l.batch_completed(&super::lineage::BatchFacts {
                        id: batch.id,
                        model: batch.model.as_str(),
                        window: (format_ts(batch.window.start), format_ts(batch.window.end)),
                        inputs: &result.datasets,
                        output: result.output.clone(),
                        rows: r.rows,
                        bytes: r.bytes,
                        checksum: &r.checksum,
                    });
                }
                let done = self.finished.fetch_add(1, Ordering::SeqCst) + 1;
                self.json(EventLine {
                    attempt: Some(self.attempts(batch, attempts)),
                    rows: Some(r.rows),
                    dropped: Some(r.dropped),
                    bytes: Some(r.bytes),
                    checksum: result.table.as_ref().map(|_| r.checksum.clone()),
                    table_version: result.table.as_ref().map(|_| r.table_version),
                    already_committed: Some(r.already_committed),
                    seconds: Some(seconds),
                    ..EventLine::new("completed", &self.cx.apply.id).of(batch)
                });
                for a in &r.audits {
                    self.json(EventLine {
                        audit: Some(a.name.clone()),
                        failures: Some(a.failures),
                        blocking: Some(a.blocking),
                        ..EventLine::new("audit", &self.cx.apply.id).of(batch)
                    });
                }
                self.display.finished(batch, false);
                self.show(
                    &line(batch, result, seconds, done, self.total),
                    !result.warnings.is_empty(),
                );
            }
            Event::Failed {
                batch,
                error,
                attempts,
            } => {
                self.write(&BatchRecord {
                    status: Some(Status::Failed),
                    attempts: self.attempts(batch, attempts),
                    finished: Some(Utc::now()),
                    error: Some(super::first_line(error)),
                    ..self.base(batch)
                });
                if let Some(l) = self.lineage {
                    l.batch_failed(batch.id, batch.model.as_str(), &super::first_line(error));
                }
                self.finished.fetch_add(1, Ordering::SeqCst);
                self.json(EventLine {
                    attempt: Some(self.attempts(batch, attempts)),
                    error: Some(super::first_line(error)),
                    ..EventLine::new("failed", &self.cx.apply.id).of(batch)
                });
                self.display.finished(batch, true);
                self.show(
                    &format!(
                        "{} [{}/{}] {}: FAILED after {}: {}",
                        batch.model,
                        batch.index + 1,
                        batch.of,
                        batch.window,
                        crate::printer::plural(attempts as u64, "attempt", "attempts"),
                        super::first_line(error)
                    ),
                    true,
                );
            }
        }
    }
}

fn line(b: &Batch, out: &BatchOut, seconds: f64, done: usize, total: usize) -> String {
    let r = &out.report;
    let mut line = if out.table.is_none() {
        format!("{}: view checked", b.model)
    } else {
        format!(
            "{} [{}/{}] {}: {} rows, {}, version {} ({seconds:.2} s)",
            b.model,
            b.index + 1,
            b.of,
            b.window,
            r.rows,
            human_bytes(r.bytes),
            r.table_version
        )
    };
    if r.already_committed {
        line.push_str(", already committed by an earlier attempt");
    }
    if r.dropped > 0 {
        line.push_str(&format!(
            ", {} outside the window not written",
            crate::printer::plural(r.dropped, "row", "rows")
        ));
    }
    for (a, n) in &out.warnings {
        line.push_str(&format!(
            ", audit `{a}` warned: {}",
            crate::printer::plural(*n, "row", "rows")
        ));
    }
    line.push_str(&format!("  [{done}/{total}]"));
    line
}
