//! An environment as the engine sees it: every model's snapshot, physical table and pinned
//! version, plus the external sources; renders model SQL and lists what a query reads.
//!
//! Invariants:
//! - SQL is rendered from the snapshot's stored definition (what was planned and reviewed),
//!   never from the files on disk.
//! - Inputs come out in dependency order (a view after everything it reads), each name once.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use chrono::{DateTime, Utc};
use datafusion::sql::sqlparser::ast::Query;

use crate::engine::Input;
use crate::error::{Error, Result};
use crate::interval::Interval;
use crate::project::{Kind, ModelName, Source};
use crate::sql::{MacroContext, render_model};
use crate::state::Snapshot;

/// One model of the environment.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Its snapshot.
    pub snapshot: Snapshot,
    /// Its physical table (`None` for views and embedded models).
    pub table: Option<crate::names::TableId>,
    /// The Delta version read (`None`: the latest).
    pub version: Option<u64>,
}

/// Models, sources and pins of one environment.
pub struct Catalog<'a> {
    pub entries: BTreeMap<ModelName, Entry>,
    /// External sources from the config.
    pub sources: &'a BTreeMap<ModelName, Source>,
    /// Versions of Delta sources pinned for this use.
    pub source_versions: BTreeMap<ModelName, u64>,
    /// "Now" for macro variables.
    pub execution_time: DateTime<Utc>,
    parsed: RefCell<BTreeMap<ModelName, Query>>,
}

impl<'a> Catalog<'a> {
    /// A catalog over `entries`.
    pub fn new(
        entries: BTreeMap<ModelName, Entry>,
        sources: &'a BTreeMap<ModelName, Source>,
        source_versions: BTreeMap<ModelName, u64>,
        execution_time: DateTime<Utc>,
    ) -> Catalog<'a> {
        Catalog {
            entries,
            sources,
            source_versions,
            execution_time,
            parsed: RefCell::new(BTreeMap::new()),
        }
    }

    /// Point every model on `table` at `version` (after this apply wrote it), unless it already
    /// points at a newer one: batches of one table finish in any order, and a later Delta
    /// version contains every earlier commit, so the pin only moves forward.
    pub fn set_version(&mut self, table: &str, version: u64) {
        for e in self.entries.values_mut() {
            if e.table.as_deref() == Some(table) {
                e.version = Some(e.version.map_or(version, |v| v.max(version)));
            }
        }
    }

    fn entry(&self, name: &ModelName) -> Result<&Entry> {
        self.entries
            .get(name)
            .ok_or_else(|| Error::Bug(format!("{name} is not in the environment")))
    }

    fn query(&self, name: &ModelName) -> Result<Query> {
        if let Some(q) = self.parsed.borrow().get(name) {
            return Ok(q.clone());
        }
        let rec = &self.entry(name)?.snapshot.model;
        let q =
            crate::sql::parse_query(Path::new(&rec.file), &rec.sql, rec.dialect).map_err(|d| {
                Error::Bug(format!(
                    "the stored SQL of {name} does not parse: {}",
                    d.message
                ))
            })?;
        self.parsed.borrow_mut().insert(name.clone(), (*q).clone());
        Ok(*q)
    }

    /// The SQL `name` runs for `window`, EMBEDDED parents inlined, `@this_model` naming `table`.
    pub fn render(
        &self,
        name: &ModelName,
        window: Interval,
        this_table: Option<&str>,
    ) -> Result<String> {
        let e = self.entry(name)?;
        let this_model = match this_table {
            Some(t) => t.split('/').map(str::to_string).collect(),
            None => name.physical_parts(&e.snapshot.version),
        };
        let ctx = MacroContext {
            start: window.start,
            end: window.end,
            execution_time: self.execution_time,
            this_model,
        };
        let parents = |n: &ModelName| -> Result<Vec<ModelName>> {
            Ok(self.entry(n)?.snapshot.parents.keys().cloned().collect())
        };
        let embedded = |n: &ModelName| -> Result<Option<Query>> {
            match self.entries.get(n) {
                Some(pe) if pe.snapshot.model.kind == Kind::Embedded => Ok(Some(self.query(n)?)),
                _ => Ok(None),
            }
        };
        let rendered = render_model(name, &self.query(name)?, &ctx, &parents, &embedded)?;
        Ok(format!("{rendered}"))
    }

    /// The parents `name` reads (sources, tables, views), with what they read in turn.
    pub fn inputs_of(&self, name: &ModelName) -> Result<Vec<Input>> {
        let roots: Vec<ModelName> = self
            .entry(name)?
            .snapshot
            .parents
            .keys()
            .filter(|p| *p != name)
            .cloned()
            .collect();
        self.inputs(&roots)
    }

    /// Everything needed to read `roots`, in dependency order.
    pub fn inputs(&self, roots: &[ModelName]) -> Result<Vec<Input>> {
        let mut out = Vec::new();
        let mut seen = BTreeSet::new();
        for r in roots {
            self.visit(r, &mut seen, &mut out)?;
        }
        Ok(out)
    }

    fn visit(
        &self,
        name: &ModelName,
        seen: &mut BTreeSet<ModelName>,
        out: &mut Vec<Input>,
    ) -> Result<()> {
        if !seen.insert(name.clone()) {
            return Ok(());
        }
        if let Some(s) = self.sources.get(name) {
            out.push(Input::Source {
                name: name.clone(),
                path: s.path.clone(),
                format: s.format,
                columns: s.columns.clone(),
                version: self.source_versions.get(name).copied(),
            });
            return Ok(());
        }
        let Some(e) = self.entries.get(name) else {
            return Err(Error::from(crate::error::Diagnostic::error(format!(
                "`{name}` is neither a model of the environment nor a source"
            ))));
        };
        // A table never written (an incremental model with no interval yet: its start lies
        // ahead, or outside a dev window) reads as empty, with its query's columns.
        let not_built = matches!(
            e.snapshot.model.kind,
            Kind::IncrementalByTimeRange { .. } | Kind::IncrementalByUniqueKey { .. }
        ) && e.table.is_some()
            && e.version.is_none();
        let table = match (&e.snapshot.model.kind, &e.table) {
            (Kind::View | Kind::Embedded, _) | (_, None) => None,
            (_, Some(_)) if not_built => None,
            (_, Some(t)) => Some(t),
        };
        match table {
            Some(table) => out.push(Input::Table {
                name: name.clone(),
                table: table.clone(),
                version: e.version,
            }),
            None => {
                for p in e.snapshot.parents.keys() {
                    if p != name {
                        self.visit(p, seen, out)?;
                    }
                }
                let window = e
                    .snapshot
                    .model
                    .interval_unit
                    .last_complete(self.execution_time);
                let sql = self.render(name, window, None)?;
                out.push(Input::View {
                    name: name.clone(),
                    sql: if not_built {
                        format!("SELECT * FROM ({sql}) AS __tidemark_not_built WHERE false")
                    } else {
                        sql
                    },
                });
            }
        }
        Ok(())
    }
}
