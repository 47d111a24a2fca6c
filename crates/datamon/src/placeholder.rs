//! Placeholders: files of a work tree whose content is still that of the base bundle.
//!
//! A work tree started from a bundle does not download it. Each regular file of the bundle
//! becomes a *placeholder*: a sparse file of the right size, mode and mtime carrying the extended
//! attribute [`XATTR`] (`user.datamon.base`), whose value names the file's entry in the base
//! bundle: the hash of its directory's tree node and the entry's position there ([`BaseRef`], 37
//! bytes, small enough for ext4 to keep inside the inode: a placeholder takes no data block). The attribute is the only truth about the
//! content: while it is there, the content is the base entry's and the bytes on disk mean
//! nothing (zeros, or part of the content after an interrupted [`hydrate_blocking`]).
//!
//! - Reading a placeholder goes to the store (a mount reads it through its [`Vfs`]).
//! - Writing needs the bytes: [`hydrate_blocking`] writes the content into the file in place,
//!   syncs it, restores the mtime and only then removes the attribute, so a crash at any point
//!   leaves either a placeholder or the complete content. Truncating to zero is
//!   [`clear_blocking`] (truncate, then remove the attribute).
//! - Renames, chmod and touch keep the attribute: the content is still the base entry's.
//! - Scanning (upload, diff against a folder) reads the attribute of every regular file; a
//!   placeholder's chunks come from its base tree node and the file is never read, so no
//!   placeholder's zeros can reach a bundle.
//!
//! Hard links, copies that keep xattrs (`cp -a`) and edits of the scratch area that bypass the
//! mount are not placeholder-aware: edit work trees through their mount.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::Path;

use datamon_store::Index;
use datamon_types::{ChunkRef, Hash, Node, Tree};
use futures::{StreamExt, TryStreamExt};

use crate::scan::FileJob;
use crate::vfs::Vfs;
use crate::{Datamon, Error, Result};

/// The extended attribute that marks a placeholder.
pub const XATTR: &str = "user.datamon.base";

/// The prefix of every extended attribute datamon keeps on work tree files (a mount hides them).
pub const XATTR_PREFIX: &str = "user.datamon.";

/// How many bytes one hydration read asks for.
const HYDRATE_STEP: u32 = 4 << 20;

/// Where a placeholder's content is: entry number `entry` of the tree node `tree` (tree nodes
/// are immutable and content-addressed, so the position never changes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseRef {
    /// The hash of the tree node (directory) that holds the entry.
    pub tree: Hash,
    /// The entry's position in that node.
    pub entry: u32,
}

/// The first byte of an attribute value: the encoding's version.
const VERSION: u8 = 2;

impl BaseRef {
    /// The attribute's value: the version (1 byte), the tree hash (32), the entry (u32 LE).
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(37);
        v.push(VERSION);
        v.extend_from_slice(self.tree.as_bytes());
        v.extend_from_slice(&self.entry.to_le_bytes());
        v
    }

    /// Parses an attribute value; `None` when it is not one.
    pub fn decode(b: &[u8]) -> Option<BaseRef> {
        if b.len() != 37 || b[0] != VERSION {
            return None;
        }
        let mut tree = [0u8; 32];
        tree.copy_from_slice(&b[1..33]);
        Some(BaseRef {
            tree: Hash(tree),
            entry: u32::from_le_bytes(b[33..37].try_into().ok()?),
        })
    }

    /// The entry in its loaded tree node.
    pub(crate) fn in_tree<'t>(&self, tree: &'t Tree) -> Option<&'t datamon_types::TreeEntry> {
        tree.entries.get(self.entry as usize)
    }
}

fn is_unsupported(e: rustix::io::Errno) -> bool {
    e == rustix::io::Errno::NOTSUP || e == rustix::io::Errno::OPNOTSUPP
}

