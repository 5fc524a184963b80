//! `tidemark log [--env ENV]`: every apply and run — who, when, which git commit, which plan,
//! the models and windows, rows, duration and outcome — newest first.

use std::collections::BTreeMap;

use serde::Serialize;

use super::emit;
use crate::error::{ExitStatus, Result};
use crate::printer::human_seconds;
use crate::settings::{EnvFormat, Settings};
use crate::state::progress::{ProgressStore, Status};

/// `log --format json` (`tidemark.log/v1`).
#[derive(Debug, Serialize)]
pub struct LogView {
    /// Format tag.
    pub format: &'static str,
    /// Applies, newest first.
    pub applies: Vec<LogEntry>,
}

/// One apply.
#[derive(Debug, Serialize)]
pub struct LogEntry {
    /// Apply id.
    pub apply_id: String,
    /// When it started.
    pub started: String,
    pub user: String,
    pub command: String,
    pub environment: String,
    /// Plan id.
    pub plan_id: String,
    /// Git commit of the project.
    pub git_commit: Option<String>,
    /// Per model: the window covered by its batches, `[start, end)`.
    pub models: BTreeMap<String, (String, String)>,
    pub batches: usize,
    /// Complete batches.
    pub complete: usize,
    /// Rows written.
    pub rows: u64,
    /// Seconds of the last run of it.
    pub seconds: Option<f64>,
    /// `complete`, `failed`, `paused`, or `running` (also a process that died).
    pub outcome: String,
    /// Revision of the environment afterwards.
    pub revision: Option<u64>,
    /// Late or corrected source data it restates: source → versions that brought it.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub late_sources: BTreeMap<String, Vec<u64>>,
    /// Promotion-gate violations it accepted.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub accepted_gates: Vec<crate::state::AcceptedGate>,
}

/// Run `log`.
pub fn run(
    ctx: &Settings,
    env: Option<&crate::names::EnvName>,
    format: EnvFormat,
    out: &mut dyn std::io::Write,
) -> Result<ExitStatus> {
    let (_, store) = super::warehouse(ctx)?;
    let progress = ProgressStore::new(store.storage());
    let mut applies = Vec::new();
    for (id, info) in progress.newest_first()? {
        let id = &id;
        if env.is_some_and(|e| e.as_str() != info.environment) {
            continue;
        }
        let records = progress.records(id)?;
        let outcome = progress.outcome(id)?;
        let mut models: BTreeMap<String, (String, String)> = BTreeMap::new();
        for b in &info.batches {
            let w = models
                .entry(b.model.clone())
                .or_insert_with(|| (b.start.clone(), b.end.clone()));
            if b.start < w.0 {
                w.0.clone_from(&b.start);
            }
            if b.end > w.1 {
                w.1.clone_from(&b.end);
            }
        }
        let complete: Vec<_> = records
            .values()
            .filter(|r| r.status == Some(Status::Complete))
            .collect();
        applies.push(LogEntry {
            apply_id: info.id.to_string(),
            started: info.started.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            user: info.user.clone(),
            command: info.command.clone(),
            environment: info.environment.clone(),
            plan_id: info.plan_id.clone(),
            git_commit: info.git_commit.clone(),
            models,
            batches: info.batches.len(),
            complete: complete.len(),
            rows: complete.iter().map(|r| r.rows).sum(),
            seconds: outcome.as_ref().map(|o| o.seconds),
            outcome: outcome
                .as_ref()
                .map_or_else(|| "running".to_string(), |o| o.outcome.as_str().to_string()),
            revision: outcome.as_ref().and_then(|o| o.revision),
            late_sources: info.late_sources.clone(),
            accepted_gates: info
                .accepted_gates
                .iter()
                .cloned()
                .chain(progress.accepted(id)?)
                .collect(),
        });
    }
    let v = LogView {
        format: "tidemark.log/v1",
        applies,
    };
    match format {
        EnvFormat::Json => super::emit_json(out, &v)?,
        EnvFormat::Text => {
            let mut s = String::new();
            if v.applies.is_empty() {
                s.push_str("no applies yet\n");
            }
            for a in &v.applies {
                s.push_str(&format!(
                    "{}  {}  {} → {}  by {}{}\n  plan {}, {}/{}, {}{}, {}{}\n",
                    a.apply_id,
                    a.started,
                    a.command,
                    a.environment,
                    a.user,
                    a.git_commit
                        .as_deref()
                        .map(|c| format!(", git {}", &c[..c.len().min(12)]))
                        .unwrap_or_default(),
                    a.plan_id,
                    a.complete,
                    crate::printer::plural(a.batches as u64, "batch", "batches"),
                    crate::printer::plural(a.rows, "row", "rows"),
                    a.seconds
                        .map(|x| format!(" in {}", human_seconds(x)))
                        .unwrap_or_default(),
                    a.outcome,
                    a.revision
                        .map(|r| format!(" (revision {r})"))
                        .unwrap_or_default(),
                ));
                for g in &a.accepted_gates {
                    s.push_str(&format!(
                        "  accepted gate {} of {} by {}: {}\n",
                        g.gate, g.model, g.by, g.reason
                    ));
                }
                for (source, versions) in &a.late_sources {
                    let versions: Vec<String> = versions.iter().map(u64::to_string).collect();
                    s.push_str(&format!(
                        "  restates late data of {source} (versions {})\n",
                        versions.join(", ")
                    ));
                }
                for (m, (start, end)) in &a.models {
                    s.push_str(&format!("    {m} [{start}, {end})\n"));
                }
            }
            emit(out, &s)?;
        }
    }
    Ok(ExitStatus::Success)
}
