//! Rendering: human lines or JSON on stdout. Writes return errors (a closed pipe is not a
//! panic), and `main` turns a broken pipe into exit code 0.
//!
//! JSON views are owned by this crate so that the library's types can change without breaking
//! scripts; their shape is version 1 (see docs/cli-json.md).

use std::io::Write;

use chrono::{DateTime, TimeZone, Utc};
use datamon::{Bundle, LabelRecord, Repo};
use serde::Serialize;

/// Writes one line to stdout.
pub fn line(s: impl std::fmt::Display) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{s}")?;
    Ok(())
}

/// Writes one JSON value as a line.
pub fn json<T: Serialize>(v: &T) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, v)?;
    writeln!(out)?;
    Ok(())
}

/// One result: a JSON line with `--json` (`json`), else the line `text` makes.
pub fn result<T: Serialize>(
    json: bool,
    v: &T,
    text: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    if json {
        self::json(v)
    } else {
        line(text())
    }
}

pub fn time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

pub fn time_ns(ns: i64) -> String {
    time(&Utc.timestamp_nanos(ns))
}

#[derive(Serialize)]
pub struct RepoView<'a> {
    pub name: &'a str,
    pub description: &'a str,
    pub created_at: String,
    pub created_by: &'a str,
}

impl<'a> From<&'a Repo> for RepoView<'a> {
    fn from(r: &'a Repo) -> Self {
        RepoView {
            name: r.name.as_str(),
            description: &r.description,
            created_at: time(&r.created_at),
            created_by: &r.created_by,
        }
    }
}

pub fn repo_line(r: &Repo) -> String {
    format!(
        "{} , {} , {} , {}",
        r.name,
        r.description,
        r.created_by,
        time(&r.created_at)
    )
}

#[derive(Serialize)]
pub struct BundleView<'a> {
    pub id: String,
    pub repo: &'a str,
    pub message: &'a str,
    pub author: &'a str,
    pub created_at: String,
    pub parents: Vec<String>,
    pub branch: Option<&'a str>,
    pub root: String,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub bytes: u64,
    pub new_bytes: u64,
    pub stored_bytes: u64,
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub meta: &'a std::collections::BTreeMap<String, String>,
}

impl<'a> From<&'a Bundle> for BundleView<'a> {
    fn from(b: &'a Bundle) -> Self {
        BundleView {
            id: b.id.to_string(),
            repo: b.repo.as_str(),
            message: &b.message,
            author: &b.author,
            created_at: time(&b.created_at),
            parents: b.parents.iter().map(ToString::to_string).collect(),
            branch: b.branch.as_ref().map(|b| b.as_str()),
            root: b.root.to_hex(),
            files: b.stats.files,
            dirs: b.stats.dirs,
            symlinks: b.stats.symlinks,
            bytes: b.stats.bytes,
            new_bytes: b.stats.new_bytes,
            stored_bytes: b.stats.stored_bytes,
            meta: &b.meta,
        }
    }
}

pub fn bundle_line(b: &Bundle) -> String {
    format!("{} , {} , {}", b.id, time(&b.created_at), b.message)
}

#[derive(Serialize)]
pub struct LabelView<'a> {
    pub name: &'a str,
    pub bundle: String,
    pub previous: Option<String>,
    pub author: &'a str,
    pub time: String,
}

impl<'a> LabelView<'a> {
    pub fn new(name: &'a str, r: &'a LabelRecord) -> Self {
        LabelView {
            name,
            bundle: r.bundle.to_string(),
            previous: r.previous.map(|p| p.to_string()),
            author: &r.author,
            time: time(&r.time),
        }
    }
}

pub fn label_line(name: &str, r: &LabelRecord) -> String {
    format!("{name} , {} , {} , {}", r.bundle, time(&r.time), r.author)
}
