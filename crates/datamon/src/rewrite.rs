//! Removing paths from a repo's history (personal data, a leaked secret):
//! [`Datamon::remove_paths`], `datamon repo remove-path`.
//!
//! Every live bundle of the repo that holds a matching path is rewritten without it into a new
//! bundle that keeps its message, author, time, metadata and branch, with its parents mapped
//! to their own rewrites. The new id is derived from the old one and the patterns
//! ([`BundleId::derived`]: same time, so it sorts where the old one did), so a rerun of a
//! killed rewrite writes the same records. In order:
//! 1. the new tree nodes (only the nodes on the way to a removed path change; the rest is
//!    shared);
//! 2. the new bundle records;
//! 3. `repos/<repo>/rewrites/<old id>.json`, naming the bundle that replaced the old one;
//! 4. the labels and branch heads that named an old bundle move to its rewrite (guarded: a ref
//!    that moved meanwhile is left alone and reported);
//! 5. the old bundles' tombstones, with `replaced_by`: asking for one says it was rewritten, and
//!    names the new id; runs and lineage that name it still resolve;
//! 6. a gc purge record naming the blobs that left with the removed paths (chunks, removed
//!    directories, replaced tree nodes, deleted bundles' included): gc repacks every pack that
//!    holds one of them dead, whatever its live fraction, so no byte of a removed file stays
//!    in the store. Written last, when those blobs are dead: gc drops a purge none of whose
//!    blobs is dead in any pack. A rerun after a kill before it finds the old bundles deleted,
//!    rewrites nothing, and writes the purge from them.
//!
//! Until gc has collected twice (plan, then collect), the removed bytes are still in packs.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use datamon_store::{keys, BlobKind, Index, PackWriter};
use datamon_types::{
    BranchName, BranchRecord, Bundle, BundleId, Hash, LabelName, Node, RepoName, Tree, TreeEntry,
};
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use serde::{Deserialize, Serialize};

use crate::{CancellationToken, Datamon, Error, Progress, Result, Unit};

/// Settings of [`Datamon::remove_paths`].
#[derive(Debug, Clone, Default)]
pub struct RemovePathsOptions {
    /// Paths or globs, relative to the bundle root (`data/users.csv`, `secrets`, `**/*.pem`):
    /// `*` and `?` stay within one path component, `**` crosses them. A matching directory
    /// goes with everything in it.
    pub patterns: Vec<String>,
    /// Report what would be rewritten; write nothing.
    pub dry_run: bool,
    /// Why (kept in the old bundles' tombstones).
    pub reason: Option<String>,
}

/// One rewritten bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RewrittenBundle {
    /// The bundle that held the paths (deleted by the rewrite).
    pub old: BundleId,
    /// The bundle that replaces it.
    pub new: BundleId,
    /// The paths removed from it (a directory counts once).
    pub removed: Vec<String>,
}

/// A label or branch moved from an old bundle to its rewrite.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MovedRef {
    /// The label or branch.
    pub name: String,
    /// The bundle it named.
    pub from: BundleId,
    /// The bundle it names now.
    pub to: BundleId,
}

/// What [`Datamon::remove_paths`] did (or, dry, would do).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RemovePathsReport {
    /// Nothing was written.
    pub dry_run: bool,
    /// The repo.
    pub repo: RepoName,
    /// The bundles rewritten, oldest first.
    pub bundles: Vec<RewrittenBundle>,
    /// Labels moved to the rewritten bundles.
    pub labels: Vec<MovedRef>,
    /// Branch heads moved.
    pub branches: Vec<MovedRef>,
    /// Refs left alone because they moved meanwhile (`label NAME`, `branch NAME`).
    pub skipped_refs: Vec<String>,
    /// Blobs handed to gc to remove (the removed files' chunks and replaced tree nodes),
    /// deleted bundles' included.
    pub blobs_to_purge: usize,
}

