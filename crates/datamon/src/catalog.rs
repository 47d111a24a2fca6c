//! A local cache of write-once records (run records, bundle records), so that history and
//! lineage queries over many thousands of records cost one listing and a local file read.
//!
//! The cache lives under `<cache dir>/catalog/<store id>/<name>.ndjson`, one `key<TAB>json` line
//! per record. It is never the source of truth: a sync lists the store's keys, takes the records
//! the cache has, fetches the others and appends them. Records are write-once, so a cached record
//! never goes stale; records deleted from the store are dropped because only listed keys count.
//! A damaged or missing cache file only costs a refetch.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::PathBuf;

use futures::{StreamExt, TryStreamExt};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{Datamon, Error, Result};

/// How many records are fetched at once when the cache misses.
const FETCH_CONCURRENCY: usize = 64;

impl Datamon {
    fn catalog_file(&self, name: &str) -> Option<PathBuf> {
        // With a trust list, what is believed can change (a key is removed from it): no copy
        // is kept, every query reads the records.
        if self.store.trust_list().is_some() {
            return None;
        }
        self.cache_dir.as_ref().map(|d| {
            d.join("catalog")
                .join(&self.store.config().id)
                .join(format!("{name}.ndjson"))
        })
    }

    /// All records under `prefix` (keys ending in `.json`), in key order, with their keys.
    pub(crate) async fn sync_records<T>(&self, prefix: &str, name: &str) -> Result<Vec<(String, T)>>
    where
        T: Serialize + DeserializeOwned + Send + 'static,
    {
        let keys: Vec<String> = self
            .store
            .list_names(prefix)
            .await?
            .into_iter()
            .filter(|k| k.ends_with(".json"))
            .collect();
        let file = self.catalog_file(name);
        let mut cached: HashMap<String, T> = match file.clone() {
            Some(f) => tokio::task::spawn_blocking(move || load::<T>(&f)).await?,
            None => HashMap::new(),
        };
        let missing: Vec<&String> = keys.iter().filter(|k| !cached.contains_key(*k)).collect();
        if !missing.is_empty() {
            let fetched: Vec<(String, T)> = futures::stream::iter(missing.into_iter().map(|k| {
                let k = k.clone();
                async move {
                    match self.store.get_json::<T>(&k).await {
                        Ok(v) => Ok(Some((k, v))),
                        // Removed meanwhile, or ignored by the trust list.
                        Err(datamon_store::Error::NotFound { .. }) => Ok(None),
                        Err(e) => Err(Error::from(e)),
                    }
                }
            }))
            .buffer_unordered(FETCH_CONCURRENCY)
            .try_collect::<Vec<Option<(String, T)>>>()
            .await?
            .into_iter()
            .flatten()
            .collect();
            if let Some(f) = file {
                let mut lines = String::new();
                for (k, v) in &fetched {
                    let json = serde_json::to_string(v).expect("records always serialize");
                    lines.push_str(k);
                    lines.push('\t');
                    lines.push_str(&json);
                    lines.push('\n');
                }
                // A cache that cannot be written only makes the next query slower.
                let r = tokio::task::spawn_blocking(move || append(&f, lines.as_bytes())).await?;
                if let Err(e) = r {
                    tracing::warn!("cannot update the local catalog cache: {e}");
                }
            }
            cached.extend(fetched);
        }
        Ok(keys
            .into_iter()
            .filter_map(|k| cached.remove(&k).map(|v| (k, v)))
            .collect())
    }
}

