//! Integrity check of a whole store: every object every bundle references exists and is
//! consistent; with `read_data`, every blob is read back and verified against its hash.

use std::collections::{HashMap, HashSet};

use datamon_store::{keys, BlobKind, Index, Store};
use datamon_types::{Branch, BundleId, Hash, LabelName, LabelRecord, Node, RepoName};
use serde::Serialize;

use crate::{Datamon, Progress, Result, Unit};

/// What fsck checked and found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FsckReport {
    /// Repos checked.
    pub repos: u64,
    /// Bundles checked.
    pub bundles: u64,
    /// Distinct tree nodes checked.
    pub trees: u64,
    /// Distinct chunks referenced.
    pub chunks: u64,
    /// Packs listed in the index.
    pub packs: u64,
    /// Blobs read back and verified (with `read_data`).
    pub blobs_verified: u64,
    /// Packs without an index object: left by an interrupted upload; the next upload reuses
    /// them. Not an error.
    pub unindexed_packs: u64,
    /// Problems found; empty when the store is sound.
    pub problems: Vec<String>,
}

impl FsckReport {
    /// Whether no problem was found.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

impl Datamon {
    /// Checks the store.
    ///
    /// # Errors
    /// Only when the store cannot be listed at all; problems with its content are reported in
    /// [`FsckReport::problems`].
    pub async fn fsck(&self, read_data: bool, progress: &dyn Progress) -> Result<FsckReport> {
        let mut r = FsckReport::default();
        // Read in the reverse of commit order, so objects committed while fsck runs are never
        // mistaken for missing ones: refs (written after their bundle), then bundle ids (written
        // after their data), then the index (written after its pack), then the pack list.
        let mut repos = Vec::new();
        for repo in self.list_repos().await? {
            let refs = RepoRefs {
                labels: self.list_labels(&repo.name).await?,
                branches: self.list_branches(&repo.name).await?,
                ids: self.bundle_ids(&repo.name).await?,
            };
            repos.push((repo.name, refs));
        }
        let index = match self.store.load_index().await {
            Ok(i) => i,
            Err(e) => {
                r.problems.push(format!("cannot load the index: {e}"));
                Index::new()
            }
        };
        let packs: HashMap<String, u64> = self.store.list(keys::PACKS).await?.into_iter().collect();
        r.packs = index.packs().len() as u64;
        let indexed: HashSet<String> = index.packs().iter().map(keys::pack).collect();
        r.unindexed_packs = packs.keys().filter(|k| !indexed.contains(*k)).count() as u64;

        // References from bundles.
        let mut seen_trees: HashSet<Hash> = HashSet::new();
        let mut seen_chunks: HashSet<Hash> = HashSet::new();
        for (repo, refs) in &repos {
            r.repos += 1;
            self.check_repo(
                repo,
                refs,
                &index,
                &mut seen_trees,
                &mut seen_chunks,
                &mut r,
            )
            .await?;
        }
        r.trees = seen_trees.len() as u64;
        r.chunks = seen_chunks.len() as u64;

        // Every indexed pack exists and is long enough for its entries.
        let mut extent: HashMap<Hash, u64> = HashMap::new();
        for h in seen_chunks.iter().chain(seen_trees.iter()) {
            if let Some(b) = index.get(h) {
                let end = u64::from(b.offset) + u64::from(b.stored_len);
                let e = extent.entry(b.pack).or_default();
                *e = (*e).max(end);
            }
        }
        for pack in index.packs() {
            let key = keys::pack(pack);
            match packs.get(&key) {
                None => r.problems.push(format!(
                    "pack {key} is in the index but missing from the store (a gc run stopped \
                     between deleting a pack and its index object leaves this: run `datamon gc` \
                     to finish it; otherwise the pack was lost)"
                )),
                Some(size) if extent.get(pack).is_some_and(|e| e > size) => r.problems.push(
                    format!("pack {key} is shorter ({size} bytes) than its index says"),
                ),
                Some(_) => {}
            }
        }

        if read_data {
            let total: u64 = index
                .packs()
                .iter()
                .filter_map(|p| packs.get(&keys::pack(p)))
                .sum();
            progress.begin("verify", total, Unit::Bytes);
            for pack in index.packs() {
                let key = keys::pack(pack);
                if !packs.contains_key(&key) {
                    continue;
                }
                match self.store.get(&key).await {
                    Err(e) => r.problems.push(format!("cannot read {key}: {e}")),
                    Ok(bytes) => {
                        progress.advance(bytes.len() as u64);
                        let (verified, problems) = tokio::task::block_in_place(|| {
                            verify_pack(&self.store, &key, pack, &bytes)
                        });
                        r.blobs_verified += verified;
                        r.problems.extend(problems);
                    }
                }
            }
            progress.end();
        }
        Ok(r)
    }

