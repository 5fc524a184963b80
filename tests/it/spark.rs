//! The Spark Connect engine's first steps through the CLI, against Sail (PyPI `pysail`) in
//! local-cluster mode (a driver and 2 workers talking over RPC), run by [`crate::servers`].
//! `.ci/run` installs it into the build cache, so CI always runs these tests; elsewhere they
//! are skipped, saying how to install it. `TIDEMARK_SAIL` names the executable explicitly.

use std::sync::OnceLock;

use std::path::Path;

use crate::common::{copy_dir, copy_project, repo, sushi, tidemark};
use crate::servers;

/// `sc://127.0.0.1:PORT` of this test binary's Sail, started on first use. When moto runs (it
/// does in CI), the server gets its endpoint and credentials, as a Spark cluster gets its
/// object store's, so it reads and writes warehouses on it.
fn sail() -> Option<&'static str> {
    static SAIL: OnceLock<Option<String>> = OnceLock::new();
    SAIL.get_or_init(|| {
        let port = match servers::find("TIDEMARK_SAIL", "venv-sail/bin/sail", "sail") {
            Some(bin) => {
                let bin = bin.to_string_lossy().into_owned();
                let mut args: Vec<String> = vec![
                    "SAIL_MODE=local-cluster".into(),
                    "SAIL_CLUSTER__WORKER_INITIAL_COUNT=2".into(),
                ];
                if let Some(m) = crate::s3::moto() {
                    for (k, v) in m.options(crate::s3::SECRET) {
                        let var = match k {
                            "endpoint" => "AWS_ENDPOINT",
                            "allow_http" => "AWS_ALLOW_HTTP",
                            "region" => "AWS_REGION",
                            "access_key_id" => "AWS_ACCESS_KEY_ID",
                            "secret_access_key" => "AWS_SECRET_ACCESS_KEY",
                            _ => continue,
                        };
                        args.push(format!("{var}={v}"));
                    }
                }
                args.extend(
                    [&bin, "spark", "server", "--ip", "127.0.0.1", "--port", "{port}"]
                        .map(str::to_string),
                );
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                servers::start(Path::new("/usr/bin/env"), &args)
            }
            None => servers::missing(
                "Sail",
                "python3 -m venv ~/.cache/tidemark/venv-sail && ~/.cache/tidemark/venv-sail/bin/pip install pysail==0.7.2",
            )?,
        };
        Some(format!("sc://127.0.0.1:{port}"))
    })
    .as_deref()
}