/// `repos/<repo>/rewrites/<old id>.json`: the bundle that replaced a rewritten one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rewrite {
    /// The bundle that replaces it.
    pub replaced_by: BundleId,
    /// Who rewrote it.
    pub author: String,
    /// When.
    pub time: DateTime<Utc>,
    /// How many paths were removed (the paths themselves are not recorded: they may be what
    /// had to go).
    pub removed: usize,
}

/// The error of a guarded branch move.
enum Move {
    Store(datamon_store::Error),
    Moved,
}

impl From<datamon_store::Error> for Move {
    fn from(e: datamon_store::Error) -> Self {
        Move::Store(e)
    }
}

/// Counts of what a removal took out of a bundle.
#[derive(Debug, Clone, Copy, Default)]
struct Taken {
    files: u64,
    dirs: u64,
    symlinks: u64,
    bytes: u64,
}

impl Taken {
    fn add(&mut self, o: Taken) {
        self.files += o.files;
        self.dirs += o.dirs;
        self.symlinks += o.symlinks;
        self.bytes += o.bytes;
    }
}

/// A tree node rewritten without the matching paths.
#[derive(Debug, Clone)]
struct Pruned {
    tree: Hash,
    removed: Vec<String>,
    taken: Taken,
}

/// Rewrites tree nodes, remembering what it did for each (node, path) it met.
struct Pruner<'a> {
    dm: &'a Datamon,
    index: &'a Index,
    patterns: &'a GlobSet,
    memo: HashMap<(Hash, String), Option<Pruned>>,
    pack: PackWriter,
    added: HashSet<Hash>,
    /// Write the new nodes (off for deleted bundles, whose removed blobs are only purged).
    store: bool,
    purge: HashSet<Hash>,
}

impl Pruner<'_> {
    /// `tree` (at `prefix`, empty or ending in `/`) without the matching paths; `None` when
    /// nothing in it matches.
    async fn prune(&mut self, tree: Hash, prefix: String) -> Result<Option<Pruned>> {
        let key = (tree, prefix);
        if let Some(done) = self.memo.get(&key) {
            return Ok(done.clone());
        }
        let node = self.dm.load_tree(self.index, &tree).await?;
        let mut entries: Vec<TreeEntry> = Vec::with_capacity(node.entries.len());
        let mut removed = Vec::new();
        let mut taken = Taken::default();
        let mut changed = false;
        for e in node.entries {
            let path = format!("{}{}", key.1, e.name);
            if self.patterns.is_match(&path) {
                taken.add(self.take(&e).await?);
                removed.push(path);
                changed = true;
                continue;
            }
            match &e.node {
                Node::Dir { tree: sub } => {
                    let sub = *sub;
                    match Box::pin(self.prune(sub, format!("{path}/"))).await? {
                        Some(p) => {
                            removed.extend(p.removed);
                            taken.add(p.taken);
                            changed = true;
                            entries.push(TreeEntry {
                                node: Node::Dir { tree: p.tree },
                                ..e
                            });
                        }
                        None => entries.push(e),
                    }
                }
                _ => entries.push(e),
            }
        }
        let out = if changed {
            self.purge.insert(tree);
            Some(Pruned {
                tree: self.put(&Tree { entries }).await?,
                removed,
                taken,
            })
        } else {
            None
        };
        self.memo.insert(key, out.clone());
        Ok(out)
    }

    /// Counts a removed entry and marks its blobs for the purge.
    async fn take(&mut self, e: &TreeEntry) -> Result<Taken> {
        let mut t = Taken::default();
        match &e.node {
            Node::File { size, chunks, .. } => {
                t.files = 1;
                t.bytes = *size;
                self.purge.extend(chunks.iter().map(|c| c.0));
            }
            Node::Symlink { .. } => t.symlinks = 1,
            Node::Dir { tree } => {
                t.dirs = 1;
                for (_, sub) in self.dm.walk(self.index, *tree).await? {
                    match &sub.node {
                        Node::File { size, .. } => {
                            t.files += 1;
                            t.bytes += size;
                        }
                        Node::Dir { .. } => t.dirs += 1,
                        Node::Symlink { .. } => t.symlinks += 1,
                    }
                }
                self.dm
                    .walk_blobs(self.index, &[*tree], &mut self.purge)
                    .await?;
            }
        }
        Ok(t)
    }

    /// Packs a new tree node (unless the store has it); returns its hash.
    async fn put(&mut self, tree: &Tree) -> Result<Hash> {
        let bytes = tree.to_bytes();
        let hash = self.dm.store.hasher().hash(&bytes);
        if !self.store || self.index.contains(&hash) || !self.added.insert(hash) {
            return Ok(hash);
        }
        self.pack.add_blob(hash, BlobKind::Tree, &bytes, true);
        if self.pack.len() >= self.dm.store.config().pack_size as usize {
            self.flush().await?;
        }
        Ok(hash)
    }

    async fn flush(&mut self) -> Result<()> {
        let pack = std::mem::replace(&mut self.pack, self.dm.store.pack_writer(0));
        if !pack.is_empty() {
            self.dm.store.put_pack(&pack.finish()).await?;
        }
        Ok(())
    }
}

