//! Rendering: human lines or JSON on stdout. Writes return errors (a closed pipe is not a
//! panic), and `main` turns a broken pipe into exit code 0.
//!
//! JSON views are owned by this crate so that the library's types can change without breaking
//! scripts; their shape is version 1 (see docs/cli-json.md).
//!
//! Listings also take `--format TEMPLATE` (as the original datamon did): a Go-template-like line
//! per item over the fields of the item's JSON view, e.g. `{{.ID}} {{.Message}}`
//! ([`Template`], [`Printer`]; docs/cli-format.md lists each listing's fields).

use std::io::Write;

use anyhow::bail;
use chrono::{DateTime, TimeZone, Utc};
use datamon::{Bundle, BundleId, BundleSelector, LabelRecord, Repo};
use serde::Serialize;
use serde_json::Value;

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

/// `bundle list files` (one per file or symlink).
#[derive(Serialize)]
pub struct FileView<'a> {
    pub path: &'a str,
    #[serde(rename = "type")]
    pub kind: datamon::types::EntryKind,
    pub size: u64,
    pub hash: Option<String>,
    pub mode: String,
    pub mtime: String,
}

impl<'a> From<&'a datamon::FileInfo> for FileView<'a> {
    fn from(f: &'a datamon::FileInfo) -> Self {
        FileView {
            path: &f.path,
            kind: f.kind,
            size: f.size,
            hash: f.hash.map(|h| h.to_hex()),
            mode: format!("{:04o}", f.mode),
            mtime: time_ns(f.mtime_ns),
        }
    }
}

pub fn file_line(f: &FileView) -> String {
    format!(
        "{} , {} , {}",
        f.path,
        f.size,
        f.hash.as_deref().unwrap_or("-")
    )
}

/// `branch create/list`.
#[derive(Serialize)]
pub struct BranchView {
    pub name: String,
    pub head: Option<String>,
    pub updates: u64,
}

impl From<&datamon::Branch> for BranchView {
    fn from(b: &datamon::Branch) -> Self {
        BranchView {
            name: b.name.to_string(),
            head: b.head.map(|i| i.to_string()),
            updates: b.updates,
        }
    }
}

pub fn branch_line(b: &BranchView) -> String {
    format!(
        "{} , {} , {}",
        b.name,
        b.head.as_deref().unwrap_or("-"),
        b.updates
    )
}

/// `context create/list/get`.
#[derive(Serialize)]
pub struct ContextView<'a> {
    pub name: &'a str,
    pub store: &'a str,
    pub current: bool,
    pub description: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replica: Option<&'a str>,
}

pub fn context_line(c: &ContextView) -> String {
    let mark = if c.current { "*" } else { " " };
    match c.replica {
        Some(r) => format!("{mark} {} , {} , replica {r}", c.name, c.store),
        None => format!("{mark} {} , {}", c.name, c.store),
    }
}

/// `repo get/list --with-size`: the repo's view plus its `size`.
#[derive(Serialize)]
pub struct RepoWithSizeView<'a> {
    #[serde(flatten)]
    pub repo: RepoView<'a>,
    pub size: RepoSizeView,
}

/// The size of a repo (`--with-size`).
#[derive(Serialize)]
pub struct RepoSizeView {
    /// How many bundles the repo has.
    pub bundles: u64,
    /// Its latest bundle, if any.
    pub latest_bundle: Option<String>,
    /// Files in the latest bundle.
    pub files: u64,
    /// Logical bytes (the files' content) of the latest bundle.
    pub bytes: u64,
    /// Logical bytes of all its bundles added up (what the original datamon called the grand
    /// total).
    pub total_bytes: u64,
    /// Bytes its uploads added to the store, after deduplication and compression.
    pub stored_bytes: u64,
}

