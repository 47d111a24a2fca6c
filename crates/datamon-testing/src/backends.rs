//! The stores to test against, from the environment.
//!
//! | backend | enabled by | other variables |
//! |---|---|---|
//! | memory, local | always | |
//! | s3 | `DATAMON_TEST_S3_ENDPOINT` (e.g. `http://127.0.0.1:7480`) | `DATAMON_TEST_S3_BUCKET` (default `datamon`), `DATAMON_TEST_S3_ACCESS_KEY`, `DATAMON_TEST_S3_SECRET_KEY` |
//! | gcs | `DATAMON_TEST_GCS_ENDPOINT` (e.g. `http://127.0.0.1:4443`, fake-gcs-server) | `DATAMON_TEST_GCS_BUCKET` (default `datamon`); no credentials |
//! | azure | `DATAMON_TEST_AZURE_ENDPOINT` (e.g. `http://127.0.0.1:10000/devstoreaccount1`) | `DATAMON_TEST_AZURE_CONTAINER` (default `datamon`); the well-known Azurite account |
//!
//! A backend whose variable is absent is skipped with a message on stderr, unless
//! `DATAMON_TEST_REQUIRE` lists it (comma-separated, e.g. `s3,azure`; CI sets it), in which case
//! the test fails.
//! The same variable names the tools of the CLI's end-to-end tests (`fuse`, `git`, `sqlite`:
//! `crates/datamon-cli/tests/it/util.rs`), with the same rule; `all` names everything.

use std::path::PathBuf;
use std::sync::Arc;

use datamon_store::Store;

/// Azurite's well-known development account.
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
/// Azurite's well-known development key.
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// One store backend to test against.
#[derive(Debug, Clone)]
pub struct Backend {
    /// `memory`, `local`, `s3`, `gcs` or `azure`.
    pub name: &'static str,
    /// The URL of its root, without trailing slash (`s3://bucket`, `file:///tmp/x`).
    pub base: String,
    /// Backend options (as `Store::open` takes them).
    pub options: Vec<(String, String)>,
    /// The HTTP endpoint, for backends reached over the network (the proxy points here).
    pub endpoint: Option<String>,
    /// Keeps a local store's folder alive.
    _dir: Option<Arc<tempfile::TempDir>>,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn required(name: &str) -> bool {
    var("DATAMON_TEST_REQUIRE")
        .is_some_and(|r| r.split(',').any(|x| x.trim() == name || x.trim() == "all"))
}

fn skip(name: &str, why: &str) {
    assert!(
        !required(name),
        "backend {name} is required (DATAMON_TEST_REQUIRE) but {why}"
    );
    eprintln!("skipping the {name} backend: {why} (start it with scripts/servers/up.sh)");
}

impl Backend {
    /// The in-process memory store.
    pub fn memory() -> Backend {
        Backend {
            name: "memory",
            base: "memory://datamon-testing".into(),
            options: Vec::new(),
            endpoint: None,
            _dir: None,
        }
    }

    /// A local folder store in a fresh temporary directory.
    pub fn local() -> Backend {
        let dir = tempfile::tempdir().expect("a temporary directory");
        Backend {
            name: "local",
            base: format!("file://{}", dir.path().display()),
            options: Vec::new(),
            endpoint: None,
            _dir: Some(Arc::new(dir)),
        }
    }

    /// The S3 server named by `DATAMON_TEST_S3_ENDPOINT`, if any.
    pub fn s3() -> Option<Backend> {
        let Some(endpoint) = var("DATAMON_TEST_S3_ENDPOINT") else {
            skip("s3", "DATAMON_TEST_S3_ENDPOINT is not set");
            return None;
        };
        let bucket = var("DATAMON_TEST_S3_BUCKET").unwrap_or_else(|| "datamon".into());
        let mut options = vec![
            ("aws_allow_http".into(), "true".into()),
            ("aws_region".into(), "us-east-1".into()),
        ];
        options.push((
            "aws_access_key_id".into(),
            var("DATAMON_TEST_S3_ACCESS_KEY").unwrap_or_else(|| "test".into()),
        ));
        options.push((
            "aws_secret_access_key".into(),
            var("DATAMON_TEST_S3_SECRET_KEY").unwrap_or_else(|| "test".into()),
        ));
        Some(
            Backend {
                name: "s3",
                base: format!("s3://{bucket}"),
                options,
                endpoint: None,
                _dir: None,
            }
            .with_endpoint(&endpoint),
        )
    }

