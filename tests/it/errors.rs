//! Every bad-input fixture under fixtures/errors: exit code 2 (0 for warning-only cases) and a
//! snapshot of the exact messages.

use crate::common::{fixture, tidemark};

#[test]
fn every_error_fixture_matches_its_snapshot() {
    let dir = fixture("errors");
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 40,
        "expected the full set of error fixtures, found {}",
        cases.len()
    );
    for case in cases {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let run = tidemark(&case, &["info"]);
        let expected = if name.starts_with("warning_") { 0 } else { 2 };
        assert_eq!(run.code, expected, "{name}:\n{}", run.transcript());
        assert!(
            !run.stderr.contains("panicked"),
            "{name} panicked:\n{}",
            run.stderr
        );
        if expected == 2 {
            assert!(run.stderr.starts_with("error: "), "{name}:\n{}", run.stderr);
            assert!(
                run.stdout.is_empty(),
                "{name} wrote data despite the error:\n{}",
                run.stdout
            );
        } else {
            assert!(
                run.stderr.starts_with("warning: "),
                "{name}:\n{}",
                run.stderr
            );
        }
        // Only stderr: warning cases also print the info table, covered elsewhere.
        insta::assert_snapshot!(
            format!("error_{name}"),
            format!("exit: {}\n{}", run.code, run.stderr)
        );
    }
}

#[test]
fn no_project_found() {
    let tmp = tempfile::tempdir().unwrap();
    let run = crate::common::tidemark_in(tmp.path(), &["info"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.starts_with("error: no tidemark.toml found in"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("hint: run tidemark inside a project"),
        "{}",
        run.stderr
    );
}

#[test]
fn bad_execution_time_and_usage_errors_exit_2() {
    let p = fixture("projects/all_kinds");
    let run = tidemark(&p, &["--execution-time", "soon", "info"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr
            .starts_with("error: invalid `--execution-time`: `soon` is not a date"),
        "{}",
        run.stderr
    );
    let run = tidemark(&p, &["info", "--format", "yaml"]);
    assert_eq!(run.code, 2, "{}", run.transcript());
    let run = tidemark(&p, &["frobnicate"]);
    assert_eq!(run.code, 2, "{}", run.transcript());
}
