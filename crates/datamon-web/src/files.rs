//! A bundle's files: directory pages, previews, streamed downloads with `Range`, and diffs
//! between two bundles. File bytes come from the library's read-only [`Vfs`], which verifies
//! every chunk it returns.

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use datamon::types::EntryKind;
use datamon::vfs::{Attr, Vfs, ROOT_INODE};
use datamon::{BundleId, RepoName};
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde_json::{json, Value};

use crate::api::resolve;
use crate::error::{ApiError, ApiResult};
use crate::params::{components, repo_name, Params};
use crate::State as AppState;

/// Bytes of a file shown as text.
const TEXT_PREVIEW: usize = 256 << 10;
/// The largest JSON file pretty-printed.
const JSON_PREVIEW: u64 = 1 << 20;
/// Rows of a CSV/TSV preview.
const TABLE_ROWS: usize = 100;
/// The largest file (each side) of a text diff.
const TEXT_DIFF_MAX: u64 = 256 << 10;
/// Bytes per read of a download.
const READ_SIZE: u32 = 1 << 20;

/// Extensions previewed as images (served inline with their own type). SVG is not among them:
/// it can carry script, so it is shown as text.
const IMAGES: &[(&str, &str)] = &[
    ("png", "image/png"),
    ("jpg", "image/jpeg"),
    ("jpeg", "image/jpeg"),
    ("gif", "image/gif"),
    ("webp", "image/webp"),
    ("bmp", "image/bmp"),
];

/// Runs blocking `Vfs` calls off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::from(datamon::Error::from(e)))?
}

/// Inodes looked up on the way to a path; forgotten when dropped.
struct Looked {
    vfs: Vfs,
    inos: Vec<u64>,
}

impl Drop for Looked {
    fn drop(&mut self) {
        for ino in self.inos.drain(..).rev() {
            self.vfs.forget(ino, 1);
        }
    }
}

/// The entry at `comps` (the root for none); `None` when the bundle has no such path.
fn walk(vfs: &Vfs, comps: &[String]) -> ApiResult<Option<(Attr, Looked)>> {
    let mut attr = vfs.getattr(ROOT_INODE)?;
    let mut looked = Looked {
        vfs: vfs.clone(),
        inos: Vec::new(),
    };
    for c in comps {
        if attr.kind != EntryKind::Dir {
            return Ok(None);
        }
        match vfs.lookup_blocking(attr.ino, c)? {
            Some(a) => {
                looked.inos.push(a.ino);
                attr = a;
            }
            None => return Ok(None),
        }
    }
    Ok(Some((attr, looked)))
}

fn not_in_bundle(repo: &RepoName, id: BundleId, path: &str) -> ApiError {
    ApiError::from(datamon::Error::PathNotInBundle {
        repo: repo.to_string(),
        id,
        path: path.to_owned(),
    })
}

fn kind_str(k: EntryKind) -> &'static str {
    match k {
        EntryKind::File => "file",
        EntryKind::Dir => "dir",
        EntryKind::Symlink => "symlink",
    }
}

fn time_of(ns: i64) -> Value {
    json!(chrono::DateTime::from_timestamp_nanos(ns))
}

fn entry_view(name: &str, a: &Attr) -> Value {
    json!({
        "name": name,
        "kind": kind_str(a.kind),
        "size": a.size,
        "mode": a.mode,
        "mtime": time_of(a.mtime_ns),
    })
}

/// The parts of a request about one path of one bundle.
struct Target {
    repo: RepoName,
    id: BundleId,
    vfs: Vfs,
    path: String,
    comps: Vec<String>,
}

async fn target(state: &AppState, repo: &str, id: &str, p: &Params) -> ApiResult<Target> {
    let repo = repo_name(repo)?;
    let path = p.get("path").unwrap_or_default().to_owned();
    let comps: Vec<String> = components(&path)?.into_iter().map(str::to_owned).collect();
    let id = resolve(state, &repo, id).await?;
    let vfs = state.vfs(&repo, &id).await?;
    Ok(Target {
        repo,
        id,
        vfs,
        path: comps.join("/"),
        comps,
    })
}

