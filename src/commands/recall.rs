//! `tidemark recall SOURCE --version V`: which environments, models and windows were computed
//! from given versions of a Delta source (a bad load), from the batches' recorded inputs; with
//! `--plan ENV`, the restatement plan that recomputes exactly those windows of ENV (and what
//! reads them) from the source's current version.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{emit, emit_json, load, parse_instant_arg, show_plan};
use crate::env::recall::{self, DoneBatch, Hit};
use crate::error::{Diagnostic, Error, ExitStatus, Result};
use crate::interval::{Interval, IntervalSet, parse_instant};
use crate::plan::{self, Options};
use crate::project::{ModelName, SourceFormat};
use crate::settings::{PlanFormat, Recall, Settings};
use crate::state::StateStore;
use crate::state::progress::{ProgressStore, Status};

/// The versioned JSON of `recall`.
#[derive(Debug, Serialize)]
struct RecallView {
    format: &'static str,
    source: ModelName,
    /// First version recalled.
    from_version: u64,
    /// Last version recalled (`None`: through the latest).
    to_version: Option<u64>,
    /// What holds data computed from them.
    hits: Vec<Hit>,
}

/// Run `recall`.
pub fn run(ctx: &Settings, r: &Recall, out: &mut dyn std::io::Write) -> Result<ExitStatus> {
    let loaded = load(ctx)?;
    let config = &loaded.project.config;
    let name = ModelName::parse(&r.source).map_err(|reason| {
        Error::from(Diagnostic::error(format!(
            "`{}` is not a source name: {reason}",
            r.source
        )))
    })?;
    let Some(source) = config.sources.get(&name) else {
        return Err(Diagnostic::error(format!("`{name}` is not a source of this project"))
            .hint("recall traces the versions of a source declared under [sources] in tidemark.toml")
            .into());
    };
    if source.format != SourceFormat::Delta {
        return Err(Diagnostic::error(format!(
            "`{name}` is a {} source: it has no versions to recall",
            source.format.as_str()
        ))
        .hint("only Delta sources are versioned; batches record the version they read")
        .into());
    }
    let (from, to) = match (&r.version, &r.since) {
        (Some(v), _) => versions(v)?,
        (None, Some(t)) => {
            let at = parse_instant_arg("--since")(t)?.at;
            let engine = crate::engine::open(config)?;
            match engine.source_version_at(&source.path, at)? {
                Some(v) => (v, None),
                None => {
                    ctx.printer.note(&format!(
                        "`{name}` has no commit at or after {}",
                        crate::interval::format_ts(at)
                    ));
                    (u64::MAX, None)
                }
            }
        }
        (None, None) => {
            return Err(Diagnostic::error("name the versions to recall")
                .hint("pass `--version V` (or `A..B`) or `--since TIME`")
                .into());
        }
    };
    let store = StateStore::open_with(&config.warehouse, &config.storage)?;
    let state = store.read()?;
    let progress = ProgressStore::new(store.storage());
    let mut batches = Vec::new();
    for (id, info) in progress.newest_first()? {
        for rec in progress.records(&id)?.into_values() {
            let (Some(Status::Complete), Some(table)) = (rec.status, rec.table.clone()) else {
                continue;
            };
            let (Ok(start), Ok(end)) = (parse_instant(&rec.start), parse_instant(&rec.end)) else {
                continue;
            };
            batches.push(DoneBatch {
                apply_id: id.to_string(),
                table,
                window: Interval::new(start.at, end.at),
                finished: rec.finished.unwrap_or(info.started),
                table_version: rec.table_version,
                read: rec.inputs.get(name.as_str()).copied().flatten(),
            });
        }
    }
    let hits = recall::find(&state, from, &batches);
    let view = RecallView {
        format: "tidemark.recall/v1",
        source: name.clone(),
        from_version: from,
        to_version: to,
        hits,
    };
    let planned = match &r.plan {
        None => None,
        Some(env) => {
            state.environment_or_error(env)?;
            let windows = view
                .hits
                .iter()
                .filter(|h| h.environment == env.as_str())
                .fold(IntervalSet::new(), |acc, h| acc.union(&h.windows));
            if windows.is_empty() {
                ctx.printer.note(&format!(
                    "nothing in `{env}` was computed from those versions: no plan to make"
                ));
                None
            } else {
                let opts = Options {
                    restate_below: BTreeMap::from([(name.clone(), windows)]),
                    ..Options::new(env, ctx.execution_time)
                };
                Some(plan::build(
                    &loaded.project,
                    &loaded.fingerprints,
                    &state,
                    &opts,
                )?)
            }
        }
    };
    match r.format {
        PlanFormat::Json => {
            #[derive(Serialize)]
            struct WithPlan<'a> {
                #[serde(flatten)]
                recall: &'a RecallView,
                #[serde(skip_serializing_if = "Option::is_none")]
                plan: Option<&'a crate::plan::Plan>,
            }
            emit_json(
                out,
                &WithPlan {
                    recall: &view,
                    plan: planned.as_ref(),
                },
            )?;
        }
        PlanFormat::Text | PlanFormat::Markdown => {
            emit(out, &text(&view, r.format == PlanFormat::Markdown))?;
            if let Some(p) = &planned {
                show_plan(p, r.format, out)?;
            }
        }
    }
    if let (Some(p), Some(path)) = (&planned, &r.out) {
        plan::file::save(p, path)?;
        ctx.printer.note(&format!(
            "plan saved to `{}`: `tidemark apply {}` runs it",
            path.display(),
            path.display()
        ));
    }
    Ok(ExitStatus::Success)
}

