//! OpenLineage events of an apply: one run per apply (START, then COMPLETE, FAIL or ABORT) and
//! a child run per batch (START, then COMPLETE or FAIL), with the exact Delta versions read and
//! written as dataset `version` facets.
//!
//! Invariants:
//! - Lineage never fails or slows a batch: events go to a file (one JSON line each, appended)
//!   and/or to an HTTP endpoint through a background thread with a bounded queue; a full queue
//!   or an endpoint that keeps failing after its retries drops events with one warning. At the
//!   end of the apply the sender gets at most a few seconds to deliver what is queued.
//! - Run ids are UUIDs derived from the apply id (and the batch id): a resumed apply reports the
//!   same runs.
//! - Datasets are named by their location: namespace `file` and the absolute path for a local
//!   warehouse, `scheme://bucket` and the key prefix on an object store.
//! - Secrets never appear: locations are the warehouse's URLs, which hold none.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::time::Duration;

use chrono::Utc;
use serde_json::{Value, json};

pub use crate::project::config::LineageConfig;

const PRODUCER: &str = concat!(
    "https://github.com/tidemark/tidemark/tree/v",
    env!("CARGO_PKG_VERSION")
);
const SCHEMA: &str = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent";
const FACET_SCHEMA: &str = "https://tidemark.dev/lineage/facets/1-0-0.json";

/// The emitter of one apply.
pub struct Lineage<'w> {
    namespace: String,
    job: String,
    run_id: String,
    apply_id: String,
    fingerprints: BTreeMap<String, String>,
    file: Option<Mutex<std::fs::File>>,
    http: Option<Http>,
    warn: &'w (dyn Fn(&str) + Sync),
}

/// One dataset read or written: its location and Delta version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dataset {
    /// URL or absolute path.
    pub location: String,
    /// Delta version (`None`: not versioned).
    pub version: Option<u64>,
}

/// What a finished batch reports.
pub struct BatchFacts<'a> {
    /// Batch id.
    pub id: usize,
    /// Model.
    pub model: &'a str,
    /// Window `[start, end)`.
    pub window: (String, String),
    /// Inputs read.
    pub inputs: &'a [Dataset],
    /// The table written (`None` for views).
    pub output: Option<Dataset>,
    /// Rows, bytes, checksum.
    pub rows: u64,
    /// Bytes.
    pub bytes: u64,
    /// Checksum.
    pub checksum: &'a str,
}