impl RepoSizeView {
    /// The size of a repo from its bundles, oldest first.
    pub fn of(bundles: &[Bundle]) -> RepoSizeView {
        let latest = bundles.last();
        RepoSizeView {
            bundles: bundles.len() as u64,
            latest_bundle: latest.map(|b| b.id.to_string()),
            files: latest.map_or(0, |b| b.stats.files),
            bytes: latest.map_or(0, |b| b.stats.bytes),
            total_bytes: bundles.iter().map(|b| b.stats.bytes).sum(),
            stored_bytes: bundles.iter().map(|b| b.stats.stored_bytes).sum(),
        }
    }
}

/// Says on stderr which bundle a name (latest, a label, a branch) resolved to, as the original
/// datamon did: `Using bundle: <ID>`. Nothing for an explicit `--bundle ID`, or when `quiet`
/// (`--quiet`, `--json`).
pub fn using_bundle(quiet: bool, sel: &BundleSelector, id: &BundleId) {
    if !quiet && !matches!(sel, BundleSelector::Id(_)) {
        eprintln!("Using bundle: {id}");
    }
}

// ---------------------------------------------------------------------------------------------
// `--format`: Go-template-like lines over the fields of the JSON views.

/// The `--format` option of listings.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct FormatArg {
    /// Print each item through this template instead: text and `{{.FIELD}}` references to the
    /// fields of its --json view, in any case, `_` optional (e.g. '{{.ID}} {{.CreatedAt}}');
    /// `{{.meta.KEY}}` reaches into objects, `{{.}}` is the whole item as JSON
    #[arg(long, value_name = "TEMPLATE")]
    pub format: Option<String>,
}

impl FormatArg {
    /// The printer for items with `fields`; fails on a template that names a field they lack.
    pub fn printer(&self, json: bool, fields: &Fields) -> anyhow::Result<Printer> {
        Ok(Printer {
            json,
            template: self
                .format
                .as_deref()
                .map(|f| Template::parse(f, fields))
                .transpose()?,
        })
    }
}

/// The fields a `--format` template may name: those of one JSON view, and the names the
/// original datamon's templates used for them (`Timestamp`, `BundleID`...).
pub struct Fields {
    /// The view's JSON field names.
    pub names: &'static [&'static str],
    /// (original name, normalized: lowercase without `_`) -> the view's field.
    pub aliases: &'static [(&'static str, &'static str)],
}

pub const REPO_FIELDS: Fields = Fields {
    names: &["name", "description", "created_at", "created_by"],
    aliases: &[("timestamp", "created_at"), ("contributor", "created_by")],
};

pub const REPO_SIZE_FIELDS: Fields = Fields {
    names: &["name", "description", "created_at", "created_by", "size"],
    aliases: REPO_FIELDS.aliases,
};

pub const BUNDLE_FIELDS: Fields = Fields {
    names: &[
        "id",
        "repo",
        "message",
        "author",
        "created_at",
        "parents",
        "branch",
        "root",
        "files",
        "dirs",
        "symlinks",
        "bytes",
        "new_bytes",
        "stored_bytes",
        "meta",
    ],
    aliases: &[
        ("timestamp", "created_at"),
        ("contributors", "author"),
        ("contributor", "author"),
    ],
};

pub const FILE_FIELDS: Fields = Fields {
    names: &["path", "type", "size", "hash", "mode", "mtime"],
    aliases: &[("name", "path"), ("kind", "type")],
};

pub const LABEL_FIELDS: Fields = Fields {
    names: &["name", "bundle", "previous", "author", "time"],
    aliases: &[
        ("bundleid", "bundle"),
        ("timestamp", "time"),
        ("contributors", "author"),
        ("contributor", "author"),
    ],
};

pub const BRANCH_FIELDS: Fields = Fields {
    names: &["name", "head", "updates"],
    aliases: &[],
};

pub const CONTEXT_FIELDS: Fields = Fields {
    names: &["name", "store", "current", "description", "replica"],
    aliases: &[("blob", "store")],
};

