//! The inode table of the mutable mount: one inode per backing file, keyed by its
//! (st_dev, st_ino), with the (parent inode, name) pairs known to lead to it.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt as _;

/// One file of the work tree as the kernel knows it. Hard links are one node with several
/// names: the table is keyed by the backing file's (device, inode).
#[derive(Debug)]
pub(super) struct Node {
    /// The names known to lead to it (empty once all were unlinked or replaced: only open
    /// handles and the kernel's cache still use it).
    pub(super) names: Vec<(u64, OsString)>,
    pub(super) lookups: u64,
    /// The backing file's (st_dev, st_ino) and file type bits.
    pub(super) backing: (u64, u64),
    pub(super) kind: u32,
}

#[derive(Debug, Default)]
pub(super) struct Inodes {
    pub(super) map: HashMap<u64, Node>,
    pub(super) by_name: HashMap<(u64, OsString), u64>,
    pub(super) by_backing: HashMap<(u64, u64), u64>,
    pub(super) next: u64,
}

impl Inodes {
    /// Forgets that `parent/name` leads to its node. `gone`: the backing file has no other
    /// name (its inode number may be reused), so a later file with its number is another node.
    pub(super) fn detach(&mut self, parent: u64, name: &OsStr, gone: bool) {
        let key = (parent, name.to_owned());
        if let Some(ino) = self.by_name.remove(&key) {
            self.drop_name(ino, &key, gone);
        }
    }

    pub(super) fn drop_name(&mut self, ino: u64, key: &(u64, OsString), gone: bool) {
        let Some(n) = self.map.get_mut(&ino) else {
            return;
        };
        n.names.retain(|k| k != key);
        if n.names.is_empty() && gone {
            let b = n.backing;
            if self.by_backing.get(&b) == Some(&ino) {
                self.by_backing.remove(&b);
            }
        }
    }

    /// The node of `parent/name`, whose backing file is `m`, counting one lookup.
    pub(super) fn intern(&mut self, parent: u64, name: &OsStr, m: &Metadata) -> u64 {
        let key = (parent, name.to_owned());
        let backing = (m.dev(), m.ino());
        let kind = m.mode() & libc::S_IFMT;
        if let Some(&ino) = self.by_name.get(&key) {
            if let Some(n) = self.map.get_mut(&ino) {
                if n.backing == backing && n.kind == kind {
                    n.lookups += 1;
                    return ino;
                }
            }
            // The name now leads to another file (changed behind the mount's back).
            self.by_name.remove(&key);
            self.drop_name(ino, &key, false);
        }
        if let Some(&ino) = self.by_backing.get(&backing) {
            if let Some(n) = self.map.get_mut(&ino) {
                if n.kind == kind {
                    n.lookups += 1;
                    n.names.push(key.clone());
                    self.by_name.insert(key, ino);
                    return ino;
                }
            }
            self.by_backing.remove(&backing);
        }
        let ino = self.next;
        self.next += 1;
        self.map.insert(
            ino,
            Node {
                names: vec![key.clone()],
                lookups: 1,
                backing,
                kind,
            },
        );
        self.by_name.insert(key, ino);
        self.by_backing.insert(backing, ino);
        ino
    }
}
