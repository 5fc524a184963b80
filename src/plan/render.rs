//! Plans for people: a terminal tree (`text`) and a pull-request comment (`markdown`). JSON is
//! the [`super::Plan`] itself, serialized.
//!
//! Invariants: output depends only on the plan (no clock, no terminal width), models appear in
//! the plan's order, and every window is printed half-open (`[start, end)`).

use std::fmt::Write;

use chrono::{DateTime, Timelike, Utc};

use super::late::LateData;
use super::{BackfillAction, Change, Plan, PlanModel};
use crate::interval::{Interval, IntervalSet, format_ts};
use crate::project::Kind;
use crate::state::ModelRecord;

/// A definition as reviewers read it: header properties as comments, then the pretty query.
pub fn definition_text(m: &ModelRecord) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "-- kind: {}", kind_text(&m.kind));
    let _ = writeln!(s, "-- cron: {}", m.cron);
    if let Some(t) = m.start {
        let _ = writeln!(s, "-- start: {}", format_ts(t));
    }
    if let Some(t) = m.end {
        let _ = writeln!(s, "-- end: {}", format_ts(t));
    }
    if let Some(o) = &m.owner {
        let _ = writeln!(s, "-- owner: {o}");
    }
    if !m.tags.is_empty() {
        let tags: Vec<&str> = m.tags.iter().map(String::as_str).collect();
        let _ = writeln!(s, "-- tags: {}", tags.join(", "));
    }
    for a in &m.audits {
        let args: Vec<String> = a.args.iter().map(|(k, v)| format!("{k} := {v}")).collect();
        let blocking = if a.blocking { "" } else { ", non-blocking" };
        let _ = writeln!(s, "-- audit: {}({}){blocking}", a.name, args.join(", "));
    }
    if !m.partitioned_by.is_empty() {
        let _ = writeln!(s, "-- partitioned_by: {}", m.partitioned_by.join(", "));
    }
    if m.forward_only {
        let _ = writeln!(s, "-- forward_only: true");
    }
    if m.allow_partials {
        let _ = writeln!(s, "-- allow_partials: true");
    }
    if let Some(h) = &m.seed_hash {
        let _ = writeln!(s, "-- seed contents: blake3 {}", &h[..h.len().min(16)]);
    }
    if !m.sql.is_empty() {
        let pretty = crate::sql::parse_query(std::path::Path::new(&m.file), &m.sql, m.dialect)
            .map(|q| crate::sql::pretty(&q))
            .unwrap_or_else(|_| m.sql.clone());
        s.push_str(&pretty);
        s.push('\n');
    }
    s
}

fn kind_text(k: &Kind) -> String {
    match k {
        Kind::IncrementalByTimeRange {
            time_column,
            format,
            batch_size,
            batch_concurrency,
            lookback,
        } => {
            let mut p = vec![match format {
                Some(f) => format!("time_column ({time_column}, '{f}')"),
                None => format!("time_column {time_column}"),
            }];
            if let Some(b) = batch_size {
                p.push(format!("batch_size {b}"));
            }
            if let Some(b) = batch_concurrency {
                p.push(format!("batch_concurrency {b}"));
            }
            if *lookback > 0 {
                p.push(format!("lookback {lookback}"));
            }
            format!("{} ({})", k.name(), p.join(", "))
        }
        Kind::IncrementalByUniqueKey {
            unique_key,
            batch_size,
        } => {
            let mut p = vec![format!("unique_key ({})", unique_key.join(", "))];
            if let Some(b) = batch_size {
                p.push(format!("batch_size {b}"));
            }
            format!("{} ({})", k.name(), p.join(", "))
        }
        Kind::Seed { path } => format!("SEED (path '{}')", path.display()),
        _ => k.name().to_string(),
    }
}

/// Unified diff of two definitions.
pub fn definition_diff(old: &ModelRecord, new: &ModelRecord) -> String {
    let a = definition_text(old);
    let b = definition_text(new);
    similar::TextDiff::from_lines(&a, &b)
        .unified_diff()
        .context_radius(3)
        .header(&old.file, &new.file)
        .to_string()
}