/// `V` or `A..B` (inclusive).
fn versions(text: &str) -> Result<(u64, Option<u64>)> {
    let bad = || {
        Error::from(
            Diagnostic::error(format!("`{text}` is not a version or a range of versions"))
                .hint("write `--version 12` or `--version 12..15` (both ends included)"),
        )
    };
    match text.split_once("..") {
        None => {
            let v = text.trim().parse().map_err(|_| bad())?;
            Ok((v, Some(v)))
        }
        Some((a, b)) => {
            let a: u64 = a.trim().parse().map_err(|_| bad())?;
            let b: u64 = b.trim().parse().map_err(|_| bad())?;
            if b < a {
                return Err(bad());
            }
            Ok((a, Some(b)))
        }
    }
}

fn text(v: &RecallView, markdown: bool) -> String {
    let versions = match v.to_version {
        Some(b) if b == v.from_version => format!("version {b}"),
        Some(b) => format!("versions {}–{b}", v.from_version),
        None => format!("versions {} and later", v.from_version),
    };
    let mut s = if markdown {
        format!("#### Recall of `{}` {versions}\n\n", v.source)
    } else {
        format!(
            "`{}` {versions} (read by any batch at that version or later):\n",
            v.source
        )
    };
    if v.hits.is_empty() {
        s.push_str("no environment holds data computed from them\n");
        return s;
    }
    for h in &v.hits {
        let applies: std::collections::BTreeSet<&str> =
            h.batches.iter().map(|b| b.apply_id.as_str()).collect();
        let line = format!(
            "{} · {} · {} · {} from {}",
            h.environment,
            h.model,
            crate::plan::render::windows(&h.windows),
            crate::printer::plural(h.batches.len() as u64, "batch", "batches"),
            applies.into_iter().collect::<Vec<_>>().join(", ")
        );
        if markdown {
            s.push_str(&format!("- {line}\n"));
        } else {
            s.push_str(&format!("  {line}\n"));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_one_or_an_inclusive_range() {
        assert_eq!(versions("7").unwrap(), (7, Some(7)));
        assert_eq!(versions("3..5").unwrap(), (3, Some(5)));
        assert!(versions("5..3").is_err());
        assert!(versions("x").is_err());
    }
}
