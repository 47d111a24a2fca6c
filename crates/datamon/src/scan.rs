//! Scanning a local directory into the shape of a tree (names, modes, mtimes), before any file
//! is read. Used by upload and by comparisons with a folder.

use std::collections::BTreeMap;
use std::fs::Metadata;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::{Error, PathRole, Result};

/// One directory's entries, sorted by name.
#[derive(Debug, Default)]
pub(crate) struct ScanDir {
    pub entries: Vec<ScanEntry>,
}

#[derive(Debug)]
pub(crate) struct ScanEntry {
    pub name: String,
    pub mode: u32,
    pub mtime_ns: i64,
    pub kind: ScanKind,
}

#[derive(Debug)]
pub(crate) enum ScanKind {
    /// A regular file: its index in [`Scan::files`].
    File(usize),
    Dir(ScanDir),
    Symlink(String),
}

/// A regular file to read, with the stat fields the stat cache compares.
#[derive(Debug, Clone)]
pub(crate) struct FileJob {
    pub path: PathBuf,
    pub rel: String,
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub ino: u64,
    /// Set when the file is a placeholder of a work tree (see [`crate::placeholder`]): its
    /// content is that base entry's, whatever its bytes on disk.
    pub base: Option<crate::placeholder::BaseRef>,
}

/// An entry the scan left out.
#[derive(Debug, Clone)]
pub(crate) struct Skipped {
    /// Relative path for display (lossy when the name is not UTF-8).
    pub rel: String,
    /// The real path.
    pub path: PathBuf,
    /// Why.
    pub reason: String,
}

#[derive(Debug, Default)]
pub(crate) struct Scan {
    pub root: ScanDir,
    pub files: Vec<FileJob>,
    /// Paths left out (under `skip_on_error`, or special files).
    pub skipped: Vec<Skipped>,
    pub dirs: u64,
    pub symlinks: u64,
}

/// The subset of paths to include (`UploadOptions::files`): a tree of names; `whole` includes everything
/// below.
#[derive(Debug, Default)]
struct Filter {
    whole: bool,
    children: BTreeMap<String, Filter>,
}

pub(crate) fn mtime_ns(m: &Metadata) -> i64 {
    m.mtime()
        .saturating_mul(1_000_000_000)
        .saturating_add(m.mtime_nsec())
}

fn ctime_ns(m: &Metadata) -> i64 {
    m.ctime()
        .saturating_mul(1_000_000_000)
        .saturating_add(m.ctime_nsec())
}

/// Scans `root`. With `only`, includes just those relative paths (files or whole directories).
/// With `skip_on_error`, unreadable or unsupported entries are recorded in `skipped` instead of
/// failing.
pub(crate) fn scan(root: &Path, only: Option<&[String]>, skip_on_error: bool) -> Result<Scan> {
    let meta = std::fs::metadata(root).map_err(|error| Error::UnreadableSource {
        path: root.to_owned(),
        error,
    })?;
    if !meta.is_dir() {
        return Err(Error::NotADirectory {
            path: root.to_owned(),
            role: PathRole::UploadSource,
            detail: String::new(),
        });
    }
    let filter = match only {
        None => Filter {
            whole: true,
            children: BTreeMap::new(),
        },
        Some(list) => {
            let mut f = Filter::default();
            for line in list {
                let p = line.trim().trim_start_matches("./").trim_end_matches('/');
                if p.is_empty() {
                    continue;
                }
                if p.starts_with('/') || p.split('/').any(|c| c == ".." || c == "." || c.is_empty())
                {
                    return Err(Error::InvalidInput(format!(
                        "the list of files to upload names {line:?}: give paths relative to the folder, without '..'"
                    )));
                }
                let mut node = &mut f;
                for c in p.split('/') {
                    node = node.children.entry(c.to_owned()).or_default();
                }
                node.whole = true;
            }
            f
        }
    };
    let mut scan = Scan::default();
    let mut ctx = Ctx {
        scan: &mut scan,
        skip_on_error,
    };
    let dir = ctx.dir(root, "", &filter)?;
    scan.root = dir;
    Ok(scan)
}