    /// The GCS server (emulator) named by `DATAMON_TEST_GCS_ENDPOINT`, if any.
    pub fn gcs() -> Option<Backend> {
        let Some(endpoint) = var("DATAMON_TEST_GCS_ENDPOINT") else {
            skip("gcs", "DATAMON_TEST_GCS_ENDPOINT is not set");
            return None;
        };
        let bucket = var("DATAMON_TEST_GCS_BUCKET").unwrap_or_else(|| "datamon".into());
        Some(
            Backend {
                name: "gcs",
                base: format!("gs://{bucket}"),
                options: vec![("google_skip_signature".into(), "true".into())],
                endpoint: None,
                _dir: None,
            }
            .with_endpoint(&endpoint),
        )
    }

    /// The Azurite server named by `DATAMON_TEST_AZURE_ENDPOINT`, if any.
    pub fn azure() -> Option<Backend> {
        let Some(endpoint) = var("DATAMON_TEST_AZURE_ENDPOINT") else {
            skip("azure", "DATAMON_TEST_AZURE_ENDPOINT is not set");
            return None;
        };
        let container = var("DATAMON_TEST_AZURE_CONTAINER").unwrap_or_else(|| "datamon".into());
        let options = vec![
            ("azure_storage_account_name".into(), AZURITE_ACCOUNT.into()),
            ("azure_storage_account_key".into(), AZURITE_KEY.into()),
            ("azure_allow_http".into(), "true".into()),
        ];
        Some(
            Backend {
                name: "azure",
                base: format!("az://{container}"),
                options,
                endpoint: None,
                _dir: None,
            }
            .with_endpoint(&endpoint),
        )
    }

    /// The same backend reached through another HTTP endpoint (e.g. a [`crate::proxy`]),
    /// keeping the path of the original endpoint (Azurite's account).
    pub fn with_endpoint(mut self, endpoint: &str) -> Backend {
        let key = match self.name {
            "s3" => "aws_endpoint",
            "azure" => "azure_storage_endpoint",
            "gcs" => "google_storage_endpoint",
            _ => return self,
        };
        self.options.retain(|(k, _)| k != key);
        self.options.push((key.into(), endpoint.to_owned()));
        self.endpoint = Some(endpoint.to_owned());
        self
    }

    /// Adds or replaces a backend option (e.g. `aws_read_timeout`).
    pub fn with_option(mut self, key: &str, value: &str) -> Backend {
        self.options.retain(|(k, _)| k != key);
        self.options.push((key.into(), value.into()));
        self
    }

    /// The option key prefix of this backend (`aws_`, `azure_`), for client settings.
    pub fn option_prefix(&self) -> &'static str {
        match self.name {
            "s3" => "aws_",
            "azure" => "azure_",
            "gcs" => "google_",
            _ => "",
        }
    }

    /// A URL under this backend's root that no other test uses.
    pub fn fresh_url(&self, label: &str) -> String {
        format!("{}/{label}-{:016x}", self.base, rand::random::<u64>())
    }

    /// Opens a store at a fresh URL.
    pub async fn fresh_store(&self, label: &str) -> Store {
        let url = self.fresh_url(label);
        Store::open(&url, &self.options)
            .await
            .unwrap_or_else(|e| panic!("cannot open {url} on {}: {e}", self.name))
    }

    /// Creates a store at a fresh URL whose packs are about `pack_size` bytes (so small test
    /// folders span many packs), and returns its URL.
    pub async fn fresh_store_with_pack_size(&self, label: &str, pack_size: u32) -> String {
        let url = self.fresh_url(label);
        let (parent, child) = url.rsplit_once('/').expect("a fresh URL has a path");
        let parent_store = Store::open(parent, &self.options)
            .await
            .unwrap_or_else(|e| panic!("cannot open {parent}: {e}"));
        let params = (4096u32, 16384u32, 65536u32);
        let config = datamon_types::StoreConfig {
            version: datamon_types::FORMAT_VERSION,
            id: format!("{:032x}", rand::random::<u128>()),
            chunk_min: params.0,
            chunk_avg: params.1,
            chunk_max: params.2,
            pack_size,
            created_at: chrono::Utc::now(),
            encryption: None,
        };
        parent_store
            .create_json(&format!("{child}/{}", datamon_store::keys::CONFIG), &config)
            .await
            .unwrap_or_else(|e| panic!("cannot write the config of {url}: {e}"));
        url
    }

    /// A local path for scratch files that lives as long as the backend (local only).
    pub fn local_dir(&self) -> Option<PathBuf> {
        self._dir.as_ref().map(|d| d.path().to_path_buf())
    }
}

/// Every backend available here: memory, local, and each real server the environment names.
pub fn available() -> Vec<Backend> {
    let mut out = vec![Backend::memory(), Backend::local()];
    out.extend(Backend::s3());
    out.extend(Backend::gcs());
    out.extend(Backend::azure());
    out
}
