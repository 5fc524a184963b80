//! Running SQLMesh unit tests on the engine, in memory: the model's query, rendered for the
//! test's window, over views of the test's input rows; nothing in the warehouse is read or
//! written.
//!
//! Invariants:
//! - Rows are compared as multisets (order does not matter), column by column over the
//!   expected rows' columns (all of the result's unless `partial`): numbers equal within a
//!   relative 1e-9, dates and timestamps equal as instants whatever their spelling, NULL only
//!   equal to NULL, anything else as text.
//! - Input values become SQL literals with quotes escaped (typed by the table's declared
//!   columns when it has them); column names must be plain identifiers.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use datafusion::arrow::array::Array;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use serde::Serialize;

use crate::engine::{Engine, Input};
use crate::error::{Error, Result};
use crate::project::unit_tests::{Cell, Row, UnitTest};
use crate::project::{Model, Project};
use crate::sql::MacroContext;

/// One test's result.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// The test.
    pub name: String,
    /// Its file.
    pub file: String,
    /// The model tested.
    pub model: String,
    /// Passed.
    pub passed: bool,
    /// Columns compared.
    pub columns: Vec<String>,
    /// Expected rows the query did not return (values as text, in `columns` order).
    pub missing: Vec<Vec<String>>,
    /// Rows the query returned that were not expected.
    pub unexpected: Vec<Vec<String>>,
    /// Why the test could not run (then it failed).
    pub error: Option<String>,
}

/// Run `test` (see the module invariants).
pub fn run(
    engine: &dyn Engine,
    project: &Project,
    test: &UnitTest,
    execution_time: DateTime<Utc>,
) -> Result<Outcome> {
    let mut out = Outcome {
        name: test.name.clone(),
        file: test.file.display().to_string(),
        model: test.model.to_string(),
        passed: false,
        columns: Vec::new(),
        missing: Vec::new(),
        unexpected: Vec::new(),
        error: None,
    };
    match evaluate(engine, project, test, execution_time) {
        Ok(batches) => compare(test, &batches, &mut out),
        // The headline and, when there is one, the engine's words behind it.
        Err(Error::User(d)) => {
            out.error = d.first().map(|d| match &d.cause {
                Some(c) => format!("{}: {}", d.message, c.lines().next().unwrap_or_default()),
                None => d.message.clone(),
            })
        }
        Err(e) => return Err(e),
    }
    Ok(out)
}

fn user(message: String) -> Error {
    Error::from(crate::error::Diagnostic::error(message))
}

/// The model's rows over the test's inputs.
fn evaluate(
    engine: &dyn Engine,
    project: &Project,
    test: &UnitTest,
    execution_time: DateTime<Utc>,
) -> Result<Vec<RecordBatch>> {
    let model = model_for(project, test)?;
    let query = model
        .query()
        .ok_or_else(|| user(format!("`{}` has no query to test", test.model)))?;
    let parents = project
        .parents
        .get(&test.model)
        .cloned()
        .unwrap_or_default();
    for p in &parents {
        if !test.inputs.contains_key(p) {
            return Err(user(format!(
                "no rows for `{p}`, which `{}` reads (write `{p}: []` for none)",
                test.model
            )));
        }
    }
    let mut inputs = Vec::new();
    for (name, rows) in &test.inputs {
        if !parents.contains(name) {
            return Err(user(format!(
                "`{name}` is not a table `{}` reads",
                test.model
            )));
        }
        let declared: Vec<(String, String)> = match project.models.get(name) {
            Some(m) => m.columns.clone(),
            None => project
                .config
                .sources
                .get(name)
                .map(|s| {
                    s.columns
                        .iter()
                        .map(|(c, t)| (c.to_lowercase(), t.clone()))
                        .collect()
                })
                .unwrap_or_default(),
        };
        inputs.push(Input::View {
            name: name.clone(),
            sql: rows_sql(name.as_str(), rows, &declared)?,
        });
    }
    let end = test.end.unwrap_or(execution_time);
    let start = test
        .start
        .or(model.start)
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
    let ctx = MacroContext {
        start,
        end,
        execution_time: test.execution_time.unwrap_or(execution_time),
        this_model: test.model.as_str().split('.').map(str::to_string).collect(),
    };
    let rendered = crate::sql::render_query(query, &ctx).map_err(user)?;
    engine.query(&inputs, &rendered.to_string())
}

