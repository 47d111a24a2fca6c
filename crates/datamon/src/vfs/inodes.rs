//! The inode table of a mount: the entries the kernel looked up, by number and by (parent,
//! name), each with its lookup count. An entry is forgotten when its count drops to zero, so the
//! table holds what the kernel holds, not the bundle.

use std::collections::HashMap;
use std::sync::Arc;

use datamon_types::{ChunkRef, Hash, Node, TreeEntry};

use super::{vfs_err, Attr, ROOT_INODE};
use crate::{Result, VfsErrorKind};

/// What an inode is.
#[derive(Debug, Clone)]
pub(super) enum Content {
    /// A directory: its tree node.
    Dir(Hash),
    /// A file: its chunks.
    File(Arc<[ChunkRef]>),
    /// A symlink: its target.
    Symlink(Arc<str>),
}

#[derive(Debug)]
struct Inode {
    parent: u64,
    name: Arc<str>,
    attr: Attr,
    content: Content,
    lookups: u64,
}

/// The known inodes (see the module docs). Not synchronized: the caller holds it in a mutex.
#[derive(Debug)]
pub(super) struct Inodes {
    map: HashMap<u64, Inode>,
    by_name: HashMap<(u64, Arc<str>), u64>,
    next: u64,
}

fn stale(ino: u64) -> crate::Error {
    vfs_err(VfsErrorKind::Stale, format!("unknown inode {ino}"))
}

impl Inodes {
    /// A table that knows only the root, a directory with attributes `root` and tree node
    /// `tree`.
    pub(super) fn new(root: Attr, tree: Hash) -> Self {
        let mut map = HashMap::new();
        map.insert(
            ROOT_INODE,
            Inode {
                parent: ROOT_INODE,
                name: Arc::from(""),
                attr: root,
                content: Content::Dir(tree),
                lookups: 1,
            },
        );
        Inodes {
            map,
            by_name: HashMap::new(),
            next: ROOT_INODE + 1,
        }
    }

    /// The attributes of `ino`.
    pub(super) fn attr(&self, ino: u64) -> Result<Attr> {
        self.map.get(&ino).map(|i| i.attr).ok_or_else(|| stale(ino))
    }

    fn content(&self, ino: u64) -> Result<&Content> {
        self.map
            .get(&ino)
            .map(|i| &i.content)
            .ok_or_else(|| stale(ino))
    }

    /// The tree node of directory `ino`.
    pub(super) fn dir_hash(&self, ino: u64) -> Result<Hash> {
        match self.content(ino)? {
            Content::Dir(h) => Ok(*h),
            _ => Err(vfs_err(
                VfsErrorKind::NotADirectory,
                format!("inode {ino} is not a directory"),
            )),
        }
    }

    /// The chunks of file `ino`.
    pub(super) fn file_chunks(&self, ino: u64) -> Result<Arc<[ChunkRef]>> {
        match self.content(ino)? {
            Content::File(c) => Ok(c.clone()),
            _ => Err(vfs_err(
                VfsErrorKind::IsADirectory,
                format!("inode {ino} is not a regular file"),
            )),
        }
    }

    /// The target of symlink `ino`.
    pub(super) fn symlink_target(&self, ino: u64) -> Result<String> {
        match self.content(ino)? {
            Content::Symlink(t) => Ok(t.to_string()),
            _ => Err(vfs_err(
                VfsErrorKind::NotASymlink,
                format!("inode {ino} is not a symlink"),
            )),
        }
    }

    /// The inode of `parent/name` if known.
    pub(super) fn known(&self, parent: u64, name: &str) -> Option<u64> {
        self.by_name.get(&(parent, Arc::from(name))).copied()
    }

    /// The attributes of `parent/name` if known, counting one lookup.
    pub(super) fn lookup(&mut self, parent: u64, name: &str) -> Option<Attr> {
        let ino = self.known(parent, name)?;
        let i = self.map.get_mut(&ino)?;
        i.lookups += 1;
        Some(i.attr)
    }

