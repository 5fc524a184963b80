//! OpenLineage events of real applies (issue 18): a receiver on 127.0.0.1 collects what
//! `[lineage] url` sends while `--lineage FILE` gets the same events; an apply with a failing
//! batch, then its resume.

use std::io::{BufRead, BufReader, Read, Write};
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::common::{ok, tidemark};

/// A minimal OpenLineage HTTP endpoint: every POSTed body, in arrival order.
fn receiver() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let got = bodies.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0u8; length];
            if reader.read_exact(&mut body).is_ok() {
                got.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&body).into_owned());
            }
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        }
    });
    (port, bodies)
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.chars().enumerate().all(|(i, c)| {
            if [8, 13, 18, 23].contains(&i) {
                c == '-'
            } else {
                c.is_ascii_hexdigit()
            }
        })
}

/// Every event carries what the OpenLineage RunEvent schema requires.
fn check_event(e: &Value) {
    for k in ["eventType", "eventTime", "producer", "schemaURL"] {
        assert!(e[k].is_string(), "{k}: {e}");
    }
    assert!(is_uuid(e["run"]["runId"].as_str().unwrap()), "{e}");
    assert!(
        e["job"]["namespace"].is_string() && e["job"]["name"].is_string(),
        "{e}"
    );
    assert!(
        chrono::DateTime::parse_from_rfc3339(e["eventTime"].as_str().unwrap()).is_ok(),
        "{e}"
    );
    for d in e["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .chain(e["outputs"].as_array().unwrap())
    {
        assert!(d["namespace"].is_string() && d["name"].is_string(), "{d}");
    }
}

#[test]
fn applies_emit_openlineage_runs_with_exact_versions_for_failed_and_resumed_batches() {
    let (port, bodies) = receiver();
    let (_t, p) = crate::kinds::ledger(0..5);
    // A FULL model over the fx rates whose audit fails while a rate is missing.
    std::fs::write(
        p.join("models/ledger/fx_check.sql"),
        "MODEL (name ledger.fx_check, kind FULL, audits (not_null(columns := (rate))));\nSELECT currency, rate FROM raw.fx\n",
    )
    .unwrap();
    let fx = p.join("data/fx.csv");
    let good = std::fs::read_to_string(&fx).unwrap();
    std::fs::write(&fx, format!("{good}GBP,\n")).unwrap();
    let f = p.join("tidemark.toml");
    let config = std::fs::read_to_string(&f).unwrap();
    std::fs::write(
        &f,
        format!("{config}\n[lineage]\nurl = \"http://127.0.0.1:{port}/api/v1/lineage\"\nnamespace = \"ledger-test\"\n"),
    )
    .unwrap();
    let file = p.join("lineage.jsonl");
    let file_arg = file.to_str().unwrap();
    let failed = tidemark(
        &p,
        &[
            "--execution-time",
            "2024-03-06",
            "plan",
            "--apply",
            "--lineage",
            file_arg,
        ],
    );
    assert_eq!(failed.code, 2, "{}", failed.transcript());
    let id = crate::backfill::apply_id_of(&failed.stderr);
    std::fs::write(&fx, &good).unwrap();
    ok(
        &p,
        &[
            "--execution-time",
            "2024-03-06",
            "apply",
            "--resume",
            &id,
            "--lineage",
            file_arg,
        ],
    );
    let from_file: Vec<Value> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let sent: Vec<Value> = bodies
        .lock()
        .unwrap()
        .iter()
        .map(|b| serde_json::from_str(b).unwrap())
        .collect();
    assert_eq!(sent.len(), from_file.len(), "the endpoint got every event");
    for e in &from_file {
        check_event(e);
    }
    validate_with_openlineage_models(&file, from_file.len());
    // The apply's run: START, FAIL, then on resume START, COMPLETE — one run id.
    let apply: Vec<&Value> = from_file
        .iter()
        .filter(|e| e["job"]["name"] == "ledger.apply.prod")
        .collect();
    let types: Vec<&str> = apply
        .iter()
        .map(|e| e["eventType"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["START", "FAIL", "START", "COMPLETE"], "{apply:?}");
    let run_id = apply[0]["run"]["runId"].as_str().unwrap();
    assert!(apply.iter().all(|e| e["run"]["runId"] == run_id));
    assert_eq!(apply[0]["job"]["namespace"], "ledger-test");
    assert!(apply[1]["run"]["facets"]["errorMessage"]["message"].is_string());
    // The failed batch, then the same batch completed on resume.
    let fx_check: Vec<&Value> = from_file
        .iter()
        .filter(|e| e["job"]["name"] == "ledger.fx_check")
        .collect();
    let types: Vec<&str> = fx_check
        .iter()
        .map(|e| e["eventType"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        ["START", "FAIL", "START", "COMPLETE"],
        "{fx_check:?}"
    );
    assert!(
        fx_check[1]["run"]["facets"]["errorMessage"]["message"]
            .as_str()
            .unwrap()
            .contains("not_null"),
        "{}",
        fx_check[1]
    );
    // A batch's child run: its parent, the source version read, the table version written.
    let daily = from_file
        .iter()
        .find(|e| e["job"]["name"] == "ledger.daily_totals" && e["eventType"] == "COMPLETE")
        .unwrap();
    assert_eq!(daily["run"]["facets"]["parent"]["run"]["runId"], run_id);
    let payments = daily["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"].as_str().unwrap().ends_with("data/payments"))
        .unwrap_or_else(|| panic!("{daily}"));
    assert_eq!(payments["namespace"], "file");
    assert_eq!(
        payments["facets"]["version"]["datasetVersion"], "0",
        "{daily}"
    );
    let out = &daily["outputs"][0];
    assert!(
        out["name"]
            .as_str()
            .unwrap()
            .contains("ledger/daily_totals__"),
        "{out}"
    );
    assert!(
        out["facets"]["version"]["datasetVersion"].is_string(),
        "{out}"
    );
    let facet = &daily["run"]["facets"]["tidemark_batch"];
    assert!(facet["rows"].as_u64().unwrap() > 0, "{facet}");
    assert!(
        facet["checksum"].as_str().unwrap().starts_with("x64:"),
        "{facet}"
    );
    assert!(
        daily["job"]["facets"]["tidemark_model"]["fingerprint"].is_string(),
        "{daily}"
    );
}

/// The `openlineage-python` package `.ci/run` installs (into the moto venv).
const PY_OPENLINEAGE: &str = "1.54.0";

/// Rebuild every event of `file` with the models of `openlineage-python` (generated from the
/// OpenLineage JSON schema), strictly: `openlineage_check.py`.
fn validate_with_openlineage_models(file: &std::path::Path, events: usize) {
    let python = crate::servers::find("TIDEMARK_PYTHON", "venv-moto/bin/python", "python3");
    let version = python.as_ref().and_then(|python| {
        std::process::Command::new(python)
            .args([
                "-c",
                "from importlib.metadata import version; print(version('openlineage-python'))",
            ])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    });
    let (Some(python), Some(PY_OPENLINEAGE)) = (python, version.as_deref()) else {
        crate::servers::missing(
            &format!("Python `openlineage-python` {PY_OPENLINEAGE}"),
            &format!(
                "pip install openlineage-python=={PY_OPENLINEAGE} into the venv of TIDEMARK_PYTHON"
            ),
        );
        return;
    };
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/openlineage_check.py");
    let out = std::process::Command::new(&python)
        .arg(&script)
        .arg(file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        events.to_string()
    );
}