/// Lowercase, without `_` and `-`: `CreatedAt`, `created_at` and `createdAt` are one name.
fn normalize(name: &str) -> String {
    name.chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

impl Fields {
    fn resolve(&self, name: &str) -> Option<&'static str> {
        let n = normalize(name);
        self.names
            .iter()
            .copied()
            .find(|f| normalize(f) == n)
            .or_else(|| {
                self.aliases
                    .iter()
                    .find(|(alias, _)| *alias == n)
                    .map(|(_, f)| *f)
            })
    }
}

/// One piece of a parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    /// `{{.}}`: the whole item, as JSON.
    Item,
    /// `{{.Field.key...}}`: a field of the view, then keys into it.
    Field(&'static str, Vec<String>),
}

/// A parsed `--format` template: text and `{{.Field}}` actions, the subset of Go's
/// text/template that selects fields (`{{- ` and ` -}}` trim spaces as in Go).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

impl Template {
    /// Parses `src` for items with `fields`.
    ///
    /// # Errors
    /// An unknown field (the message lists the valid ones), an action other than a field
    /// reference, an unclosed `{{`.
    pub fn parse(src: &str, fields: &Fields) -> anyhow::Result<Template> {
        let mut parts = Vec::new();
        let mut rest = src;
        let mut trim_start = false;
        loop {
            let (text, action) = match rest.find("{{") {
                Some(i) => (&rest[..i], Some(&rest[i + 2..])),
                None => (rest, None),
            };
            let mut text = if trim_start { text.trim_start() } else { text };
            let Some(after) = action else {
                if !text.is_empty() {
                    parts.push(Part::Text(text.to_owned()));
                }
                break;
            };
            let Some(end) = after.find("}}") else {
                bail!(
                    "--format: `{{{{` at byte {} is not closed by `}}}}`",
                    src.len() - after.len() - 2
                );
            };
            let raw = &after[..end];
            rest = &after[end + 2..];
            let mut inner = raw;
            if let Some(s) = inner.strip_prefix('-') {
                if s.starts_with(char::is_whitespace) {
                    text = text.trim_end();
                    inner = s;
                }
            }
            trim_start = false;
            if let Some(s) = inner.strip_suffix('-') {
                if s.ends_with(char::is_whitespace) {
                    trim_start = true;
                    inner = s;
                }
            }
            if !text.is_empty() {
                parts.push(Part::Text(text.to_owned()));
            }
            parts.push(Self::action(raw, inner.trim(), fields)?);
        }
        Ok(Template { parts })
    }

    fn action(raw: &str, inner: &str, fields: &Fields) -> anyhow::Result<Part> {
        if inner == "." {
            return Ok(Part::Item);
        }
        let path = inner.strip_prefix('.').filter(|p| {
            p.split('.').all(|seg| {
                !seg.is_empty() && seg.chars().all(|c| c.is_alphanumeric() || "_-".contains(c))
            })
        });
        let Some(path) = path else {
            bail!(
                "--format: `{{{{{raw}}}}}` is not supported: a template holds text and field \
                 references such as {{{{.ID}}}} only (for more, use --json and a tool such as jq)"
            );
        };
        let mut segs = path.split('.');
        let first = segs.next().expect("split yields at least one piece");
        let Some(field) = fields.resolve(first) else {
            bail!(
                "--format: unknown field `{first}` in `{{{{{raw}}}}}`; the fields are: {} \
                 (in any case, `_` optional: {{{{.CreatedAt}}}} is created_at)",
                fields.names.join(", ")
            );
        };
        Ok(Part::Field(field, segs.map(str::to_owned).collect()))
    }

    /// The line for one item (its JSON view as a value).
    pub fn render(&self, item: &Value) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Item => out.push_str(&item.to_string()),
                Part::Field(name, path) => {
                    let mut v = item.get(*name);
                    for key in path {
                        v = v.and_then(|v| lookup(v, key));
                    }
                    if let Some(v) = v {
                        write_value(&mut out, v);
                    }
                }
            }
        }
        out
    }
}