impl<'w> Lineage<'w> {
    /// An emitter for apply `apply_id` of environment `env` (`None`: lineage is off).
    pub fn new(
        config: &LineageConfig,
        project: &str,
        env: &str,
        apply_id: &str,
        fingerprints: BTreeMap<String, String>,
        warn: &'w (dyn Fn(&str) + Sync),
    ) -> Option<Lineage<'w>> {
        if config.file.is_none() && config.url.is_none() {
            return None;
        }
        let file = config.file.as_ref().and_then(|p| {
            match std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
            {
                Ok(f) => Some(Mutex::new(f)),
                Err(e) => {
                    warn(&format!(
                        "cannot open the lineage file `{}` ({e}); no lineage is written there",
                        p.display()
                    ));
                    None
                }
            }
        });
        let http = config.url.as_ref().and_then(|u| match Http::start(u) {
            Ok(h) => Some(h),
            Err(why) => {
                warn(&format!(
                    "lineage endpoint `{u}`: {why}; no lineage is sent"
                ));
                None
            }
        });
        Some(Lineage {
            namespace: config
                .namespace
                .clone()
                .unwrap_or_else(|| project.to_string()),
            job: format!("{project}.apply.{env}"),
            run_id: uuid_of(&format!("apply:{apply_id}")),
            apply_id: apply_id.to_string(),
            fingerprints,
            file,
            http,
            warn,
        })
    }

    /// The apply run's event (`START`, `COMPLETE`, `FAIL`, `ABORT`).
    pub fn apply(&self, event_type: &str, error: Option<&str>) {
        let mut run_facets = serde_json::Map::new();
        if let Some(e) = error {
            run_facets.insert("errorMessage".into(), error_facet(e));
        }
        run_facets.insert(
            "tidemark_apply".into(),
            custom("TidemarkApplyRunFacet", json!({ "applyId": self.apply_id })),
        );
        self.send(json!({
            "eventType": event_type,
            "eventTime": now(),
            "run": { "runId": self.run_id, "facets": run_facets },
            "job": { "namespace": self.namespace, "name": self.job },
            "inputs": [],
            "outputs": [],
            "producer": PRODUCER,
            "schemaURL": SCHEMA,
        }));
    }

    /// A batch's child run starts.
    pub fn batch_started(&self, id: usize, model: &str) {
        self.send(self.batch_event("START", id, model, None, None));
    }

    /// A batch's child run completed.
    pub fn batch_completed(&self, facts: &BatchFacts<'_>) {
        let mut e = self.batch_event("COMPLETE", facts.id, facts.model, None, Some(facts));
        e["inputs"] = Value::Array(facts.inputs.iter().map(dataset).collect());
        e["outputs"] = Value::Array(facts.output.iter().map(dataset).collect());
        self.send(e);
    }

    /// A batch's child run failed for good.
    pub fn batch_failed(&self, id: usize, model: &str, error: &str) {
        self.send(self.batch_event("FAIL", id, model, Some(error), None));
    }

    fn batch_event(
        &self,
        event_type: &str,
        id: usize,
        model: &str,
        error: Option<&str>,
        facts: Option<&BatchFacts<'_>>,
    ) -> Value {
        let mut run_facets = serde_json::Map::new();
        run_facets.insert(
            "parent".into(),
            json!({
                "_producer": PRODUCER,
                "_schemaURL": "https://openlineage.io/spec/facets/1-1-0/ParentRunFacet.json#/$defs/ParentRunFacet",
                "run": { "runId": self.run_id },
                "job": { "namespace": self.namespace, "name": self.job },
            }),
        );
        if let Some(e) = error {
            run_facets.insert("errorMessage".into(), error_facet(e));
        }
        if let Some(f) = facts {
            run_facets.insert(
                "tidemark_batch".into(),
                custom(
                    "TidemarkBatchRunFacet",
                    json!({
                    "applyId": self.apply_id,
                    "batch": f.id,
                    "window": { "start": f.window.0, "end": f.window.1 },
                    "rows": f.rows,
                    "bytes": f.bytes,
                    "checksum": f.checksum,
                    }),
                ),
            );
        }
        let mut job_facets = serde_json::Map::new();
        if let Some(fp) = self.fingerprints.get(model) {
            job_facets.insert(
                "tidemark_model".into(),
                custom(
                    "TidemarkModelJobFacet",
                    json!({ "model": model, "fingerprint": fp }),
                ),
            );
        }
        json!({
            "eventType": event_type,
            "eventTime": now(),
            "run": { "runId": uuid_of(&format!("batch:{}:{id}", self.apply_id)), "facets": run_facets },
            "job": { "namespace": self.namespace, "name": model, "facets": job_facets },
            "inputs": [],
            "outputs": [],
            "producer": PRODUCER,
            "schemaURL": SCHEMA,
        })
    }

    fn send(&self, event: Value) {
        let line = event.to_string();
        if let Some(f) = &self.file
            && let Ok(mut f) = f.lock()
            && let Err(e) = writeln!(f, "{line}")
        {
            (self.warn)(&format!("cannot append to the lineage file: {e}"));
        }
        if let Some(h) = &self.http
            && !h.send(line)
        {
            (self.warn)("the lineage endpoint is not keeping up: events dropped");
        }
    }

    /// Give the HTTP sender a few seconds to deliver what is queued.
    pub fn close(self) {
        if let Some(h) = self.http {
            match h.close(Duration::from_secs(5)) {
                Some(0) => {}
                Some(dropped) => (self.warn)(&format!(
                    "{dropped} lineage events could not be delivered to the endpoint"
                )),
                None => (self.warn)(
                    "the lineage endpoint did not take every event within 5 s: the rest were not delivered",
                ),
            }
        }
    }
}

/// A dataset as OpenLineage names it, with its `version` facet.
fn dataset(d: &Dataset) -> Value {
    let (namespace, name) = split_location(&d.location);
    let mut facets = serde_json::Map::new();
    if let Some(v) = d.version {
        facets.insert(
            "version".into(),
            json!({
                "_producer": PRODUCER,
                "_schemaURL": "https://openlineage.io/spec/facets/1-0-1/DatasetVersionDatasetFacet.json#/$defs/DatasetVersionDatasetFacet",
                "datasetVersion": v.to_string(),
            }),
        );
    }
    json!({ "namespace": namespace, "name": name, "facets": facets })
}

/// `file:///a/b/` → (`file`, `/a/b`); `s3://bucket/k/` → (`s3://bucket`, `k`).
fn split_location(location: &str) -> (String, String) {
    let trimmed = location.trim_end_matches('/');
    if let Some(path) = trimmed.strip_prefix("file://") {
        return ("file".into(), path.to_string());
    }
    if let Some((scheme, rest)) = trimmed.split_once("://") {
        let (host, key) = rest.split_once('/').unwrap_or((rest, ""));
        return (format!("{scheme}://{host}"), key.to_string());
    }
    ("file".into(), trimmed.to_string())
}

