//! What the user asked a plan for: options, the `--start`/`--end` window and the mode.
//!
//! Invariants: a window is half-open, never ends in the future, and starts before it ends;
//! environment names are [`EnvName`]s, checked where they were typed.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::engine::SourceLog;
use crate::error::{Diagnostic, Error, Result};
use crate::interval::{Instant, IntervalSet, exclusive_end, format_ts};
use crate::names::{EnvName, ModelName};

/// What the user asked for.
#[derive(Debug, Clone)]
pub struct Options {
    /// Target environment.
    pub environment: EnvName,
    /// Base of a new environment.
    pub create_from: EnvName,
    /// `--start`.
    pub start: Option<Instant>,
    /// `--end` (a date is inclusive).
    pub end: Option<Instant>,
    /// `--restate-model` selectors.
    pub restate: Vec<String>,
    /// `--select-model` selectors.
    pub select: Vec<String>,
    /// `--forward-only`.
    pub forward_only: bool,
    /// `--skip-backfill`.
    pub skip_backfill: bool,
    /// `--breaking` selectors.
    pub breaking: Vec<String>,
    /// `--non-breaking` selectors.
    pub non_breaking: Vec<String>,
    /// `--with-local-changes` (restatement plans).
    pub with_local_changes: bool,
    /// "Now".
    pub execution_time: DateTime<Utc>,
    /// Where the definitions come from and what the plan may do.
    pub mode: Mode,
    /// What the target's Delta sources changed since the target read them (read by the
    /// caller through the engine), for late-data detection.
    pub late: BTreeMap<ModelName, SourceLog>,
    /// `--restate-late`: restate the windows late source data changed.
    pub restate_late: bool,
    /// Windows to restate below given sources (`recall --plan`): each source's direct readers
    /// restate them, and everything downstream follows.
    pub restate_below: BTreeMap<ModelName, IntervalSet>,
}

/// Where a plan's definitions come from. One mode per command, so that what only `diff`,
/// `run` or `promote` does cannot be combined with anything else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// `plan`: the project's files (all of them, or those `--select-model` picks).
    Local,
    /// `diff`: the project's files against a git revision; nothing is deployed, so a window
    /// needs no restatement.
    Offline,
    /// `run`: the target's own deployed definitions. Also computes the intervals that became
    /// complete for models the target already has, and refreshes FULL models whose schedule
    /// came due.
    Run,
    /// `promote`: the deployed definitions of this environment.
    Promote(EnvName),
}

impl Mode {
    /// The environment whose deployed definitions make up the target (`None`: the files).
    pub fn deployed<'a>(&'a self, target: &'a EnvName) -> Option<&'a EnvName> {
        match self {
            Mode::Run => Some(target),
            Mode::Promote(from) => Some(from),
            Mode::Local | Mode::Offline => None,
        }
    }

    /// Whether intervals that became complete are computed for unchanged models (`run`).
    pub fn catches_up(&self) -> bool {
        *self == Mode::Run
    }
}

impl Options {
    /// `run`'s plan: catch `environment` up on its own definitions.
    pub fn run(environment: &EnvName, execution_time: DateTime<Utc>) -> Options {
        Options {
            mode: Mode::Run,
            ..Options::new(environment, execution_time)
        }
    }

    /// `promote`'s plan: point `to` at `from`'s definitions (a new `to` starts from `from`).
    pub fn promote(from: &EnvName, to: &EnvName, execution_time: DateTime<Utc>) -> Options {
        Options {
            create_from: from.clone(),
            mode: Mode::Promote(from.clone()),
            ..Options::new(to, execution_time)
        }
    }

    /// A plain plan for `environment` at `execution_time`: no window, selectors or overrides.
    pub fn new(environment: &EnvName, execution_time: DateTime<Utc>) -> Options {
        Options {
            environment: environment.clone(),
            create_from: EnvName::prod(),
            start: None,
            end: None,
            restate: Vec::new(),
            select: Vec::new(),
            forward_only: false,
            skip_backfill: false,
            breaking: Vec::new(),
            non_breaking: Vec::new(),
            with_local_changes: false,
            execution_time,
            mode: Mode::Local,
            late: BTreeMap::new(),
            restate_late: false,
            restate_below: BTreeMap::new(),
        }
    }
}

/// The user's `--start`/`--end` as a half-open window, validated.
pub(crate) fn user_window(opts: &Options) -> Result<Option<crate::interval::Interval>> {
    let exec = opts.execution_time;
    let end = opts.end.map(exclusive_end);
    if let (Some(e), Some(raw)) = (end, opts.end)
        && raw.at > exec
    {
        return Err(Error::from(
            Diagnostic::error(format!(
                "--end {} is in the future (execution time {})",
                format_ts(e),
                format_ts(exec)
            ))
            .hint("intervals that have not happened yet cannot be computed; pass an earlier --end or a later --execution-time"),
        ));
    }
    match (opts.start, end) {
        (None, None) => Ok(None),
        (Some(s), e) => {
            let e = e.unwrap_or(exec);
            if s.at >= e {
                return Err(Error::from(
                    Diagnostic::error(format!(
                        "--start {} is not before the end {}",
                        format_ts(s.at),
                        format_ts(e)
                    ))
                    .hint("a date --end is inclusive (through the end of that day); a timestamp --end is exclusive"),
                ));
            }
            Ok(Some(crate::interval::Interval::new(s.at, e)))
        }
        (None, Some(e)) => Ok(Some(crate::interval::Interval::new(
            DateTime::<Utc>::MIN_UTC,
            e,
        ))),
    }
}