/// The patterns as one set, and as written without `./` and slashes around them (what the
/// rewrites' ids derive from, so `secrets/` and `secrets` name the same rewrite); a bad one is
/// named.
fn glob_set(patterns: &[String]) -> Result<(GlobSet, Vec<String>)> {
    if patterns.is_empty() {
        return Err(Error::InvalidInput(
            "name at least one path or glob to remove".into(),
        ));
    }
    let mut set = GlobSetBuilder::new();
    let mut cleaned = Vec::with_capacity(patterns.len());
    for p in patterns {
        let clean = p.trim_start_matches("./").trim_matches('/');
        cleaned.push(clean.to_owned());
        if clean.is_empty() || clean.split('/').any(|c| c == "..") {
            return Err(Error::InvalidInput(format!(
                "{p:?} is not a path inside a bundle: give it relative to the bundle root, \
                 like data/users.csv or secrets/**"
            )));
        }
        let glob = GlobBuilder::new(clean)
            .literal_separator(true)
            .build()
            .map_err(|e| Error::InvalidInput(format!("{p:?} is not a valid glob: {e}")))?;
        set.add(glob);
    }
    let set = set
        .build()
        .map_err(|e| Error::InvalidInput(format!("invalid globs: {e}")))?;
    cleaned.sort_unstable();
    cleaned.dedup();
    Ok((set, cleaned))
}

