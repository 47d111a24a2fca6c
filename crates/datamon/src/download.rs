//! Download: a bundle becomes a folder again, exactly (bytes, modes, mtimes, empty directories,
//! symlinks).
//!
//! The chunks of all the files are mapped to the packs that hold them and grouped into range
//! reads across files (`batch`: one read per region of a pack, however many small files it
//! holds); every chunk is decompressed and verified against its hash before it is written. Each
//! file is written under a temporary name beside its final one and renamed only when complete and
//! verified, so a failed or killed download never leaves a half-written file under a real name.

mod batch;

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use datamon_store::{keys, BlobRef, Decoded, Index, Store};
use datamon_types::{BundleId, ChunkRef, Hash, Node, RepoName, TreeEntry};
use regex::Regex;
use serde::Serialize;

use crate::{Datamon, Error, PathRole, Progress, Result, Unit};

/// The most bytes one range read fetches.
pub(crate) const MAX_RUN: u64 = 4 << 20;

/// How to download.
#[derive(Debug, Clone, Default)]
pub struct DownloadOptions {
    /// Restore only files and symlinks whose path matches.
    pub name_filter: Option<Regex>,
    /// Write into a non-empty destination, replacing files that are in the bundle.
    pub force: bool,
}

/// What a download wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DownloadReport {
    /// Regular files written.
    pub files: u64,
    /// Bytes of file content written.
    pub bytes: u64,
    /// Symlinks created.
    pub symlinks: u64,
    /// Directories created.
    pub dirs: u64,
    /// Range reads made from the store (one per planned region of a pack, however many files
    /// it holds; reads repeated from a replica count too).
    pub range_reads: u64,
}

/// Consecutive chunks of one file that lie back to back in one pack: one range read (the
/// mount's reads; downloads plan across files in `batch`).
pub(crate) struct Run {
    pub(crate) pack: Hash,
    pub(crate) start: u64,
    pub(crate) end: u64,
    pub(crate) chunks: Vec<(ChunkRef, BlobRef)>,
}

/// Groups a file's chunks into range reads of at most [`MAX_RUN`] bytes; fails with the first
/// chunk the index does not know.
pub(crate) fn plan_runs(chunks: &[ChunkRef], index: &Index) -> std::result::Result<Vec<Run>, Hash> {
    let mut runs: Vec<Run> = Vec::new();
    for c in chunks {
        let r = index.get(&c.0).ok_or(c.0)?;
        let (start, end) = (
            u64::from(r.offset),
            u64::from(r.offset) + u64::from(r.stored_len),
        );
        match runs.last_mut() {
            Some(last)
                if last.pack == r.pack && last.end == start && end - last.start <= MAX_RUN =>
            {
                last.end = end;
                last.chunks.push((*c, r));
            }
            _ => runs.push(Run {
                pack: r.pack,
                start,
                end,
                chunks: vec![(*c, r)],
            }),
        }
    }
    Ok(runs)
}

/// Removes a temporary file unless disarmed.
struct TempGuard(Option<PathBuf>);
impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// A temporary name beside `path`, short enough whatever the length of `path`'s own name.
fn temp_name(path: &Path) -> PathBuf {
    path.with_file_name(format!(".datamon-tmp-{:016x}", rand::random::<u64>()))
}

/// Clears the way for a file or symlink at `path`: a directory there is removed.
fn clear_for_file(path: &Path) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path).map_err(Error::io(path)),
        _ => Ok(()),
    }
}

pub(crate) fn set_mtime(path: &Path, mtime_ns: i64, symlink: bool) -> Result<()> {
    let t = filetime::FileTime::from_unix_time(
        mtime_ns.div_euclid(1_000_000_000),
        mtime_ns.rem_euclid(1_000_000_000) as u32,
    );
    let r = if symlink {
        filetime::set_symlink_file_times(path, t, t)
    } else {
        filetime::set_file_mtime(path, t)
    };
    r.map_err(Error::io(path))
}

impl Datamon {
    /// Downloads a bundle into `dest`.
    ///
    /// # Errors
    /// [`Error::DestinationNotEmpty`] unless `force`; [`Error::Corrupt`] naming the file whose
    /// data does not verify; a store or local I/O error.
    pub async fn download(
        &self,
        repo: &RepoName,
        id: &BundleId,
        dest: &Path,
        opts: &DownloadOptions,
        progress: &dyn Progress,
    ) -> Result<DownloadReport> {
        check_destination(dest, opts.force)?;
        let (bundle, index) = self.open_bundle(repo, id).await?;
        let mut entries = self.walk(&index, bundle.root).await?;
        if let Some(re) = &opts.name_filter {
            entries.retain(|(p, e)| !matches!(e.node, Node::Dir { .. }) && re.is_match(p));
        }
        std::fs::create_dir_all(dest).map_err(Error::io(dest))?;
        self.restore_entries(&index, dest, &entries, progress).await
    }

