//! Reading a bundle's tree from the store: loading nodes, walking, finding one path.

use datamon_store::Index;
use datamon_types::{Bundle, BundleId, EntryKind, Hash, Node, RepoName, Tree, TreeEntry};
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use crate::{Datamon, Error, Result};

/// How many tree nodes are fetched at once while walking.
const TREE_FETCH_CONCURRENCY: usize = 16;

/// One file of a bundle, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileInfo {
    /// Path relative to the bundle root, `/`-separated.
    pub path: String,
    /// File or symlink.
    pub kind: EntryKind,
    /// Size in bytes (for a symlink, the length of its target).
    pub size: u64,
    /// Content hash (files only).
    pub hash: Option<Hash>,
    /// Permission bits.
    pub mode: u32,
    /// Modification time, ns since the Unix epoch.
    pub mtime_ns: i64,
}

impl Datamon {
    /// A bundle's record and the index needed to read it.
    pub(crate) async fn open_bundle(
        &self,
        repo: &RepoName,
        id: &BundleId,
    ) -> Result<(Bundle, Index)> {
        let bundle = self.get_bundle(repo, id).await?;
        let index = self.store.load_index().await?;
        Ok((bundle, index))
    }

    /// Loads and parses one tree node, verified against its hash. Entry names are checked too,
    /// so a damaged or hostile store can never make a download write outside its destination.
    pub(crate) async fn load_tree(&self, index: &Index, hash: &Hash) -> Result<Tree> {
        let corrupt = |detail: String| Error::Corrupt {
            path: format!("tree {hash}"),
            detail,
        };
        // A missing tree is damage to the store, not a "not found" answer to the user.
        let bytes = match self.store.read_blob(index, hash).await {
            Err(datamon_store::Error::NotFound { key }) => {
                return Err(corrupt(format!("{key} is missing from the store")))
            }
            r => r?,
        };
        let tree = Tree::from_bytes(&bytes).map_err(|e| corrupt(e.to_string()))?;
        for e in &tree.entries {
            if e.name.is_empty() || e.name == "." || e.name == ".." || e.name.contains(['/', '\0'])
            {
                return Err(corrupt(format!("invalid entry name {:?}", e.name)));
            }
        }
        if tree.entries.windows(2).any(|w| w[0].name >= w[1].name) {
            return Err(corrupt("entries are not sorted and unique".into()));
        }
        Ok(tree)
    }

    /// Every entry below `root` (directories too) with its path, sorted by path. Each level's
    /// nodes are fetched concurrently.
    pub(crate) async fn walk(&self, index: &Index, root: Hash) -> Result<Vec<(String, TreeEntry)>> {
        let mut out: Vec<(String, TreeEntry)> = self
            .walk_located(index, root)
            .await?
            .into_iter()
            .map(|(path, _, e)| (path, e))
            .collect();
        out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Every entry below `root` (directories too) with its path and where it is (the hash of the
    /// tree node holding it and its position there), parents before children. Each level's nodes
    /// are fetched concurrently.
    pub(crate) async fn walk_located(
        &self,
        index: &Index,
        root: Hash,
    ) -> Result<Vec<(String, (Hash, u32), TreeEntry)>> {
        let mut out = Vec::new();
        let mut frontier = vec![(String::new(), root)];
        while !frontier.is_empty() {
            let trees: Vec<(String, Hash, Tree)> =
                futures::stream::iter(frontier.drain(..).map(|(prefix, h)| async move {
                    Ok::<_, Error>((prefix, h, self.load_tree(index, &h).await?))
                }))
                .buffered(TREE_FETCH_CONCURRENCY)
                .try_collect()
                .await?;
            for (prefix, h, tree) in trees {
                for (i, e) in tree.entries.into_iter().enumerate() {
                    let path = if prefix.is_empty() {
                        e.name.clone()
                    } else {
                        format!("{prefix}/{}", e.name)
                    };
                    if let Node::Dir { tree } = &e.node {
                        frontier.push((path.clone(), *tree));
                    }
                    let i = u32::try_from(i).expect("fewer than 4G entries in a directory");
                    out.push((path, (h, i), e));
                }
            }
        }
        Ok(out)
    }

    /// Finds the entry at `path` (components separated by `/`), loading only the nodes on the
    /// way.
    pub(crate) async fn find_entry(
        &self,
        index: &Index,
        root: Hash,
        path: &str,
    ) -> Result<Option<TreeEntry>> {
        let mut current = root;
        let parts: Vec<&str> = path
            .split('/')
            .filter(|p| !p.is_empty() && *p != ".")
            .collect();
        for (i, part) in parts.iter().enumerate() {
            let tree = self.load_tree(index, &current).await?;
            let Some(e) = tree.get(part) else {
                return Ok(None);
            };
            if i + 1 == parts.len() {
                return Ok(Some(e.clone()));
            }
            match &e.node {
                Node::Dir { tree } => current = *tree,
                _ => return Ok(None),
            }
        }
        Ok(None)
    }

    /// The files and symlinks of a bundle, sorted by path.
    ///
    /// # Errors
    /// [`Error::BundleNotFound`]; a store error; damaged tree nodes.
    pub async fn list_files(&self, repo: &RepoName, id: &BundleId) -> Result<Vec<FileInfo>> {
        let (bundle, index) = self.open_bundle(repo, id).await?;
        Ok(self
            .walk(&index, bundle.root)
            .await?
            .into_iter()
            .filter(|(_, e)| e.kind() != EntryKind::Dir)
            .map(|(path, e)| FileInfo {
                kind: e.kind(),
                size: e.size(),
                hash: match &e.node {
                    Node::File { hash, .. } => Some(*hash),
                    _ => None,
                },
                mode: e.mode,
                mtime_ns: e.mtime_ns,
                path,
            })
            .collect())
    }
}
