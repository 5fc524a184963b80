//! Model kinds and the `kind` property.
//!
//! Invariant: a [`Kind`] is complete and consistent when built: an incremental kind has its
//! time column or unique key, and properties of another kind are refused with their location.

use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{Builder, normalize};
use crate::error::{Diagnostic, did_you_mean};
use crate::project::header::{self, Token};

/// How a model is materialized.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Kind {
    /// The whole table is recomputed each time.
    Full,
    /// No data; the query is resolved when read.
    View,
    /// Inlined into consumers as a CTE; never materialized.
    Embedded,
    /// Partitioned by time; computed interval by interval.
    IncrementalByTimeRange {
        /// The column holding each row's time.
        time_column: String,
        /// Format of a string time column (strftime), if it is a string.
        format: Option<String>,
        /// Most intervals per batch (default 1 interval... per batch is decided by the planner).
        batch_size: Option<u32>,
        /// Most batches of this model run at once.
        batch_concurrency: Option<u32>,
        /// Intervals before each missing one that are recomputed too.
        lookback: u32,
    },
    /// Merged on a key, batch by batch, in order.
    IncrementalByUniqueKey {
        /// The key columns.
        unique_key: Vec<String>,
        /// Most intervals per batch.
        batch_size: Option<u32>,
    },
    /// Loaded from a CSV file.
    Seed {
        /// The CSV, relative to the project root.
        path: PathBuf,
    },
}

impl Kind {
    /// The kind's name as written in headers.
    pub fn name(&self) -> &'static str {
        match self {
            Kind::Full => "FULL",
            Kind::View => "VIEW",
            Kind::Embedded => "EMBEDDED",
            Kind::IncrementalByTimeRange { .. } => "INCREMENTAL_BY_TIME_RANGE",
            Kind::IncrementalByUniqueKey { .. } => "INCREMENTAL_BY_UNIQUE_KEY",
            Kind::Seed { .. } => "SEED",
        }
    }

    /// Is the model computed interval by interval?
    pub fn is_incremental(&self) -> bool {
        matches!(
            self,
            Kind::IncrementalByTimeRange { .. } | Kind::IncrementalByUniqueKey { .. }
        )
    }

    /// Does the model have rows of its own (a physical table)?
    pub fn is_materialized(&self) -> bool {
        !matches!(self, Kind::View | Kind::Embedded)
    }
}

/// The kinds tidemark knows, for hints.
const KINDS: [&str; 6] = [
    "FULL",
    "VIEW",
    "EMBEDDED",
    "INCREMENTAL_BY_TIME_RANGE",
    "INCREMENTAL_BY_UNIQUE_KEY",
    "SEED",
];

