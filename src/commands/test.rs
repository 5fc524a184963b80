//! `tidemark test [SELECT]`: run the project's unit tests (`tests/*.yaml`, SQLMesh's format) on
//! the engine, in memory, and show a diff of expected and returned rows for each failure.

use serde::Serialize;

use super::{emit, emit_json, load};
use crate::backfill::unit_tests::{self, Outcome};
use crate::cli::EnvFormat;
use crate::error::{Diagnostic, Error, ExitStatus, Result};
use crate::project::unit_tests::load_all;
use crate::settings::Settings;

/// `tidemark.test/v1`.
#[derive(Debug, Serialize)]
struct TestJson<'a> {
    format: &'static str,
    tests: &'a [Outcome],
    passed: usize,
    failed: usize,
}

/// Run `test`.
pub fn run(
    ctx: &Settings,
    select: Option<&str>,
    format: EnvFormat,
    out: &mut dyn std::io::Write,
) -> Result<ExitStatus> {
    let loaded = load(ctx)?;
    let project = &loaded.project;
    let (tests, problems) = load_all(&project.config.root);
    if !problems.is_empty() {
        return Err(Error::User(problems));
    }
    let selected: Vec<_> = tests
        .iter()
        .filter(|t| select.is_none_or(|s| t.name == s || t.model.as_str() == s.to_lowercase()))
        .collect();
    if selected.is_empty() {
        return Err(Diagnostic::error(match select {
            Some(s) => format!("no unit test of or named `{s}`"),
            None => "the project has no unit tests".to_string(),
        })
        .hint("unit tests are YAML files in `tests/` (SQLMesh's format: model, inputs, outputs)")
        .into());
    }
    let outcomes = unit_tests::run_all(project, &selected, ctx.execution_time)?;
    let failed = outcomes.iter().filter(|o| !o.passed).count();
    match format {
        EnvFormat::Json => emit_json(
            out,
            &TestJson {
                format: "tidemark.test/v1",
                tests: &outcomes,
                passed: outcomes.len() - failed,
                failed,
            },
        )?,
        _ => emit(out, &unit_tests::text(&outcomes))?,
    }
    Ok(ExitStatus::found(failed > 0))
}