impl Datamon {
    /// Removes every path matching `opts.patterns` from every bundle of `repo` (see the module
    /// docs): the bundles that hold one are rewritten without it, their labels and branch
    /// heads move to the rewrites, and the old bundles are deleted. `datamon gc` then removes
    /// the bytes (two collections, the grace period apart).
    ///
    /// Rerunning it after it was stopped finishes the work (the records it writes are the
    /// same each time). A repo where no bundle holds a matching path gives an empty report.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a bad pattern; [`Error::RepoNotFound`]; [`Error::Cancelled`];
    /// a store error.
    pub async fn remove_paths(
        &self,
        repo: &RepoName,
        opts: &RemovePathsOptions,
        cancel: &CancellationToken,
        progress: &dyn Progress,
    ) -> Result<RemovePathsReport> {
        let (patterns, cleaned) = glob_set(&opts.patterns)?;
        let bundles = self.list_bundles(repo).await?;
        let deleted = self.deleted_bundle_ids(repo).await?;
        let index = self.store.load_index().await?;
        let mut pruner = Pruner {
            dm: self,
            index: &index,
            patterns: &patterns,
            memo: HashMap::new(),
            pack: self.store.pack_writer(0),
            added: HashSet::new(),
            store: !opts.dry_run,
            purge: HashSet::new(),
        };
        let cancelled = || Error::Cancelled {
            what: "the history rewrite".into(),
        };
        progress.begin("rewriting", bundles.len() as u64, Unit::Items);
        let mut affected: Vec<(Bundle, Pruned)> = Vec::new();
        for b in bundles {
            if cancel.is_cancelled() {
                progress.end();
                return Err(cancelled());
            }
            if let Some(p) = pruner.prune(b.root, String::new()).await? {
                affected.push((b, p));
            }
            progress.advance(1);
        }
        progress.end();
        // Deleted bundles are not rewritten, but what they hold of the paths goes too.
        pruner.store = false;
        let mut deleted: Vec<BundleId> = deleted.into_iter().collect();
        deleted.sort();
        // Bundles an earlier (killed) run rewrote already: their rewrites are the parents of
        // the rewrites of their children, as that run wrote them.
        let mut replaced: HashMap<BundleId, BundleId> = HashMap::new();
        for id in deleted {
            if let Some(next) = self
                .bundle_tombstone(repo, &id)
                .await?
                .and_then(|t| t.replaced_by)
            {
                replaced.insert(id, next);
            }
            let b = match self.get_bundle_record(repo, &id).await {
                Ok(b) => b,
                Err(e) if e.kind() == crate::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            // A bundle whose data gc took already has nothing left to purge.
            match pruner.prune(b.root, String::new()).await {
                Ok(_) | Err(Error::Corrupt { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let salt = cleaned.join("\0");
        let map: HashMap<BundleId, BundleId> = affected
            .iter()
            .map(|(b, _)| (b.id, b.id.derived(salt.as_bytes())))
            .collect();
        let records: Vec<Bundle> = affected
            .iter()
            .map(|(b, p)| {
                let mut n = b.clone();
                n.id = map[&b.id];
                n.root = p.tree;
                n.parents = b
                    .parents
                    .iter()
                    .map(|id| map.get(id).or(replaced.get(id)).copied().unwrap_or(*id))
                    .collect();
                n.stats.files -= p.taken.files.min(n.stats.files);
                n.stats.dirs -= p.taken.dirs.min(n.stats.dirs);
                n.stats.symlinks -= p.taken.symlinks.min(n.stats.symlinks);
                n.stats.bytes -= p.taken.bytes.min(n.stats.bytes);
                n
            })
            .collect();
        let mut report = RemovePathsReport {
            dry_run: opts.dry_run,
            repo: repo.clone(),
            bundles: affected
                .iter()
                .map(|(b, p)| RewrittenBundle {
                    old: b.id,
                    new: map[&b.id],
                    removed: p.removed.clone(),
                })
                .collect(),
            labels: Vec::new(),
            branches: Vec::new(),
            skipped_refs: Vec::new(),
            blobs_to_purge: pruner.purge.len(),
        };
        let (labels, branches) =
            futures::try_join!(self.list_labels(repo), self.list_branches(repo))?;
        let moves = |name: String, from: Option<BundleId>| {
            let from = from?;
            map.get(&from).map(|to| MovedRef {
                name,
                from,
                to: *to,
            })
        };
        let label_moves: Vec<MovedRef> = labels
            .into_iter()
            .filter_map(|(l, r)| moves(l.to_string(), Some(r.bundle)))
            .collect();
        let branch_moves: Vec<MovedRef> = branches
            .into_iter()
            .filter_map(|b| moves(b.name.to_string(), b.head))
            .collect();
        if opts.dry_run || (affected.is_empty() && pruner.purge.is_empty()) {
            report.labels = label_moves;
            report.branches = branch_moves;
            return Ok(report);
        }

        // 1. Trees.
        pruner.flush().await?;
        self.store.sync().await?;
        let purge: Vec<Hash> = pruner.purge.into_iter().collect();
        if affected.is_empty() {
            // Only deleted bundles hold the paths (a rerun after a kill in step 6, or data
            // deleted before): hand their blobs to gc.
            self.purge(purge).await?;
            return Ok(report);
        }
        // 2. The new bundles (their data kept from a gc plan made meanwhile).
        let roots: Vec<Hash> = records.iter().map(|b| b.root).collect();
        self.keep_for_commit(&roots, &records[0].id).await?;
        for b in &records {
            self.write_bundle_record(b).await?;
        }
        self.store.sync().await?;
        // 3. What replaced what.
        for (b, p) in &affected {
            let rec = Rewrite {
                replaced_by: map[&b.id],
                author: self.author.clone(),
                time: Utc::now(),
                removed: p.removed.len(),
            };
            match self
                .store
                .create_json(&keys::rewrite(repo.as_str(), &b.id), &rec)
                .await
            {
                Ok(()) | Err(datamon_store::Error::AlreadyExists { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        // 4. The refs.
        for m in label_moves {
            let label: LabelName = m.name.parse()?;
            match self
                .set_label(repo, &label, &m.to, Some(Some(m.from)))
                .await
            {
                Ok(_) => report.labels.push(m),
                Err(Error::LabelConflict { .. }) => {
                    report.skipped_refs.push(format!("label {label}"))
                }
                Err(e) => return Err(e),
            }
        }
        for m in branch_moves {
            let branch: BranchName = m.name.parse()?;
            if self.move_branch(repo, &branch, m.from, m.to).await? {
                report.branches.push(m);
            } else {
                report.skipped_refs.push(format!("branch {branch}"));
            }
        }
        // 5. The old bundles go.
        for (b, p) in &affected {
            let mut t =
                self.tombstone(Some(opts.reason.clone().unwrap_or_else(|| {
                    format!("rewritten without {} path(s)", p.removed.len())
                })));
            t.replaced_by = Some(map[&b.id]);
            match self
                .store
                .create_json(&keys::bundle_tombstone(repo.as_str(), &b.id), &t)
                .await
            {
                Ok(()) | Err(datamon_store::Error::AlreadyExists { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.store.sync().await?;
        // 6. The purge, once the old bundles are dead: a gc run that reads it lists roots
        // after, so it never takes the old bundles for live ones and drops the purge early.
        if !purge.is_empty() {
            self.purge(purge).await?;
        }
        Ok(report)
    }

    /// Moves a branch from `from` to `to` if its head is still `from`; false when it moved.
    async fn move_branch(
        &self,
        repo: &RepoName,
        branch: &BranchName,
        from: BundleId,
        to: BundleId,
    ) -> Result<bool> {
        let author = self.author.clone();
        let r = self
            .store
            .append::<BranchRecord, Move>(&keys::branch(repo.as_str(), branch.as_str()), |prev| {
                if prev.and_then(|p| p.head) != Some(from) {
                    return Err(Move::Moved);
                }
                Ok(BranchRecord {
                    head: Some(to),
                    previous: Some(from),
                    author: author.clone(),
                    time: Utc::now(),
                })
            })
            .await;
        match r {
            Ok(_) => Ok(true),
            Err(Move::Moved) => Ok(false),
            Err(Move::Store(e)) => Err(e.into()),
        }
    }

    /// The bundles a bundle replaced by history rewrites (read from `rewrites/`).
    pub(crate) async fn replaced_by_rewrite(
        &self,
        repo: &RepoName,
        id: &BundleId,
    ) -> Result<Vec<BundleId>> {
        let prefix = format!("repos/{repo}/rewrites/");
        let mut out = Vec::new();
        for (k, _) in self.store.list(&prefix).await? {
            let Some(old) = k
                .strip_prefix(&prefix)
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(|n| n.parse::<BundleId>().ok())
            else {
                continue;
            };
            match self.store.get_json::<Rewrite>(&k).await {
                Ok(r) if r.replaced_by == *id => out.push(old),
                Ok(_) | Err(datamon_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(out)
    }
}