/// An instant, as a date when it is midnight.
fn bound(t: DateTime<Utc>) -> String {
    if t.num_seconds_from_midnight() == 0 && t.nanosecond() == 0 {
        t.format("%Y-%m-%d").to_string()
    } else {
        format_ts(t)
    }
}

fn window(i: &Interval) -> String {
    format!("[{}, {})", bound(i.start), bound(i.end))
}

/// Intervals as half-open windows, comma-separated.
pub fn windows(s: &IntervalSet) -> String {
    let parts: Vec<String> = s.ranges().iter().map(window).collect();
    parts.join(", ")
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// What a model's backfill does, in words.
pub fn backfill_text(m: &PlanModel) -> Option<String> {
    let b = m.backfill.as_ref()?;
    Some(match b.action {
        BackfillAction::RecreateView => "recreate view".into(),
        BackfillAction::LoadSeed => "load seed".into(),
        BackfillAction::FullRefresh => "full refresh".into(),
        BackfillAction::Compute => {
            let mut s = format!(
                "{}  {}, {}",
                windows(&b.intervals),
                plural(b.partitions, "partition", "partitions"),
                plural(b.batches, "batch", "batches")
            );
            if b.full_refresh {
                s.push_str(" (whole history)");
            }
            s
        }
    })
}

fn label(m: &PlanModel) -> String {
    match (m.change, m.category) {
        (_, Some(c)) => format!("{} ({})", m.name, c.as_str().replace('_', " ")),
        _ => m.name.to_string(),
    }
}

fn tree(out: &mut String, items: &[String], indent: &str) {
    for (i, item) in items.iter().enumerate() {
        let last = i + 1 == items.len();
        let _ = writeln!(out, "{indent}{} {item}", if last { "└──" } else { "├──" });
    }
}

fn header(plan: &Plan) -> String {
    let mut s = String::new();
    let env = &plan.environment;
    match (&plan.base_environment, plan.new_environment) {
        (Some(b), true) => {
            let _ = writeln!(
                s,
                "Plan {} for new environment `{env}`, created from `{b}`",
                plan.plan_id
            );
        }
        (Some(b), false) if b != env => {
            let _ = writeln!(
                s,
                "Plan {} for `{env}` (differences from `{b}`)",
                plan.plan_id
            );
        }
        (Some(_), false) => {
            let _ = writeln!(s, "Plan {} for environment `{env}`", plan.plan_id);
        }
        (None, _) => {
            let _ = writeln!(s, "Plan {} for new environment `{env}`", plan.plan_id);
        }
    }
    let _ = write!(s, "execution time {}", format_ts(plan.execution_time));
    if let (Some(a), Some(b)) = (plan.start, plan.end) {
        let _ = write!(s, " · window [{}, {})", format_ts(a), format_ts(b));
    } else if let Some(b) = plan.end {
        let _ = write!(s, " · window until {} (exclusive)", format_ts(b));
    }
    s.push('\n');
    s
}

const SECTIONS: [(Change, &str); 5] = [
    (Change::Added, "Added"),
    (Change::Removed, "Removed"),
    (Change::DirectlyModified, "Directly modified"),
    (Change::IndirectlyModified, "Indirectly modified"),
    (Change::Metadata, "Metadata only"),
];

/// The terminal rendering.
pub fn text(plan: &Plan) -> String {
    let mut s = header(plan);
    s.push('\n');
    let sections: Vec<(&str, Vec<String>)> = SECTIONS
        .iter()
        .map(|(c, title)| {
            let items: Vec<String> = plan
                .models
                .iter()
                .filter(|m| m.change == *c)
                .map(label)
                .collect();
            (*title, items)
        })
        .filter(|(_, items)| !items.is_empty())
        .collect();
    if sections.is_empty() && plan.restate.is_empty() {
        s.push_str("No changes: the project matches the environment.\n");
    }
    if !sections.is_empty() {
        s.push_str("Models:\n");
        for (i, (title, items)) in sections.iter().enumerate() {
            let last = i + 1 == sections.len();
            let _ = writeln!(s, "{} {title}:", if last { "└──" } else { "├──" });
            tree(&mut s, items, if last { "    " } else { "│   " });
        }
    }
    for m in plan.models.iter().filter(|m| m.diff.is_some()) {
        s.push('\n');
        let what = if m.change == Change::Metadata {
            "Metadata updated"
        } else {
            "Directly modified"
        };
        let _ = writeln!(s, "{what}: {}", label(m));
        if let Some(r) = &m.reason {
            let _ = writeln!(s, "  reason: {r}");
        }
        let children: Vec<String> = plan
            .models
            .iter()
            .filter(|c| c.changed_parents.contains(&m.name))
            .map(label)
            .collect();
        if !children.is_empty() {
            s.push_str("└── Indirectly modified children:\n");
            tree(&mut s, &children, "    ");
        }
        if let Some(d) = &m.diff {
            s.push_str(d);
        }
    }
    if !plan.restate.is_empty() {
        s.push_str(
            "\nModels selected for restatement (their downstream models are restated too):\n",
        );
        let items: Vec<String> = plan.restate.iter().map(ToString::to_string).collect();
        tree(&mut s, &items, "");
    }
    if let Some(l) = &plan.late_data {
        s.push_str(&late_text(l, &plan.environment, false));
    }
    let backfills: Vec<String> = plan
        .models
        .iter()
        .filter_map(|m| {
            let t = backfill_text(m)?;
            let mark = if m.restated { " (restated)" } else { "" };
            Some(format!("{}: {t}{mark}", m.name))
        })
        .collect();
    s.push('\n');
    if backfills.is_empty() {
        s.push_str("Nothing to compute.\n");
    } else {
        s.push_str("Models needing backfill:\n");
        tree(&mut s, &backfills, "");
    }
    for n in &plan.notes {
        let _ = writeln!(s, "note: {n}");
    }
    let _ = writeln!(s, "\n{}", summary_line(plan));
    s
}

fn summary_line(plan: &Plan) -> String {
    let x = &plan.summary;
    format!(
        "Summary: {} added, {} removed, {} directly modified, {} indirectly modified, {} metadata-only, {} restated; {} to compute in {}.",
        x.added,
        x.removed,
        x.directly_modified,
        x.indirectly_modified,
        x.metadata,
        x.restated,
        plural(x.partitions, "partition", "partitions"),
        plural(x.batches, "batch", "batches")
    )
}

/// The pull-request comment.
pub fn markdown(plan: &Plan) -> String {
    let mut s = String::new();
    let env = &plan.environment;
    let _ = write!(s, "### tidemark plan for `{env}`");
    match (&plan.base_environment, plan.new_environment) {
        (Some(b), true) => {
            let _ = write!(s, " (new, created from `{b}`)");
        }
        (Some(b), false) if b != env => {
            let _ = write!(s, " (compared with `{b}`)");
        }
        (None, _) => s.push_str(" (new)"),
        _ => {}
    }
    let _ = write!(
        s,
        "\n\nPlan `{}` · execution time `{}`",
        plan.plan_id,
        format_ts(plan.execution_time)
    );
    if let (Some(a), Some(b)) = (plan.start, plan.end) {
        let _ = write!(s, " · window `[{}, {})`", format_ts(a), format_ts(b));
    }
    s.push_str("\n\n");
    let x = &plan.summary;
    s.push_str("| | |\n|---|---:|\n");
    for (label, n) in [
        ("Added", x.added),
        ("Removed", x.removed),
        ("Directly modified", x.directly_modified),
        ("Indirectly modified", x.indirectly_modified),
        ("Metadata only", x.metadata),
        ("Restated", x.restated),
        ("Models to backfill", x.backfills),
    ] {
        let _ = writeln!(s, "| {label} | {n} |");
    }
    let _ = writeln!(
        s,
        "| **Partitions to compute** | **{}** ({}) |",
        x.partitions,
        plural(x.batches, "batch", "batches")
    );
    s.push('\n');
    if plan.models.is_empty() {
        s.push_str("No changes: nothing to compute.\n");
    } else {
        s.push_str(
            "| Model | Change | Category | Backfill | Partitions |\n|---|---|---|---|---:|\n",
        );
        for m in &plan.models {
            let backfill = match (&m.backfill, m.restated) {
                (Some(b), restated) => {
                    let w = match b.action {
                        BackfillAction::Compute => format!("`{}`", windows(&b.intervals)),
                        _ => backfill_text(m).unwrap_or_default(),
                    };
                    if restated {
                        format!("⟲ **restate {w}**")
                    } else {
                        w
                    }
                }
                (None, _) => String::new(),
            };
            let parts = m
                .backfill
                .as_ref()
                .map(|b| b.partitions.to_string())
                .unwrap_or_default();
            let _ = writeln!(
                s,
                "| `{}` | {} | {} | {backfill} | {parts} |",
                m.name,
                m.change.as_str().replace('_', " "),
                m.category
                    .map(|c| c.as_str().replace('_', " "))
                    .unwrap_or_default()
            );
        }
    }
    for m in plan.models.iter().filter(|m| m.diff.is_some()) {
        let cat = m
            .category
            .map(|c| c.as_str().replace('_', " "))
            .unwrap_or_default();
        let _ = writeln!(
            s,
            "\n<details><summary><code>{}</code> — {cat}</summary>\n",
            m.name
        );
        if let Some(r) = &m.reason {
            let _ = writeln!(s, "{r}\n");
        }
        let _ = writeln!(
            s,
            "```diff\n{}```\n</details>",
            m.diff.as_deref().unwrap_or_default()
        );
    }
    if let Some(l) = &plan.late_data {
        s.push_str(&late_text(l, &plan.environment, true));
    }
    if !plan.notes.is_empty() {
        s.push('\n');
        for n in &plan.notes {
            let _ = writeln!(s, "> {n}");
        }
    }
    s
}

/// The "late or corrected source data" section, as text or markdown.
fn late_text(l: &LateData, env: &str, markdown: bool) -> String {
    let mut s = String::new();
    let code = |t: &str| {
        if markdown {
            format!("`{t}`")
        } else {
            t.to_string()
        }
    };
    if markdown {
        s.push_str("\n#### Late or corrected source data\n\n");
    } else {
        s.push_str("\nLate or corrected source data (changed since the environment read it):\n");
    }
    // Each source, with what restating it recomputes under it.
    let mut items: Vec<(String, Vec<String>)> = Vec::new();
    for x in &l.sources {
        let versions = match (x.versions.first(), x.versions.last()) {
            (Some(a), Some(b)) if a != b => format!("versions {a}–{b}"),
            (Some(a), _) => format!("version {a}"),
            _ => String::new(),
        };
        let mut line = format!(
            "{}: {versions} (read at {}) · {}",
            code(x.source.as_str()),
            x.since_version,
            code(&windows(&x.windows))
        );
        match &x.untracked {
            Some(why) => {
                let _ = write!(line, " · untracked: {why}; never restated automatically");
            }
            None => {
                let _ = write!(
                    line,
                    " · +{} (+{} rows), −{} (−{} rows)",
                    plural(x.files_added, "file", "files"),
                    x.rows_added,
                    plural(x.files_removed, "file", "files"),
                    x.rows_removed
                );
            }
        }
        let restates = x
            .restates
            .iter()
            .map(|m| {
                format!(
                    "restates {}: {}",
                    code(m.model.as_str()),
                    code(&windows(&m.windows))
                )
            })
            .collect();
        items.push((line, restates));
    }
    for n in &l.not_tracked {
        let line = format!("{}: not tracked ({})", code(n.source.as_str()), n.reason);
        items.push((line, Vec::new()));
    }
    for (i, (line, children)) in items.iter().enumerate() {
        let last = i + 1 == items.len();
        if markdown {
            let _ = writeln!(s, "- {line}");
            for c in children {
                let _ = writeln!(s, "  - {c}");
            }
        } else {
            let _ = writeln!(s, "{} {line}", if last { "└──" } else { "├──" });
            tree(&mut s, children, if last { "    " } else { "│   " });
        }
    }
    let what = if l.restated {
        "this plan restates the tracked windows above".to_string()
    } else {
        format!("`tidemark plan {env} --restate-late` restates exactly these windows")
    };
    let _ = writeln!(s, "{}{what}", if markdown { "\n" } else { "hint: " });
    s
}
