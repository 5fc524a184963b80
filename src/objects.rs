//! Object stores behind a warehouse URL: which schemes are built in, and how a store is
//! configured.
//!
//! Invariants:
//! - Built in: S3-compatible stores (`s3://`, `s3a://`), Azure Blob/ADLS (`az://`, `abfs://`,
//!   `abfss://`, `azure://`) and GCS (`gs://`), through object_store's clients.
//! - Credentials and endpoints come the way the ecosystem sets them: the standard environment
//!   variables (`AWS_*`: keys, session token, region, `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`, web
//!   identity, container credentials, instance metadata; `AZURE_STORAGE_*`; `GOOGLE_*`), then
//!   the `[storage]` options of `tidemark.toml`, which override them.
//! - An option tidemark does not know is an error naming the key, never silently dropped; no
//!   option's value (it may be a secret) appears in any message.
//! - The same function builds every client: the state's, delta-rs's (through the engine's
//!   factories) and DataFusion's for sources, so they share credentials, options and retries.

use std::collections::BTreeMap;
use std::sync::Arc;

use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;

use crate::error::{Diagnostic, Error, Result};

/// The `[storage]` options of an object-store warehouse (endpoint, region, keys …). Values may
/// be secrets: they are never shown, logged or written anywhere by tidemark (`Debug` shows the
/// keys only).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct StorageOptions(BTreeMap<String, String>);

impl StorageOptions {
    /// Options from `key → value` pairs.
    pub fn new(options: BTreeMap<String, String>) -> StorageOptions {
        StorageOptions(options)
    }

