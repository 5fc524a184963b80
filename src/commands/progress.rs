//! `tidemark progress [APPLY_ID | --env ENV]`: the progress table of one apply — counts per
//! status and per model, failures, and an ETA while it runs.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::emit;
use crate::error::{Diagnostic, Error, ExitStatus, Result};
use crate::names::ApplyId;
use crate::printer::{human_bytes, human_seconds};
use crate::settings::{EnvFormat, Settings};
use crate::state::progress::{ApplyInfo, BatchRecord, Outcome, ProgressStore, Status};

/// `progress --format json` (`tidemark.progress-report/v1`).
#[derive(Debug, Serialize)]
pub struct ProgressView {
    /// Format tag.
    pub format: &'static str,
    /// Apply id.
    pub apply_id: String,
    pub command: String,
    pub environment: String,
    /// Plan id.
    pub plan_id: String,
    pub user: String,
    /// Git commit of the project, if known.
    pub git_commit: Option<String>,
    pub started: DateTime<Utc>,
    /// `running`, `complete`, `failed`, `paused` (`running` also for a process that died).
    pub outcome: String,
    /// Batches per status.
    pub counts: BTreeMap<Status, usize>,
    /// Per model.
    pub models: Vec<ModelProgress>,
    /// Failed batches.
    pub failures: Vec<Failure>,
    /// Estimated seconds left (while batches are pending or running).
    pub eta_seconds: Option<f64>,
}

/// One model's batches.
#[derive(Debug, Default, Serialize)]
pub struct ModelProgress {
    pub name: String,
    /// Batches per status.
    pub counts: BTreeMap<Status, usize>,
    /// Rows written by complete batches.
    pub rows: u64,
    /// Bytes written.
    pub bytes: u64,
}

/// One failed batch.
#[derive(Debug, Serialize)]
pub struct Failure {
    pub model: String,
    /// Window start.
    pub start: String,
    /// Window end.
    pub end: String,
    pub attempts: u32,
    pub error: String,
}

/// Which apply: the id, else the newest of `env`, else the newest.
fn pick(progress: &ProgressStore<'_>, id: Option<&ApplyId>, env: Option<&str>) -> Result<ApplyId> {
    let all = progress.list()?;
    if let Some(id) = id {
        if all.contains(id) {
            return Ok(id.clone());
        }
        return Err(Diagnostic::error(format!("no apply with id `{id}`"))
            .hint(
                crate::error::did_you_mean(id, all.iter().map(ApplyId::as_str))
                    .unwrap_or_else(|| "`tidemark log` lists the applies".to_string()),
            )
            .into());
    }
    for (a, info) in progress.newest_first()? {
        if env.is_none_or(|e| info.environment == e) {
            return Ok(a);
        }
    }
    Err(Error::from(
        Diagnostic::error(match env {
            Some(e) => format!("no apply of environment `{e}` yet"),
            None => "no apply yet".to_string(),
        })
        .hint("`tidemark plan ENV --apply` starts one"),
    ))
}

/// The report of one apply.
pub fn view(
    info: &ApplyInfo,
    records: &BTreeMap<usize, BatchRecord>,
    outcome: Option<&Outcome>,
) -> ProgressView {
    let mut counts: BTreeMap<Status, usize> = BTreeMap::new();
    let mut models: BTreeMap<&str, ModelProgress> = BTreeMap::new();
    let mut order: Vec<&str> = Vec::new();
    let mut failures = Vec::new();
    let mut done_seconds = Vec::new();
    for b in &info.batches {
        let r = records.get(&b.id);
        let status = r.and_then(|r| r.status).unwrap_or(Status::Pending);
        *counts.entry(status).or_default() += 1;
        let m = models.entry(b.model.as_str()).or_insert_with(|| {
            order.push(b.model.as_str());
            ModelProgress {
                name: b.model.clone(),
                ..ModelProgress::default()
            }
        });
        *m.counts.entry(status).or_default() += 1;
        if let Some(r) = r {
            if status == Status::Complete {
                m.rows += r.rows;
                m.bytes += r.bytes;
                if let (Some(s), Some(f)) = (r.started, r.finished) {
                    done_seconds.push((f - s).num_milliseconds() as f64 / 1000.0);
                }
            }
            if status == Status::Failed {
                failures.push(Failure {
                    model: b.model.clone(),
                    start: b.start.clone(),
                    end: b.end.clone(),
                    attempts: r.attempts,
                    error: r.error.clone().unwrap_or_default(),
                });
            }
        }
    }
    let left = counts.get(&Status::Pending).copied().unwrap_or(0)
        + counts.get(&Status::Running).copied().unwrap_or(0);
    let eta_seconds = (outcome.is_none() && left > 0 && !done_seconds.is_empty()).then(|| {
        let avg = done_seconds.iter().sum::<f64>() / done_seconds.len() as f64;
        avg * left as f64 / info.workers.max(1) as f64
    });
    ProgressView {
        format: "tidemark.progress-report/v1",
        apply_id: info.id.to_string(),
        command: info.command.clone(),
        environment: info.environment.clone(),
        plan_id: info.plan_id.clone(),
        user: info.user.clone(),
        git_commit: info.git_commit.clone(),
        started: info.started,
        outcome: outcome.map_or_else(|| "running".to_string(), |o| o.outcome.as_str().to_string()),
        counts,
        models: order.into_iter().filter_map(|m| models.remove(m)).collect(),
        failures,
        eta_seconds,
    }
}

