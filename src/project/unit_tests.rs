//! SQLMesh unit tests: `tests/*.yaml` files, each a map of test name → a model, rows for the
//! tables it reads, the rows its query must return, and optionally `vars` and the times that
//! render it.
//!
//! Invariants:
//! - Every test is checked when it loads: its model exists and has a query, every input is a
//!   table the model reads (a model or a source), every table the model reads has rows (an
//!   empty list is fine), and rows are maps of column → scalar. A problem is an error at the
//!   test file with the test's name.
//! - Tests are returned sorted by file, then by name; rows keep their order.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use crate::error::{Diagnostic, Location};
use crate::names::ModelName;
use crate::sql::Variable;

/// One value of a row.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// `null` (or a missing column of a partial row).
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A number.
    Float(f64),
    /// A string (dates and timestamps are written as strings).
    Text(String),
}

/// A row: column (lower-cased) → value, in the order written.
pub type Row = Vec<(String, Cell)>;

/// One unit test.
#[derive(Debug, Clone)]
pub struct UnitTest {
    /// The test's name (its key in the file).
    pub name: String,
    /// The file, relative to the project root.
    pub file: PathBuf,
    /// The model tested.
    pub model: ModelName,
    /// Rows of each table the model reads.
    pub inputs: BTreeMap<ModelName, Vec<Row>>,
    /// The rows the query must return (in any order).
    pub expected: Vec<Row>,
    /// Compare only the columns the expected rows name.
    pub partial: bool,
    /// Variables for this test (over the project's).
    pub vars: BTreeMap<String, Variable>,
    /// Window start (`start`; default: the model's start).
    pub start: Option<DateTime<Utc>>,
    /// Window end, exclusive (`end`; default: the execution time).
    pub end: Option<DateTime<Utc>>,
    /// `execution_time` (default: the command's).
    pub execution_time: Option<DateTime<Utc>>,
}

/// Every test under `root/tests` (`*.yaml`, `*.yml`), and the problems found.
pub fn load_all(root: &Path) -> (Vec<UnitTest>, Vec<Diagnostic>) {
    let mut tests = Vec::new();
    let mut errors = Vec::new();
    for (rel, text) in super::read_files(root, "tests", &["yaml", "yml"], &mut errors) {
        match parse_file(&rel, &text) {
            Ok(t) => tests.extend(t),
            Err(d) => errors.extend(d),
        }
    }
    (tests, errors)
}

/// The tests of one file.
pub fn parse_file(file: &Path, text: &str) -> Result<Vec<UnitTest>, Vec<Diagnostic>> {
    use serde_norway::Value;
    let at = |name: &str, message: String| {
        Diagnostic::error(format!("unit test `{name}`: {message}"))
            .at(Location::file(file))
            .hint("see docs/sqlmesh.md for the unit-test format (model, inputs, outputs)")
    };
    let doc: Value = serde_norway::from_str(text).map_err(|e| {
        let loc = e.location().map_or_else(
            || Location::file(file),
            |l| Location::at(file, l.line() as u64, l.column() as u64),
        );
        vec![
            Diagnostic::error("the unit-test file is not valid YAML")
                .at(loc)
                .caused_by(e),
        ]
    })?;
    let Value::Mapping(tests) = doc else {
        return Err(vec![
            Diagnostic::error("a unit-test file is a map of test names to tests")
                .at(Location::file(file)),
        ]);
    };
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for (k, v) in tests {
        let name = match k {
            Value::String(s) => s,
            other => format!("{other:?}"),
        };
        match one(file, &name, &v) {
            Ok(t) => out.push(t),
            Err(m) => errors.push(at(&name, m)),
        }
    }
    if errors.is_empty() {
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    } else {
        Err(errors)
    }
}