/// A custom facet: `v` with the producer and its schema's URL, which names the facet's
/// definition (`…#/$defs/NAME`) as the OpenLineage spec asks.
fn custom(definition: &str, mut v: Value) -> Value {
    v["_producer"] = json!(PRODUCER);
    v["_schemaURL"] = json!(format!("{FACET_SCHEMA}#/$defs/{definition}"));
    v
}

fn error_facet(message: &str) -> Value {
    json!({
        "_producer": PRODUCER,
        "_schemaURL": "https://openlineage.io/spec/facets/1-0-1/ErrorMessageRunFacet.json#/$defs/ErrorMessageRunFacet",
        "message": message,
        "programmingLanguage": "rust",
    })
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// A UUID (version 4 layout) derived from `text`.
pub fn uuid_of(text: &str) -> String {
    let h = blake3::hash(text.as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&h.as_bytes()[..16]);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// The background sender to an HTTP endpoint.
struct Http {
    tx: SyncSender<String>,
    done: Mutex<Receiver<u64>>,
}

impl Http {
    fn start(url: &str) -> Result<Http, String> {
        let target = Target::parse(url)?;
        let (tx, rx) = std::sync::mpsc::sync_channel::<String>(10_000);
        let (done_tx, done) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("tidemark-lineage".into())
            .spawn(move || {
                let mut dropped = 0u64;
                for body in rx {
                    if !target.post_with_retries(&body) {
                        dropped += 1;
                    }
                }
                let _ = done_tx.send(dropped);
            })
            .map_err(|e| format!("cannot start its sender ({e})"))?;
        Ok(Http {
            tx,
            done: Mutex::new(done),
        })
    }

    fn send(&self, body: String) -> bool {
        !matches!(self.tx.try_send(body), Err(TrySendError::Full(_)))
    }

    /// Events that could not be delivered (`None`: still sending after `wait`).
    fn close(self, wait: Duration) -> Option<u64> {
        drop(self.tx);
        self.done.lock().ok()?.recv_timeout(wait).ok()
    }
}

/// `http://host:port/path`.
struct Target {
    host: String,
    port: u16,
    path: String,
}

impl Target {
    fn parse(url: &str) -> Result<Target, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or("only `http://` endpoints are supported (put a forwarder in front of an `https://` one)")?;
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().map_err(|_| format!("bad port `{p}`"))?),
            None => (authority, 80),
        };
        if host.is_empty() {
            return Err("no host".into());
        }
        Ok(Target {
            host: host.to_string(),
            port,
            path: format!("/{path}"),
        })
    }

    fn post_with_retries(&self, body: &str) -> bool {
        for wait in [0u64, 200, 1_000] {
            std::thread::sleep(Duration::from_millis(wait));
            if self.post(body).is_ok() {
                return true;
            }
        }
        false
    }

    fn post(&self, body: &str) -> std::io::Result<()> {
        use std::net::ToSocketAddrs;
        let addr = (self.host.as_str(), self.port)
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| std::io::Error::other("no address"))?;
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.set_write_timeout(Some(Duration::from_secs(5)))?;
        write!(
            s,
            "POST {} HTTP/1.1\r\nHost: {}:{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.path,
            self.host,
            self.port,
            body.len()
        )?;
        let mut status = [0u8; 12];
        s.read_exact(&mut status)?;
        let code = std::str::from_utf8(&status[9..12]).unwrap_or("000");
        if code.starts_with('2') {
            Ok(())
        } else {
            Err(std::io::Error::other(format!("HTTP {code}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_are_stable_uuids_and_locations_become_datasets() {
        let a = uuid_of("apply:x");
        assert_eq!(a, uuid_of("apply:x"));
        assert_ne!(a, uuid_of("apply:y"));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert_eq!(
            split_location("file:///w/ledger/t__1/"),
            ("file".to_string(), "/w/ledger/t__1".to_string())
        );
        assert_eq!(
            split_location("s3://lake/wh/ledger/t__1/"),
            ("s3://lake".to_string(), "wh/ledger/t__1".to_string())
        );
        assert!(Target::parse("https://x").is_err());
        let t = Target::parse("http://127.0.0.1:5000/api/v1/lineage").unwrap();
        assert_eq!((t.port, t.path.as_str()), (5000, "/api/v1/lineage"));
    }
}
