//! Bad input at the command line and in files the commands read: each case exits 2 with an
//! `error:` line (snapshotted) and writes nothing to the warehouse or the state.

use std::collections::BTreeMap;
use std::path::Path;

use crate::common::{ok, tidemark};
use crate::kinds::ledger;

/// Every file under the warehouse with its size and content hash.
pub fn tree(dir: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let bytes = std::fs::read(&p).unwrap_or_default();
                out.insert(
                    p.strip_prefix(root).unwrap().display().to_string(),
                    blake3::hash(&bytes).to_hex().to_string(),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// Run `args`; it must fail cleanly without touching the warehouse. Returns stderr with the
/// temp dir's path replaced by `[project]`.
fn refused(p: &Path, args: &[&str]) -> String {
    let before = tree(&p.join("warehouse"));
    let r = tidemark(p, args);
    assert_eq!(r.code, 2, "{args:?}: {}", r.transcript());
    assert!(r.stderr.starts_with("error: "), "{args:?}: {}", r.stderr);
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    assert_eq!(
        before,
        tree(&p.join("warehouse")),
        "{args:?} wrote to the warehouse"
    );
    r.stderr.replace(p.to_str().unwrap(), "[project]")
}

#[test]
fn bad_commands_and_files_are_refused_without_writing_anything() {
    let (_t, p) = ledger(0..7);
    ok(&p, &["--execution-time", "2024-03-08", "plan", "--apply"]);
    let at = ["--execution-time", "2024-03-08"];
    let with =
        |rest: &[&str]| -> Vec<String> { at.iter().chain(rest).map(|s| s.to_string()).collect() };
    let run = |args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        refused(&p, &args)
    };
    let mut out = String::new();
    let mut case = |name: &str, text: String| {
        out.push_str(&format!("## {name}\n{text}\n"));
    };

    case(
        "restate selector matching nothing",
        run(with(&[
            "plan",
            "--restate-model",
            "ledger.nothing_like_this",
            "--apply",
        ])),
    );
    case(
        "start after end",
        run(with(&[
            "plan",
            "dev",
            "--start",
            "2024-03-05",
            "--end",
            "2024-03-02",
            "--apply",
        ])),
    );
    case(
        "end in the future",
        run(with(&["plan", "dev", "--end", "2030-01-01", "--apply"])),
    );
    case(
        "hostile execution time",
        run(vec![
            "--execution-time".into(),
            "2024-03-08'; DROP TABLE x; --".into(),
            "run".into(),
        ]),
    );
    // Hostile values never reach SQL or paths: they are parsed or validated first.
    case(
        "hostile start date",
        run(with(&[
            "plan",
            "dev",
            "--start",
            "2024-03-01' OR '1'='1",
            "--apply",
        ])),
    );
    case(
        "hostile render window",
        run(with(&[
            "render",
            "ledger.daily_totals",
            "--start",
            "2024-03-01'; DROP TABLE x; --",
        ])),
    );
    case(
        "hostile environment name",
        run(with(&["plan", "dev'; DROP TABLE x; --", "--apply"])),
    );
    case(
        "environment name leaving the warehouse",
        run(with(&["plan", "../../outside", "--apply"])),
    );
    case(
        "apply id leaving the progress store",
        run(with(&["apply", "--resume", "../../../x"])),
    );
    case(
        "progress of an apply id leaving the progress store",
        run(with(&["progress", "../../../../etc"])),
    );
    case(
        "hostile model name to restate",
        run(with(&[
            "plan",
            "--restate-model",
            "ledger.daily_totals\"; DROP TABLE x; --",
            "--apply",
        ])),
    );
    case(
        "query that writes a file",
        run(with(&[
            "query",
            "COPY (SELECT 1 AS x) TO '/tmp/tidemark-escape.csv'",
        ])),
    );
    case(
        "query that creates a table",
        run(with(&["query", "CREATE TABLE escape AS SELECT 1 AS x"])),
    );
    assert!(!Path::new("/tmp/tidemark-escape.csv").exists());

    // Saved plans: truncated, from another project, stale.
    std::fs::write(
        p.join("models/ledger/extra.sql"),
        "MODEL (name ledger.extra, kind FULL);\nSELECT 1 AS x\n",
    )
    .unwrap();
    let saved = p.join("plan.json");
    ok(
        &p,
        &with(&["plan", "--out", saved.to_str().unwrap()])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    let text = std::fs::read_to_string(&saved).unwrap();
    let truncated = p.join("truncated.json");
    std::fs::write(&truncated, &text[..text.len() / 2]).unwrap();
    case(
        "truncated plan file",
        run(with(&["apply", truncated.to_str().unwrap()])),
    );
    // A genuine plan of another project (same models, another name).
    let other_dir = tempfile::tempdir().unwrap();
    let other = other_dir.path().join("other");
    crate::common::copy_dir(&p, &other);
    let toml = std::fs::read_to_string(other.join("tidemark.toml")).unwrap();
    std::fs::write(
        other.join("tidemark.toml"),
        toml.replace("name = \"ledger\"", "name = \"other\""),
    )
    .unwrap();
    let foreign = p.join("foreign.json");
    ok(
        &other,
        &with(&["plan", "--out", foreign.to_str().unwrap()])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    case(
        "plan from another project",
        run(with(&["apply", foreign.to_str().unwrap()])),
    );
    let altered = p.join("altered.json");
    std::fs::write(&altered, text.replace("ledger.extra", "ledger.extrb")).unwrap();
    case(
        "altered plan file",
        run(with(&["apply", altered.to_str().unwrap()])),
    );
    // Someone else moves prod first: the saved plan is stale.
    ok(
        &p,
        &with(&["plan", "--apply"])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    case(
        "stale plan file",
        run(with(&["apply", saved.to_str().unwrap()])),
    );

    // A source path that does not exist: refused before any table or record is written.
    let config = std::fs::read_to_string(p.join("tidemark.toml")).unwrap();
    std::fs::write(
        p.join("tidemark.toml"),
        config.replace("data/fx.csv", "data/missing.csv"),
    )
    .unwrap();
    std::fs::write(
        p.join("models/ledger/extra.sql"),
        "MODEL (name ledger.extra, kind FULL);\nSELECT 2 AS x\n",
    )
    .unwrap();
    case(
        "source path that does not exist",
        run(with(&["plan", "--apply"])),
    );
    std::fs::write(p.join("tidemark.toml"), &config).unwrap();

    // A state written by a newer tidemark.
    let commits = p.join("warehouse/_tidemark/state/log");
    let newest = std::fs::read_dir(&commits)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|f| f.extension().is_some_and(|e| e == "json"))
        .max()
        .unwrap();
    let stem: u64 = newest
        .file_stem()
        .unwrap()
        .to_string_lossy()
        .parse()
        .unwrap();
    let next = commits.join(format!(
        "{:0width$}.json",
        stem + 1,
        width = newest.file_stem().unwrap().len()
    ));
    let body = std::fs::read_to_string(&newest).unwrap();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let format = v["format"].as_str().unwrap().to_string();
    let newer = body.replace(&format, "tidemark.state/v99");
    std::fs::write(&next, newer).unwrap();
    case("state written by a newer tidemark", run(with(&["plan"])));
    // The state is read while the project loads; a broken model is still what is reported.
    let broken = p.join("models/ledger/broken.sql");
    std::fs::write(
        &broken,
        "MODEL (name ledger.broken, kind FULL);\nSELECT x FROM ledger.missing\n",
    )
    .unwrap();
    case(
        "broken model and a state written by a newer tidemark",
        run(with(&["plan"])),
    );
    std::fs::remove_file(&broken).unwrap();
    std::fs::remove_file(&next).unwrap();

    insta::assert_snapshot!("bad_input_cli", out);
}

/// Every file under `root` except those under `except`.
fn outside(root: &Path, except: &Path) -> BTreeMap<String, String> {
    tree(root)
        .into_iter()
        .filter(|(k, _)| !root.join(k).starts_with(except))
        .collect()
}

#[test]
fn nothing_tidemark_writes_lands_outside_the_warehouse_root() {
    let (t, p) = ledger(0..7);
    // The warehouse lives beside the project, not in it: the root is what the config says.
    let toml = p.join("tidemark.toml");
    let config = std::fs::read_to_string(&toml).unwrap();
    std::fs::write(
        &toml,
        config.replace("warehouse = \"warehouse\"", "warehouse = \"../wh\""),
    )
    .unwrap();
    let wh = t.path().join("wh");
    let before = outside(t.path(), &wh);
    let at = |time: &'static str, rest: &[&'static str]| -> Vec<&'static str> {
        ["--execution-time", time]
            .iter()
            .chain(rest)
            .copied()
            .collect()
    };
    ok(&p, &at("2024-03-08", &["plan", "--apply"]));
    crate::kinds::append_payments(
        &p.join("data/payments"),
        &(7..9)
            .flat_map(crate::kinds::payments_of_day)
            .collect::<Vec<_>>(),
    );
    let before = {
        // The test itself just appended to the source; only what tidemark writes counts.
        let mut b = before;
        b.extend(
            tree(&p.join("data"))
                .into_iter()
                .map(|(k, v)| (format!("project/data/{k}"), v)),
        );
        b
    };
    ok(&p, &at("2024-03-10", &["run"]));
    ok(&p, &at("2024-03-10", &["plan", "dev", "--apply"]));
    ok(
        &p,
        &at(
            "2024-03-10",
            &[
                "plan",
                "dev",
                "--restate-model",
                "ledger.daily_totals",
                "--apply",
            ],
        ),
    );
    ok(&p, &at("2024-03-10", &["promote", "dev"]));
    ok(&p, &["rollback", "--to", "1"]);
    let r = tidemark(
        &p,
        &[
            "reconcile",
            "ledger.daily_totals",
            "--env",
            "prod",
            "--against",
            "dev",
        ],
    );
    assert_eq!(
        r.code,
        1,
        "rolled-back prod differs from dev: {}",
        r.transcript()
    );
    ok(&p, &["query", "SELECT COUNT(*) FROM ledger.daily_totals"]);
    ok(&p, &["progress"]);
    ok(&p, &["log"]);
    ok(&p, &["--execution-time", "2099-01-01", "janitor"]);
    assert!(
        wh.join("_tidemark").is_dir(),
        "the state lives in the warehouse"
    );
    // The one file written outside it: the analysis cache, at its fixed path in the project.
    let mut after = outside(t.path(), &wh);
    assert!(
        after
            .remove("project/.tidemark/cache/analysis.pack")
            .is_some(),
        "the analysis cache is written at its fixed path"
    );
    assert_eq!(before, after, "a file outside the warehouse changed");

    // A plan file crafted to point a table outside the warehouse (with a matching plan id):
    // refused before anything is written.
    let saved = p.join("plan.json");
    std::fs::write(
        p.join("models/ledger/extra.sql"),
        "MODEL (name ledger.extra, kind FULL);\nSELECT 1 AS x\n",
    )
    .unwrap();
    ok(
        &p,
        &[
            "--execution-time",
            "2024-03-10",
            "plan",
            "dev",
            "--out",
            saved.to_str().unwrap(),
        ],
    );
    // Table ids are validated when a plan is read, so the crafted id is written into the JSON
    // itself (a `Plan` value cannot hold it).
    let mut plan: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&saved).unwrap()).unwrap();
    for target in plan["target"].as_object_mut().unwrap().values_mut() {
        if !target["table"].is_null() {
            target["table"] = "../../escaped".into();
        }
    }
    std::fs::write(&saved, serde_json::to_vec_pretty(&plan).unwrap()).unwrap();
    let before = outside(t.path(), &wh);
    let warehouse = tree(&wh);
    let r = tidemark(&p, &["apply", saved.to_str().unwrap()]);
    assert_eq!(r.code, 2, "{}", r.transcript());
    assert!(
        r.stderr.contains("is not a tidemark table id"),
        "{}",
        r.stderr
    );
    assert_eq!(before, outside(t.path(), &wh));
    assert_eq!(
        warehouse,
        tree(&wh),
        "the refused apply wrote to the warehouse"
    );
    assert!(!t.path().join("escaped").exists());
}

