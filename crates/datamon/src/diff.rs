//! Differences between two bundles, or between a bundle and a local folder, and bringing a
//! folder up to date with a bundle.
//!
//! Paths of files and symlinks are reported, and directories only when they are empty (their
//! content implies them otherwise). Content, type, permission bits and symlink targets count;
//! modification times do not.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use datamon_chunk::{Chunker, ChunkerParams};
use datamon_store::Index;
use datamon_types::{BundleId, ChunkRef, ContentHasher, Hash, Node, RepoName, Tree, TreeEntry};
use serde::Serialize;

use crate::scan::{scan, FileJob, Scan, ScanDir, ScanKind};
use crate::{Datamon, Error, Progress, Result};

/// How a path differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum ChangeKind {
    /// Only on the new side.
    #[serde(rename = "A")]
    Added,
    /// Only on the old side.
    #[serde(rename = "D")]
    Deleted,
    /// On both sides, different.
    #[serde(rename = "M")]
    Modified,
}

/// One changed path. Displays as `A path`, `D path` or `M path`; empty directories end in `/`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Change {
    /// The path, relative to the bundle root.
    pub path: String,
    /// How it changed.
    pub kind: ChangeKind,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let k = match self.kind {
            ChangeKind::Added => 'A',
            ChangeKind::Deleted => 'D',
            ChangeKind::Modified => 'M',
        };
        write!(f, "{k} {}", self.path)
    }
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}/{name}")
    }
}

/// Whether two entries of the same path differ (not counting mtimes).
fn entries_differ(a: &TreeEntry, b: &TreeEntry) -> bool {
    if a.mode != b.mode {
        return true;
    }
    match (&a.node, &b.node) {
        (Node::File { hash: x, .. }, Node::File { hash: y, .. }) => x != y,
        (Node::Symlink { target: x }, Node::Symlink { target: y }) => x != y,
        (Node::Dir { .. }, Node::Dir { .. }) => false,
        _ => true,
    }
}

impl Datamon {
    /// What changed from bundle `a` to bundle `b`, sorted by path. Walks only the subtrees whose
    /// hashes differ, so the cost follows the size of the change.
    ///
    /// # Errors
    /// [`Error::BundleNotFound`]; a store error.
    pub async fn diff_bundles(
        &self,
        repo: &RepoName,
        a: &BundleId,
        b: &BundleId,
    ) -> Result<Vec<Change>> {
        self.get_repo(repo).await?;
        let ba = self.get_bundle(repo, a).await?;
        let bb = self.get_bundle(repo, b).await?;
        let index = self.store.load_index().await?;
        self.diff_roots(&index, ba.root, bb.root).await
    }