/// With `[engine] kind = "spark"`, `query` runs on the server even before the first apply (the
/// server's version comes back); SQL the server rejects is an error with its message under
/// `Caused by:`; an unreachable server is an error with a hint that never shows the token.
#[test]
fn query_runs_on_spark_connect_and_a_token_is_never_shown() {
    let Some(remote) = sail() else { return };
    let (_t, p) = copy_project(&sushi());
    let config = std::fs::read_to_string(p.join("tidemark.toml")).unwrap();
    let with = |remote: &str| {
        std::fs::write(
            p.join("tidemark.toml"),
            format!("{config}\n[engine]\nkind = \"spark\"\nremote = \"{remote}\"\n"),
        )
        .unwrap();
    };
    with(remote);
    let r = tidemark(
        &p,
        &[
            "query",
            "--format",
            "csv",
            "SELECT version() AS v, 1 + 1 AS two",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.transcript());
    assert_eq!(r.stdout, "v,two\n0.7.2,2\n");
    let r = tidemark(&p, &["query", "SELECT nope FROM nowhere"]);
    assert_eq!(r.code, 2, "{}", r.transcript());
    assert!(
        r.stderr.contains("Caused by:")
            && r.stderr.contains("nowhere")
            && r.stderr.contains("hint:"),
        "{}",
        r.stderr
    );
    with("sc://127.0.0.1:1/;user_id=etl;token=hush-spark-5");
    let r = tidemark(&p, &["query", "SELECT 1"]);
    assert_eq!(r.code, 2, "{}", r.transcript());
    assert!(r.stderr.contains("hint:"), "{}", r.stderr);
    assert!(
        !r.transcript().contains("hush-spark-5"),
        "{}",
        r.transcript()
    );
}

/// The Spark version of the example (`examples/sushi-spark`) in a temporary directory, on the
/// test's Sail.
pub fn spark_example(remote: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let (t, p) = copy_project(&repo().join("examples/sushi-spark"));
    point_at(&p, remote);
    (t, p)
}

/// Name `remote` under `[engine]` in the project at `p`.
fn point_at(p: &Path, remote: &str) {
    let f = p.join("tidemark.toml");
    let config = std::fs::read_to_string(&f).unwrap();
    assert!(config.contains("kind = \"spark\"\n"), "{config}");
    std::fs::write(
        &f,
        config.replacen(
            "kind = \"spark\"\n",
            &format!("kind = \"spark\"\nremote = \"{remote}\"\n"),
            1,
        ),
    )
    .unwrap();
}

/// A team moves its project to Spark: prod was built by the DataFusion engine from the
/// DataFusion SQL of the example; the same project in Spark SQL, on Sail, is planned into
/// `dev` (every model is a new version: the dialect is part of its fingerprint) and built
/// there. Every model's table reconciles with prod's partition by partition (row counts and
/// checksums equal) and with what its batches recorded; every query answers the same.
#[test]
fn tables_built_on_spark_reconcile_with_the_same_tables_built_locally() {
    let Some(remote) = sail() else { return };
    let (_t, p) = copy_project(&sushi());
    let at = ["--execution-time", "2024-01-31"];
    let run = |args: &[&str]| {
        let r = tidemark(&p, args);
        assert_eq!(r.code, 0, "tidemark {args:?}\n{}", r.transcript());
        r
    };
    run(&[&at[..], &["plan", "--apply", "--progress", "lines"]].concat());
    std::fs::remove_dir_all(p.join("models")).unwrap();
    copy_dir(
        &repo().join("examples/sushi-spark/models"),
        &p.join("models"),
    );
    std::fs::copy(
        repo().join("examples/sushi-spark/tidemark.toml"),
        p.join("tidemark.toml"),
    )
    .unwrap();
    point_at(&p, remote);
    let applied = run(&[&at[..], &["plan", "dev", "--apply", "--progress", "lines"]].concat());
    assert!(
        applied.stderr.contains("sushi.stg_transactions"),
        "{}",
        applied.transcript()
    );
    for model in [
        "raw.pos_transactions",
        "sushi.stg_transactions",
        "sushi.fact_sales_transactions",
        "sushi.daily_sales_by_location",
        "sushi.top_products_daily",
        "sushi.customers",
        "sushi.locations",
    ] {
        let r = run(&[
            "reconcile",
            model,
            "--env",
            "dev",
            "--against",
            "prod",
            "--format",
            "json",
        ]);
        let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        assert!(v["compared"].as_u64().unwrap() > 0, "{model}: {}", r.stdout);
        assert_eq!(
            v["differences"],
            serde_json::json!([]),
            "{model}: {}",
            r.stdout
        );
        assert_eq!(
            v["rows_only"].as_u64().unwrap_or(0),
            0,
            "{model}: {}",
            r.stdout
        );
        run(&["reconcile", model, "--env", "dev"]);
    }
    for q in crate::lakehouse::QUERIES {
        let dev = crate::common::ok(&p, &["query", "--env", "dev", "--format", "csv", q]);
        assert!(dev.lines().count() > 1, "{q}: {dev}");
    }
}

/// The Spark example's whole life (plan, apply, a dev change, promote, rollback, restatement,
/// run, janitor) on Sail over the moto S3 warehouse answers every query exactly as the
/// DataFusion example on a local disk.
#[test]
fn the_spark_example_on_s3_lives_exactly_as_the_local_one() {
    let Some(remote) = sail() else { return };
    let Some(m) = crate::s3::moto() else { return };
    let (_t, p) = spark_example(remote);
    m.warehouse(&p, "spark-life");
    crate::lakehouse::check(&p, "s3", crate::s3::SECRET);
}