    /// Downloads one file (or directory) of a bundle to `dest/<path>`.
    ///
    /// # Errors
    /// [`Error::PathNotInBundle`]; [`Error::DestinationExists`] or [`Error::DestinationConflict`] when the target exists and `force` is not
    /// set; as [`Datamon::download`].
    pub async fn download_file(
        &self,
        repo: &RepoName,
        id: &BundleId,
        path: &str,
        dest: &Path,
        force: bool,
        progress: &dyn Progress,
    ) -> Result<DownloadReport> {
        let (bundle, index) = self.open_bundle(repo, id).await?;
        let clean: String = path
            .split('/')
            .filter(|p| !p.is_empty() && *p != ".")
            .collect::<Vec<_>>()
            .join("/");
        let entry = match self.find_entry(&index, bundle.root, &clean).await? {
            Some(e) if !clean.is_empty() => e,
            _ => {
                return Err(Error::PathNotInBundle {
                    repo: repo.to_string(),
                    id: *id,
                    path: path.to_owned(),
                })
            }
        };
        let target = dest.join(&clean);
        if !force {
            check_parents(dest, &clean)?;
            if std::fs::symlink_metadata(&target).is_ok() {
                return Err(Error::DestinationExists { path: target });
            }
        }
        let mut entries = Vec::new();
        if let Node::Dir { tree } = &entry.node {
            for (p, e) in self.walk(&index, *tree).await? {
                entries.push((format!("{clean}/{p}"), e));
            }
        }
        entries.insert(0, (clean, entry));
        std::fs::create_dir_all(dest).map_err(Error::io(dest))?;
        self.restore_entries(&index, dest, &entries, progress).await
    }

    /// Writes `entries` (paths relative to `dest`, sorted) under `dest`.
    pub(crate) async fn restore_entries(
        &self,
        index: &Index,
        dest: &Path,
        entries: &[(String, TreeEntry)],
        progress: &dyn Progress,
    ) -> Result<DownloadReport> {
        // Directories, symlinks and the places of files: quick local file-system work.
        let Prepared {
            mut report,
            files,
            dirs,
        } = tokio::task::block_in_place(|| prepare(dest, entries))?;
        let plan = batch::plan(files, index)?;
        progress.begin("download", report.bytes, Unit::Bytes);
        report.range_reads =
            batch::execute(&self.store, dest, plan, self.concurrency, progress).await?;
        tracing::debug!(
            files = report.files,
            bytes = report.bytes,
            range_reads = report.range_reads,
            "download written"
        );
        progress.end();
        // Directory modes and mtimes last, deepest first: writing inside a directory changes its
        // mtime, and a read-only mode would forbid the writes.
        tokio::task::block_in_place(|| -> Result<()> {
            for (target, e) in dirs.iter().rev() {
                std::fs::set_permissions(target, std::fs::Permissions::from_mode(e.mode))
                    .map_err(Error::io(target))?;
                set_mtime(target, e.mtime_ns, false)?;
            }
            Ok(())
        })?;
        Ok(report)
    }
}

/// Makes `dest/rel` a real directory, component by component, never following a symlink: a
/// symlink or file in the way is replaced (the bundle says a directory is there), so nothing is
/// ever written outside `dest`. `made` remembers what was already checked, and whether this
/// download created it (so it held nothing before: nothing in it needs a check). `dest` itself
/// is the empty path.
fn ensure_dir(dest: &Path, rel: &str, made: &mut HashMap<String, bool>) -> Result<()> {
    let mut end = 0;
    for part in rel.split('/') {
        end += part.len();
        let sub = &rel[..end];
        let parent = &rel[..end.saturating_sub(part.len() + 1)];
        end += 1;
        if made.contains_key(sub) {
            continue;
        }
        let p = dest.join(sub);
        // In a directory this download created, nothing is in the way.
        let in_fresh = made.get(parent).copied().unwrap_or(false);
        let found = if in_fresh {
            Err(std::io::ErrorKind::NotFound.into())
        } else {
            std::fs::symlink_metadata(&p)
        };
        let fresh = match found {
            Ok(m) if m.is_dir() => {
                remove_stale_temps(&p)?;
                false
            }
            Ok(_) => {
                std::fs::remove_file(&p).map_err(Error::io(&p))?;
                std::fs::create_dir(&p).map_err(Error::io(&p))?;
                true
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir(&p).map_err(Error::io(&p))?;
                true
            }
            Err(e) => return Err(Error::Io { path: p, source: e }),
        };
        made.insert(sub.to_owned(), fresh);
    }
    Ok(())
}

