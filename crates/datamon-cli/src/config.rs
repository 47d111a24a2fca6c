//! `$DATAMON_HOME`: the config file (contexts, author) and local caches.
//!
//! ```toml
//! context = "dev"                      # the current context (optional)
//! author = "Ada <ada@example.com>"     # recorded in bundles and refs (optional)
//! [contexts.dev]
//! store = "file:///srv/datamon"
//! ```
//! With no context at all, datamon uses the embedded store `$DATAMON_HOME/store`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use serde::{Deserialize, Serialize};

/// The name of the implicit context that uses the embedded store.
pub const DEFAULT_CONTEXT: &str = "default";

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Config {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default)]
    pub contexts: BTreeMap<String, ContextEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContextEntry {
    pub store: String,
    /// A replica store: every write also goes there; reads fall back to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Created encrypted: a plain store behind this context is refused (a replaced config).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub encrypted: bool,
    /// A key file that opens the (encrypted) store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<std::path::PathBuf>,
    /// The identity file that signs this context's writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_key: Option<std::path::PathBuf>,
    /// The store's trust root (public key, hex), pinned when first seen: a store whose trust
    /// list does not start with it, or has none, is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_root: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Home {
    pub dir: PathBuf,
}

impl Home {
    pub fn new(dir: Option<PathBuf>) -> Result<Home> {
        let dir = match dir {
            Some(d) => d,
            None => {
                let home = std::env::var_os("HOME")
                    .context("HOME is not set: set DATAMON_HOME or --home")?;
                PathBuf::from(home).join(".datamon")
            }
        };
        let dir = std::path::absolute(&dir)
            .with_context(|| format!("cannot make {} absolute", dir.display()))?;
        Ok(Home { dir })
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("config.toml")
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.dir.join("cache")
    }

    pub fn embedded_store(&self) -> String {
        format!("file://{}", self.dir.join("store").display())
    }

    pub fn load(&self) -> Result<Config> {
        let path = self.config_path();
        match std::fs::read_to_string(&path) {
            Ok(s) => toml::from_str(&s)
                .with_context(|| format!("cannot parse {}: fix or remove it", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Writes the config atomically.
    pub fn save(&self, config: &Config) -> Result<()> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create {}", self.dir.display()))?;
        let text = toml::to_string_pretty(config).context("cannot encode the config")?;
        write_atomic(&self.config_path(), text.as_bytes())
    }

    /// The replica store URL of a context, if it has one.
    pub fn context_replica(&self, config: &Config, name: &str) -> Option<String> {
        config.contexts.get(name).and_then(|c| c.replica.clone())
    }

    /// The store URL for a context name (`default` is the embedded store).
    pub fn context_store(&self, config: &Config, name: &str) -> Result<String> {
        if let Some(c) = config.contexts.get(name) {
            return Ok(c.store.clone());
        }
        if name == DEFAULT_CONTEXT {
            return Ok(self.embedded_store());
        }
        let known: Vec<&str> = config.contexts.keys().map(String::as_str).collect();
        bail!(
            "context {name:?} not found (known: {}): create it with `datamon context create --name {name} --store URL`",
            if known.is_empty() { "none".to_owned() } else { known.join(", ") }
        )
    }
}

/// Writes `bytes` to `path` atomically: a temporary file beside it, then a rename.
#[allow(clippy::disallowed_methods)] // the one place that writes the temporary file
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}