fn one(file: &Path, name: &str, v: &serde_norway::Value) -> Result<UnitTest, String> {
    use serde_norway::Value;
    let get = |k: &str| v.get(k);
    let model = get("model")
        .and_then(Value::as_str)
        .ok_or("`model` (the model tested) is missing")?;
    let model = ModelName::parse(model).map_err(|r| format!("`model`: {r}"))?;
    let mut inputs = BTreeMap::new();
    if let Some(i) = get("inputs") {
        let Value::Mapping(m) = i else {
            return Err("`inputs` is a map of table names to rows".into());
        };
        for (t, rows) in m {
            let t = t.as_str().ok_or("an input's key is a table name")?;
            let table = ModelName::parse(t).map_err(|r| format!("input `{t}`: {r}"))?;
            if rows.get("query").is_some()
                || rows
                    .get("format")
                    .is_some_and(|f| f.as_str() != Some("yaml"))
            {
                return Err(format!(
                    "input `{t}`: only rows written in the file are supported (not `query` or CSV)"
                ));
            }
            let rows = rows.get("rows").unwrap_or(rows);
            inputs.insert(
                table,
                rows_of(rows).map_err(|m| format!("input `{t}`: {m}"))?,
            );
        }
    }
    let outputs = get("outputs").ok_or("`outputs` is missing")?;
    if outputs.get("ctes").is_some() {
        return Err("`outputs: ctes` is not supported; test the query's output".into());
    }
    let query = outputs.get("query").ok_or("`outputs: query` is missing")?;
    let partial = query
        .get("partial")
        .or_else(|| outputs.get("partial"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let expected = rows_of(query.get("rows").unwrap_or(query))
        .map_err(|m| format!("`outputs: query`: {m}"))?;
    let mut vars = BTreeMap::new();
    // SQLMesh writes the window and execution time among the `vars`.
    let mut times: BTreeMap<String, Value> = BTreeMap::new();
    if let Some(Value::Mapping(m)) = get("vars") {
        for (k, v) in m {
            let k = k
                .as_str()
                .ok_or("a variable's name is a string")?
                .to_lowercase();
            if ["start", "end", "execution_time"].contains(&k.as_str()) {
                times.insert(k, v.clone());
                continue;
            }
            let value = match v {
                Value::Bool(b) => Variable::Boolean(*b),
                Value::Number(n) if n.is_i64() => Variable::Integer(n.as_i64().unwrap_or_default()),
                Value::Number(n) => Variable::Float(n.to_string()),
                Value::String(s) => Variable::Text(s.clone()),
                _ => return Err(format!("variable `{k}`: a string, number or boolean")),
            };
            vars.insert(k, value);
        }
    }
    let time = |k: &str| -> Result<Option<DateTime<Utc>>, String> {
        let in_vars = times.get(k);
        match get(k).or(in_vars) {
            None => Ok(None),
            Some(v) => {
                let text = match v {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    _ => return Err(format!("`{k}`: a date or timestamp")),
                };
                let instant =
                    crate::interval::parse_instant(&text).map_err(|r| format!("`{k}`: {r}"))?;
                // SQLMesh's `vars: {end: 2024-01-05}` is inclusive: through that day.
                let whole_day = get(k).is_none() && k == "end" && text.trim().len() == 10;
                Ok(Some(if whole_day {
                    instant.at + chrono::Duration::days(1)
                } else {
                    instant.at
                }))
            }
        }
    };
    Ok(UnitTest {
        name: name.to_string(),
        file: file.to_path_buf(),
        model,
        inputs,
        expected,
        partial,
        vars,
        start: time("start")?,
        end: time("end")?,
        execution_time: time("execution_time")?,
    })
}

fn rows_of(v: &serde_norway::Value) -> Result<Vec<Row>, String> {
    use serde_norway::Value;
    let Value::Sequence(rows) = v else {
        return Err("`rows` is a list of rows (maps of column to value)".into());
    };
    rows.iter()
        .map(|r| {
            let Value::Mapping(m) = r else {
                return Err("a row is a map of column to value".to_string());
            };
            m.iter()
                .map(|(k, v)| {
                    let k = match k {
                        Value::String(s) => s.to_lowercase(),
                        other => return Err(format!("a column name is a string, found {other:?}")),
                    };
                    let cell = match v {
                        Value::Null => Cell::Null,
                        Value::Bool(b) => Cell::Bool(*b),
                        Value::Number(n) => match n.as_i64() {
                            Some(i) => Cell::Int(i),
                            None => Cell::Float(n.as_f64().unwrap_or(f64::NAN)),
                        },
                        Value::String(s) => Cell::Text(s.clone()),
                        _ => return Err(format!("column `{k}`: nested values are not supported")),
                    };
                    Ok((k, cell))
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlmesh_test_files_parse() {
        let t = parse_file(
            Path::new("tests/t.yaml"),
            "test_full:\n  model: s.full\n  inputs:\n    s.inc:\n      rows:\n      - id: 1\n        item_id: 1\n      - {id: 2, item_id: null}\n    s.other: []\n  outputs:\n    query:\n      partial: true\n      rows:\n      - item_id: 1\n        n: 2.5\n  vars:\n    x: 3\n  execution_time: '2024-01-02'\n",
        )
        .unwrap();
        assert_eq!(t.len(), 1);
        let t = &t[0];
        assert_eq!(t.model.as_str(), "s.full");
        assert_eq!(t.inputs.len(), 2);
        assert_eq!(
            t.inputs[&ModelName::parse("s.inc").unwrap()][1][1],
            ("item_id".into(), Cell::Null)
        );
        assert!(t.partial);
        assert_eq!(t.expected[0][1], ("n".into(), Cell::Float(2.5)));
        assert_eq!(t.vars["x"], Variable::Integer(3));
        assert!(t.execution_time.is_some());
        let e = parse_file(Path::new("tests/t.yaml"), "bad:\n  inputs: {}\n").unwrap_err();
        assert!(e[0].message.contains("`model`"), "{}", e[0].message);
        assert!(parse_file(Path::new("tests/t.yaml"), "a: [").is_err());
    }
}