/// The model, rebuilt with the test's variables when it has any.
fn model_for(project: &Project, test: &UnitTest) -> Result<Model> {
    let m = project
        .models
        .get(&test.model)
        .ok_or_else(|| user(format!("no model `{}` in the project", test.model)))?;
    if test.vars.is_empty() {
        return Ok(m.clone());
    }
    let root = &project.config.root;
    let text = std::fs::read_to_string(root.join(&m.file))
        .map_err(|e| Error::from(crate::error::io_error("read", &m.file, &e)))?;
    let mut defaults = project.config.model_defaults.clone();
    defaults.variables.extend(test.vars.clone());
    match crate::project::model::build(root, &m.file, &text, &defaults, project.config.dialect()) {
        crate::project::model::Loaded::Model(m, _) => Ok(*m),
        crate::project::model::Loaded::Failed(d) => Err(Error::User(d)),
        crate::project::model::Loaded::Disabled(_) => {
            Err(user(format!("`{}` is disabled", test.model)))
        }
    }
}

/// `SELECT … UNION ALL SELECT …` of `rows` (typed by `declared` when given).
fn rows_sql(name: &str, rows: &[Row], declared: &[(String, String)]) -> Result<String> {
    let mut columns: Vec<String> = declared.iter().map(|(c, _)| c.clone()).collect();
    for row in rows {
        for (c, _) in row {
            if !columns.contains(c) {
                if !declared.is_empty() {
                    return Err(user(format!("`{name}` has no column `{c}`")));
                }
                columns.push(c.clone());
            }
        }
    }
    if let Some(bad) = columns
        .iter()
        .find(|c| !c.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_') || c.is_empty())
    {
        return Err(user(format!(
            "column `{bad}` of `{name}` is not a plain name"
        )));
    }
    if columns.is_empty() {
        return Err(user(format!(
            "`{name}` has no rows and no declared columns: give it at least one row"
        )));
    }
    let ty = |c: &str| {
        declared
            .iter()
            .find(|(d, _)| d == c)
            .map(|(_, t)| t.as_str())
    };
    let select = |row: Option<&Row>| -> String {
        columns
            .iter()
            .map(|c| {
                let v = row
                    .and_then(|r| r.iter().find(|(k, _)| k == c))
                    .map_or(Cell::Null, |(_, v)| v.clone());
                let lit = literal(&v);
                match ty(c) {
                    Some(t) => format!("CAST({lit} AS {t}) AS {c}"),
                    None => format!("{lit} AS {c}"),
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    if rows.is_empty() {
        return Ok(format!("SELECT {} WHERE false", select(None)));
    }
    Ok(rows
        .iter()
        .map(|r| format!("SELECT {}", select(Some(r))))
        .collect::<Vec<_>>()
        .join(" UNION ALL "))
}

fn literal(v: &Cell) -> String {
    match v {
        Cell::Null => "NULL".into(),
        Cell::Bool(b) => b.to_string(),
        Cell::Int(i) => i.to_string(),
        Cell::Float(f) => format!("{f:?}"),
        Cell::Text(s) => crate::sql::text_literal(s).to_string(),
    }
}

/// Compare the result with the expected rows into `out`.
fn compare(test: &UnitTest, batches: &[RecordBatch], out: &mut Outcome) {
    let result_columns: Vec<String> = batches
        .first()
        .map(|b| {
            b.schema()
                .fields()
                .iter()
                .map(|f| f.name().to_lowercase())
                .collect()
        })
        .unwrap_or_default();
    let mut columns: Vec<String> = Vec::new();
    for row in &test.expected {
        for (c, _) in row {
            if !columns.contains(c) {
                columns.push(c.clone());
            }
        }
    }
    if !test.partial {
        for c in &result_columns {
            if !columns.contains(c) {
                columns.push(c.clone());
            }
        }
    }
    if let Some(c) = columns
        .iter()
        .find(|c| !result_columns.contains(c) && !batches.is_empty())
    {
        out.error = Some(format!("the query returns no column `{c}`"));
        return;
    }
    // The result, as text, in `columns` order.
    let mut actual: Vec<Vec<Option<String>>> = Vec::new();
    for b in batches {
        let idx: Vec<Option<usize>> = columns
            .iter()
            .map(|c| {
                b.schema()
                    .fields()
                    .iter()
                    .position(|f| f.name().to_lowercase() == *c)
            })
            .collect();
        let fmts: Vec<Option<ArrayFormatter<'_>>> = idx
            .iter()
            .map(|i| {
                i.and_then(|i| {
                    ArrayFormatter::try_new(b.column(i).as_ref(), &FormatOptions::default()).ok()
                })
            })
            .collect();
        for r in 0..b.num_rows() {
            actual.push(
                idx.iter()
                    .zip(&fmts)
                    .map(|(i, f)| match (i, f) {
                        (Some(i), Some(f)) if !b.column(*i).is_null(r) => {
                            Some(f.value(r).to_string())
                        }
                        _ => None,
                    })
                    .collect(),
            );
        }
    }
    let expected: Vec<Vec<Option<String>>> = test
        .expected
        .iter()
        .map(|row| {
            columns
                .iter()
                .map(|c| match row.iter().find(|(k, _)| k == c).map(|(_, v)| v) {
                    None | Some(Cell::Null) => None,
                    Some(Cell::Text(s)) => Some(s.clone()),
                    Some(v) => Some(literal(v)),
                })
                .collect()
        })
        .collect();
    let mut used = vec![false; actual.len()];
    for e in &expected {
        let found = actual.iter().enumerate().position(|(i, a)| {
            !used[i]
                && a.iter()
                    .zip(e)
                    .all(|(a, e)| same(a.as_deref(), e.as_deref()))
        });
        match found {
            Some(i) => used[i] = true,
            None => out.missing.push(shown(e)),
        }
    }
    for (i, a) in actual.iter().enumerate() {
        if !used[i] {
            out.unexpected.push(shown(a));
        }
    }
    out.columns = columns;
    out.passed = out.missing.is_empty() && out.unexpected.is_empty();
}

fn shown(row: &[Option<String>]) -> Vec<String> {
    row.iter()
        .map(|v| v.clone().unwrap_or_else(|| "NULL".into()))
        .collect()
}

/// Are an actual and an expected value the same (see the module invariants)?
fn same(actual: Option<&str>, expected: Option<&str>) -> bool {
    let (Some(a), Some(e)) = (actual, expected) else {
        return actual.is_none() && expected.is_none();
    };
    if a == e {
        return true;
    }
    if let (Ok(x), Ok(y)) = (a.parse::<f64>(), e.parse::<f64>()) {
        return (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0);
    }
    match (instant(a), instant(e)) {
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

fn instant(s: &str) -> Option<NaiveDateTime> {
    let s = s.trim().trim_end_matches('Z');
    ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
        .or_else(|| {
            NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
        })
}

/// Run every test of `tests` on one engine of the project's.
pub fn run_all(
    project: &Project,
    tests: &[&UnitTest],
    execution_time: DateTime<Utc>,
) -> Result<Vec<Outcome>> {
    let engine = crate::engine::open(&project.config)?;
    tests
        .iter()
        .map(|t| run(engine.as_ref(), project, t, execution_time))
        .collect()
}

/// The outcomes as text: a line per test, the differing rows of a failure.
pub fn text(outcomes: &[Outcome]) -> String {
    let mut s = String::new();
    for o in outcomes {
        s.push_str(&format!(
            "{} {} ({}, {})\n",
            if o.passed { "PASS" } else { "FAIL" },
            o.name,
            o.model,
            o.file
        ));
        if let Some(e) = &o.error {
            s.push_str(&format!("  could not run: {e}\n"));
            continue;
        }
        let table = |title: &str, rows: &[Vec<String>], s: &mut String| {
            if rows.is_empty() {
                return;
            }
            s.push_str(&format!("  {title}:\n"));
            let widths: Vec<usize> = o
                .columns
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    rows.iter()
                        .map(|r| r.get(i).map_or(0, |v| v.chars().count()))
                        .max()
                        .unwrap_or(0)
                        .max(c.chars().count())
                })
                .collect();
            let line = |cells: &[String]| {
                cells
                    .iter()
                    .zip(&widths)
                    .map(|(c, w)| format!("{c:w$}"))
                    .collect::<Vec<_>>()
                    .join("  ")
                    .trim_end()
                    .to_string()
            };
            s.push_str(&format!("    {}\n", line(&o.columns)));
            for r in rows {
                s.push_str(&format!("    {}\n", line(r)));
            }
        };
        table("expected, not returned", &o.missing, &mut s);
        table("returned, not expected", &o.unexpected, &mut s);
    }
    let failed = outcomes.iter().filter(|o| !o.passed).count();
    s.push_str(&format!(
        "\n{}: {} passed, {failed} failed\n",
        crate::printer::plural(outcomes.len() as u64, "test", "tests"),
        outcomes.len() - failed
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_compare_as_numbers_instants_or_text() {
        assert!(same(Some("2"), Some("2.0")));
        assert!(same(Some("0.30000000000000004"), Some("0.3")));
        assert!(same(
            Some("2020-01-01T00:00:00"),
            Some("2020-01-01 00:00:00")
        ));
        assert!(same(Some("2020-01-01"), Some("2020-01-01 00:00:00")));
        assert!(!same(Some("a"), Some("b")));
        assert!(same(None, None) && !same(None, Some("NULL")));
        assert_eq!(literal(&Cell::Text("it's".into())), "'it''s'");
        assert_eq!(
            literal(&Cell::Text("a\\b".into())),
            "('' || 'a' || chr(92) || 'b')"
        );
    }
}
