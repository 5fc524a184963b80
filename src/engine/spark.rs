//! A session on a Spark Connect server (Apache Spark 4, Databricks Connect, Sail): the
//! transport under the Spark engine of issue 16. It runs SQL there and brings the rows back
//! as Arrow record batches; it never touches a Delta log (tidemark keeps every commit).
//!
//! Invariants:
//! - The server is named by Spark Connect's own URL (`sc://HOST:PORT/;param=value`), from
//!   `[engine] remote` or else `SPARK_REMOTE`, as PySpark reads it. A `token` parameter is a
//!   secret: messages show the URL through [`crate::project::shown_remote`] only.
//! - Errors are classified once, here: the server rejecting the SQL (analysis, parse,
//!   arithmetic …) is permanent and its message goes under `Caused by:`; an unreachable or
//!   failing server is transient, so the scheduler retries the batch.
//! - Every session's time zone is UTC (`spark.sql.session.timeZone`), as everywhere in
//!   tidemark; batches run in sessions of their own ([`Session::fork`]), so their temporary
//!   views never meet.
//! - Transport retries are short (3 within 10 s): a batch's transient failure is retried by
//!   the scheduler, which also counts it for the circuit breaker.
//! - Results arrive as Arrow IPC streams and are decoded with DataFusion's own arrow, so rows
//!   from Spark and from DataFusion are the same Rust values (and checksum alike).

use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::record_batch::RecordBatch;
use spark_connect_core::{
    ChannelBuilder, RetryPolicy, SparkConnectClient, SparkError, SparkErrorKind,
};
use spark_connect_proto as proto;

use crate::error::{Diagnostic, Error, Result};
use crate::project::{is_secret_param, shown_remote};

/// The environment variable PySpark reads the server from.
pub const SPARK_REMOTE: &str = "SPARK_REMOTE";

/// One session on a Spark Connect server.
pub struct Session {
    client: SparkConnectClient,
    /// The URL as it may be shown (token hidden).
    shown: String,
}

/// The server URL: `remote` as configured, else `SPARK_REMOTE`.
pub fn remote_url(remote: Option<&str>) -> Result<String> {
    if let Some(r) = remote {
        return Ok(r.to_string());
    }
    std::env::var(SPARK_REMOTE)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .ok_or_else(|| {
            Diagnostic::error("no Spark Connect server is named")
                .hint(format!(
                    "set `remote = \"sc://HOST:15002\"` under `[engine]` in tidemark.toml, or the `{SPARK_REMOTE}` environment variable"
                ))
                .into()
        })
}

impl Session {
    /// Connect to the server at `url` (a Spark Connect URL).
    pub async fn connect(url: &str) -> Result<Session> {
        let shown = shown_remote(url);
        let builder = ChannelBuilder::parse(url).map_err(|e| {
            Error::from(
                Diagnostic::error(format!("`{shown}` is not a usable Spark Connect URL"))
                    .caused_by(hide(&e.message, url))
                    .hint("write it as `sc://HOST:15002` (parameters such as `;token=…` follow the port)"),
            )
        })?;
        let mut client = SparkConnectClient::connect(&builder).await.map_err(|e| {
            classify(
                &format!("cannot reach the Spark Connect server `{shown}`"),
                url,
                e,
            )
        })?;
        // The client's default retries an unreachable server for about ten minutes; a few
        // seconds here, and the scheduler's own retries of transient batch errors above.
        client.set_retry_policy(RetryPolicy {
            max_retries: Some(3),
            initial_backoff_ms: 250,
            max_backoff_ms: Some(2_000),
            max_retry_exception_elapsed_time_ms: Some(10_000),
            ..RetryPolicy::default()
        });
        let session = Session { client, shown };
        session.set_utc().await?;
        Ok(session)
    }

    /// A new server-side session over the same connection: its temporary views are its own,
    /// so batches running side by side never see each other's inputs.
    pub async fn fork(&self) -> Result<Session> {
        let session = Session {
            client: self.client.with_new_session_id(),
            shown: self.shown.clone(),
        };
        session.set_utc().await?;
        Ok(session)
    }

    /// Give the server-side session back (best effort: the server expires idle sessions).
    pub async fn release(&self) {
        let _ = self.client.release_session().await;
    }

    /// Stop whatever this session runs on the server (Ctrl-C; best effort).
    pub async fn interrupt(&self) {
        let _ = self.client.interrupt_all().await;
    }