/// Whether the directory holding `path` (relative to the destination) was created by this
/// download, so that nothing can be in the way of `path`.
fn in_fresh_dir(path: &str, made: &HashMap<String, bool>) -> bool {
    let parent = path.rsplit_once('/').map_or("", |(p, _)| p);
    made.get(parent).copied().unwrap_or(false)
}

/// Removes temporary files a killed download left in `dir` (named by [`temp_name`]).
fn remove_stale_temps(dir: &Path) -> Result<()> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let is_temp = name
            .to_str()
            .and_then(|n| n.strip_prefix(".datamon-tmp-"))
            .is_some_and(|rest| rest.len() == 16 && rest.bytes().all(|c| c.is_ascii_hexdigit()));
        if is_temp {
            let p = e.path();
            std::fs::remove_file(&p).map_err(Error::io(&p))?;
        }
    }
    Ok(())
}

/// Fails if a component of `rel`'s parent under `dest` is not a real directory (a symlink could
/// lead outside `dest`).
fn check_parents(dest: &Path, rel: &str) -> Result<()> {
    let mut p = dest.to_owned();
    let parts: Vec<&str> = rel.split('/').collect();
    for part in &parts[..parts.len().saturating_sub(1)] {
        p.push(part);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if !m.is_dir() => return Err(Error::DestinationConflict { path: p }),
            _ => {}
        }
    }
    Ok(())
}

/// What [`prepare`] leaves to do.
struct Prepared<'a> {
    report: DownloadReport,
    /// Files to restore: path in the bundle (and below the destination), entry, chunks.
    files: Vec<(&'a str, &'a TreeEntry, &'a [ChunkRef])>,
    /// Directories whose mode and mtime are set last.
    dirs: Vec<(PathBuf, &'a TreeEntry)>,
}

/// Creates directories and symlinks and clears the way for files.
fn prepare<'a>(dest: &Path, entries: &'a [(String, TreeEntry)]) -> Result<Prepared<'a>> {
    let mut report = DownloadReport::default();
    let mut files = Vec::new();
    let mut dirs = Vec::new();
    let mut made = HashMap::new();
    remove_stale_temps(dest)?;
    // The destination itself counts as created by this download when it is empty.
    let empty = std::fs::read_dir(dest)
        .map_err(Error::io(dest))?
        .next()
        .is_none();
    made.insert(String::new(), empty);
    for (path, e) in entries {
        let target = dest.join(path);
        match &e.node {
            Node::Dir { .. } => {
                ensure_dir(dest, path, &mut made)?;
                // Writable while its content is restored; its own mode is set at the end.
                std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o700 | e.mode))
                    .map_err(Error::io(&target))?;
                report.dirs += 1;
                dirs.push((target, e));
            }
            Node::Symlink { target: link } => {
                if let Some((parent, _)) = path.rsplit_once('/') {
                    ensure_dir(dest, parent, &mut made)?;
                }
                if !in_fresh_dir(path, &made) {
                    clear_for_file(&target)?;
                }
                let tmp = temp_name(&target);
                std::os::unix::fs::symlink(link, &tmp).map_err(Error::io(&target))?;
                let mut guard = TempGuard(Some(tmp.clone()));
                set_mtime(&tmp, e.mtime_ns, true)?;
                std::fs::rename(&tmp, &target).map_err(Error::io(&target))?;
                guard.0 = None;
                report.symlinks += 1;
            }
            Node::File { size, chunks, .. } => {
                if let Some((parent, _)) = path.rsplit_once('/') {
                    ensure_dir(dest, parent, &mut made)?;
                }
                if !in_fresh_dir(path, &made) {
                    clear_for_file(&target)?;
                }
                report.files += 1;
                report.bytes += size;
                files.push((path.as_str(), e, chunks.as_slice()));
            }
        }
    }
    Ok(Prepared {
        report,
        files,
        dirs,
    })
}