/// `v[key]` for an object: the exact key, else one equal after [`normalize`].
fn lookup<'v>(v: &'v Value, key: &str) -> Option<&'v Value> {
    let o = v.as_object()?;
    o.get(key).or_else(|| {
        let n = normalize(key);
        o.iter().find(|(k, _)| normalize(k) == n).map(|(_, v)| v)
    })
}

/// A value as Go's templates print it: strings bare, lists `[a b]`, maps `map[k:v]`; null as
/// nothing.
fn write_value(out: &mut String, v: &Value) {
    match v {
        Value::Null => {}
        Value::String(s) => out.push_str(s),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                write_value(out, x);
            }
            out.push(']');
        }
        Value::Object(o) => {
            out.push_str("map[");
            for (i, (k, x)) in o.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                out.push_str(k);
                out.push(':');
                write_value(out, x);
            }
            out.push(']');
        }
    }
}

/// Prints the items of one command: through the `--format` template when there is one, else
/// as JSON with `--json`, else as the command's text line.
pub struct Printer {
    json: bool,
    template: Option<Template>,
}

impl Printer {
    /// Prints one item.
    pub fn item<T: Serialize>(&self, v: &T, text: impl FnOnce() -> String) -> anyhow::Result<()> {
        match &self.template {
            Some(t) => line(t.render(&serde_json::to_value(v)?)),
            None => result(self.json, v, text),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    fn keys<T: Serialize>(v: &T) -> BTreeSet<String> {
        serde_json::to_value(v)
            .expect("a view serializes")
            .as_object()
            .expect("a view is an object")
            .keys()
            .cloned()
            .collect()
    }

    fn names(f: &Fields) -> BTreeSet<String> {
        f.names.iter().map(|s| (*s).to_owned()).collect()
    }

    fn sample_bundle(meta: BTreeMap<String, String>) -> Bundle {
        Bundle {
            id: BundleId::generate(),
            repo: "r".parse().expect("valid repo name"),
            parents: vec![BundleId::generate()],
            branch: Some("main".parse().expect("valid branch name")),
            message: "first cut".into(),
            author: "ada".into(),
            created_at: Utc::now(),
            root: datamon::types::Hash::of(b"root"),
            stats: datamon::types::BundleStats {
                files: 3,
                bytes: 1234,
                ..Default::default()
            },
            meta,
        }
    }

    /// Every field list is exactly the keys of its view (with every optional field present).
    #[test]
    fn format_fields_are_the_json_fields() {
        let repo = Repo {
            name: "r".parse().expect("valid repo name"),
            description: "d".into(),
            created_at: Utc::now(),
            created_by: "ada".into(),
        };
        assert_eq!(keys(&RepoView::from(&repo)), names(&REPO_FIELDS));
        let with_size = RepoWithSizeView {
            repo: RepoView::from(&repo),
            size: RepoSizeView::of(&[]),
        };
        assert_eq!(keys(&with_size), names(&REPO_SIZE_FIELDS));
        let b = sample_bundle(BTreeMap::from([("k".into(), "v".into())]));
        assert_eq!(keys(&BundleView::from(&b)), names(&BUNDLE_FIELDS));
        let f = datamon::FileInfo {
            path: "a/b".into(),
            kind: datamon::types::EntryKind::File,
            size: 1,
            hash: Some(datamon::types::Hash::of(b"x")),
            mode: 0o644,
            mtime_ns: 0,
        };
        assert_eq!(keys(&FileView::from(&f)), names(&FILE_FIELDS));
        let l = LabelRecord {
            bundle: b.id,
            previous: None,
            author: "ada".into(),
            time: Utc::now(),
        };
        assert_eq!(keys(&LabelView::new("l", &l)), names(&LABEL_FIELDS));
        let br = BranchView {
            name: "main".into(),
            head: None,
            updates: 1,
        };
        assert_eq!(keys(&br), names(&BRANCH_FIELDS));
        let c = ContextView {
            name: "dev",
            store: "file:///x",
            current: true,
            description: None,
            replica: Some("file:///y"),
        };
        assert_eq!(keys(&c), names(&CONTEXT_FIELDS));
        for f in [
            &REPO_FIELDS,
            &REPO_SIZE_FIELDS,
            &BUNDLE_FIELDS,
            &FILE_FIELDS,
            &LABEL_FIELDS,
            &BRANCH_FIELDS,
            &CONTEXT_FIELDS,
        ] {
            for (alias, target) in f.aliases {
                assert_eq!(normalize(alias), *alias, "aliases are stored normalized");
                assert!(f.names.contains(target), "{alias} -> {target}");
            }
        }
    }

    fn render(src: &str, fields: &Fields, item: &Value) -> String {
        Template::parse(src, fields)
            .unwrap_or_else(|e| panic!("{src:?}: {e:#}"))
            .render(item)
    }

    #[test]
    fn format_renders_fields_like_go_templates() {
        let b = sample_bundle(BTreeMap::from([("team".into(), "vision".into())]));
        let v = serde_json::to_value(BundleView::from(&b)).expect("serializes");
        let f = &BUNDLE_FIELDS;
        assert_eq!(
            render("{{.ID}} , {{.Message}}", f, &v),
            format!("{} , first cut", b.id)
        );
        // Any case, `_` optional, spaces inside the braces, the original's names.
        assert_eq!(
            render("{{ .created_at }}|{{.CreatedAt}}|{{.Timestamp}}", f, &v),
            vec![output_time(&b); 3].join("|")
        );
        assert_eq!(render("{{.files}}/{{.Bytes}}", f, &v), "3/1234");
        assert_eq!(render("{{.Meta.team}}", f, &v), "vision");
        assert_eq!(render("{{.meta}}", f, &v), "map[team:vision]");
        assert_eq!(render("{{.meta.missing}}!", f, &v), "!");
        assert_eq!(render("{{.parents}}", f, &v), format!("[{}]", b.parents[0]));
        assert_eq!(render("no fields", f, &v), "no fields");
        assert_eq!(render("a  {{- .Files -}}  b", f, &v), "a3b");
        assert_eq!(render("{{.}}", f, &v), v.to_string());
        // Null renders as nothing.
        let l = LabelRecord {
            bundle: b.id,
            previous: None,
            author: "ada".into(),
            time: Utc::now(),
        };
        let lv = serde_json::to_value(LabelView::new("prod", &l)).expect("serializes");
        assert_eq!(
            render(
                "{{.Name}}={{.BundleID}} <{{.previous}}>",
                &LABEL_FIELDS,
                &lv
            ),
            format!("prod={} <>", b.id)
        );
    }

    fn output_time(b: &Bundle) -> String {
        time(&b.created_at)
    }

    #[test]
    fn format_errors_name_the_problem() {
        let err = |src: &str| {
            format!(
                "{:#}",
                Template::parse(src, &LABEL_FIELDS).expect_err("must be refused")
            )
        };
        let e = err("{{.ID}} {{.Name}}");
        assert!(e.contains("unknown field `ID`"), "{e}");
        assert!(
            e.contains("name, bundle, previous, author, time"),
            "lists the fields: {e}"
        );
        let e = err("{{printf \"%s\" .Name}}");
        assert!(e.contains("not supported"), "{e}");
        let e = err("{{with .Name}}x{{end}}");
        assert!(e.contains("not supported"), "{e}");
        let e = err("{{.Name");
        assert!(e.contains("not closed"), "{e}");
        let e = err("{{}}");
        assert!(e.contains("not supported"), "{e}");
        let e = err("{{.Name..x}}");
        assert!(e.contains("not supported"), "{e}");
    }
}
