//! How a running apply shows itself: progress bars on a terminal, plain lines otherwise, or
//! JSON-lines events (`tidemark.events/v1`) for machines.
//!
//! Invariants:
//! - Everything here goes to stderr; stdout carries the command's data (the plan, the summary).
//! - Bars are drawn only when stderr is a terminal whose `TERM` is not `dumb`; asked for
//!   without one, they fall back to lines (a log file never fills with redraws).
//! - A JSON event is one object on one line with `format` and `event`; within v1, fields are
//!   only ever added, never renamed or removed.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicUsize, Ordering};

use chrono::{DateTime, Utc};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use super::batches::Batch;
use crate::interval::format_ts;

/// Version tag of JSON-lines events.
pub const EVENTS_FORMAT: &str = "tidemark.events/v1";

/// How progress is shown (`--progress`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ProgressMode {
    /// Bars on a terminal, lines otherwise.
    #[default]
    Auto,
    /// Bars (lines without a terminal).
    Bars,
    /// One line per batch.
    Lines,
    /// JSON-lines events.
    Json,
}

impl ProgressMode {
    /// Whether events are JSON lines.
    pub fn is_json(self) -> bool {
        self == ProgressMode::Json
    }
}

/// One JSON-lines event. Fields that do not apply to an event are left out.
#[derive(Debug, Default, Serialize)]
pub struct EventLine {
    /// Always [`EVENTS_FORMAT`].
    pub format: &'static str,
    /// `started`, `retrying`, `completed`, `failed`, `audit`, `canary_diff`, `canary_gate` or
    /// `summary`.
    pub event: &'static str,
    /// The apply's id.
    pub apply: String,
    /// When the event happened.
    pub at: Option<DateTime<Utc>>,
    /// Batch id (its index in the apply's batch list).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Window start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    /// Window end (exclusive).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
    /// Attempt number (1 for the first).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// Rows written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    /// Rows outside the window, not written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dropped: Option<u64>,
    /// Bytes written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// Order-independent checksum of the rows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
    /// Delta version written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table_version: Option<u64>,
    /// Whether an earlier attempt had committed it already.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub already_committed: Option<bool>,
    /// Seconds taken.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
    /// Seconds before the next attempt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait_seconds: Option<f64>,
    /// The error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Audit name (`audit` events).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit: Option<String>,
    /// Offending rows (`audit` events).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failures: Option<u64>,
    /// Whether the audit blocks (`audit` events).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocking: Option<bool>,
    /// `complete` or `incomplete` (`summary` events).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// Why an apply is incomplete, or the environment's new revision (`summary` events).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Per model totals (`summary` events).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<super::ModelRun>>,
    /// The new generation's physical table (`generation` events).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// The table it was cloned from, at `table_version` (`generation` events).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cloned_from: Option<String>,
    /// The canary against the previous version (`canary_diff` events).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<super::canary::CanaryDiff>,
    /// Gate violations on the canary, accepted ones flagged (`canary_gate` events).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub violations: Option<Vec<super::gates::Violation>>,
}

/// A line for whoever watches the apply; with `--progress json`, the event `e` instead (stderr
/// then carries only events).
pub fn tell(cx: &super::ApplyRun<'_>, text: &str, e: EventLine) {
    if cx.options.progress.is_json() {
        e.emit();
    } else {
        (cx.log)(text);
    }
}

impl EventLine {
    /// An event of `kind` in apply `apply`, now.
    pub fn new(event: &'static str, apply: &str) -> EventLine {
        EventLine {
            format: EVENTS_FORMAT,
            event,
            apply: apply.to_string(),
            at: Some(Utc::now()),
            ..EventLine::default()
        }
    }

    /// The same event about batch `b`.
    pub fn of(mut self, b: &Batch) -> EventLine {
        self.batch = Some(b.id);
        self.model = Some(b.model.to_string());
        self.start = Some(format_ts(b.window.start));
        self.end = Some(format_ts(b.window.end));
        self
    }