    async fn set_utc(&self) -> Result<()> {
        self.client
            .set_config("spark.sql.session.timeZone", "UTC")
            .await
            .map_err(|e| {
                classify(
                    &format!("cannot reach the Spark Connect server `{}`", self.shown),
                    &self.shown,
                    e,
                )
            })
    }

    /// Run one SQL statement on the server and collect its rows.
    pub async fn sql(&self, sql: &str) -> Result<Vec<RecordBatch>> {
        let what = format!("Spark (`{}`) failed to run the query", self.shown);
        self.execute(root(sql_relation(sql)), &what).await
    }

    /// Register the temporary view `name` over the files `paths` of `format` (`parquet`,
    /// `csv`), read with the DDL `schema` when given.
    pub async fn view_of_files(
        &self,
        name: &str,
        format: &str,
        paths: Vec<String>,
        schema: Option<String>,
        options: &[(&str, &str)],
    ) -> Result<()> {
        let read = proto::Relation {
            common: None,
            rel_type: Some(proto::relation::RelType::Read(proto::Read {
                is_streaming: false,
                read_type: Some(proto::read::ReadType::DataSource(proto::read::DataSource {
                    format: Some(format.to_string()),
                    schema,
                    options: options
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                    paths,
                    ..Default::default()
                })),
            })),
        };
        self.view(name, read).await
    }

    /// Register the temporary view `name` as the query `sql`.
    pub async fn view_of_sql(&self, name: &str, sql: &str) -> Result<()> {
        self.view(name, sql_relation(sql)).await
    }

    async fn view(&self, name: &str, input: proto::Relation) -> Result<()> {
        let command =
            proto::command::CommandType::CreateDataframeView(proto::CreateDataFrameViewCommand {
                input: Some(input),
                name: name.to_string(),
                is_global: false,
                replace: true,
            });
        let what = format!("Spark (`{}`) cannot read an input", self.shown);
        self.execute(command_plan(command), &what).await.map(drop)
    }

    /// Write the rows of `sql` as Parquet under `path` (a directory that must not exist),
    /// partitioned Hive-style by `partition_by`.
    pub async fn write_parquet(&self, sql: &str, path: &str, partition_by: &[&str]) -> Result<()> {
        let command = proto::command::CommandType::WriteOperation(proto::WriteOperation {
            input: Some(sql_relation(sql)),
            source: Some("parquet".to_string()),
            save_type: Some(proto::write_operation::SaveType::Path(path.to_string())),
            mode: proto::write_operation::SaveMode::ErrorIfExists as i32,
            partitioning_columns: partition_by.iter().map(|c| c.to_string()).collect(),
            ..Default::default()
        });
        let what = format!("Spark (`{}`) failed to run the query", self.shown);
        self.execute(command_plan(command), &what).await.map(drop)
    }

    /// The columns the server's analyzer gives the query `sql` (name, Spark type; `None` for
    /// a type tidemark cannot declare), without running it (Spark Connect `AnalyzePlan`).
    pub async fn schema(&self, sql: &str) -> Result<super::Analyzed> {
        let request = proto::AnalyzePlanRequest {
            session_id: self.client.session_id().to_string(),
            user_context: Some(self.user_context()),
            client_type: Some(client_type()),
            analyze: Some(proto::analyze_plan_request::Analyze::Schema(
                proto::analyze_plan_request::Schema {
                    plan: Some(root(sql_relation(sql))),
                },
            )),
            ..Default::default()
        };
        let what = format!("Spark (`{}`) rejects the query", self.shown);
        let response = self
            .client
            .analyze_plan(request)
            .await
            .map_err(|e| classify(&what, &self.shown, e))?;
        let struct_type = match response.result {
            Some(proto::analyze_plan_response::Result::Schema(s)) => s.schema.and_then(|t| t.kind),
            _ => None,
        };
        match struct_type {
            Some(proto::data_type::Kind::Struct(s)) => Ok(s
                .fields
                .iter()
                .map(|f| (f.name.clone(), f.data_type.as_ref().and_then(type_name)))
                .collect()),
            other => Err(Error::Bug(format!(
                "Spark answered a schema request with {other:?}"
            ))),
        }
    }

    fn user_context(&self) -> proto::UserContext {
        proto::UserContext {
            user_id: self.client.user_id().unwrap_or("tidemark").to_string(),
            ..Default::default()
        }
    }