/// Reads one run and returns its chunks' bytes back to back, decoded and verified. When the
/// bytes do not verify and the store has a replica, the run is read again from the replica.
pub(crate) async fn fetch_run(
    store: &datamon_store::Store,
    path: &str,
    run: Run,
) -> Result<bytes::Bytes> {
    let key = keys::pack(&run.pack);
    let missing = |e: datamon_store::Error| match e {
        datamon_store::Error::NotFound { key } => Error::Corrupt {
            path: path.to_owned(),
            detail: format!("{key} is missing from the store"),
        },
        e => e.into(),
    };
    let bytes = match store.get_range(&key, run.start..run.end).await {
        // Replaced by garbage collection since the index was loaded: read the copies.
        Err(datamon_store::Error::NotFound { .. }) => {
            let wanted: Vec<datamon_store::Wanted> = run
                .chunks
                .iter()
                .map(|(c, r)| datamon_store::Wanted {
                    hash: c.0,
                    offset: u64::from(r.offset),
                    stored_len: r.stored_len,
                    compression: r.compression,
                })
                .collect();
            store
                .read_relocated(&run.pack, run.start..run.end, &wanted)
                .await
                .map_err(missing)?
        }
        r => r.map_err(missing)?,
    };
    let s = store.clone();
    let (run, decoded) = tokio::task::spawn_blocking(move || {
        let d = decode_run(&s, &run, bytes);
        (run, d)
    })
    .await?;
    let detail = match decoded {
        Ok(data) => return Ok(data),
        Err(detail) => detail,
    };
    if let Some(replica) = store.replica() {
        tracing::warn!(pack = %key, "{detail}; reading it from the replica");
        if let Ok(bytes) = replica.get_range(&key, run.start..run.end).await {
            let s = store.clone();
            let again = tokio::task::spawn_blocking(move || decode_run(&s, &run, bytes)).await?;
            if let Ok(data) = again {
                return Ok(data);
            }
        }
    }
    Err(Error::Corrupt {
        path: path.to_owned(),
        detail,
    })
}

/// Decodes and verifies every chunk of a run read as `bytes`. Chunks stored as they are (or
/// sealed: decrypted in place) are moved to the front of the read's own buffer, so a run with
/// no compressed chunk needs no second buffer and no copy but for the seals it drops; a run
/// with compressed chunks is decoded into a new buffer.
fn decode_run(
    store: &Store,
    run: &Run,
    bytes: bytes::Bytes,
) -> std::result::Result<bytes::Bytes, String> {
    let mut buf = bytes
        .try_into_mut()
        .unwrap_or_else(|shared| bytes::BytesMut::from(&shared[..]));
    let fail = |c: &ChunkRef, e: &dyn std::fmt::Display| {
        format!("chunk {} in pack {}: {e}", c.0, run.pack)
    };
    if run
        .chunks
        .iter()
        .any(|(_, r)| r.compression != datamon_chunk::Compression::None)
    {
        let mut out = Vec::with_capacity(run.chunks.iter().map(|(c, _)| c.1 as usize).sum());
        for (c, r) in &run.chunks {
            let at = (u64::from(r.offset) - run.start) as usize;
            let stored = &buf[at..at + r.stored_len as usize];
            let data = store
                .decode_blob(stored, r.compression, c.1 as usize, &c.0)
                .map_err(|e| fail(c, &e))?;
            out.extend_from_slice(&data);
        }
        return Ok(out.into());
    }
    // Decoded chunks never outgrow their stored form, and `to` never passes the next chunk's
    // start, so moving each to `to` overwrites nothing not yet decoded.
    let mut to = 0;
    for (c, r) in &run.chunks {
        let at = (u64::from(r.offset) - run.start) as usize;
        let stored = &mut buf[at..at + r.stored_len as usize];
        let range = match store
            .decode_blob_in_place(stored, r.compression, c.1 as usize, &c.0)
            .map_err(|e| fail(c, &e))?
        {
            Decoded::At(range) => range,
            Decoded::Owned(data) => {
                // Not expected without compression; place it all the same if it fits.
                if data.len() > r.stored_len as usize {
                    return Err(fail(c, &"decoded larger than stored"));
                }
                stored[..data.len()].copy_from_slice(&data);
                0..data.len()
            }
        };
        let len = range.len();
        if at + range.start != to {
            buf.copy_within(at + range.start..at + range.end, to);
        }
        to += len;
    }
    buf.truncate(to);
    Ok(buf.freeze())
}

/// Refuses a non-empty destination unless `force`.
fn check_destination(dest: &Path, force: bool) -> Result<()> {
    match std::fs::read_dir(dest) {
        Ok(mut rd) => {
            if rd.next().is_some() && !force {
                return Err(Error::DestinationNotEmpty {
                    path: dest.to_owned(),
                });
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) if dest.exists() && !dest.is_dir() => Err(Error::NotADirectory {
            path: dest.to_owned(),
            role: PathRole::DownloadDestination,
            detail: format!(" ({e})"),
        }),
        Err(e) => Err(Error::Io {
            path: dest.to_owned(),
            source: e,
        }),
    }
}