impl Builder<'_> {
    pub(super) fn kind(&mut self, v: &[Token]) -> Result<Kind, Diagnostic> {
        let src = self.src;
        let c = header::call(src, "kind", v)?;
        let upper = c.name.to_ascii_uppercase();
        let no_args = |kind: Kind| -> Result<Kind, Diagnostic> {
            if c.args.is_empty() {
                Ok(kind)
            } else {
                Err(src.err(
                    c.args[0][0].start,
                    format!("kind {upper} takes no properties"),
                ))
            }
        };
        let mut props: BTreeMap<String, (usize, &[Token])> = BTreeMap::new();
        let allowed: &[&str] = match upper.as_str() {
            "FULL" => return no_args(Kind::Full),
            "VIEW" => return no_args(Kind::View),
            "EMBEDDED" => return no_args(Kind::Embedded),
            "INCREMENTAL_BY_TIME_RANGE" => &[
                "time_column",
                "format",
                "batch_size",
                "batch_concurrency",
                "lookback",
                "forward_only",
                "partition_by_time_column",
                "disable_restatement",
                "on_destructive_change",
                "on_additive_change",
                "auto_restatement_cron",
                "auto_restatement_intervals",
            ],
            "INCREMENTAL_BY_UNIQUE_KEY" => &[
                "unique_key",
                "batch_size",
                "batch_concurrency",
                "forward_only",
                "disable_restatement",
                "on_destructive_change",
                "on_additive_change",
                "auto_restatement_cron",
                "when_matched",
                "merge_filter",
            ],
            "SEED" => &["path", "batch_size", "csv_settings"],
            _ => {
                let hint = did_you_mean(&upper, KINDS.iter().copied())
                    .unwrap_or_else(|| format!("kinds: {}", KINDS.join(", ")));
                return Err(src
                    .err(c.start, format!("unknown model kind `{upper}`"))
                    .hint(hint));
            }
        };
        for arg in &c.args {
            let (key, at, value) = header::key_value(src, arg)?;
            if !allowed.contains(&key.as_str()) {
                let hint = format!("{upper} takes: {}", allowed.join(", "));
                return Err(src
                    .err(at, format!("`{key}` is not a property of kind {upper}"))
                    .hint(hint));
            }
            if props.insert(key.clone(), (at, value)).is_some() {
                return Err(src.err(at, format!("kind property `{key}` is set twice")));
            }
        }
        // SQLMesh kind properties with no behaviour of their own here.
        for (key, (at, value)) in &props {
            let ignored = match key.as_str() {
                "forward_only" => {
                    self.forward_only = header::boolean(src, key, value)?;
                    None
                }
                "partition_by_time_column" => (!header::boolean(src, key, value)?)
                    .then_some("tables are always partitioned by their time column"),
                "disable_restatement" => header::boolean(src, key, value)?
                    .then_some("restatements of this model are not refused"),
                "on_destructive_change" | "on_additive_change" => {
                    Some("a schema change is a breaking or non-breaking change of the plan")
                }
                "auto_restatement_cron" | "auto_restatement_intervals" => {
                    Some("restate with `plan --restate-model` or `--restate-late`")
                }
                "csv_settings" => Some("seeds are read as comma-separated CSV with a header"),
                "batch_concurrency" if upper == "INCREMENTAL_BY_UNIQUE_KEY" => {
                    Some("UNIQUE_KEY batches run one at a time")
                }
                "when_matched" | "merge_filter" => {
                    return Err(src
                        .err(
                            *at,
                            format!(
                                "`{key}` is not supported: a matched row is replaced by the new one"
                            ),
                        )
                        .hint(format!(
                            "remove `{key}`, or compute the merged values in the query"
                        )));
                }
                // A seed's rows per INSERT: nothing to tune.
                _ => None,
            };
            if let Some(instead) = ignored {
                self.warnings.push(
                    src.err(
                        *at,
                        format!("`{key}` is not supported and is ignored: {instead}"),
                    )
                    .into_warning(),
                );
            }
        }
        let required = |key: &str| {
            src.err(c.start, format!("kind {upper} needs `{key}`"))
                .hint(format!("write {upper} ({key} ...)"))
        };
        let positive = |key: &str,
                        props: &BTreeMap<String, (usize, &[Token])>|
         -> Result<Option<u32>, Diagnostic> {
            match props.get(key) {
                None => Ok(None),
                Some((at, v)) => match header::uint(src, key, v)? {
                    0 => Err(src.err(*at, format!("`{key}` must be at least 1"))),
                    n => Ok(Some(n)),
                },
            }
        };
        match upper.as_str() {
            "INCREMENTAL_BY_TIME_RANGE" => {
                let (_, tc) = props
                    .get("time_column")
                    .ok_or_else(|| required("time_column"))?;
                // `time_column col` or SQLMesh's `time_column (col, 'format')`.
                let (time_column, mut format) = if header::is_wrapped(tc) {
                    let items = header::list(tc);
                    match items.as_slice() {
                        [col, fmt] => (
                            header::ident_path(src, "time_column", col)?,
                            Some(header::string(src, "format", fmt)?),
                        ),
                        _ => {
                            return Err(src.err(
                                tc[0].start,
                                "`time_column` expects a column or (column, 'format')",
                            ));
                        }
                    }
                } else {
                    (header::ident_path(src, "time_column", tc)?, None)
                };
                if let Some((at, f)) = props.get("format") {
                    if format.is_some() {
                        return Err(src.err(*at, "the time column format is given twice"));
                    }
                    format = Some(header::string(src, "format", f)?);
                }
                let lookback = match props.get("lookback") {
                    Some((_, v)) => header::uint(src, "lookback", v)?,
                    None => 0,
                };
                Ok(Kind::IncrementalByTimeRange {
                    time_column,
                    format,
                    batch_size: positive("batch_size", &props)?,
                    batch_concurrency: positive("batch_concurrency", &props)?,
                    lookback,
                })
            }
            "INCREMENTAL_BY_UNIQUE_KEY" => {
                let (_, uk) = props
                    .get("unique_key")
                    .ok_or_else(|| required("unique_key"))?;
                let mut unique_key = Vec::new();
                for item in header::list(uk) {
                    unique_key.push(header::ident_path(src, "unique_key", item)?);
                }
                Ok(Kind::IncrementalByUniqueKey {
                    unique_key,
                    batch_size: positive("batch_size", &props)?,
                })
            }
            _ => {
                // SEED
                let (at, pv) = props.get("path").ok_or_else(|| required("path"))?;
                let rel = header::string(src, "path", pv)?;
                // Relative to the model file; `$root/…` to the project root (SQLMesh's).
                let path = match rel.strip_prefix("$root/") {
                    Some(from_root) => normalize(Path::new(from_root)),
                    None => {
                        let model_dir = self.src.file.parent().unwrap_or(Path::new(""));
                        normalize(&model_dir.join(&rel))
                    }
                };
                let hash = crate::project::seed::hash_file(&self.root.join(&path)).map_err(|e| {
                    src.err(
                        *at,
                        format!(
                            "cannot read seed file `{}`: {}",
                            path.display(),
                            e.kind().to_string().to_lowercase()
                        ),
                    )
                    .hint("the seed path is relative to the model file, or to the project root when it starts with `$root/`")
                })?;
                self.seed_hash = Some(hash);
                Ok(Kind::Seed { path })
            }
        }
    }
}
