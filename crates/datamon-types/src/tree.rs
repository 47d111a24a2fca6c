//! Tree nodes: the Merkle tree of directories that a bundle's root hash names.
//!
//! A [`Tree`] lists one directory's entries sorted by name. A subdirectory is referenced by the
//! hash of its own serialized node, so two bundles share every unchanged directory, and a diff
//! skips every subtree whose hash is equal on both sides.

use serde::{Deserialize, Serialize};

use crate::Hash;

/// A reference to one chunk of a file: its hash and uncompressed length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef(pub Hash, pub u32);

impl ChunkRef {
    /// The chunk's hash.
    pub fn hash(&self) -> Hash {
        self.0
    }
    /// The chunk's uncompressed length.
    pub fn len(&self) -> u32 {
        self.1
    }
    /// Whether the chunk is empty (never true for stored chunks).
    pub fn is_empty(&self) -> bool {
        self.1 == 0
    }
}

/// What an entry is, with what identifies its content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Node {
    /// A regular file.
    File {
        /// Size in bytes.
        size: u64,
        /// The file's content hash: see [`Node::file_hash`]. Not stored (it follows from the
        /// chunks): [`Tree::from_bytes`] computes it, and reads it from nodes written by
        /// versions that stored it.
        #[serde(default, skip_serializing)]
        hash: Hash,
        /// Its chunks, in order.
        chunks: Vec<ChunkRef>,
    },
    /// A directory and the hash of its tree node.
    Dir {
        /// The hash of the [`Tree`] it holds.
        tree: Hash,
    },
    /// A symbolic link, stored as a link (never followed).
    Symlink {
        /// The link's target, as written.
        target: String,
    },
}

impl Node {
    /// The content hash of a file made of `chunks`: BLAKE3 over a domain tag and each chunk's
    /// hash and little-endian length. Computing it needs only the chunk list, so equal content
    /// chunked with equal parameters always gets the same hash.
    pub fn file_hash(chunks: &[ChunkRef]) -> Hash {
        let mut h = blake3::Hasher::new();
        h.update(b"datamon-file-v1");
        for c in chunks {
            h.update(c.0.as_bytes());
            h.update(&c.1.to_le_bytes());
        }
        h.finalize().into()
    }
}

/// The kind of an entry, without its content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
}

/// One entry of a directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeEntry {
    /// The file name (one path component, UTF-8).
    pub name: String,
    /// Unix permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// Modification time, in nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// What it is.
    #[serde(flatten)]
    pub node: Node,
}

impl TreeEntry {
    /// The entry's kind.
    pub fn kind(&self) -> EntryKind {
        match self.node {
            Node::File { .. } => EntryKind::File,
            Node::Dir { .. } => EntryKind::Dir,
            Node::Symlink { .. } => EntryKind::Symlink,
        }
    }

    /// The file size, or 0 for directories and links.
    pub fn size(&self) -> u64 {
        match &self.node {
            Node::File { size, .. } => *size,
            Node::Symlink { target } => target.len() as u64,
            Node::Dir { .. } => 0,
        }
    }
}

/// A directory node: its entries, sorted by name, names unique.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    /// The entries.
    pub entries: Vec<TreeEntry>,
}

impl Tree {
    /// The canonical serialization whose hash names this node: compact JSON.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a tree always serializes")
    }

    /// Parses a node read from the store.
    ///
    /// # Errors
    /// When `bytes` are not a serialized tree node.
    pub fn from_bytes(bytes: &[u8]) -> serde_json::Result<Tree> {
        let mut t: Tree = serde_json::from_slice(bytes)?;
        for e in &mut t.entries {
            if let Node::File { hash, chunks, .. } = &mut e.node {
                if *hash == Hash::default() {
                    *hash = Node::file_hash(chunks);
                }
            }
        }
        Ok(t)
    }

    /// Finds an entry by name (entries are sorted).
    pub fn get(&self, name: &str) -> Option<&TreeEntry> {
        self.entries
            .binary_search_by(|e| e.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.entries[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Golden: the serialization of tree nodes is part of the store format.
    #[test]
    fn golden_tree_encoding() {
        let t = Tree {
            entries: vec![
                TreeEntry {
                    name: "a.txt".into(),
                    mode: 0o644,
                    mtime_ns: 1_700_000_000_000_000_001,
                    node: Node::File {
                        size: 3,
                        hash: Node::file_hash(&[ChunkRef(Hash::of(b"abc"), 3)]),
                        chunks: vec![ChunkRef(Hash::of(b"abc"), 3)],
                    },
                },
                TreeEntry {
                    name: "l".into(),
                    mode: 0o777,
                    mtime_ns: 0,
                    node: Node::Symlink {
                        target: "a.txt".into(),
                    },
                },
            ],
        };
        let s = String::from_utf8(t.to_bytes()).unwrap();
        assert_eq!(
            s,
            r#"{"entries":[{"name":"a.txt","mode":420,"mtime_ns":1700000000000000001,"type":"file","size":3,"chunks":[["6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85",3]]},{"name":"l","mode":511,"mtime_ns":0,"type":"symlink","target":"a.txt"}]}"#
        );
        assert_eq!(
            Tree::from_bytes(s.as_bytes()).unwrap(),
            t,
            "the file hash is computed"
        );
        // Nodes written by earlier versions carry the file hash; they read the same.
        let old = r#"{"entries":[{"name":"a.txt","mode":420,"mtime_ns":1700000000000000001,"type":"file","size":3,"hash":"251cf9d2bb8029403972edb4517da0cf1cd08e9afb554d138c443032873f86d3","chunks":[["6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85",3]]},{"name":"l","mode":511,"mtime_ns":0,"type":"symlink","target":"a.txt"}]}"#;
        assert_eq!(Tree::from_bytes(old.as_bytes()).unwrap(), t);
        assert_eq!(t.get("l").unwrap().kind(), EntryKind::Symlink);
        assert!(t.get("zz").is_none());
    }
}
