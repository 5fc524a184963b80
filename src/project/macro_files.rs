//! A project's shared macros: `macros/*.sql` holds `@DEF(name, value);` statements (values or
//! lambdas, `@DEF(name, (a, b) -> …)`) that every model can use; `macros/*.py` holds SQLMesh's
//! Python macros, which tidemark cannot run — they are only listed, so that a model calling one
//! is told exactly that at load.
//!
//! `macros/*.sql` files holding Jinja (`{% macro … %}`, SQLMesh's Jinja macros) are skipped: they
//! serve Jinja models, which are refused at their own line.
//!
//! Invariants: files are read in sorted order; a name defined twice is an error naming both
//! places; anything in a macro file other than `@DEF` statements and comments is an error at its
//! line (never ignored).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Diagnostic, Location};
use crate::sql;

/// The shared SQL macros and the Python macros' names (→ file) under `root/macros`.
pub fn load_all(root: &Path) -> (sql::MacroDefs, BTreeMap<String, PathBuf>, Vec<Diagnostic>) {
    let mut errors = Vec::new();
    let mut defs = sql::MacroDefs::new();
    let mut first: BTreeMap<String, Location> = BTreeMap::new();
    for (rel, text) in super::read_files(root, "macros", &["sql"], &mut errors) {
        // SQLMesh's Jinja macro files (`{% macro … %}`) serve Jinja models, which tidemark
        // refuses where they are; the file itself is left alone.
        if text.contains("{%") {
            continue;
        }
        let loc = |at: usize| {
            let (l, c) = crate::error::line_col(&text, at);
            Location::at(&rel, l, c)
        };
        match sql::extract_defs(&text) {
            Ok((rest, found)) => {
                if let Some(at) = sql::first_code_offset(&rest) {
                    errors.push(
                        Diagnostic::error(format!(
                            "`{}` holds something other than `@DEF` statements",
                            rel.display()
                        ))
                        .at(loc(at))
                        .hint("a macro file holds only `@DEF(name, value);` or `@DEF(name, (a, b) -> …);` statements"),
                    );
                }
                for (name, value) in found {
                    let at = def_offset(&text, &name).map_or_else(|| Location::file(&rel), loc);
                    if let Some(before) = first.get(&name) {
                        errors.push(
                            Diagnostic::error(format!("macro `@{name}` is defined twice"))
                                .at(at)
                                .note(format!("first defined at {before}")),
                        );
                        continue;
                    }
                    first.insert(name.clone(), at);
                    defs.insert(name, value);
                }
            }
            Err((at, message)) => errors.push(Diagnostic::error(message).at(loc(at))),
        }
    }
    let mut python = BTreeMap::new();
    for (rel, text) in super::read_files(root, "macros", &["py"], &mut errors) {
        for name in python_macro_names(&text) {
            python.entry(name).or_insert_with(|| rel.clone());
        }
    }
    (defs, python, errors)
}

/// Where `@DEF(name` is written in `text` (case-insensitive), for locations.
fn def_offset(text: &str, name: &str) -> Option<usize> {
    let lower = text.to_lowercase();
    let mut from = 0;
    while let Some(i) = lower[from..].find("@def").map(|i| i + from) {
        let rest = lower[i + 4..].trim_start().strip_prefix('(')?.trim_start();
        if rest.starts_with(name)
            && !rest[name.len()..].starts_with(|c: char| c.is_alphanumeric() || c == '_')
        {
            return Some(i);
        }
        from = i + 4;
    }
    None
}

/// The functions decorated with SQLMesh's `@macro(...)` in a Python file, lower-cased.
fn python_macro_names(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut decorated = false;
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with("@macro") {
            decorated = true;
        } else if decorated && let Some(rest) = t.strip_prefix("def ") {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.push(name.to_lowercase());
            }
            decorated = false;
        } else if !t.starts_with('@') && !t.is_empty() && !t.starts_with('#') {
            decorated = false;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_macros_are_the_decorated_functions() {
        let text = "from sqlmesh import macro\n\n@macro()\ndef Add_One(evaluator, x):\n    return x + 1\n\ndef helper():\n    pass\n\n@macro(\"x\")\n@other\ndef two(evaluator):\n    return 2\n";
        assert_eq!(python_macro_names(text), ["add_one", "two"]);
    }

    #[test]
    fn shared_macros_load_and_problems_are_located() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("macros")).unwrap();
        std::fs::write(
            dir.path().join("macros/a.sql"),
            "-- money\n@DEF(cents, x -> x * 100);\n@DEF(vat, 0.2);\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("macros/b.sql"),
            "@DEF(vat, 0.25);\nSELECT 1;\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("macros/m.py"),
            "@macro()\ndef pivot(evaluator):\n  pass\n",
        )
        .unwrap();
        let (defs, python, errors) = load_all(dir.path());
        assert_eq!(defs.keys().collect::<Vec<_>>(), ["cents", "vat"]);
        assert_eq!(defs["vat"].to_string(), "0.2");
        assert_eq!(python["pivot"], Path::new("macros/m.py"));
        let shown: Vec<String> = errors.iter().map(|d| d.to_string()).collect();
        assert_eq!(errors.len(), 2, "{shown:?}");
        assert!(
            shown[0].contains("holds something other than `@DEF`")
                && shown[0].contains("macros/b.sql:2:1"),
            "{shown:?}"
        );
        assert!(
            shown[1].contains("`@vat` is defined twice") && shown[1].contains("macros/b.sql:1:1"),
            "{shown:?}"
        );
    }
}