    /// Finds or creates the inode of entry `e` of directory `parent`, counting one lookup.
    pub(super) fn intern(&mut self, parent: u64, e: &TreeEntry) -> Attr {
        if let Some(attr) = self.lookup(parent, &e.name) {
            return attr;
        }
        let name: Arc<str> = Arc::from(e.name.as_str());
        let content = match &e.node {
            Node::Dir { tree } => Content::Dir(*tree),
            Node::File { chunks, .. } => Content::File(Arc::from(chunks.as_slice())),
            Node::Symlink { target } => Content::Symlink(Arc::from(target.as_str())),
        };
        let ino = self.next;
        self.next += 1;
        let attr = Attr {
            ino,
            kind: e.kind(),
            size: e.size(),
            mode: e.mode,
            mtime_ns: e.mtime_ns,
        };
        self.by_name.insert((parent, name.clone()), ino);
        self.map.insert(
            ino,
            Inode {
                parent,
                name,
                attr,
                content,
                lookups: 1,
            },
        );
        attr
    }

    /// Drops `n` lookups of `ino`; it is forgotten at zero (never the root).
    pub(super) fn forget(&mut self, ino: u64, n: u64) {
        if ino == ROOT_INODE {
            return;
        }
        let gone = match self.map.get_mut(&ino) {
            Some(i) => {
                i.lookups = i.lookups.saturating_sub(n);
                i.lookups == 0
            }
            None => false,
        };
        if gone {
            if let Some(i) = self.map.remove(&ino) {
                self.by_name.remove(&(i.parent, i.name));
            }
        }
    }

    /// How many inodes are known.
    pub(super) fn len(&self) -> usize {
        self.map.len()
    }

    /// The oldest known entries beyond the first `keep`, as `(parent inode, name)`, oldest
    /// first (never the root).
    pub(super) fn entries_over(&self, keep: usize) -> Vec<(u64, String)> {
        let n = self.map.len().saturating_sub(keep);
        if n == 0 {
            return Vec::new();
        }
        let mut all: Vec<(u64, u64, &Arc<str>)> = self
            .map
            .iter()
            .filter(|(&ino, _)| ino != ROOT_INODE)
            .map(|(&ino, i)| (ino, i.parent, &i.name))
            .collect();
        let n = n.min(all.len());
        if n < all.len() {
            all.select_nth_unstable_by_key(n, |e| e.0);
        }
        all.truncate(n);
        all.sort_unstable_by_key(|e| e.0);
        all.into_iter()
            .map(|(_, parent, name)| (parent, name.to_string()))
            .collect()
    }
}

/// The inode number listed for `parent/name` before it is looked up: stable, and above the
/// range real inodes use.
pub(super) fn placeholder_ino(parent: u64, name: &str) -> u64 {
    let h = blake3::hash(format!("{parent}/{name}").as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&h.as_bytes()[..8]);
    u64::from_le_bytes(b) | (1 << 63)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datamon_types::EntryKind;

    fn entry(name: &str, node: Node) -> TreeEntry {
        TreeEntry {
            name: name.into(),
            mode: 0o644,
            mtime_ns: 7,
            node,
        }
    }

    #[test]
    fn lookups_are_counted_and_forgotten_entries_dropped() {
        let root = Attr {
            ino: ROOT_INODE,
            kind: EntryKind::Dir,
            size: 0,
            mode: 0o755,
            mtime_ns: 0,
        };
        let mut t = Inodes::new(root, Hash::of(b"root"));
        assert_eq!(t.dir_hash(ROOT_INODE).unwrap(), Hash::of(b"root"));
        let link = entry("ln", Node::Symlink { target: "x".into() });
        let a = t.intern(ROOT_INODE, &link);
        assert_eq!(t.intern(ROOT_INODE, &link), a, "the same inode again");
        assert_eq!(t.lookup(ROOT_INODE, "ln"), Some(a));
        assert_eq!(t.symlink_target(a.ino).unwrap(), "x");
        assert!(t.dir_hash(a.ino).is_err() && t.file_chunks(a.ino).is_err());
        assert_eq!(t.len(), 2);
        assert_eq!(t.entries_over(1), [(ROOT_INODE, "ln".to_owned())]);
        t.forget(a.ino, 2);
        assert_eq!(t.known(ROOT_INODE, "ln"), Some(a.ino), "one lookup left");
        t.forget(a.ino, 1);
        assert_eq!(t.known(ROOT_INODE, "ln"), None);
        assert!(t.attr(a.ino).is_err());
        t.forget(ROOT_INODE, 10);
        assert_eq!(t.len(), 1, "the root stays");
        assert_ne!(placeholder_ino(1, "a"), placeholder_ino(1, "b"));
        assert!(placeholder_ino(1, "a") >= 1 << 63);
    }
}