    async fn check_repo(
        &self,
        repo: &RepoName,
        refs: &RepoRefs,
        index: &Index,
        seen_trees: &mut HashSet<Hash>,
        seen_chunks: &mut HashSet<Hash>,
        r: &mut FsckReport,
    ) -> Result<()> {
        let known: HashSet<_> = refs.ids.iter().copied().collect();
        for id in &refs.ids {
            r.bundles += 1;
            let bundle = match self.get_bundle(repo, id).await {
                Ok(b) => b,
                Err(e) => {
                    r.problems.push(format!("repo {repo}: bundle {id}: {e}"));
                    continue;
                }
            };
            let mut stack = vec![(String::new(), bundle.root)];
            while let Some((prefix, h)) = stack.pop() {
                if !seen_trees.insert(h) {
                    continue;
                }
                match index.get(&h) {
                    Some(b) if b.kind == BlobKind::Tree => {}
                    Some(_) => {
                        r.problems.push(format!(
                            "repo {repo}: bundle {id}: {prefix}/ names a blob that is not a tree"
                        ));
                        continue;
                    }
                    None => {
                        r.problems.push(format!(
                            "repo {repo}: bundle {id}: tree {h} of {prefix}/ is missing"
                        ));
                        continue;
                    }
                }
                let tree = match self.load_tree(index, &h).await {
                    Ok(t) => t,
                    Err(e) => {
                        r.problems.push(format!("repo {repo}: bundle {id}: {e}"));
                        continue;
                    }
                };
                for e in tree.entries {
                    let path = if prefix.is_empty() {
                        e.name.clone()
                    } else {
                        format!("{prefix}/{}", e.name)
                    };
                    match e.node {
                        Node::Dir { tree } => stack.push((path, tree)),
                        Node::File { size, hash, chunks } => {
                            let total: u64 = chunks.iter().map(|c| u64::from(c.1)).sum();
                            if total != size || Node::file_hash(&chunks) != hash {
                                r.problems.push(format!("repo {repo}: bundle {id}: {path}: chunk list does not match size or hash"));
                            }
                            for c in chunks {
                                if seen_chunks.insert(c.0) {
                                    match index.get(&c.0) {
                                        None => r.problems.push(format!("repo {repo}: bundle {id}: {path}: chunk {} is missing", c.0)),
                                        Some(b) if b.raw_len != c.1 => r.problems.push(format!(
                                            "repo {repo}: bundle {id}: {path}: chunk {} has length {} in the index, {} in the tree",
                                            c.0, b.raw_len, c.1
                                        )),
                                        Some(_) => {}
                                    }
                                }
                            }
                        }
                        Node::Symlink { .. } => {}
                    }
                }
            }
        }
        for (label, rec) in &refs.labels {
            if !known.contains(&rec.bundle) {
                r.problems.push(format!(
                    "repo {repo}: label {label} names missing bundle {}",
                    rec.bundle
                ));
            }
        }
        for b in &refs.branches {
            if let Some(h) = b.head {
                if !known.contains(&h) {
                    r.problems.push(format!(
                        "repo {repo}: branch {} names missing bundle {h}",
                        b.name
                    ));
                }
            }
        }
        Ok(())
    }
}

/// A repo's refs and bundle ids, read before the index.
struct RepoRefs {
    labels: Vec<(LabelName, LabelRecord)>,
    branches: Vec<Branch>,
    ids: Vec<BundleId>,
}

/// Verifies a whole pack: its name, footer, and every blob's hash.
fn verify_pack(store: &Store, key: &str, id: &Hash, bytes: &[u8]) -> (u64, Vec<String>) {
    let mut problems = Vec::new();
    if Hash::of(bytes) != *id {
        problems.push(format!(
            "pack {key}: content does not match its name (damaged)"
        ));
    }
    let entries = match store.parse_footer(bytes, key) {
        Ok(e) => e,
        Err(e) => {
            problems.push(e.to_string());
            return (0, problems);
        }
    };
    let mut verified = 0;
    for e in entries {
        let stored = &bytes[e.offset as usize..(e.offset + e.stored_len) as usize];
        match store.decode_blob(stored, e.compression, e.raw_len as usize, &e.hash) {
            Ok(_) => verified += 1,
            Err(err) => problems.push(format!("pack {key}: blob {}: {err}", e.hash)),
        }
    }
    (verified, problems)
}
