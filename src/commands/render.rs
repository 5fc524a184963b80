//! `tidemark render MODEL`: the SQL a model runs for one interval.
//!
//! Macro variables are substituted as literals for the half-open window, EMBEDDED upstream
//! models are inlined as CTEs, and `@this_model` names the model's physical table. Upstream
//! names stay logical until the engine resolves them to physical tables.

use datafusion::sql::sqlparser::ast::Query;

use super::{Loaded, emit, load};
use crate::error::{Diagnostic, Error, ExitStatus, Result, did_you_mean};
use crate::interval::{Interval, IntervalUnit, exclusive_end, parse_instant, parse_window};
use crate::project::{Kind, ModelName};
use crate::settings::Settings;
use crate::sql::{MacroContext, pretty, render_model};

/// Run `render`.
pub fn run(
    ctx: &Settings,
    model: &str,
    start: Option<&str>,
    end: Option<&str>,
    out: &mut dyn std::io::Write,
) -> Result<ExitStatus> {
    let l = load(ctx)?;
    let name = find_model(&l, model)?;
    let m = &l.project.models[&name];
    if matches!(m.kind, Kind::Seed { .. }) {
        return Err(Diagnostic::error(format!(
            "`{name}` is a SEED model: its rows come from `{}`, not from a query",
            seed_path(&m.kind)
        ))
        .at(m.location.clone())
        .into());
    }
    let unit = m.schedule.unit();
    let window = window(unit, ctx.execution_time, start, end)?;
    let sql = render_sql(&l, &name, window, ctx.execution_time)?;
    if m.kind.is_incremental() || m.kind == Kind::Embedded {
        ctx.printer.note(&format!(
            "{name} rendered for {window} (UTC, half-open; @end_* variables are the inclusive end)"
        ));
    } else if start.is_some() || end.is_some() {
        ctx.printer.note(&format!(
            "{name} is {}: it is computed as a whole, so --start/--end only affect @execution_*",
            m.kind.name()
        ));
    }
    emit(out, &format!("{sql};\n"))?;
    Ok(ExitStatus::Success)
}

fn seed_path(kind: &Kind) -> String {
    match kind {
        Kind::Seed { path } => path.to_string_lossy().replace('\\', "/"),
        _ => String::new(),
    }
}

/// Resolve a model name typed by the user.
pub fn find_model(l: &Loaded, text: &str) -> Result<ModelName> {
    let known = || l.project.models.keys().map(ModelName::as_str);
    match ModelName::parse(text) {
        Ok(n) if l.project.models.contains_key(&n) => Ok(n),
        Ok(n) if l.project.is_source(&n) => {
            Err(Diagnostic::error(format!("`{n}` is a source, not a model")).into())
        }
        _ => {
            let hint = did_you_mean(&text.to_lowercase(), known())
                .unwrap_or_else(|| "`tidemark info` lists the models".into());
            Err(Diagnostic::error(format!("no model named `{text}`"))
                .hint(hint)
                .into())
        }
    }
}

/// The window to render: the given one widened to whole intervals, or the last complete interval.
fn window(
    unit: IntervalUnit,
    now: chrono::DateTime<chrono::Utc>,
    start: Option<&str>,
    end: Option<&str>,
) -> Result<Interval> {
    let bad =
        |flag: &str, r: String| Error::from(Diagnostic::error(format!("invalid {flag}: {r}")));
    let w = match (start, end) {
        (None, None) => return Ok(unit.last_complete(now)),
        (Some(s), Some(e)) => parse_window(s, e).map_err(|r| bad("--start/--end", r))?,
        (Some(s), None) => {
            let s = parse_instant(s).map_err(|r| bad("--start", r))?.at;
            Interval::new(s, unit.next(unit.floor(s)))
        }
        (None, Some(e)) => {
            let e = exclusive_end(parse_instant(e).map_err(|r| bad("--end", r))?);
            Interval::new(unit.prev(unit.ceil(e)), e)
        }
    };
    Ok(unit.align(w))
}

/// Render a model's query for `window`, with EMBEDDED parents inlined as CTEs.
fn render_sql(
    l: &Loaded,
    name: &ModelName,
    window: Interval,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<String> {
    let m = &l.project.models[name];
    let version = l
        .fingerprints
        .get(name)
        .map(|f| f.version.clone())
        .unwrap_or_default();
    let ctx = MacroContext {
        start: window.start,
        end: window.end,
        execution_time: now,
        this_model: name.physical_parts(&version),
    };
    let Some(query) = m.query() else {
        return Err(Error::Bug(format!("rendering {name}: no query")));
    };
    // The same rendering a batch runs ([`crate::sql::render_model`]).
    let parents =
        |n: &ModelName| -> Result<Vec<ModelName>> { Ok(l.dag.parents(n).into_iter().collect()) };
    let embedded = |n: &ModelName| -> Result<Option<Query>> {
        Ok(l.project
            .models
            .get(n)
            .filter(|pm| pm.kind == Kind::Embedded)
            .and_then(|pm| pm.query().cloned()))
    };
    let rendered = render_model(name, query, &ctx, &parents, &embedded)?;
    Ok(pretty(&rendered))
}