    /// Every option, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

impl std::fmt::Debug for StorageOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// The path inside its store of the location at `url` (`s3://bucket/a/b/` → `a/b`).
pub fn prefix(url: &url::Url) -> String {
    url.path().trim_matches('/').to_string()
}

/// The store and the prefix inside it of the warehouse at `url`.
pub fn open(url: &str, options: &StorageOptions) -> Result<(Arc<dyn ObjectStore>, String)> {
    let parsed = url::Url::parse(url).map_err(|e| {
        Error::from(Diagnostic::error(format!("invalid warehouse URL `{url}`")).caused_by(e))
    })?;
    let prefix = prefix(&parsed);
    let store: Arc<dyn ObjectStore> = match parsed.scheme() {
        "s3" | "s3a" => {
            let bucket = parsed.host_str().filter(|b| !b.is_empty()).ok_or_else(|| {
                Error::from(
                    Diagnostic::error(format!("the warehouse URL `{url}` names no bucket"))
                        .hint("write it as `s3://BUCKET/PREFIX`"),
                )
            })?;
            let builder = AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .with_retry(retry());
            let builder = configure(builder, options, "S3", AmazonS3Builder::with_config)?;
            Arc::new(builder.build().map_err(|e| unusable(url, e, S3_HINT))?)
        }
        "az" | "abfs" | "abfss" | "azure" => {
            let builder = MicrosoftAzureBuilder::from_env()
                .with_url(url)
                .with_retry(retry());
            let builder = configure(
                builder,
                options,
                "Azure",
                MicrosoftAzureBuilder::with_config,
            )?;
            Arc::new(builder.build().map_err(|e| unusable(url, e, AZURE_HINT))?)
        }
        "gs" => {
            let builder = GoogleCloudStorageBuilder::from_env()
                .with_url(url)
                .with_retry(retry());
            let builder = configure(
                builder,
                options,
                "GCS",
                GoogleCloudStorageBuilder::with_config,
            )?;
            Arc::new(builder.build().map_err(|e| unusable(url, e, GCS_HINT))?)
        }
        "memory" => Arc::new(object_store::memory::InMemory::new()),
        scheme => {
            return Err(Error::from(
                Diagnostic::error(format!(
                    "the `{scheme}` object store of warehouse `{url}` is not built into this tidemark"
                ))
                .hint("use `s3://`, `s3a://`, `az://`, `abfss://`, `gs://` or a local directory"),
            ));
        }
    };
    Ok((store, prefix))
}

const S3_HINT: &str = "set credentials and region the usual way (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, and `AWS_ENDPOINT_URL` for a store other than AWS), or the same options under `[storage]`";
const AZURE_HINT: &str = "set `AZURE_STORAGE_ACCOUNT_NAME` and a credential (`AZURE_STORAGE_ACCOUNT_KEY`, a SAS token, or a service principal), or the same options under `[storage]`";
const GCS_HINT: &str = "set `GOOGLE_SERVICE_ACCOUNT` (a key file) or use the machine's workload identity, or the same options under `[storage]`";

/// How a request is retried: 5 times with exponential backoff (0.1 s doubling, with jitter),
/// within 90 s. object_store's default (10 times within 3 minutes) keeps a command on an
/// unreachable endpoint or a missing bucket waiting about a minute before it says so; a
/// failed batch is retried by the scheduler (`--retries`) on top of this.
fn retry() -> object_store::RetryConfig {
    object_store::RetryConfig {
        max_retries: 5,
        retry_timeout: std::time::Duration::from_secs(90),
        ..Default::default()
    }
}

/// Apply the `[storage]` options to a builder; `kind` names the store in messages.
fn configure<B, K: std::str::FromStr>(
    builder: B,
    options: &StorageOptions,
    kind: &str,
    with: fn(B, K, String) -> B,
) -> Result<B> {
    options.iter().try_fold(builder, |b, (key, value)| {
        let k: K = key.to_ascii_lowercase().parse().map_err(|_| {
            Error::from(
                Diagnostic::error(format!(
                    "unknown `[storage]` option `{key}` for a warehouse on {kind}"
                ))
                .hint(format!(
                    "{kind} options are object_store's, e.g. {}",
                    match kind {
                        "S3" => "`endpoint`, `region`, `allow_http`, `access_key_id`, `secret_access_key`, `session_token`",
                        "Azure" => "`account_name`, `access_key`, `sas_token`, `use_emulator`, `endpoint`",
                        _ => "`service_account`, `service_account_key`, `bucket`",
                    }
                )),
            )
        })?;
        Ok(with(b, k, value.to_string()))
    })
}

/// A store that cannot be configured as given (missing credentials, a bad endpoint …).
fn unusable(url: &str, e: object_store::Error, hint: &str) -> Error {
    Error::from(
        Diagnostic::error(format!("cannot use the warehouse `{url}`"))
            .caused_by(e)
            .hint(hint),
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn opts(pairs: &[(&str, &str)]) -> StorageOptions {
        StorageOptions::new(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        )
    }

    #[test]
    fn schemes_buckets_and_options_are_checked_without_showing_values() {
        let secret = opts(&[
            ("access_key_id", "k"),
            ("region", "us-east-1"),
            ("secret_access_key", "hush-123"),
        ]);
        assert_eq!(
            format!("{secret:?}"),
            r#"{"access_key_id", "region", "secret_access_key"}"#
        );
        let (_, prefix) = open("s3://bucket/a/b/", &secret).unwrap();
        assert_eq!(prefix, "a/b");
        for (url, needle) in [
            ("s3:///x", "names no bucket"),
            ("ftp://b/x", "not built into this tidemark"),
            (
                "az://c/x",
                "unknown `[storage]` option `access_key_id` for a warehouse on Azure",
            ),
        ] {
            let err = open(url, &secret).err().unwrap().to_string();
            assert!(err.contains(needle), "{url}: {err}");
        }
        let err = open("s3://b/x", &opts(&[("endpiont", "hush-123")]))
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("unknown `[storage]` option `endpiont`"),
            "{err}"
        );
        assert!(!err.contains("hush-123"), "{err}");
        // Azure and GCS are built in: their URLs and options are understood.
        let azure = opts(&[
            ("account_name", "devstoreaccount1"),
            ("access_key", "aGVsbG8="),
        ]);
        let (_, prefix) = open("az://container/wh", &azure).unwrap();
        assert_eq!(prefix, "wh");
        let (_, prefix) = open("abfss://container@acct.dfs.core.windows.net/a/b", &azure).unwrap();
        assert_eq!(prefix, "a/b");
        let err = open("az://c/x", &opts(&[("acount_name", "x")]))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("for a warehouse on Azure"), "{err}");
        let err = open("gs://b/x", &opts(&[("bukket", "x")]))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("for a warehouse on GCS"), "{err}");
    }
}