    /// Print it to stderr as one line.
    pub fn emit(&self) {
        if let Ok(s) = serde_json::to_string(self) {
            crate::printer::Printer::plain().raw_line(&s);
        }
    }
}

struct Bars {
    multi: MultiProgress,
    total: ProgressBar,
    models: BTreeMap<String, ProgressBar>,
    failures: AtomicUsize,
}

/// The live view of one run of an apply.
pub struct Display {
    mode: ProgressMode,
    bars: Option<Bars>,
}

impl Display {
    /// The view for `batches` in `mode` (bars resolved against the terminal).
    pub fn new(mode: ProgressMode, batches: &[Batch], done: &[bool]) -> Display {
        let terminal =
            std::io::stderr().is_terminal() && std::env::var("TERM").map_or(true, |t| t != "dumb");
        let bars = match mode {
            ProgressMode::Auto | ProgressMode::Bars if terminal => Some(bars(batches, done)),
            _ => None,
        };
        let mode = match (mode, &bars) {
            (ProgressMode::Json, _) => ProgressMode::Json,
            (_, Some(_)) => ProgressMode::Bars,
            _ => ProgressMode::Lines,
        };
        Display { mode, bars }
    }

    /// Whether events are JSON lines.
    pub fn is_json(&self) -> bool {
        self.mode.is_json()
    }

    /// Show a progress line (lines mode), or print it above the bars (only if `important`).
    pub fn line(&self, log: &(dyn Fn(&str) + Sync), text: &str, important: bool) {
        match (&self.bars, self.mode) {
            (_, ProgressMode::Json) => {}
            (Some(b), _) => {
                if important {
                    b.multi.suspend(|| log(text));
                }
            }
            (None, _) => log(text),
        }
    }

    /// A batch finished (or failed for good).
    pub fn finished(&self, b: &Batch, failed: bool) {
        let Some(bars) = &self.bars else {
            return;
        };
        bars.total.inc(1);
        if let Some(m) = bars.models.get(b.model.as_str()) {
            m.inc(1);
        }
        if failed {
            let n = bars.failures.fetch_add(1, Ordering::SeqCst) + 1;
            bars.total.set_message(format!("{n} failed"));
        }
    }

    /// Remove the bars (before the summary is printed).
    pub fn close(&self) {
        if let Some(b) = &self.bars {
            for m in b.models.values() {
                m.finish();
            }
            b.total.finish();
            let _ = b.multi.clear();
        }
    }
}

impl Drop for Display {
    fn drop(&mut self) {
        self.close();
    }
}

fn bars(batches: &[Batch], done: &[bool]) -> Bars {
    let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
    let style = |template: &str| {
        ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar())
    };
    let count = |model: Option<&str>| {
        batches
            .iter()
            .zip(done.iter().chain(std::iter::repeat(&false)))
            .filter(|(b, _)| model.is_none_or(|m| b.model.as_str() == m))
            .fold((0u64, 0u64), |(n, d), (_, done)| {
                (n + 1, d + u64::from(*done))
            })
    };
    let (n, d) = count(None);
    let total = multi.add(ProgressBar::new(n));
    total.set_style(style(
        "{prefix:.bold} [{bar:30}] {pos}/{len} batches, {elapsed} elapsed, ETA {eta} {msg:.red}",
    ));
    total.set_prefix("apply");
    total.set_position(d);
    let names: std::collections::BTreeSet<&str> =
        batches.iter().map(|b| b.model.as_str()).collect();
    let width = names.iter().map(|n| n.len()).max().unwrap_or(0);
    let mut models = BTreeMap::new();
    for name in names {
        let (n, d) = count(Some(name));
        let bar = multi.add(ProgressBar::new(n));
        bar.set_style(style(&format!(
            "{{prefix:<{width}}} [{{bar:30}}] {{pos}}/{{len}} ETA {{eta}}"
        )));
        bar.set_prefix(name.to_string());
        bar.set_position(d);
        models.insert(name.to_string(), bar);
    }
    Bars {
        multi,
        total,
        models,
        failures: AtomicUsize::new(0),
    }
}
