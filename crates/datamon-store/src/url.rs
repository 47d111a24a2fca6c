//! Store URLs: which backend, where.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use std::time::Duration;

use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ClientOptions, ObjectStore, RetryConfig};

use crate::retry::RetryPolicy;
use crate::{Error, Result};

/// A parsed store URL.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreUrl {
    /// `file:///abs/path` (or a plain absolute path): a directory on a local disk.
    Local(PathBuf),
    /// `memory://NAME`: in this process only; for tests.
    Memory(String),
    /// `s3://bucket/prefix`, `gs://bucket/prefix`, `az://container/prefix`.
    Cloud {
        /// The URL as given.
        url: url::Url,
        /// The key prefix inside the bucket.
        prefix: String,
    },
}

const ACCEPTED: &str = "use file:///absolute/path, memory://, s3://bucket/prefix, gs://bucket/prefix or az://container/prefix";

impl StoreUrl {
    /// Parses a store URL.
    ///
    /// # Errors
    /// [`Error::InvalidUrl`] naming what is wrong and what is accepted.
    pub fn parse(s: &str) -> Result<StoreUrl> {
        let invalid = |reason: String| Error::InvalidUrl {
            url: s.to_owned(),
            reason,
        };
        if s.starts_with('/') {
            return Ok(StoreUrl::Local(PathBuf::from(s)));
        }
        let url = url::Url::parse(s).map_err(|e| invalid(format!("{e}; {ACCEPTED}")))?;
        match url.scheme() {
            "file" => {
                if url
                    .host_str()
                    .is_some_and(|h| !h.is_empty() && h != "localhost")
                {
                    return Err(invalid(format!("a file URL needs an absolute path (three slashes: file:///path); {ACCEPTED}")));
                }
                let path = url
                    .to_file_path()
                    .map_err(|_| invalid(format!("not a local path; {ACCEPTED}")))?;
                Ok(StoreUrl::Local(path))
            }
            "memory" => Ok(StoreUrl::Memory(s.to_owned())),
            "s3" | "s3a" | "gs" | "az" | "azure" | "abfs" | "abfss" => {
                if url.host_str().is_none_or(str::is_empty) {
                    return Err(invalid(format!("the bucket name is missing; {ACCEPTED}")));
                }
                let prefix = url.path().trim_matches('/').to_owned();
                Ok(StoreUrl::Cloud { url, prefix })
            }
            other => Err(invalid(format!("unsupported scheme {other:?}; {ACCEPTED}"))),
        }
    }

    /// Opens the backend: the object store and the key prefix inside it. `options` are backend
    /// settings (e.g. `aws_endpoint`, `aws_access_key_id`) that the caller gathered, typically
    /// from the environment.
    pub(crate) fn connect(
        &self,
        options: &[(String, String)],
    ) -> Result<(Arc<dyn ObjectStore>, Path)> {
        match self {
            StoreUrl::Local(path) => {
                std::fs::create_dir_all(path).map_err(|source| Error::Io {
                    path: path.display().to_string(),
                    source,
                })?;
                let fs =
                    object_store::local::LocalFileSystem::new_with_prefix(path).map_err(|e| {
                        Error::InvalidUrl {
                            url: path.display().to_string(),
                            reason: e.to_string(),
                        }
                    })?;
                Ok((Arc::new(fs), Path::default()))
            }
            StoreUrl::Memory(name) => {
                static STORES: OnceLock<Mutex<HashMap<String, Arc<InMemory>>>> = OnceLock::new();
                let mut stores = STORES
                    .get_or_init(Default::default)
                    .lock()
                    .expect("not poisoned");
                let s = stores
                    .entry(name.clone())
                    .or_insert_with(|| Arc::new(InMemory::new()));
                Ok((s.clone(), Path::default()))
            }
            StoreUrl::Cloud { url, prefix } => {
                let bad = |e: object_store::Error| Error::InvalidUrl {
                    url: url.to_string(),
                    reason: e.to_string(),
                };
                // Options that name no setting of this backend (e.g. another cloud's) are ignored.
                let store: Arc<dyn ObjectStore> = match url.scheme() {
                    "s3" | "s3a" => {
                        use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
                        let mut b = AmazonS3Builder::new()
                            .with_url(url.as_str())
                            .with_retry(retry_config())
                            .with_client_options(client_options());
                        for (k, v) in options {
                            if let Ok(key) = k.parse::<AmazonS3ConfigKey>() {
                                b = b.with_config(key, v);
                            }
                        }
                        Arc::new(b.build().map_err(bad)?)
                    }
                    "gs" => {
                        // The JSON API (see `gcs.rs`): served by GCS and by its emulators.
                        let bucket = url.host_str().unwrap_or_default();
                        Arc::new(crate::gcs::GcsJson::new(url, bucket, options).map_err(bad)?)
                    }
                    _ => {
                        use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
                        let mut b = MicrosoftAzureBuilder::new()
                            .with_url(url.as_str())
                            .with_retry(retry_config())
                            .with_client_options(client_options());
                        for (k, v) in options {
                            if let Ok(key) = k.parse::<AzureConfigKey>() {
                                b = b.with_config(key, v);
                            }
                        }
                        Arc::new(b.build().map_err(bad)?)
                    }
                };
                Ok((store, Path::from(prefix.as_str())))
            }
        }
    }
}

/// How `object_store` retries one HTTP request: [`RetryPolicy::REQUEST`], so that an
/// unreachable store fails within seconds. Timeouts, 5xx and throttling (429) are retried; a
/// request body is always re-sent whole (payloads are in memory, never half-consumed streams).
/// [`crate::Store`] adds a second, coarser retry for what this one does not cover (interrupted
/// bodies, non-idempotent creates).
fn retry_config() -> RetryConfig {
    RetryPolicy::REQUEST.object_store_config()
}

/// HTTP client defaults: connect within 5 s; a response that stalls for 15 s between reads is
/// abandoned (and retried); a whole request may take 5 minutes (a large part on a slow link).
/// Every one of them can be overridden by the backend options (`connect_timeout`,
/// `read_timeout`, `timeout`, e.g. from `AWS_READ_TIMEOUT`).
fn client_options() -> ClientOptions {
    ClientOptions::new()
        .with_connect_timeout(Duration::from_secs(5))
        .with_read_timeout(Duration::from_secs(15))
        .with_timeout(Duration::from_secs(300))
}

impl std::fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreUrl::Local(p) => write!(f, "file://{}", p.display()),
            StoreUrl::Memory(s) => f.write_str(s),
            StoreUrl::Cloud { url, .. } => write!(f, "{url}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        assert_eq!(
            StoreUrl::parse("file:///tmp/x").unwrap(),
            StoreUrl::Local("/tmp/x".into())
        );
        assert_eq!(
            StoreUrl::parse("/tmp/x").unwrap(),
            StoreUrl::Local("/tmp/x".into())
        );
        assert!(
            matches!(StoreUrl::parse("s3://b/p/q").unwrap(), StoreUrl::Cloud { prefix, .. } if prefix == "p/q")
        );
        assert!(matches!(
            StoreUrl::parse("gs://b").unwrap(),
            StoreUrl::Cloud { .. }
        ));
        assert!(matches!(
            StoreUrl::parse("az://c/p").unwrap(),
            StoreUrl::Cloud { .. }
        ));
        for bad in [
            "ftp://x",
            "file://relative/x",
            "s3://",
            "nonsense",
            "relative/path",
        ] {
            let e = StoreUrl::parse(bad).unwrap_err();
            assert!(e.to_string().contains("file:///"), "{bad}: {e}");
        }
    }
}
