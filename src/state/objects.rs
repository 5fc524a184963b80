//! Object stores behind a warehouse URL: which schemes are built in, and how a store is
//! configured.
//!
//! Invariants:
//! - Credentials and endpoints come the way the ecosystem sets them: the standard `AWS_*`
//!   environment variables (keys, session token, region, `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`,
//!   web identity, container credentials, instance metadata), then the `[storage]` options of
//!   `tidemark.toml`, which override them.
//! - An option tidemark does not know is an error naming the key, never silently dropped; no
//!   option's value (it may be a secret) appears in any message.

use std::sync::Arc;

use object_store::ObjectStore;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};

use crate::error::{Diagnostic, Error, Result};
use crate::project::StorageOptions;

/// The store and the prefix inside it of the warehouse at `url`.
pub fn open(url: &str, options: &StorageOptions) -> Result<(Arc<dyn ObjectStore>, String)> {
    let parsed = url::Url::parse(url).map_err(|e| {
        Error::from(Diagnostic::error(format!("invalid warehouse URL `{url}`")).caused_by(e))
    })?;
    let prefix = parsed.path().trim_matches('/').to_string();
    match parsed.scheme() {
        "s3" | "s3a" => {
            let bucket = parsed.host_str().filter(|b| !b.is_empty()).ok_or_else(|| {
                Error::from(
                    Diagnostic::error(format!("the warehouse URL `{url}` names no bucket"))
                        .hint("write it as `s3://BUCKET/PREFIX`"),
                )
            })?;
            let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
            for (key, value) in options.iter() {
                let k: AmazonS3ConfigKey = key.to_ascii_lowercase().parse().map_err(|_| {
                    Error::from(
                        Diagnostic::error(format!("unknown `[storage]` option `{key}` for an S3 warehouse"))
                            .hint("S3 options are object_store's: `endpoint`, `region`, `allow_http`, `access_key_id`, `secret_access_key`, `session_token`, …"),
                    )
                })?;
                builder = builder.with_config(k, value);
            }
            let store = builder.build().map_err(|e| {
                Error::from(
                    Diagnostic::error(format!("cannot use the S3 warehouse `{url}`"))
                        .caused_by(e)
                        .hint("set credentials and region the usual way (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, and `AWS_ENDPOINT_URL` for a store other than AWS), or the same options under `[storage]`"),
                )
            })?;
            Ok((Arc::new(store), prefix))
        }
        "memory" => Ok((Arc::new(object_store::memory::InMemory::new()), prefix)),
        scheme => Err(Error::from(
            Diagnostic::error(format!(
                "the `{scheme}` object store of warehouse `{url}` is not built into this tidemark yet"
            ))
            .hint("S3-compatible stores (`s3://`, `s3a://`) are; use one of them or a local directory"),
        )),
    }
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
            ("gs://b/x", "not built into this tidemark yet"),
            ("az://c/x", "not built into this tidemark yet"),
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
    }
}