    async fn execute(&self, plan: proto::Plan, what: &str) -> Result<Vec<RecordBatch>> {
        let request = proto::ExecutePlanRequest {
            session_id: self.client.session_id().to_string(),
            user_context: Some(self.user_context()),
            plan: Some(plan),
            client_type: Some(client_type()),
            ..Default::default()
        };
        let mut stream = self
            .client
            .execute_plan(request)
            .await
            .map_err(|e| classify(what, &self.shown, e))?;
        let mut batches = Vec::new();
        loop {
            let message = stream.message().await.map_err(|status| {
                classify(what, &self.shown, SparkError::from_grpc_status(status))
            })?;
            let Some(message) = message else { break };
            if let Some(proto::execute_plan_response::ResponseType::ArrowBatch(b)) =
                message.response_type
            {
                let reader =
                    StreamReader::try_new(std::io::Cursor::new(b.data), None).map_err(|e| {
                        Error::Bug(format!("Spark sent an unreadable Arrow batch: {e}"))
                    })?;
                for batch in reader {
                    batches.push(batch.map_err(|e| {
                        Error::Bug(format!("Spark sent an unreadable Arrow batch: {e}"))
                    })?);
                }
            }
        }
        Ok(batches)
    }
}

fn client_type() -> String {
    format!("tidemark/{}", env!("CARGO_PKG_VERSION"))
}

/// The Spark SQL name of a type the analyzer reported (`None`: one tidemark cannot declare,
/// such as intervals, variants and user-defined types).
fn type_name(t: &proto::DataType) -> Option<String> {
    use proto::data_type::Kind;
    Some(match t.kind.as_ref()? {
        Kind::Binary(_) => "BINARY".into(),
        Kind::Boolean(_) => "BOOLEAN".into(),
        Kind::Byte(_) => "TINYINT".into(),
        Kind::Short(_) => "SMALLINT".into(),
        Kind::Integer(_) => "INT".into(),
        Kind::Long(_) => "BIGINT".into(),
        Kind::Float(_) => "FLOAT".into(),
        Kind::Double(_) => "DOUBLE".into(),
        Kind::Decimal(d) => format!(
            "DECIMAL({},{})",
            d.precision.unwrap_or(10),
            d.scale.unwrap_or(0)
        ),
        Kind::String(_) | Kind::Char(_) | Kind::VarChar(_) => "STRING".into(),
        Kind::Date(_) => "DATE".into(),
        Kind::Timestamp(_) => "TIMESTAMP".into(),
        Kind::TimestampNtz(_) => "TIMESTAMP_NTZ".into(),
        Kind::Array(a) => format!("ARRAY<{}>", type_name(a.element_type.as_deref()?)?),
        Kind::Map(m) => format!(
            "MAP<{}, {}>",
            type_name(m.key_type.as_deref()?)?,
            type_name(m.value_type.as_deref()?)?
        ),
        Kind::Struct(s) => {
            let fields = s
                .fields
                .iter()
                .map(|f| {
                    let t = type_name(f.data_type.as_ref()?)?;
                    Some(format!("`{}`: {t}", f.name.replace('`', "``")))
                })
                .collect::<Option<Vec<_>>>()?;
            format!("STRUCT<{}>", fields.join(", "))
        }
        _ => return None,
    })
}

fn sql_relation(sql: &str) -> proto::Relation {
    proto::Relation {
        common: None,
        rel_type: Some(proto::relation::RelType::Sql(proto::Sql {
            query: sql.to_string(),
            ..Default::default()
        })),
    }
}

fn root(relation: proto::Relation) -> proto::Plan {
    proto::Plan {
        op_type: Some(proto::plan::OpType::Root(relation)),
    }
}

fn command_plan(command: proto::command::CommandType) -> proto::Plan {
    proto::Plan {
        op_type: Some(proto::plan::OpType::Command(proto::Command {
            command_type: Some(command),
        })),
    }
}

/// The server's error as ours: permanent when the server rejected the work, transient when it
/// could not be reached or failed (see the module invariants).
fn classify(what: &str, url: &str, e: SparkError) -> Error {
    let permanent = matches!(
        e.kind,
        SparkErrorKind::Analysis
            | SparkErrorKind::Parse
            | SparkErrorKind::IllegalArgument
            | SparkErrorKind::Arithmetic
            | SparkErrorKind::UnsupportedOperation
            | SparkErrorKind::ArrayIndexOutOfBounds
            | SparkErrorKind::ValueError
            | SparkErrorKind::TypeError
    );
    let d = Diagnostic::error(what).caused_by(hide(&e.message, url));
    if permanent {
        Error::from(d.hint("the SQL must be Spark SQL that this server accepts"))
    } else {
        Error::transient(d.hint(
            "check that the server runs and is reachable from here (`[engine] remote` or `SPARK_REMOTE`)",
        ))
    }
}

