//! Which store to open, found the way the `datamon` CLI finds it (`crates/datamon-cli/src/
//! config.rs` and `Ctx::open` in `main.rs`; a small, deliberate duplication, since the CLI's
//! config is not a library):
//!
//! - home: the `home` argument, else `$DATAMON_HOME`, else `~/.datamon`;
//! - store: the `url` argument, else `$DATAMON_STORE` (unless a context is named), else the
//!   context's store from `<home>/config.toml`; the context is the `context` argument, else
//!   `$DATAMON_CONTEXT`, else the config's current context, else `default` (the embedded store
//!   `<home>/store`);
//! - backend options: the environment's, as the CLI reads them (`datamon::cloud_env`: every
//!   `AWS_*`, `GOOGLE_*`, `AZURE_*` variable lowercased, and the AWS profile's credentials,
//!   region and endpoint from `~/.aws`), then the caller's options;
//! - author: the `author` argument, else the config's author, else `$USER@host`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The name of the implicit context that uses the embedded store.
const DEFAULT_CONTEXT: &str = "default";

/// The part of `config.toml` the package reads.
#[derive(Debug, Default, Deserialize)]
struct Config {
    #[serde(default)]
    context: Option<String>,
    #[serde(default)]
    author: Option<String>,
    #[serde(default)]
    contexts: BTreeMap<String, ContextEntry>,
}

#[derive(Debug, Deserialize)]
struct ContextEntry {
    store: String,
    #[serde(default)]
    replica: Option<String>,
}

/// Where and how to open a store.
#[derive(Debug)]
pub(crate) struct Target {
    /// The store URL.
    pub(crate) url: String,
    /// Its replica, from the context.
    pub(crate) replica: Option<String>,
    /// Who is acting.
    pub(crate) author: String,
    /// `<home>/cache`.
    pub(crate) cache_dir: PathBuf,
    /// Backend settings.
    pub(crate) options: Vec<(String, String)>,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// A URL from what the caller wrote: a plain path means a local directory store.
fn as_url(s: &str) -> Result<String, String> {
    if s.contains("://") {
        return Ok(s.to_owned());
    }
    let abs =
        std::path::absolute(Path::new(s)).map_err(|e| format!("cannot make {s} absolute: {e}"))?;
    Ok(format!("file://{}", abs.display()))
}

/// Finds the store to open (see the module docs). Errors are messages for `InvalidInput`.
pub(crate) fn target(
    url: Option<&str>,
    context: Option<&str>,
    home: Option<&str>,
    author: Option<&str>,
    options: Vec<(String, String)>,
) -> Result<Target, String> {
    let home = match home.map(str::to_owned).or_else(|| env("DATAMON_HOME")) {
        Some(h) => PathBuf::from(h),
        None => PathBuf::from(env("HOME").ok_or("HOME is not set: set DATAMON_HOME or home=")?)
            .join(".datamon"),
    };
    let home = std::path::absolute(&home)
        .map_err(|e| format!("cannot make {} absolute: {e}", home.display()))?;
    let config_path = home.join("config.toml");
    let config: Config = match std::fs::read_to_string(&config_path) {
        Ok(s) => toml::from_str(&s)
            .map_err(|e| format!("cannot parse {}: {e}", config_path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Config::default(),
        Err(e) => return Err(format!("cannot read {}: {e}", config_path.display())),
    };
    let direct = url.map(str::to_owned).or_else(|| {
        if context.is_none() {
            env("DATAMON_STORE")
        } else {
            None
        }
    });
    let (url, replica) = match direct {
        Some(u) => (as_url(&u)?, None),
        None => {
            let name = context
                .map(str::to_owned)
                .or_else(|| env("DATAMON_CONTEXT"))
                .or_else(|| config.context.clone())
                .unwrap_or_else(|| DEFAULT_CONTEXT.to_owned());
            match config.contexts.get(&name) {
                Some(c) => (c.store.clone(), c.replica.clone()),
                None if name == DEFAULT_CONTEXT => {
                    (format!("file://{}", home.join("store").display()), None)
                }
                None => {
                    let known: Vec<&str> = config.contexts.keys().map(String::as_str).collect();
                    return Err(format!(
                        "context {name:?} not found in {} (known: {}): create it with `datamon context create`",
                        config_path.display(),
                        if known.is_empty() { "none".to_owned() } else { known.join(", ") }
                    ));
                }
            }
        }
    };
    let mut opts = datamon::cloud_env::store_options();
    for (k, v) in options {
        let k = k.to_ascii_lowercase();
        opts.retain(|(have, _)| *have != k);
        opts.push((k, v));
    }
    let author = author
        .map(str::to_owned)
        .or(config.author)
        .unwrap_or_else(default_author);
    Ok(Target {
        url,
        replica,
        author,
        cache_dir: home.join("cache"),
        options: opts,
    })
}

/// `$USER@host`, as the CLI records it.
fn default_author() -> String {
    let login = env("USER").or_else(|| env("LOGNAME"));
    let user = datamon::exec::capture_user(login);
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    if host.is_empty() {
        user
    } else {
        format!("{user}@{host}")
    }
}
