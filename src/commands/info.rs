//! `tidemark info`: the models with kind, schedule, start, fingerprints and parents.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{Loaded, emit, load};
use crate::error::{ExitStatus, Result};
use crate::fingerprint::Fingerprint;
use crate::interval::format_ts;
use crate::project::{AuditCall, Kind, ModelName};
use crate::settings::{InfoFormat, Settings};

/// `tidemark.info/v1`.
#[derive(Debug, Serialize)]
pub struct InfoJson<'a> {
    /// Schema identifier.
    pub format: &'static str,
    /// Project name.
    pub project: &'a str,
    /// Warehouse location.
    pub warehouse: String,
    /// Models, sorted by name.
    pub models: Vec<ModelJson<'a>>,
    /// Sources, sorted by name.
    pub sources: Vec<SourceJson<'a>>,
}

/// One model in `tidemark.info/v1`.
#[derive(Debug, Serialize)]
pub struct ModelJson<'a> {
    pub name: &'a ModelName,
    /// File relative to the project root (forward slashes).
    pub file: String,
    /// Kind and its properties.
    pub kind: &'a Kind,
    /// Cron expression.
    pub cron: &'a str,
    /// Interval unit derived from the cron.
    pub interval_unit: &'static str,
    /// Start (RFC 3339) or null.
    pub start: Option<String>,
    /// End (RFC 3339) or null.
    pub end: Option<String>,
    pub owner: Option<&'a str>,
    pub description: Option<&'a str>,
    pub tags: Vec<&'a str>,
    /// Grain columns.
    pub grain: &'a [String],
    /// Column descriptions.
    pub column_descriptions: &'a BTreeMap<String, String>,
    pub audits: &'a [AuditCall],
    /// Partition columns beyond the time column.
    pub partitioned_by: &'a [String],
    /// Forward-only.
    pub forward_only: bool,
    /// Allow partial intervals.
    pub allow_partials: bool,
    /// Reads its own previous output.
    pub self_referencing: bool,
    /// Direct parents (models and sources).
    pub parents: Vec<&'a ModelName>,
    /// Direct children.
    pub children: Vec<ModelName>,
    pub fingerprint: Option<&'a Fingerprint>,
}

/// One source in `tidemark.info/v1`.
#[derive(Debug, Serialize)]
pub struct SourceJson<'a> {
    pub name: &'a ModelName,
    /// Path (relative to the project root when inside it) or URL.
    pub path: String,
    /// delta | parquet | csv.
    pub format: &'static str,
    /// Declared columns.
    pub columns: &'a BTreeMap<String, String>,
    /// Direct children.
    pub children: Vec<ModelName>,
    pub fingerprint: Option<&'a Fingerprint>,
}

/// Run `info`.
pub fn run(ctx: &Settings, format: InfoFormat, out: &mut dyn std::io::Write) -> Result<ExitStatus> {
    let loaded = load(ctx)?;
    let text = match format {
        InfoFormat::Json => super::json_text(&to_json(&loaded))?,
        InfoFormat::Text => to_text(&loaded),
    };
    emit(out, &text)?;
    super::release((loaded, text));
    Ok(ExitStatus::Success)
}

/// Build the JSON document.
pub fn to_json(l: &Loaded) -> InfoJson<'_> {
    let p = &l.project;
    let models = p
        .models
        .values()
        .map(|m| ModelJson {
            name: &m.name,
            file: m.file.to_string_lossy().replace('\\', "/"),
            kind: &m.kind,
            cron: m.schedule.expr(),
            interval_unit: m.schedule.unit().as_str(),
            start: m.start.map(format_ts),
            end: m.end.map(format_ts),
            owner: m.owner.as_deref(),
            description: m.description.as_deref(),
            tags: m.tags.iter().map(String::as_str).collect(),
            grain: &m.grain,
            column_descriptions: &m.column_descriptions,
            audits: &m.audits,
            partitioned_by: &m.partitioned_by,
            forward_only: m.forward_only,
            allow_partials: m.allow_partials,
            self_referencing: p.self_referencing.contains(&m.name),
            parents: p
                .parents
                .get(&m.name)
                .map(|s| s.iter().collect())
                .unwrap_or_default(),
            children: l.dag.children(&m.name).into_iter().collect(),
            fingerprint: l.fingerprints.get(&m.name),
        })
        .collect();
    let sources = p
        .config
        .sources
        .values()
        .map(|s| SourceJson {
            name: &s.name,
            path: s.display_path(&p.config.root),
            format: s.format.as_str(),
            columns: &s.columns,
            children: l.dag.children(&s.name).into_iter().collect(),
            fingerprint: l.fingerprints.get(&s.name),
        })
        .collect();
    InfoJson {
        format: "tidemark.info/v1",
        project: &p.config.name,
        warehouse: p.config.warehouse.display(&p.config.root),
        models,
        sources,
    }
}

/// The text table.
fn to_text(l: &Loaded) -> String {
    let p = &l.project;
    let short = |f: Option<&Fingerprint>, pick: fn(&Fingerprint) -> &str| {
        f.map_or("-".to_string(), |f| pick(f)[..12].to_string())
    };
    let mut rows = vec![
        [
            "MODEL", "KIND", "CRON", "START", "VERSION", "DATA", "METADATA", "PARENTS",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for m in p.models.values() {
        let f = l.fingerprints.get(&m.name);
        let parents: Vec<&str> = p
            .parents
            .get(&m.name)
            .map(|s| s.iter().map(|n| n.as_str()).collect())
            .unwrap_or_default();
        rows.push(vec![
            m.name.to_string(),
            m.kind.name().to_string(),
            m.schedule.expr().to_string(),
            m.start.map(format_ts).unwrap_or_else(|| "-".into()),
            f.map_or("-".into(), |f| f.version.clone()),
            short(f, |f| &f.data),
            short(f, |f| &f.metadata),
            if parents.is_empty() {
                "-".into()
            } else {
                parents.join(", ")
            },
        ]);
    }
    let mut text = table(&rows);
    if !p.config.sources.is_empty() {
        text.push('\n');
        let mut rows = vec![["SOURCE", "FORMAT", "PATH"].map(String::from).to_vec()];
        for s in p.config.sources.values() {
            rows.push(vec![
                s.name.to_string(),
                s.format.as_str().to_string(),
                s.display_path(&p.config.root),
            ]);
        }
        text.push_str(&table(&rows));
    }
    let sources = p.config.sources.len();
    text.push_str(&format!(
        "\n{} model{}, {} source{}\n",
        p.models.len(),
        if p.models.len() == 1 { "" } else { "s" },
        sources,
        if sources == 1 { "" } else { "s" }
    ));
    text
}

/// Left-aligned columns separated by two spaces; no trailing spaces.
pub fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            if c + 1 == r.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = widths[c]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}