impl Datamon {
    /// As [`Datamon::sync_records`], for callers that parse only what they need: every record
    /// as its compact JSON text, with what `prepare` made of it. `prepare` runs over the
    /// cached lines while the store is being listed (a line it makes nothing of is read again
    /// from the store, as a damaged one), then over the records fetched, which are checked as
    /// a `T` first (one `prepare` still makes nothing of is left out).
    pub(crate) async fn sync_prepared<T, P, F>(
        &self,
        prefix: &str,
        name: &str,
        prepare: F,
    ) -> Result<Vec<(String, String, P)>>
    where
        T: Serialize + DeserializeOwned + Send + 'static,
        P: Send + 'static,
        F: Fn(&[(String, String)]) -> Vec<Option<P>> + Send + Sync + 'static,
    {
        let prepare = std::sync::Arc::new(prepare);
        let file = self.catalog_file(name);
        let listing = async {
            Ok::<_, Error>(
                self.store
                    .list_names(prefix)
                    .await?
                    .into_iter()
                    .filter(|k| k.ends_with(".json"))
                    .collect::<Vec<String>>(),
            )
        };
        let reading = {
            let (file, prepare) = (file.clone(), prepare.clone());
            async move {
                let Some(f) = file else {
                    return Ok::<_, Error>(HashMap::new());
                };
                Ok(tokio::task::spawn_blocking(move || {
                    let lines = load_lines(&f);
                    let prepared = prepare(&lines);
                    lines
                        .into_iter()
                        .zip(prepared)
                        .filter_map(|((k, json), p)| Some((k, (json, p?))))
                        .collect::<HashMap<String, (String, P)>>()
                })
                .await?)
            }
        };
        let (keys, mut cached) = futures::try_join!(listing, reading)?;
        let missing: Vec<&String> = keys.iter().filter(|k| !cached.contains_key(*k)).collect();
        if !missing.is_empty() {
            let fetched: Vec<(String, String)> =
                futures::stream::iter(missing.into_iter().map(|k| {
                    let k = k.clone();
                    async move {
                        match self.store.get_json::<T>(&k).await {
                            Ok(v) => {
                                let json =
                                    serde_json::to_string(&v).expect("records always serialize");
                                Ok(Some((k, json)))
                            }
                            // Removed meanwhile, or ignored by the trust list.
                            Err(datamon_store::Error::NotFound { .. }) => Ok(None),
                            Err(e) => Err(Error::from(e)),
                        }
                    }
                }))
                .buffer_unordered(FETCH_CONCURRENCY)
                .try_collect::<Vec<Option<(String, String)>>>()
                .await?
                .into_iter()
                .flatten()
                .collect();
            if let Some(f) = file {
                let mut lines = String::new();
                for (k, json) in &fetched {
                    lines.push_str(k);
                    lines.push('\t');
                    lines.push_str(json);
                    lines.push('\n');
                }
                let r = tokio::task::spawn_blocking(move || append(&f, lines.as_bytes())).await?;
                if let Err(e) = r {
                    tracing::warn!("cannot update the local catalog cache: {e}");
                }
            }
            let prepared = prepare(&fetched);
            for ((k, json), p) in fetched.into_iter().zip(prepared) {
                match p {
                    Some(p) => {
                        cached.insert(k, (json, p));
                    }
                    None => tracing::warn!("{k}: not a record this query can read; left out"),
                }
            }
        }
        Ok(keys
            .into_iter()
            .filter_map(|k| cached.remove(&k).map(|(json, p)| (k, json, p)))
            .collect())
    }
}

/// The cached lines as (key, JSON text), unparsed, in file order.
fn load_lines(path: &std::path::Path) -> Vec<(String, String)> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|line| {
            let (k, json) = line.split_once('\t')?;
            Some((k.to_owned(), json.to_owned()))
        })
        .collect()
}

fn load<T: DeserializeOwned>(path: &std::path::Path) -> HashMap<String, T> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return HashMap::new();
    };
    text.lines()
        .filter_map(|line| {
            let (k, json) = line.split_once('\t')?;
            Some((k.to_owned(), serde_json::from_str(json).ok()?))
        })
        .collect()
}

fn append(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    // One write per batch: concurrent appenders interleave whole batches, and a torn last line
    // is skipped when read.
    f.write_all(bytes)
}