/// `text` with the URL's secrets hidden, should the server or the client have quoted it.
fn hide(text: &str, url: &str) -> String {
    let mut out = text.replace(url, &shown_remote(url));
    for param in url.split(';').skip(1) {
        if let Some((k, v)) = param.split_once('=')
            && !v.is_empty()
            && is_secret_param(k)
        {
            out = out.replace(v, "…");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_in_an_error_text_are_hidden() {
        let url = "sc://h:15002/;token=hush-1;user_id=etl";
        assert_eq!(
            hide(&format!("bad url {url}, token hush-1"), url),
            "bad url sc://h:15002/;token=…;user_id=etl, token …"
        );
    }

    /// A Sail server (`pysail`, as `.ci/run` installs it) when one is found: SQL runs there and
    /// rows come back as Arrow; a query the server rejects is a permanent error with the
    /// server's message; an unreachable server is transient.
    #[test]
    fn sql_runs_on_a_spark_connect_server_and_errors_are_classified() {
        let Some(url) = test_sail() else { return };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let s = Session::connect(&url).await.unwrap();
            let rows = s
                .sql("SELECT d, CAST(d AS STRING) AS s FROM (SELECT explode(sequence(DATE'2024-01-01', DATE'2024-01-03', INTERVAL 1 DAY)) AS d) ORDER BY d")
                .await
                .unwrap();
            let n: usize = rows.iter().map(RecordBatch::num_rows).sum();
            assert_eq!(n, 3);
            let text = datafusion::arrow::util::pretty::pretty_format_batches(&rows)
                .unwrap()
                .to_string();
            assert!(text.contains("2024-01-03"), "{text}");
            let err = s.sql("SELECT nope FROM nowhere").await.err().unwrap();
            assert!(!err.is_transient(), "{err}");
            assert!(err.to_string().contains("nowhere"), "{err}");
            // The channel is lazy: an unreachable server fails the first query, transiently.
            let err = match Session::connect("sc://127.0.0.1:1/;user_id=etl").await {
                Ok(s) => s.sql("SELECT 1").await.err().unwrap(),
                Err(e) => e,
            };
            assert!(err.is_transient(), "{err}");
        });
    }

    /// The URL of a Sail server for this test run: `TIDEMARK_SAIL_REMOTE` when set, else one
    /// started from the build cache's `venv-sail` (local-cluster mode, 2 workers) and stopped by
    /// a watchdog when this process exits; `None` outside CI when Sail is not installed.
    fn test_sail() -> Option<String> {
        use std::sync::OnceLock;
        static URL: OnceLock<Option<String>> = OnceLock::new();
        URL.get_or_init(|| {
            if let Ok(url) = std::env::var("TIDEMARK_SAIL_REMOTE") {
                return Some(url);
            }
            let bin = std::env::var_os("TIDEMARK_SAIL")
                .map(std::path::PathBuf::from)
                .or_else(|| {
                    std::env::var_os("HOME").map(|h| {
                        std::path::PathBuf::from(h).join(".cache/tidemark/venv-sail/bin/sail")
                    })
                })
                .filter(|p| p.exists());
            let Some(bin) = bin else {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "Sail is not installed, but CI must run its tests: .ci/run installs it"
                );
                eprintln!("skipped: this test needs Sail (pip install pysail==0.7.2)");
                return None;
            };
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .unwrap()
                .port();
            let script = format!(
                "SAIL_MODE=local-cluster SAIL_CLUSTER__WORKER_INITIAL_COUNT=2 '{}' spark server --ip 127.0.0.1 --port {port} >/dev/null 2>&1 & m=$!; while kill -0 {} 2>/dev/null; do sleep 1; done; kill $m",
                bin.display(),
                std::process::id()
            );
            #[allow(clippy::zombie_processes)]
            std::process::Command::new("sh")
                .args(["-c", &script])
                .spawn()
                .unwrap();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(std::time::Instant::now() < deadline, "Sail did not listen");
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Some(format!("sc://127.0.0.1:{port}"))
        })
        .clone()
    }
}