struct Ctx<'a> {
    scan: &'a mut Scan,
    skip_on_error: bool,
}

impl Ctx<'_> {
    fn fail_or_skip(&mut self, rel: &str, path: &Path, reason: String) -> Result<()> {
        if self.skip_on_error {
            tracing::debug!(path = %rel, "skipped: {reason}");
            self.scan.skipped.push(Skipped {
                rel: rel.to_owned(),
                path: path.to_owned(),
                reason,
            });
            Ok(())
        } else {
            Err(Error::Unreadable {
                path: path.to_owned(),
                reason,
            })
        }
    }

    fn dir(&mut self, path: &Path, rel: &str, filter: &Filter) -> Result<ScanDir> {
        let mut names: Vec<(String, PathBuf)> = Vec::new();
        if filter.whole {
            let rd = match std::fs::read_dir(path) {
                Ok(rd) => rd,
                Err(e) => {
                    self.fail_or_skip(rel, path, format!("cannot list directory: {e}"))?;
                    return Ok(ScanDir::default());
                }
            };
            for ent in rd {
                let ent = ent.map_err(Error::io(path))?;
                match ent.file_name().into_string() {
                    Ok(n) => names.push((n, ent.path())),
                    Err(raw) => {
                        let shown = format!("{rel}/{}", raw.to_string_lossy());
                        self.fail_or_skip(
                            &shown,
                            &ent.path(),
                            "file name is not valid UTF-8".into(),
                        )?;
                    }
                }
            }
        } else {
            for name in filter.children.keys() {
                names.push((name.clone(), path.join(name)));
            }
        }
        names.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut out = ScanDir {
            entries: Vec::with_capacity(names.len()),
        };
        for (name, p) in names {
            let child_rel = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            let sub_filter = if filter.whole {
                filter
            } else {
                &filter.children[&name]
            };
            let meta = match std::fs::symlink_metadata(&p) {
                Ok(m) => m,
                Err(e) => {
                    self.fail_or_skip(&child_rel, &p, format!("cannot read: {e}"))?;
                    continue;
                }
            };
            let mode = meta.permissions().mode() & 0o7777;
            let mtime = mtime_ns(&meta);
            let ft = meta.file_type();
            let kind = if ft.is_file() {
                let base = if meta.len() > 0 {
                    match crate::placeholder::read(&p) {
                        Ok(b) => b,
                        Err(e) => {
                            self.fail_or_skip(&child_rel, &p, e.to_string())?;
                            continue;
                        }
                    }
                } else {
                    None
                };
                self.scan.files.push(FileJob {
                    path: p,
                    rel: child_rel,
                    size: meta.len(),
                    mtime_ns: mtime,
                    ctime_ns: ctime_ns(&meta),
                    ino: meta.ino(),
                    base,
                });
                ScanKind::File(self.scan.files.len() - 1)
            } else if ft.is_dir() {
                let sub = self.dir(&p, &child_rel, sub_filter)?;
                self.scan.dirs += 1;
                ScanKind::Dir(sub)
            } else if ft.is_symlink() {
                match std::fs::read_link(&p).map(|t| t.into_os_string().into_string()) {
                    Ok(Ok(t)) => {
                        self.scan.symlinks += 1;
                        ScanKind::Symlink(t)
                    }
                    Ok(Err(_)) => {
                        self.fail_or_skip(
                            &child_rel,
                            &p,
                            "symlink target is not valid UTF-8".into(),
                        )?;
                        continue;
                    }
                    Err(e) => {
                        self.fail_or_skip(&child_rel, &p, format!("cannot read link: {e}"))?;
                        continue;
                    }
                }
            } else {
                // Sockets, FIFOs and devices have no content to version.
                tracing::debug!(path = %child_rel, "skipped: not a regular file, directory or symlink");
                self.scan.skipped.push(Skipped {
                    rel: child_rel,
                    path: p,
                    reason: "special file (socket, FIFO or device): not stored".into(),
                });
                continue;
            };
            out.entries.push(ScanEntry {
                name,
                mode,
                mtime_ns: mtime,
                kind,
            });
        }
        Ok(out)
    }
}