    /// What changed from the tree `ra` to the tree `rb`, sorted by path, with a loaded index.
    pub(crate) async fn diff_roots(
        &self,
        index: &Index,
        ra: Hash,
        rb: Hash,
    ) -> Result<Vec<Change>> {
        let mut out = Vec::new();
        let mut stack: Vec<(String, Option<Hash>, Option<Hash>)> =
            vec![(String::new(), Some(ra), Some(rb))];
        while let Some((prefix, ta, tb)) = stack.pop() {
            if ta == tb {
                continue;
            }
            let load = |h: Option<Hash>| async move {
                match h {
                    Some(h) => self.load_tree(index, &h).await,
                    None => Ok(Tree::default()),
                }
            };
            let (xa, xb) = futures::try_join!(load(ta), load(tb))?;
            if xa.entries.is_empty() && xb.entries.is_empty() && !prefix.is_empty() {
                let kind = if ta.is_none() {
                    ChangeKind::Added
                } else {
                    ChangeKind::Deleted
                };
                out.push(Change {
                    path: format!("{prefix}/"),
                    kind,
                });
                continue;
            }
            let mut ia = xa.entries.iter().peekable();
            let mut ib = xb.entries.iter().peekable();
            loop {
                let (ea, eb) = match (ia.peek(), ib.peek()) {
                    (None, None) => break,
                    (Some(x), Some(y)) if x.name == y.name => (ia.next(), ib.next()),
                    (Some(x), Some(y)) if x.name < y.name => (ia.next(), None),
                    (Some(_), None) => (ia.next(), None),
                    _ => (None, ib.next()),
                };
                let name = &ea.or(eb).expect("one side has an entry").name;
                let path = join(&prefix, name);
                let dir = |e: Option<&TreeEntry>| match e.map(|e| &e.node) {
                    Some(Node::Dir { tree }) => Some(*tree),
                    _ => None,
                };
                match (ea, eb) {
                    (Some(x), Some(y)) => {
                        if let (Some(da), Some(db)) = (dir(ea), dir(eb)) {
                            if x.mode != y.mode {
                                out.push(Change {
                                    path: format!("{path}/"),
                                    kind: ChangeKind::Modified,
                                });
                            }
                            stack.push((path, Some(da), Some(db)));
                        } else if entries_differ(x, y) {
                            out.push(Change {
                                path: path.clone(),
                                kind: ChangeKind::Modified,
                            });
                            // A type change to or from a directory also lists what it held.
                            if dir(ea).is_some() || dir(eb).is_some() {
                                stack.push((path, dir(ea), dir(eb)));
                            }
                        }
                    }
                    (Some(_), None) => match dir(ea) {
                        Some(d) => stack.push((path, Some(d), None)),
                        None => out.push(Change {
                            path,
                            kind: ChangeKind::Deleted,
                        }),
                    },
                    (None, Some(_)) => match dir(eb) {
                        Some(d) => stack.push((path, None, Some(d))),
                        None => out.push(Change {
                            path,
                            kind: ChangeKind::Added,
                        }),
                    },
                    (None, None) => unreachable!("the loop stops when both sides are done"),
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// What differs from bundle `id` to the folder `dir`, by content: `A` is only in the
    /// folder, `D` only in the bundle, `M` differs.
    ///
    /// # Errors
    /// [`Error::BundleNotFound`], [`Error::BadPath`]; a store or local I/O error.
    pub async fn diff_dir(
        &self,
        repo: &RepoName,
        id: &BundleId,
        dir: &Path,
    ) -> Result<Vec<Change>> {
        Ok(self.compare_dir(repo, id, dir).await?.0.changes)
    }

    async fn compare_dir(
        &self,
        repo: &RepoName,
        id: &BundleId,
        dir: &Path,
    ) -> Result<(LocalComparison, BTreeMap<String, TreeEntry>, Index)> {
        let (bundle, index) = self.open_bundle(repo, id).await?;
        let remote: BTreeMap<String, TreeEntry> =
            self.walk(&index, bundle.root).await?.into_iter().collect();
        let c = self.store.config();
        let params = ChunkerParams {
            min: c.chunk_min,
            avg: c.chunk_avg,
            max: c.chunk_max,
        };
        let hasher = self.store.hasher();
        let dir = dir.to_owned();
        // Nothing local is an error here: what upload would refuse is simply "not in the bundle".
        let d = dir.clone();
        let scanned = tokio::task::spawn_blocking(move || scan(&d, None, true)).await??;
        // Placeholders of a work tree compare by their base entry's hash, unread.
        let known: Vec<Option<Hash>> = self
            .resolve_placeholders(&index, &scanned.files)
            .await?
            .into_iter()
            .map(|c| c.map(|c| Node::file_hash(&c)))
            .collect();
        let (changes, remote) = tokio::task::spawn_blocking(move || {
            compare_local(&remote, &dir, &scanned, &known, params, hasher).map(|c| (c, remote))
        })
        .await??;
        Ok((changes, remote, index))
    }

    /// Brings folder `dir` to exactly bundle `id`: writes what differs or is missing, deletes
    /// what the bundle does not have, and sets directory modes and mtimes. Returns the changes
    /// it made to the folder: `A` written because the folder lacked it, `D` deleted, `M`
    /// rewritten.
    ///
    /// # Errors
    /// As [`Datamon::diff_dir`] and [`Datamon::download`].
    pub async fn update_dir(
        &self,
        repo: &RepoName,
        id: &BundleId,
        dir: &Path,
        progress: &dyn Progress,
    ) -> Result<Vec<Change>> {
        std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
        let (cmp, remote, index) = self.compare_dir(repo, id, dir).await?;
        let LocalComparison {
            changes,
            mut extra,
            touch,
        } = cmp;
        let wanted: HashSet<&str> = changes
            .iter()
            .filter(|c| c.kind != ChangeKind::Added)
            .map(|c| c.path.trim_end_matches('/'))
            .collect();
        let entries: Vec<(String, TreeEntry)> = remote
            .iter()
            .filter(|(p, e)| matches!(e.node, Node::Dir { .. }) || wanted.contains(p.as_str()))
            .map(|(p, e)| (p.clone(), e.clone()))
            .collect();
        // Delete first, deepest first, so a path that changes type is free for its new content.
        extra.sort_unstable_by(|a, b| b.cmp(a));
        tokio::task::block_in_place(|| -> Result<()> {
            for p in &extra {
                let r = match std::fs::symlink_metadata(p) {
                    Ok(m) if m.is_dir() => std::fs::remove_dir_all(p),
                    Ok(_) => std::fs::remove_file(p),
                    Err(e) => Err(e),
                };
                match r {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(Error::Io {
                            path: p.clone(),
                            source: e,
                        })
                    }
                    _ => {}
                }
            }
            Ok(())
        })?;
        self.restore_entries(&index, dir, &entries, progress)
            .await?;
        // Content that was already right only needs its mtime.
        tokio::task::block_in_place(|| -> Result<()> {
            for (p, mtime_ns, symlink) in &touch {
                crate::download::set_mtime(p, *mtime_ns, *symlink)?;
            }
            Ok(())
        })?;
        // Report what happened to the folder: what it lacked was added, what the bundle lacks
        // was deleted.
        let mut applied: Vec<Change> = changes
            .into_iter()
            .map(|c| Change {
                kind: match c.kind {
                    ChangeKind::Added => ChangeKind::Deleted,
                    ChangeKind::Deleted => ChangeKind::Added,
                    ChangeKind::Modified => ChangeKind::Modified,
                },
                path: c.path,
            })
            .collect();
        applied.sort();
        Ok(applied)
    }
}

/// A folder compared with a bundle.
struct LocalComparison {
    /// What differs, as [`Datamon::diff_dir`] reports it.
    changes: Vec<Change>,
    /// Local paths the bundle does not have (including special files, names that are not
    /// UTF-8, and directories with content), for `update_dir` to delete.
    extra: Vec<PathBuf>,
    /// Entries equal in content whose mtime differs: (path, bundle mtime, is a symlink).
    touch: Vec<(PathBuf, i64, bool)>,
}

/// Compares a scanned folder with a bundle's flattened tree; hashes only the files whose size
/// matches and whose hash is not `known` (placeholders, by scan index).
fn compare_local(
    remote: &BTreeMap<String, TreeEntry>,
    dir: &Path,
    scanned: &Scan,
    known: &[Option<Hash>],
    params: ChunkerParams,
    hasher: ContentHasher,
) -> Result<LocalComparison> {
    let mut local: BTreeMap<String, Local> = BTreeMap::new();
    flatten(&scanned.root, "", &scanned.files, &mut local);

    let mut out = LocalComparison {
        changes: Vec::new(),
        extra: Vec::new(),
        touch: Vec::new(),
    };
    let mut to_hash: Vec<(String, PathBuf, Hash, Option<i64>)> = Vec::new();
    let change = |path: &str, kind| Change {
        path: path.to_owned(),
        kind,
    };

    for s in &scanned.skipped {
        out.changes.push(change(&s.rel, ChangeKind::Added));
        out.extra.push(s.path.clone());
    }
    for (path, l) in &local {
        let Some(r) = remote.get(path) else {
            out.extra.push(dir.join(path));
            match l {
                Local::Dir { .. } if has_children(&local, path) => {}
                Local::Dir { .. } => out
                    .changes
                    .push(change(&format!("{path}/"), ChangeKind::Added)),
                _ => out.changes.push(change(path, ChangeKind::Added)),
            }
            continue;
        };
        let touch = (l.mtime_ns() != r.mtime_ns).then_some(r.mtime_ns);
        match (&r.node, l) {
            (Node::Dir { .. }, Local::Dir { mode, .. }) => {
                if *mode != r.mode {
                    out.changes
                        .push(change(&format!("{path}/"), ChangeKind::Modified));
                }
            }
            (
                Node::File { size, hash, .. },
                Local::File {
                    size: ls,
                    mode,
                    job,
                    ..
                },
            ) if *mode == r.mode => {
                if size != ls {
                    out.changes.push(change(path, ChangeKind::Modified));
                } else if let Some(h) = known[*job] {
                    if h != *hash {
                        out.changes.push(change(path, ChangeKind::Modified));
                    } else if let Some(t) = touch {
                        out.touch.push((scanned.files[*job].path.clone(), t, false));
                    }
                } else {
                    to_hash.push((path.clone(), scanned.files[*job].path.clone(), *hash, touch));
                }
            }
            (
                Node::Symlink { target },
                Local::Symlink {
                    target: lt, mode, ..
                },
            ) if *mode == r.mode && target == lt => {
                if let Some(t) = touch {
                    out.touch.push((dir.join(path), t, true));
                }
            }
            _ => out.changes.push(change(path, ChangeKind::Modified)),
        }
    }
    for (path, r) in remote {
        if local.contains_key(path) {
            continue;
        }
        match r.node {
            Node::Dir { .. } if has_children(remote, path) => {}
            Node::Dir { .. } => out
                .changes
                .push(change(&format!("{path}/"), ChangeKind::Deleted)),
            _ => out.changes.push(change(path, ChangeKind::Deleted)),
        }
    }
    let differing = hash_and_compare(&to_hash, params, hasher)?;
    let differing_paths: HashSet<&str> = differing.iter().map(|c| c.path.as_str()).collect();
    for (path, file, _, touch) in &to_hash {
        if let (Some(t), false) = (touch, differing_paths.contains(path.as_str())) {
            out.touch.push((file.clone(), *t, false));
        }
    }
    out.changes.extend(differing);
    out.changes.sort();
    Ok(out)
}

/// Whether a sorted map of paths has entries below directory `p`.
fn has_children<V>(m: &BTreeMap<String, V>, p: &str) -> bool {
    let prefix = format!("{p}/");
    m.range(prefix.clone()..)
        .next()
        .is_some_and(|(k, _)| k.starts_with(&prefix))
}

enum Local {
    File {
        size: u64,
        mode: u32,
        mtime_ns: i64,
        job: usize,
    },
    Dir {
        mode: u32,
        mtime_ns: i64,
    },
    Symlink {
        target: String,
        mode: u32,
        mtime_ns: i64,
    },
}

impl Local {
    fn mtime_ns(&self) -> i64 {
        match self {
            Local::File { mtime_ns, .. }
            | Local::Dir { mtime_ns, .. }
            | Local::Symlink { mtime_ns, .. } => *mtime_ns,
        }
    }
}

fn flatten(dir: &ScanDir, prefix: &str, files: &[FileJob], out: &mut BTreeMap<String, Local>) {
    for e in &dir.entries {
        let path = join(prefix, &e.name);
        let (mode, mtime_ns) = (e.mode, e.mtime_ns);
        match &e.kind {
            ScanKind::Dir(sub) => {
                flatten(sub, &path, files, out);
                out.insert(path, Local::Dir { mode, mtime_ns });
            }
            ScanKind::File(job) => {
                out.insert(
                    path,
                    Local::File {
                        size: files[*job].size,
                        mode,
                        mtime_ns,
                        job: *job,
                    },
                );
            }
            ScanKind::Symlink(t) => {
                out.insert(
                    path,
                    Local::Symlink {
                        target: t.clone(),
                        mode,
                        mtime_ns,
                    },
                );
            }
        }
    }
}

/// Hashes local files the way upload does and reports those whose hash differs.
fn hash_and_compare(
    items: &[(String, PathBuf, Hash, Option<i64>)],
    params: ChunkerParams,
    hasher: ContentHasher,
) -> Result<Vec<Change>> {
    let next = AtomicUsize::new(0);
    let workers = std::thread::available_parallelism()
        .map_or(2, usize::from)
        .min(items.len().max(1));
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                s.spawn(|| -> Result<Vec<Change>> {
                    let mut chunker = Chunker::new(params);
                    let mut out = Vec::new();
                    while let Some((path, file, expected, _)) =
                        items.get(next.fetch_add(1, Ordering::Relaxed))
                    {
                        let f = std::fs::File::open(file).map_err(Error::io(file))?;
                        let mut chunks = Vec::new();
                        chunker
                            .chunk_reader(f, |d: &[u8]| -> std::io::Result<()> {
                                chunks.push(ChunkRef(hasher.hash(d), d.len() as u32));
                                Ok(())
                            })
                            .map_err(Error::io(file))?;
                        if Node::file_hash(&chunks) != *expected {
                            out.push(Change {
                                path: path.clone(),
                                kind: ChangeKind::Modified,
                            });
                        }
                    }
                    Ok(out)
                })
            })
            .collect();
        let mut all = Vec::new();
        for h in handles {
            all.extend(h.join().expect("hashing threads do not panic")?);
        }
        Ok(all)
    })
}