fn text(v: &ProgressView) -> String {
    let mut s = format!(
        "apply {} ({} → {}, plan {}), started {} by {}{}\noutcome: {}\n",
        v.apply_id,
        v.command,
        v.environment,
        v.plan_id,
        v.started.format("%Y-%m-%dT%H:%M:%SZ"),
        v.user,
        v.git_commit
            .as_deref()
            .map(|c| format!(", git {}", &c[..c.len().min(12)]))
            .unwrap_or_default(),
        v.outcome
    );
    let statuses = [
        Status::Complete,
        Status::Running,
        Status::Failed,
        Status::Pending,
    ];
    let total: usize = v.counts.values().sum();
    s.push_str(&format!("batches: {total}"));
    for st in statuses {
        s.push_str(&format!(
            ", {} {}",
            v.counts.get(&st).copied().unwrap_or(0),
            st.as_str()
        ));
    }
    s.push('\n');
    if let Some(eta) = v.eta_seconds {
        s.push_str(&format!("ETA: ~{}\n", human_seconds(eta)));
    }
    let w = super::name_width(v.models.iter().map(|m| m.name.as_str()));
    s.push_str(&format!(
        "\n{:<w$}  {:>8}  {:>7}  {:>6}  {:>7}  {:>10}  {:>10}\n",
        "model", "complete", "running", "failed", "pending", "rows", "bytes"
    ));
    for m in &v.models {
        let c = |st: Status| m.counts.get(&st).copied().unwrap_or(0);
        s.push_str(&format!(
            "{:<w$}  {:>8}  {:>7}  {:>6}  {:>7}  {:>10}  {:>10}\n",
            m.name,
            c(Status::Complete),
            c(Status::Running),
            c(Status::Failed),
            c(Status::Pending),
            m.rows,
            human_bytes(m.bytes)
        ));
    }
    if !v.failures.is_empty() {
        s.push_str("\nfailed batches:\n");
        for f in &v.failures {
            s.push_str(&format!(
                "  {} [{}, {}) after {}: {}\n",
                f.model,
                f.start,
                f.end,
                crate::printer::plural(f.attempts, "attempt", "attempts"),
                f.error
            ));
        }
    }
    if v.outcome != "complete" {
        s.push_str(&format!(
            "\nresume with: tidemark apply --resume {}\n",
            v.apply_id
        ));
    }
    s
}

/// Run `progress`.
pub fn run(
    ctx: &Settings,
    id: Option<&ApplyId>,
    env: Option<&crate::names::EnvName>,
    format: EnvFormat,
    out: &mut dyn std::io::Write,
) -> Result<ExitStatus> {
    let (_, store) = super::warehouse(ctx)?;
    let progress = ProgressStore::new(store.storage());
    let id = pick(&progress, id, env.map(|e| e.as_str()))?;
    let info = progress
        .info(&id)?
        .ok_or_else(|| Error::Bug(format!("apply {id} has no description")))?;
    let records = progress.records(&id)?;
    let outcome = progress.outcome(&id)?;
    let v = view(&info, &records, outcome.as_ref());
    match format {
        EnvFormat::Text => emit(out, &text(&v))?,
        EnvFormat::Json => super::emit_json(out, &v)?,
    }
    Ok(ExitStatus::Success)
}
