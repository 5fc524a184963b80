//! `tidemark env list` and `tidemark env show ENV`: what each environment points at, with the
//! Delta table URI and pinned version of every model, so that other engines (Spark
//! `versionAsOf`, Polars, DuckDB) can read exactly the same snapshot.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::emit;

use crate::engine::Engine;
use crate::error::{ExitStatus, Result};
use crate::interval::format_ts;
use crate::project::ModelName;
use crate::settings::{EnvFormat, Settings};
use crate::state::State;

/// `env show --format json`.
#[derive(Debug, Serialize)]
pub struct EnvView {
    /// `tidemark.env/v1`.
    pub format: &'static str,
    pub name: String,
    pub revision: u64,
    /// The plan behind the revision.
    pub plan_id: String,
    /// When created.
    pub created_at: String,
    /// When last changed.
    pub updated_at: String,
    /// When the janitor may delete it.
    pub expires_at: Option<String>,
    pub models: Vec<EnvModelView>,
    /// Delta sources and the versions read.
    pub source_versions: BTreeMap<ModelName, u64>,
}

/// One model of an environment.
#[derive(Debug, Serialize)]
pub struct EnvModelView {
    pub name: ModelName,
    pub kind: String,
    /// Model version (data fingerprint prefix).
    pub version: String,
    /// Snapshot id.
    pub snapshot: crate::names::SnapshotId,
    /// Physical table id (`None` for views).
    pub table: Option<crate::names::TableId>,
    /// Table URI.
    pub uri: Option<String>,
    /// Pinned Delta version.
    pub delta_version: Option<u64>,
}

/// Run `env list`.
pub fn list(ctx: &Settings, format: EnvFormat, out: &mut dyn std::io::Write) -> Result<ExitStatus> {
    let state = read_state(ctx)?;
    #[derive(Serialize)]
    struct Row<'a> {
        name: &'a str,
        revision: u64,
        models: usize,
        updated_at: String,
        expires_at: Option<String>,
    }
    let rows: Vec<Row> = state
        .environments
        .values()
        .map(|e| Row {
            name: &e.name,
            revision: e.revision,
            models: e.models.len(),
            updated_at: format_ts(e.updated_at),
            expires_at: e.expires_at.map(format_ts),
        })
        .collect();
    let text = match format {
        EnvFormat::Json => super::json_text(
            &serde_json::json!({"format": "tidemark.env-list/v1", "environments": rows}),
        )?,
        EnvFormat::Text => {
            let mut s = format!(
                "{:<16} {:>8} {:>6}  {:<20}  {}\n",
                "environment", "revision", "models", "updated", "expires"
            );
            for r in &rows {
                s.push_str(&format!(
                    "{:<16} {:>8} {:>6}  {:<20}  {}\n",
                    r.name,
                    r.revision,
                    r.models,
                    r.updated_at,
                    r.expires_at.as_deref().unwrap_or("never")
                ));
            }
            s
        }
    };
    emit(out, &text)?;
    Ok(ExitStatus::Success)
}

/// Run `env show`.
pub fn show(
    ctx: &Settings,
    env: &str,
    format: EnvFormat,
    out: &mut dyn std::io::Write,
) -> Result<ExitStatus> {
    let (config, store) = super::warehouse(ctx)?;
    let state = store.read()?;
    let engine = crate::engine::LocalEngine::for_warehouse(&config.warehouse, &config.storage)?;
    let view = view(&engine, &state, env)?;
    let text = match format {
        EnvFormat::Json => super::json_text(&view)?,
        EnvFormat::Text => {
            let mut s = format!(
                "environment {} (revision {}, plan {}, updated {})\n",
                view.name, view.revision, view.plan_id, view.updated_at
            );
            let w = view
                .models
                .iter()
                .map(|m| m.name.as_str().len())
                .max()
                .unwrap_or(5);
            for m in &view.models {
                s.push_str(&format!(
                    "  {:<w$}  {:<26}  {}  {}\n",
                    m.name.as_str(),
                    m.kind,
                    m.version,
                    match (&m.uri, m.delta_version) {
                        (Some(u), Some(v)) => format!("{u} @ version {v}"),
                        (Some(u), None) => format!("{u} (not written)"),
                        _ => "(virtual)".to_string(),
                    }
                ));
            }
            s
        }
    };
    emit(out, &text)?;
    Ok(ExitStatus::Success)
}

/// The view of one environment.
pub fn view(engine: &dyn Engine, state: &State, env: &str) -> Result<EnvView> {
    let e = state.environment_or_error(env)?;
    let models = e
        .models
        .iter()
        .map(|(name, m)| {
            let s = state.snapshots.get(&m.snapshot);
            Ok(EnvModelView {
                name: name.clone(),
                kind: s
                    .map(|s| s.model.kind.name().to_string())
                    .unwrap_or_default(),
                version: s.map(|s| s.version.clone()).unwrap_or_default(),
                snapshot: m.snapshot.clone(),
                table: m.table.clone(),
                uri: m.table.as_ref().map(|t| engine.table_uri(t)).transpose()?,
                delta_version: m.table_version,
            })
        })
        .collect::<Result<_>>()?;
    let ts = |t: DateTime<Utc>| format_ts(t);
    Ok(EnvView {
        format: "tidemark.env/v1",
        name: e.name.to_string(),
        revision: e.revision,
        plan_id: e.plan_id.clone(),
        created_at: ts(e.created_at),
        updated_at: ts(e.updated_at),
        expires_at: e.expires_at.map(ts),
        models,
        source_versions: e.source_versions.clone(),
    })
}

fn read_state(ctx: &Settings) -> Result<State> {
    super::warehouse(ctx)?.1.read()
}

/// Run `env history`.
pub fn history(ctx: &Settings, env: &str, out: &mut dyn std::io::Write) -> Result<ExitStatus> {
    let state = read_state(ctx)?;
    let mut s = format!(
        "{:>8}  {:<28}  {:<7}  {:<36}  {}\n",
        "revision", "at", "action", "plan", "models changed"
    );
    let mut any = false;
    for h in state.history.iter().filter(|h| h.environment == env) {
        any = true;
        s.push_str(&format!(
            "{:>8}  {:<28}  {:<7}  {:<36}  {}\n",
            h.revision,
            format_ts(h.at),
            h.action,
            h.plan_id,
            h.models_changed.len()
        ));
        for a in &h.accepted_gates {
            s.push_str(&format!(
                "          accepted: {} of `{}` ({} {}) by {}: {}\n",
                a.gate,
                a.model,
                a.violations,
                if a.violations == 1 {
                    "violation"
                } else {
                    "violations"
                },
                a.by,
                a.reason
            ));
        }
    }
    if !any {
        return Err(state.unknown_environment(env));
    }
    emit(out, &s)?;
    Ok(ExitStatus::Success)
}