/// The placeholder attribute of `path` (not following a symlink), if it has one.
///
/// # Errors
/// A local I/O error, or an attribute that does not parse ([`Error::BadPath`]).
pub fn read(path: &Path) -> Result<Option<BaseRef>> {
    let mut buf = [0u8; 1024];
    match rustix::fs::lgetxattr(path, XATTR, &mut buf[..]) {
        Ok(n) => BaseRef::decode(&buf[..n])
            .map(Some)
            .ok_or_else(|| Error::BadPath {
                path: path.to_owned(),
                reason: format!("has a damaged {XATTR} attribute"),
            }),
        Err(e) if e == rustix::io::Errno::NODATA || is_unsupported(e) => Ok(None),
        Err(e) => Err(Error::io(path)(e.into())),
    }
}

/// Marks `path` as a placeholder of `base`.
///
/// # Errors
/// A local I/O error (`ENOTSUP` when the filesystem has no user attributes).
pub fn write(path: &Path, base: &BaseRef) -> Result<()> {
    rustix::fs::lsetxattr(path, XATTR, &base.encode(), rustix::fs::XattrFlags::empty())
        .map_err(|e| Error::io(path)(e.into()))
}

/// Whether files in `dir` can carry user extended attributes (and so be placeholders).
///
/// # Errors
/// A local I/O error other than "not supported".
pub fn supported(dir: &Path) -> Result<bool> {
    let probe = dir.join(format!(".datamon-probe-{:016x}", rand::random::<u64>()));
    std::fs::File::create(&probe).map_err(Error::io(&probe))?;
    let r = rustix::fs::lsetxattr(&probe, XATTR, b"probe", rustix::fs::XattrFlags::empty());
    let _ = std::fs::remove_file(&probe);
    match r {
        Ok(()) => Ok(true),
        Err(e) if is_unsupported(e) => Ok(false),
        Err(e) => Err(Error::io(&probe)(e.into())),
    }
}

/// Ends a hydration or truncation: the mode a read-only file had back, then the attribute gone
/// (last, so that a crash before leaves a placeholder).
fn finish(path: &Path, restore: Option<u32>) -> Result<()> {
    if let Some(mode) = restore {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(Error::io(path))?;
    }
    remove_attr(path)
}

fn remove_attr(path: &Path) -> Result<()> {
    match rustix::fs::lremovexattr(path, XATTR) {
        Ok(()) => Ok(()),
        Err(e) if e == rustix::io::Errno::NODATA => Ok(()),
        Err(e) => Err(Error::io(path)(e.into())),
    }
}

/// Opens `path` for writing even when its mode forbids it (the owner's write bit is added for
/// the time of the write); returns the file and the mode to restore, if it was changed.
fn open_for_write(path: &Path) -> Result<(std::fs::File, Option<u32>)> {
    let open = || std::fs::OpenOptions::new().write(true).open(path);
    match open() {
        Ok(f) => Ok((f, None)),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            let mode = std::fs::symlink_metadata(path)
                .map_err(Error::io(path))?
                .mode()
                & 0o7777;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode | 0o200))
                .map_err(Error::io(path))?;
            let f = open();
            if f.is_err() {
                let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode));
            }
            Ok((f.map_err(Error::io(path))?, Some(mode)))
        }
        Err(e) => Err(Error::io(path)(e)),
    }
}

/// Makes the placeholder at `path` a real file: writes its content, read from the store through
/// `vfs` (verified), into it in place, syncs it, restores its mtime and removes the attribute.
/// Returns `false` when `path` is not a placeholder. Callers serialize calls for one file.
///
/// # Errors
/// A store failure or timeout, data that does not verify, a base entry that is not a file of
/// the placeholder's size, a local I/O error. The file is then still a placeholder.
pub fn hydrate_blocking(vfs: &Vfs, path: &Path) -> Result<bool> {
    let Some(base) = read(path)? else {
        return Ok(false);
    };
    let meta = std::fs::symlink_metadata(path).map_err(Error::io(path))?;
    let (fh, size) = vfs.open_entry_blocking(&base.tree, base.entry)?;
    struct Release<'a>(&'a Vfs, u64);
    impl Drop for Release<'_> {
        fn drop(&mut self) {
            self.0.release(self.1);
        }
    }
    let _release = Release(vfs, fh);
    if size != meta.len() {
        return Err(Error::BadPath {
            path: path.to_owned(),
            reason: format!(
                "is a placeholder of {size} bytes but has {} (changed outside the mount)",
                meta.len()
            ),
        });
    }
    let (f, restore) = open_for_write(path)?;
    let mut at = 0u64;
    while at < size {
        let data = vfs.read_blocking(fh, at, HYDRATE_STEP)?;
        if data.is_empty() {
            return Err(Error::Corrupt {
                path: path.display().to_string(),
                detail: "the base entry ended early".into(),
            });
        }
        f.write_all_at(&data, at).map_err(Error::io(path))?;
        at += data.len() as u64;
    }
    f.sync_data().map_err(Error::io(path))?;
    let mtime = filetime::FileTime::from_last_modification_time(&meta);
    filetime::set_file_handle_times(&f, None, Some(mtime)).map_err(Error::io(path))?;
    drop(f);
    finish(path, restore)?;
    Ok(true)
}