/// `GET /repos/{repo}/bundles/{id}/tree?path&offset&limit`: a directory page, or one entry.
pub(crate) async fn tree(
    State(state): State<AppState>,
    Path((repo, id)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<Value>> {
    let p = Params::parse(q.as_deref())?;
    let (offset, limit) = (p.offset()?, p.limit(200)?);
    let t = target(&state, &repo, &id, &p).await?;
    let body = blocking(move || {
        let Some((attr, _looked)) = walk(&t.vfs, &t.comps)? else {
            return Err(not_in_bundle(&t.repo, t.id, &t.path));
        };
        let mut v = entry_view(t.comps.last().map_or("", String::as_str), &attr);
        v["path"] = json!(t.path);
        v["bundle"] = json!(t.id);
        match attr.kind {
            EntryKind::Dir => {
                let mut total = 0usize;
                t.vfs.readdir_blocking(attr.ino, 0, |_, _| {
                    total += 1;
                    false
                })?;
                let mut entries = Vec::new();
                let mut taken = Vec::new();
                t.vfs
                    .readdir_plus_blocking(attr.ino, offset, |_, name, a| {
                        if entries.len() >= limit {
                            return true;
                        }
                        entries.push(entry_view(name, &a));
                        taken.push(a.ino);
                        false
                    })?;
                for ino in taken {
                    t.vfs.forget(ino, 1);
                }
                let end = offset + entries.len();
                v["total"] = json!(total);
                v["offset"] = json!(offset);
                v["next_offset"] = json!((end < total).then_some(end));
                v["entries"] = json!(entries);
            }
            EntryKind::Symlink => v["target"] = json!(t.vfs.readlink(attr.ino)?),
            EntryKind::File => {}
        }
        Ok(v)
    })
    .await?;
    Ok(Json(body))
}

/// Reads at most `max` bytes from the start of file `ino`.
fn read_prefix(vfs: &Vfs, ino: u64, max: u64) -> ApiResult<Vec<u8>> {
    let fh = vfs.open_blocking(ino)?;
    let r = read_span(vfs, fh, 0, max);
    vfs.release(fh);
    Ok(r?)
}

/// Up to `len` bytes of open file `fh` from `offset`, fewer at its end.
pub(crate) fn read_span(vfs: &Vfs, fh: u64, offset: u64, len: u64) -> datamon::Result<Vec<u8>> {
    let mut out = Vec::new();
    while (out.len() as u64) < len {
        let want = (len - out.len() as u64).min(u64::from(READ_SIZE)) as u32;
        let b = vfs.read_blocking(fh, offset + out.len() as u64, want)?;
        if b.is_empty() {
            break;
        }
        out.extend_from_slice(&b);
    }
    Ok(out)
}

/// The bytes as text: `None` for binary data (a NUL, or invalid UTF-8 before a cut at `max`).
fn as_text(bytes: &[u8], truncated: bool) -> Option<&str> {
    if bytes.contains(&0) {
        return None;
    }
    match std::str::from_utf8(bytes) {
        Ok(s) => Some(s),
        // A multi-byte character cut by the preview limit.
        Err(e) if truncated && e.error_len().is_none() => {
            Some(std::str::from_utf8(&bytes[..e.valid_up_to()]).expect("valid up to here"))
        }
        Err(_) => None,
    }
}

/// Splits delimited text into rows (quotes as in RFC 4180), at most `max_rows`.
fn table(text: &str, delim: char, max_rows: usize) -> (Vec<Vec<String>>, bool) {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    field.push('"');
                    chars.next();
                }
                '"' => quoted = false,
                c => field.push(c),
            }
            continue;
        }
        match c {
            '"' if field.is_empty() => quoted = true,
            c if c == delim => row.push(std::mem::take(&mut field)),
            '\r' => {}
            '\n' => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
                if rows.len() >= max_rows {
                    return (rows, chars.peek().is_some());
                }
            }
            c => field.push(c),
        }
    }
    if !field.is_empty() || !row.is_empty() {
        row.push(field);
        rows.push(row);
    }
    (rows, false)
}

fn extension(path: &str) -> String {
    let name = path.rsplit('/').next().unwrap_or_default();
    name.rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default()
}

fn image_type(path: &str) -> Option<&'static str> {
    let ext = extension(path);
    IMAGES.iter().find(|(e, _)| *e == ext).map(|(_, t)| *t)
}