/// Is this process root (so that `setpriv` can drop to `nobody`)?
fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

#[test]
fn a_warehouse_without_write_permission_is_refused_without_a_trace() {
    // Root ignores permissions, so the commands run as `nobody` through `setpriv`; where that
    // is impossible (not root, no setpriv) the test says so and checks nothing.
    let setpriv = Path::new("/usr/bin/setpriv");
    if !is_root() || !setpriv.exists() {
        eprintln!("skipped: needs root and /usr/bin/setpriv to run a command as `nobody`");
        return;
    }
    let (t, p) = ledger(0..7);
    ok(&p, &["--execution-time", "2024-03-08", "plan", "--apply"]);
    // Something for janitor to delete once `dev` expires.
    ok(
        &p,
        &["--execution-time", "2024-03-08", "plan", "dev", "--apply"],
    );
    crate::kinds::append_payments(
        &p.join("data/payments"),
        &(7..10)
            .flat_map(crate::kinds::payments_of_day)
            .collect::<Vec<_>>(),
    );
    // A copy of the binary and the project that `nobody` can read but not write.
    let bin = t.path().join("tidemark");
    std::fs::copy(crate::common::bin(), &bin).unwrap();
    let chmod = std::process::Command::new("chmod")
        .args(["-R", "a+rX,go-w"])
        .arg(t.path())
        .status()
        .unwrap();
    assert!(chmod.success());
    let as_nobody = |args: &[&str]| {
        let o = std::process::Command::new(setpriv)
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(&bin)
            .arg("--project")
            .arg(&p)
            .args(args)
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let before = tree(&p.join("warehouse"));
    for args in [
        &["--execution-time", "2024-03-11", "run"][..],
        &["--execution-time", "2024-03-11", "plan", "dev2", "--apply"][..],
        &["--execution-time", "2099-01-01", "janitor"][..],
    ] {
        let (code, _, err) = as_nobody(args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(
            err.contains("error: cannot ")
                && err.contains("permission denied")
                && err.contains("hint: whoever runs tidemark needs write access"),
            "{args:?}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
        assert_eq!(before, tree(&p.join("warehouse")), "{args:?} wrote");
    }
    // Reading needs no write access.
    let (code, out, err) = as_nobody(&["query", "SELECT COUNT(*) AS n FROM ledger.daily_totals"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains('7'), "{out}");
}

/// `[engine] kind = "spark"`: model SQL is read as Spark SQL and planning works; with the
/// server unreachable, the apply fails before any batch (exit 2, a hint), nothing is written,
/// and the remote's token is never shown.
#[test]
fn a_spark_engine_out_of_reach_fails_before_any_write_and_its_token_never_shown() {
    let (_t, p) = crate::common::copy_project(&crate::common::sushi());
    let config = std::fs::read_to_string(p.join("tidemark.toml")).unwrap();
    std::fs::write(
        p.join("tidemark.toml"),
        config
            + "\n[engine]\nkind = \"spark\"\nremote = \"sc://127.0.0.1:1/;token=hush-spark-77\"\n",
    )
    .unwrap();
    // Model SQL is Spark SQL now: the example's DataFusion-only generator does not parse...
    let plan = tidemark(&p, &["--execution-time", "2024-01-31", "plan"]);
    assert_eq!(plan.code, 2, "{}", plan.transcript());
    assert!(
        plan.stderr.contains("SQL syntax error") && plan.stderr.contains("pos_transactions.sql:26"),
        "{}",
        plan.stderr
    );
    // ... and its Spark SQL rewrite does.
    let generator = p.join("models/raw/pos_transactions.sql");
    let text = std::fs::read_to_string(&generator).unwrap();
    let spark = text
        .replace(
            "FROM unnest(generate_series(@start_dt, @end_dt, INTERVAL '1 day')) AS g(day)",
            "FROM (SELECT explode(sequence(@start_dt, @end_dt, INTERVAL 1 DAY)) AS day) AS g",
        )
        .replace("to_unixtime(g.day)", "unix_timestamp(g.day)")
        .replace(
            "CROSS JOIN unnest(generate_series(1, 200)) AS s(n)",
            "CROSS JOIN (SELECT explode(sequence(1, 200)) AS n) AS s",
        );
    assert_ne!(spark, text);
    std::fs::write(&generator, spark).unwrap();
    let plan = tidemark(&p, &["--execution-time", "2024-01-31", "plan"]);
    assert_eq!(plan.code, 0, "{}", plan.transcript());
    let r = tidemark(&p, &["--execution-time", "2024-01-31", "plan", "--apply"]);
    assert_eq!(r.code, 2, "{}", r.transcript());
    assert!(
        r.stderr
            .contains("cannot reach the Spark Connect server `sc://127.0.0.1:1/;token=…`")
            && r.stderr.contains("hint: check that the server runs"),
        "{}",
        r.stderr
    );
    assert!(!p.join("warehouse").exists(), "nothing was written");
    for t in [plan.transcript(), r.transcript()] {
        assert!(!t.contains("hush-spark-77"), "{t}");
    }
}
