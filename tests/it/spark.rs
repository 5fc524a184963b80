//! The Spark Connect engine's first steps through the CLI, against Sail (PyPI `pysail`) in
//! local-cluster mode (a driver and 2 workers talking over RPC), run by [`crate::servers`].
//! `.ci/run` installs it into the build cache, so CI always runs these tests; elsewhere they
//! are skipped, saying how to install it. `TIDEMARK_SAIL` names the executable explicitly.

use std::sync::OnceLock;

use crate::common::{copy_project, sushi, tidemark};
use crate::servers;

/// `sc://127.0.0.1:PORT` of this test binary's Sail, started on first use.
fn sail() -> Option<&'static str> {
    static SAIL: OnceLock<Option<String>> = OnceLock::new();
    SAIL.get_or_init(|| {
        let port = match servers::find("TIDEMARK_SAIL", "venv-sail/bin/sail", "sail") {
            Some(bin) => {
                let bin = bin.to_string_lossy().into_owned();
                servers::start(
                    std::path::Path::new("/usr/bin/env"),
                    &[
                        "SAIL_MODE=local-cluster",
                        "SAIL_CLUSTER__WORKER_INITIAL_COUNT=2",
                        &bin,
                        "spark",
                        "server",
                        "--ip",
                        "127.0.0.1",
                        "--port",
                        "{port}",
                    ],
                )
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

/// With `[engine] kind = "spark"`, `query` runs SQL that reads no project table on the server
/// (the server's version comes back); one that reads a model is refused with a hint; an
/// unreachable server is an error with a hint that never shows the token.
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