/// `GET /repos/{repo}/bundles/{id}/preview?path`: what the UI shows for a file.
pub(crate) async fn preview(
    State(state): State<AppState>,
    Path((repo, id)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<Value>> {
    let p = Params::parse(q.as_deref())?;
    let t = target(&state, &repo, &id, &p).await?;
    let body = blocking(move || {
        let Some((attr, _looked)) = walk(&t.vfs, &t.comps)? else {
            return Err(not_in_bundle(&t.repo, t.id, &t.path));
        };
        let mut v = entry_view(t.comps.last().map_or("", String::as_str), &attr);
        v["path"] = json!(t.path);
        match attr.kind {
            EntryKind::Dir => {
                v["preview"] = json!("dir");
                return Ok(v);
            }
            EntryKind::Symlink => {
                v["preview"] = json!("symlink");
                v["target"] = json!(t.vfs.readlink(attr.ino)?);
                return Ok(v);
            }
            EntryKind::File => {}
        }
        let ext = extension(&t.path);
        if let Some(mime) = image_type(&t.path) {
            v["preview"] = json!("image");
            v["mime"] = json!(mime);
            return Ok(v);
        }
        if ext == "parquet" {
            let p = crate::parquet::preview(&t.vfs, attr.ino, attr.size, TABLE_ROWS)?;
            if let (Value::Object(v), Value::Object(p)) = (&mut v, p) {
                v.extend(p);
            }
            return Ok(v);
        }
        let max = if ext == "json" && attr.size <= JSON_PREVIEW {
            JSON_PREVIEW
        } else {
            TEXT_PREVIEW as u64
        };
        let bytes = read_prefix(&t.vfs, attr.ino, max)?;
        let truncated = (bytes.len() as u64) < attr.size;
        let Some(text) = as_text(&bytes, truncated) else {
            v["preview"] = json!("binary");
            return Ok(v);
        };
        v["truncated"] = json!(truncated);
        match ext.as_str() {
            "csv" | "tsv" => {
                let delim = if ext == "tsv" { '\t' } else { ',' };
                let (rows, more) = table(text, delim, TABLE_ROWS);
                v["preview"] = json!("table");
                v["rows"] = json!(rows);
                v["truncated"] = json!(truncated || more);
            }
            "json" if !truncated => match serde_json::from_str::<Value>(text) {
                Ok(parsed) => {
                    v["preview"] = json!("json");
                    v["text"] =
                        json!(serde_json::to_string_pretty(&parsed)
                            .expect("a parsed value serializes"));
                }
                Err(_) => {
                    v["preview"] = json!("text");
                    v["text"] = json!(text);
                }
            },
            _ => {
                v["preview"] = json!("text");
                v["text"] = json!(text);
            }
        }
        Ok(v)
    })
    .await?;
    Ok(Json(body))
}

/// The one range of a `Range: bytes=...` header: `Ok(None)` to serve the whole file (no
/// header, or several ranges), `Err(())` when unsatisfiable.
#[allow(clippy::result_unit_err)]
pub(crate) fn parse_range(h: Option<&str>, size: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(spec) = h.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let (a, b) = (a.trim(), b.trim());
    let (start, end) = if a.is_empty() {
        let n: u64 = b.parse().map_err(|_| ())?;
        if n == 0 {
            return Err(());
        }
        (size.saturating_sub(n), size.checked_sub(1).ok_or(())?)
    } else {
        let start: u64 = a.parse().map_err(|_| ())?;
        let end = if b.is_empty() {
            size.saturating_sub(1)
        } else {
            b.parse::<u64>()
                .map_err(|_| ())?
                .min(size.saturating_sub(1))
        };
        (start, end)
    };
    if start >= size || end < start {
        return Err(());
    }
    Ok(Some((start, end)))
}

fn disposition(kind: &str, path: &str) -> HeaderValue {
    let name = path.rsplit('/').next().unwrap_or("file");
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || ".-_".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let encoded = utf8_percent_encode(name, NON_ALPHANUMERIC);
    HeaderValue::from_str(&format!(
        "{kind}; filename=\"{ascii}\"; filename*=UTF-8''{encoded}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("attachment"))
}

/// `GET /repos/{repo}/bundles/{id}/raw?path[&inline=1]`: the file's bytes, streamed, with
/// `Range` support. Served as a download, except images with `inline=1`.
pub(crate) async fn raw(
    State(state): State<AppState>,
    Path((repo, id)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let p = Params::parse(q.as_deref())?;
    let inline = p.get("inline").is_some_and(|v| v == "1" || v == "true");
    let t = target(&state, &repo, &id, &p).await?;
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let vfs = t.vfs.clone();
    let (attr, looked) = {
        let (vfs, comps) = (t.vfs.clone(), t.comps.clone());
        blocking(move || walk(&vfs, &comps)).await?
    }
    .ok_or_else(|| not_in_bundle(&t.repo, t.id, &t.path))?;
    if attr.kind != EntryKind::File {
        return Err(ApiError::bad(format!("{:?} is not a file", t.path)));
    }
    let size = attr.size;
    let (start, end, status) = match parse_range(range.as_deref(), size) {
        Ok(Some((s, e))) => (s, e + 1, StatusCode::PARTIAL_CONTENT),
        Ok(None) => (0, size, StatusCode::OK),
        Err(()) => {
            let mut r = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
            r.headers_mut().insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{size}")).expect("ascii"),
            );
            return Ok(r);
        }
    };
    let fh = {
        let vfs = vfs.clone();
        let ino = attr.ino;
        blocking(move || Ok(vfs.open_blocking(ino)?)).await?
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::task::spawn_blocking(move || {
        let _looked = looked;
        let mut at = start;
        while at < end {
            let want = (end - at).min(u64::from(READ_SIZE)) as u32;
            let item = match vfs.read_blocking(fh, at, want) {
                Ok(b) if b.is_empty() => Err(std::io::Error::other("the file ended early")),
                Ok(b) => Ok(b),
                Err(e) => {
                    tracing::warn!("download failed: {e}");
                    Err(std::io::Error::other(e.to_string()))
                }
            };
            let failed = item.is_err();
            at += item.as_ref().map_or(0, |b| b.len() as u64);
            // The client went away, or the stream ends in an error (the connection is cut, so
            // the client never takes a short body for the whole file).
            if tx.blocking_send(item).is_err() || failed {
                break;
            }
        }
        vfs.release(fh);
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let mut r = Response::new(Body::from_stream(stream));
    *r.status_mut() = status;
    let h = r.headers_mut();
    let mime = image_type(&t.path).filter(|_| inline);
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(mime.unwrap_or("application/octet-stream")),
    );
    h.insert(
        header::CONTENT_DISPOSITION,
        disposition(
            if mime.is_some() {
                "inline"
            } else {
                "attachment"
            },
            &t.path,
        ),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    // Bundles are immutable: a bundle id's bytes never change.
    let cache = if t.id.to_string() == id {
        "private, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox; default-src 'none'"),
    );
    if status == StatusCode::PARTIAL_CONTENT {
        h.insert(
            header::CONTENT_RANGE,
            HeaderValue::from_str(&format!("bytes {start}-{}/{size}", end - 1)).expect("ascii"),
        );
    }
    Ok(r)
}

/// `GET /repos/{repo}/diff?a&b&offset&limit`: what changed from `a` to `b`, with sizes.
pub(crate) async fn diff(
    State(state): State<AppState>,
    Path(repo): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<Value>> {
    let p = Params::parse(q.as_deref())?;
    let (offset, limit) = (p.offset()?, p.limit(500)?);
    let name = repo_name(&repo)?;
    let a = resolve(&state, &name, p.required("a")?).await?;
    let b = resolve(&state, &name, p.required("b")?).await?;
    let changes = state.dm.diff_bundles(&name, &a, &b).await?;
    let total = changes.len();
    let page: Vec<datamon::Change> = changes.into_iter().skip(offset).take(limit).collect();
    let (va, vb) = (state.vfs(&name, &a).await?, state.vfs(&name, &b).await?);
    let rows = blocking(move || {
        let side = |vfs: &Vfs, path: &str| -> ApiResult<Value> {
            let comps: Vec<String> = components(path)?.into_iter().map(str::to_owned).collect();
            Ok(match walk(vfs, &comps)? {
                Some((attr, _looked)) => {
                    json!({ "kind": kind_str(attr.kind), "size": attr.size, "mode": attr.mode })
                }
                None => Value::Null,
            })
        };
        page.iter()
            .map(|c| {
                Ok(json!({
                    "path": c.path,
                    "change": c.kind,
                    "a": side(&va, &c.path)?,
                    "b": side(&vb, &c.path)?,
                }))
            })
            .collect::<ApiResult<Vec<Value>>>()
    })
    .await?;
    let end = offset + rows.len();
    Ok(Json(json!({
        "a": a, "b": b, "total": total, "offset": offset,
        "next_offset": (end < total).then_some(end), "changes": rows,
    })))
}

/// `GET /repos/{repo}/diff/text?a&b&path`: a line diff of one small text file.
pub(crate) async fn text_diff(
    State(state): State<AppState>,
    Path(repo): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<Value>> {
    let p = Params::parse(q.as_deref())?;
    let name = repo_name(&repo)?;
    let path = p.required("path")?.to_owned();
    let comps: Vec<String> = components(&path)?.into_iter().map(str::to_owned).collect();
    let a = resolve(&state, &name, p.required("a")?).await?;
    let b = resolve(&state, &name, p.required("b")?).await?;
    let (va, vb) = (state.vfs(&name, &a).await?, state.vfs(&name, &b).await?);
    let body = blocking(move || {
        // `Some(None)`: a side that is not a small text file.
        let read = |vfs: &Vfs| -> ApiResult<Option<Option<String>>> {
            let Some((attr, _looked)) = walk(vfs, &comps)? else {
                return Ok(None);
            };
            if attr.kind != EntryKind::File || attr.size > TEXT_DIFF_MAX {
                return Ok(Some(None));
            }
            let bytes = read_prefix(vfs, attr.ino, attr.size)?;
            Ok(Some(as_text(&bytes, false).map(str::to_owned)))
        };
        let (ta, tb) = (read(&va)?, read(&vb)?);
        if ta.is_none() && tb.is_none() {
            return Err(ApiError::not_found(format!(
                "{path:?} is in neither bundle"
            )));
        }
        let (Some(ta), Some(tb)) = (
            ta.map_or(Some(String::new()), |t| t),
            tb.map_or(Some(String::new()), |t| t),
        ) else {
            return Ok(json!({ "path": path, "text": false, "lines": [] }));
        };
        let lines: Vec<Value> = crate::textdiff::diff_lines(&ta, &tb)
            .into_iter()
            .map(|(op, line)| json!({ "op": op.to_string(), "text": line }))
            .collect();
        Ok(json!({ "path": path, "text": true, "lines": lines }))
    })
    .await?;
    Ok(Json(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range(None, 10), Ok(None));
        assert_eq!(parse_range(Some("bytes=0-3"), 10), Ok(Some((0, 3))));
        assert_eq!(parse_range(Some("bytes=5-"), 10), Ok(Some((5, 9))));
        assert_eq!(parse_range(Some("bytes=-3"), 10), Ok(Some((7, 9))));
        assert_eq!(parse_range(Some("bytes=8-100"), 10), Ok(Some((8, 9))));
        assert_eq!(parse_range(Some("bytes=0-1,4-5"), 10), Ok(None));
        assert_eq!(parse_range(Some("bytes=10-"), 10), Err(()));
        assert_eq!(parse_range(Some("bytes=5-2"), 10), Err(()));
        assert_eq!(parse_range(Some("bytes=x-"), 10), Err(()));
        assert_eq!(parse_range(Some("bytes=0-"), 0), Err(()));
    }

    #[test]
    fn tables_and_text() {
        let (rows, more) = table("a,b\n\"x,1\",\"say \"\"hi\"\"\"\r\n3,4\n", ',', 2);
        assert_eq!(rows, [vec!["a", "b"], vec!["x,1", "say \"hi\""]]);
        assert!(more);
        assert_eq!(as_text(b"ok", false), Some("ok"));
        assert_eq!(as_text(b"a\0b", false), None);
        assert_eq!(as_text(&"é".as_bytes()[..1], true), Some(""));
        assert_eq!(as_text(&[0xff, 0xfe], false), None);
        assert!(disposition("attachment", "d/<x>\".txt")
            .to_str()
            .unwrap()
            .contains("_x__.txt"));
    }
}