/// Truncates the placeholder at `path` to zero bytes and makes it a real (empty) file; returns
/// `false` when it is not a placeholder (then nothing is done).
///
/// # Errors
/// A local I/O error.
pub fn clear_blocking(path: &Path) -> Result<bool> {
    if read(path)?.is_none() {
        return Ok(false);
    }
    let (f, restore) = open_for_write(path)?;
    // Truncate first: a placeholder of size 0 counts as an empty file, so a crash in between
    // never lets the zeros of a sparse placeholder stand for content.
    f.set_len(0).map_err(Error::io(path))?;
    drop(f);
    finish(path, restore)?;
    Ok(true)
}

impl Datamon {
    /// For each scanned file, its chunks when it is a placeholder (the base entry's chunks,
    /// without reading the file), else `None` (the file must be read). A placeholder of size 0
    /// (an interrupted truncation) is an empty file.
    ///
    /// # Errors
    /// A store error; a placeholder whose base entry is missing or of another size.
    pub(crate) async fn resolve_placeholders(
        &self,
        index: &Index,
        files: &[FileJob],
    ) -> Result<Vec<Option<Vec<ChunkRef>>>> {
        let trees: HashSet<Hash> = files
            .iter()
            .filter_map(|f| f.base.as_ref().map(|b| b.tree))
            .collect();
        if trees.is_empty() {
            return Ok(vec![None; files.len()]);
        }
        let loaded: HashMap<Hash, Tree> = futures::stream::iter(trees)
            .map(|h| async move { Ok::<_, Error>((h, self.load_tree(index, &h).await?)) })
            .buffer_unordered(16)
            .try_collect()
            .await?;
        files
            .iter()
            .map(|f| {
                let Some(b) = &f.base else { return Ok(None) };
                match loaded.get(&b.tree).and_then(|t| b.in_tree(t)) {
                    Some(e) => match &e.node {
                        Node::File { size, chunks, .. } if *size == f.size => {
                            Ok(Some(chunks.clone()))
                        }
                        Node::File { .. } if f.size == 0 => Ok(None),
                        _ => Err(Error::BadPath {
                            path: f.path.clone(),
                            reason: format!(
                                "is a placeholder ({XATTR}) whose size or base entry changed outside the mount"
                            ),
                        }),
                    },
                    None => Err(Error::BadPath {
                        path: f.path.clone(),
                        reason: format!(
                            "is a placeholder ({XATTR}) of entry {} of tree node {}, which the store does not have",
                            b.entry, b.tree
                        ),
                    }),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_ref_round_trips_and_rejects_junk() {
        let r = BaseRef {
            tree: Hash::of(b"t"),
            entry: 70_000,
        };
        assert_eq!(r.encode().len(), 37, "fits in an ext4 inode");
        assert_eq!(BaseRef::decode(&r.encode()), Some(r.clone()));
        let mut bad = r.encode();
        bad[0] = 1;
        assert_eq!(BaseRef::decode(&bad), None);
        assert_eq!(BaseRef::decode(&r.encode()[..36]), None);
        assert_eq!(BaseRef::decode(b"probe"), None);
    }
}
