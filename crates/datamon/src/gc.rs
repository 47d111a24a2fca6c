//! Garbage collection without a lock: `datamon gc`.
//!
//! Two passes, each a normal gc run, with write-once records in between (the argument is in
//! `docs/format/gc.md`):
//! - **plan**: mark every blob reachable from the roots (live bundles, staged commits, pins),
//!   and write a plan `gc/plans/<seq>` naming the packs (older than the grace period) that
//!   hold no live blob, or whose live blobs fill less than `repack_below` of them, or that
//!   hold a blob a purge (a history rewrite) removes. Nothing is deleted.
//! - **collect**, in a later run, for each plan older than the grace period: mark again, with
//!   roots listed *after* the plan was read; copy into new packs the live blobs of condemned
//!   packs that have no safe copy elsewhere (or spare a pack that became mostly live), then
//!   delete the condemned packs (pack, then index object) and write `gc/done/<seq>`. Readers
//!   that still locate blobs in a deleted pack find them through `Store::read_relocated`.
//!
//! A commit (`Datamon::keep_for_commit_since`, called by every bundle commit and every pin
//! after its record is written and before it becomes visible) copies into fresh packs the
//! blobs it uses that unfinished plans condemned, fails if a plan it had not seen done removed
//! one, and repeats until no new plan appeared meanwhile.
//!
//! **Roots from other modules.** Besides bundles, gc keeps what the *pins* under `gc/pins/`
//! name ([`Datamon::pin`], [`Datamon::pin_bundle`], [`Datamon::unpin`]): a mutable mount pins
//! its base bundle. An open diamond's split records are roots themselves (see [`crate::diamond`]). A pin
//! is a store record, so it protects across machines; release it when done.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use datamon_store::{keys, BlobKind, Index, PackEntry};
use datamon_types::{Bundle, BundleId, Hash, Node, RepoName};
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use crate::{CancellationToken, Datamon, Error, Progress, Result, Unit};

/// How many tree nodes are read at once.
const CONCURRENCY: usize = 32;
/// Index objects are read a few at a time: as many as fit in this many bytes (an object holds
/// a pack's entries, up to 16,000 for a pack of small files, and takes about twice its size
/// once decoded), between 2 and [`CONCURRENCY`].
const INDEX_BYTES_IN_FLIGHT: u64 = 2 << 20;

/// Settings of [`Datamon::gc`].
#[derive(Debug, Clone)]
pub struct GcOptions {
    /// Report what would be planned and collected, write and delete nothing.
    pub dry_run: bool,
    /// How old a pack must be before a plan may condemn it, and a plan before it is carried
    /// out (default one hour). This only spares work (an upload that outlives it copies the
    /// data it reused, or fails and is retried); safety never depends on clocks.
    pub grace: Duration,
    /// A pack whose live blobs fill less than this fraction of it is repacked: its live blobs
    /// are copied into a new pack and it is deleted (default 0.5; 0 never repacks, 1 repacks
    /// every pack that holds a dead blob). Packs that hold blobs a history rewrite removed
    /// are repacked whatever their fraction.
    pub repack_below: f64,
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions {
            dry_run: false,
            grace: Duration::from_secs(3600),
            repack_below: 0.5,
        }
    }
}

/// What a gc run did (or, dry, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GcReport {
    /// Nothing was written or deleted.
    pub dry_run: bool,
    /// Packs in the store (indexed).
    pub packs: usize,
    /// Their bytes.
    pub bytes: u64,
    /// Blobs reachable from the roots.
    pub live_blobs: usize,
    /// Roots marked (bundles, staged commits, pins).
    pub roots: usize,
    /// Plans carried out by this run.
    pub plans_collected: Vec<u64>,
    /// Packs deleted.
    pub packs_deleted: usize,
    /// Bytes reclaimed.
    pub bytes_deleted: u64,
    /// Condemned packs kept because most of them became live again.
    pub packs_spared: usize,
    /// Condemned packs whose live blobs were copied into new packs before they were deleted.
    pub packs_repacked: usize,
    /// Live blobs copied out of them.
    pub blobs_copied: usize,
    /// Their bytes (as stored).
    pub bytes_copied: u64,
    /// Purges (of blobs a history rewrite removed) finished: no pack holds them any more.
    pub purges_finished: usize,
    /// The plan this run wrote (none when nothing was unreferenced).
    pub plan: Option<u64>,
    /// Packs it condemned (deleted by a later run).
    pub packs_condemned: usize,
    /// Their bytes.
    pub bytes_condemned: u64,
}

/// A gc plan: packs that held no live blob when it was made.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GcPlan {
    /// Who made it.
    pub author: String,
    /// When.
    pub time: DateTime<Utc>,
    /// The condemned packs.
    pub packs: Vec<Hash>,
    /// The grace period it was made with, in seconds: it is carried out no sooner, and its
    /// done record stays visible to commits that long after.
    #[serde(default)]
    pub grace_secs: u64,
}

/// Blobs that must leave the store whatever their pack's live fraction (a history rewrite's
/// removed files and tree nodes). gc condemns every pack that holds one of them dead, and
/// deletes the record once none does.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GcPurge {
    /// Who asked.
    pub author: String,
    /// When.
    pub time: DateTime<Utc>,
    /// The blobs.
    pub blobs: Vec<Hash>,
}

/// What a carried-out plan removed.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct GcDone {
    author: String,
    time: DateTime<Utc>,
    deleted: Vec<Hash>,
    spared: Vec<Hash>,
    /// How many blobs went with the deleted packs. (A commit that reuses one finds it in no
    /// index: the index objects went before this record was written.)
    #[serde(default)]
    removed_blobs: usize,
    /// Packs deleted after their live blobs were copied into new packs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    repacked: Vec<Hash>,
}

/// The part of a done record a commit reads.
#[derive(Deserialize)]
struct GcDoneTime {
    time: DateTime<Utc>,
}

/// A root that gc keeps besides bundles: trees (walked) or blobs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcPin {
    /// Tree nodes (their whole subtrees are kept) or single blobs.
    pub roots: Vec<Hash>,
    /// Who pinned.
    pub author: String,
    /// When.
    pub time: DateTime<Utc>,
    /// Why (e.g. `mutable mount base r/<id>`, `diamond <id>`).
    pub reason: String,
}

/// An index object as gc sees it, without its entries: they are read again when needed, so
/// that memory follows the number of packs, not of blobs.
struct PackInfo {
    id: Hash,
    /// Its index object.
    key: String,
    /// The pack's size, from the listing of `packs/` (0 when not listed).
    bytes: u64,
    /// When the index object was written.
    time: DateTime<Utc>,
    /// The listing of `packs/` (made first) did not show the pack, or its index object was gone
    /// when read again: deleted by a gc run stopped before it deleted the index object, or by a
    /// concurrent one. (A pack written after that listing may show here too, but no plan can
    /// name it.)
    gone: bool,
    /// How many blobs it holds.
    blobs: usize,
    /// Their stored bytes.
    stored: u64,
    /// The stored bytes of the live blobs whose primary copy it holds.
    live: u64,
}

/// What a walk of trees reports: see [`Datamon::walk_blobs`].
pub(crate) trait Reached: Send {
    /// A tree node was reached; false when it was before (its subtree is not walked again).
    fn tree(&mut self, hash: Hash) -> bool;
    /// A blob that is not a tree node was reached.
    fn blob(&mut self, hash: Hash);
}

impl Reached for HashSet<Hash> {
    fn tree(&mut self, hash: Hash) -> bool {
        self.insert(hash)
    }

    fn blob(&mut self, hash: Hash) {
        self.insert(hash);
    }
}

/// The first 8 bytes of a hash: what gc's live set keeps of a blob.
fn prefix(h: &Hash) -> u64 {
    let b = h.as_bytes();
    u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

/// The marks of a gc run while it walks the roots: the tree nodes (to walk each once) and the
/// prefixes of every blob reached, compacted (sorted, deduplicated) whenever they double.
#[derive(Default)]
struct Marks {
    trees: HashSet<Hash>,
    blobs: Vec<u64>,
    /// `blobs[..sorted]` is sorted and unique.
    sorted: usize,
}

impl Marks {
    fn compact(&mut self) {
        self.blobs.sort_unstable();
        self.blobs.dedup();
        self.sorted = self.blobs.len();
    }

    fn finish(mut self) -> Live {
        self.compact();
        self.blobs.shrink_to_fit();
        let seen = vec![0; self.blobs.len().div_ceil(64)];
        Live {
            keys: self.blobs,
            seen,
        }
    }
}

impl Reached for Marks {
    fn tree(&mut self, hash: Hash) -> bool {
        let new = self.trees.insert(hash);
        if new {
            self.blob(hash);
        }
        new
    }

    fn blob(&mut self, hash: Hash) {
        self.blobs.push(prefix(&hash));
        if self.blobs.len() >= 2 * self.sorted.max(1 << 16) {
            self.compact();
        }
    }
}

/// The blobs reachable from the roots, as the sorted prefixes of their hashes: 8 bytes a blob,
/// where a hash set takes more than 40. A dead blob that shares its prefix with a live one counts
/// as live (odds of about one in 2^64 / live blobs): it is kept, never the reverse, since what
/// gc copies is every entry this set calls live that has no safe copy, found by whole hash.
struct Live {
    keys: Vec<u64>,
    /// One bit per key: a copy of the blob was met already (see [`Live::first_copy`]).
    seen: Vec<u64>,
}

impl Live {
    fn len(&self) -> usize {
        self.keys.len()
    }

    fn contains(&self, h: &Hash) -> bool {
        self.keys.binary_search(&prefix(h)).is_ok()
    }

    /// Whether `h` is live and this is the first copy of it met (its primary copy, when the
    /// packs are met oldest first).
    fn first_copy(&mut self, h: &Hash) -> bool {
        let Ok(i) = self.keys.binary_search(&prefix(h)) else {
            return false;
        };
        let (word, bit) = (i / 64, 1u64 << (i % 64));
        let first = self.seen[word] & bit == 0;
        self.seen[word] |= bit;
        first
    }
}

impl Datamon {
    /// Pins `roots` (tree node hashes, whose subtrees are kept, or blob hashes) against gc
    /// until [`Datamon::unpin`]. Returns the pin's id. Blobs that an unfinished gc plan
    /// condemned are copied to safety before this returns.
    ///
    /// # Errors
    /// [`Error::CollectedMeanwhile`] when a concurrent gc removed a root first; a store error.
    pub async fn pin(&self, roots: &[Hash], reason: &str) -> Result<String> {
        let id = BundleId::generate().to_string();
        let pin = GcPin {
            roots: roots.to_vec(),
            author: self.author.clone(),
            time: Utc::now(),
            reason: reason.to_owned(),
        };
        self.store.create_json(&keys::gc_pin(&id), &pin).await?;
        if let Err(e) = self.keep_for_commit(roots, &BundleId::generate()).await {
            let _ = self.store.delete(&keys::gc_pin(&id)).await;
            return Err(e);
        }
        Ok(id)
    }

    /// Pins a bundle's tree (a mutable mount's base): see [`Datamon::pin`].
    ///
    /// # Errors
    /// [`Error::BundleNotFound`], [`Error::BundleDeleted`]; a store error.
    pub async fn pin_bundle(&self, repo: &RepoName, id: &BundleId, reason: &str) -> Result<String> {
        let b = self.get_bundle(repo, id).await?;
        self.pin(&[b.root], reason).await
    }

    /// Releases a pin.
    ///
    /// # Errors
    /// A store error.
    pub async fn unpin(&self, id: &str) -> Result<()> {
        match self.store.delete(&keys::gc_pin(id)).await {
            Ok(()) | Err(datamon_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The unfinished plans (not yet carried out), by sequence number.
    async fn open_plans(&self) -> Result<Vec<(u64, GcPlan)>> {
        let plans: Vec<(u64, GcPlan)> = self.store.read_sequence(keys::GC_PLANS).await?;
        let done: HashSet<String> = self
            .store
            .list(keys::GC_DONE)
            .await?
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        Ok(plans
            .into_iter()
            .filter(|(seq, _)| !done.contains(&keys::gc_done(*seq)))
            .collect())
    }

    /// The plans a commit must check: the unfinished ones (with the entries of their
    /// condemned packs still indexed) and the carried-out ones not in `seen`, or without it
    /// those carried out less than their grace period ago (with no entries: the blobs they
    /// removed are in no index any more).
    async fn plans_to_check(
        &self,
        seen: Option<&HashSet<u64>>,
    ) -> Result<Vec<(u64, Vec<(Hash, PackEntry)>)>> {
        let plans: Vec<(u64, GcPlan)> = self.store.read_sequence(keys::GC_PLANS).await?;
        if plans.is_empty() {
            return Ok(Vec::new());
        }
        let done_keys: HashSet<String> = self
            .store
            .list(keys::GC_DONE)
            .await?
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        let now = Utc::now();
        let mut out = Vec::new();
        for (seq, plan) in plans {
            let key = keys::gc_done(seq);
            if done_keys.contains(&key) {
                let done: GcDoneTime = self.store.get_json(&key).await?;
                let window = chrono::Duration::seconds(
                    i64::try_from(plan.grace_secs).unwrap_or(i64::MAX / 2000),
                );
                // Carried out after the commit's data loaded its index (or, when that is not
                // known, recently): its blobs may be among those the data reuses.
                let unseen = seen.map_or(now - done.time < window, |s| !s.contains(&seq));
                if unseen {
                    out.push((seq, Vec::new()));
                }
                continue;
            }
            let mut entries = Vec::new();
            for pack in &plan.packs {
                match self.store.get(&keys::index(pack)).await {
                    Ok(b) => {
                        let (_, es) = self.store.decode_index_object(&keys::index(pack), b)?;
                        entries.extend(es.into_iter().map(|e| (*pack, e)));
                    }
                    // Being deleted right now: its blobs are checked against the index below.
                    Err(datamon_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            out.push((seq, entries));
        }
        Ok(out)
    }

    /// Called by a commit after its (staged) record or pin is written and before it becomes
    /// visible: every blob reachable from `roots` that an unfinished plan condemned is copied
    /// into a fresh pack; a blob that a recent plan removed already fails the commit with
    /// [`Error::CollectedMeanwhile`] (nothing is committed; a retry uploads it again). Repeats
    /// until no plan appeared meanwhile. With no plan to check this costs one listing. See
    /// `docs/format/gc.md`.
    pub(crate) async fn keep_for_commit(&self, roots: &[Hash], id: &BundleId) -> Result<()> {
        self.keep_for_commit_since(roots, id, None).await
    }

    /// The plans carried out so far (read before an upload loads the index, and passed to
    /// [`Datamon::keep_for_commit_since`]).
    pub(crate) async fn gc_done_plans(&self) -> Result<HashSet<u64>> {
        Ok(self
            .store
            .list_names(keys::GC_DONE)
            .await?
            .iter()
            .filter_map(|n| n.rsplit('/').next()?.parse().ok())
            .collect())
    }

    /// [`Datamon::keep_for_commit`] for data whose upload loaded the index after the plans
    /// `seen` were carried out: every other carried-out plan is checked, however long ago it
    /// ran, so no clock bounds how long an upload may take. Without `seen`, plans carried out
    /// within their grace period are checked.
    pub(crate) async fn keep_for_commit_since(
        &self,
        roots: &[Hash],
        id: &BundleId,
        seen: Option<&HashSet<u64>>,
    ) -> Result<()> {
        let mut handled: HashSet<u64> = HashSet::new();
        loop {
            let plans = self.plans_to_check(seen).await?;
            let condemned: HashSet<Hash> = plans
                .iter()
                .flat_map(|(_, entries)| entries.iter().map(|(p, _)| *p))
                .collect();
            let fresh: Vec<_> = plans
                .into_iter()
                .filter(|(s, _)| !handled.contains(s))
                .collect();
            if fresh.is_empty() {
                return Ok(());
            }
            handled.extend(fresh.iter().map(|(s, _)| *s));
            let at_risk: HashMap<Hash, (Hash, PackEntry)> = fresh
                .into_iter()
                .flat_map(|(_, entries)| entries)
                .map(|(p, e)| (e.hash, (p, e)))
                .collect();
            let index = self.store.load_index().await?;
            // A blob also stored in a pack no plan condemned needs no copy (a plan made later
            // sees this commit's staged record: see `docs/format/gc.md`).
            let safe = self.store.load_index_without(&condemned).await?;
            let mut reached = HashSet::new();
            self.walk_blobs(&index, roots, &mut reached)
                .await
                .map_err(|e| match e {
                    Error::Corrupt { path, .. } => Error::CollectedMeanwhile {
                        id: *id,
                        blob: path,
                    },
                    e => e,
                })?;
            let mut used = Vec::new();
            let mut missing: Option<Hash> = None;
            for h in reached {
                if safe.contains(&h) {
                    continue;
                }
                if let Some(x) = at_risk.get(&h) {
                    used.push(*x);
                } else if !index.contains(&h) {
                    // Removed by a plan carried out since the data was deduplicated.
                    missing = Some(h);
                }
            }
            if let Some(h) = missing {
                return Err(Error::CollectedMeanwhile {
                    id: *id,
                    blob: h.to_string(),
                });
            }
            if used.is_empty() {
                continue;
            }
            used.sort_by_key(|(_, e)| e.hash);
            used.dedup_by_key(|(_, e)| e.hash);
            let mut w = self.store.pack_writer(0);
            for (pack, e) in used {
                let range = u64::from(e.offset)..u64::from(e.offset) + u64::from(e.stored_len);
                let stored = match self.store.get_range(&keys::pack(&pack), range).await {
                    Err(datamon_store::Error::NotFound { .. }) => {
                        return Err(Error::CollectedMeanwhile {
                            id: *id,
                            blob: e.hash.to_string(),
                        })
                    }
                    r => r?,
                };
                w.add_stored(&e, &stored);
            }
            let p = w.finish();
            tracing::debug!(pack = %p.id, blobs = p.entries.len(), "kept blobs a gc plan condemned");
            self.store.put_pack(&p).await?;
            self.store.sync().await?;
        }
    }

    /// Reports to `out` every blob reachable from `roots` (trees walked; a root that is not a
    /// tree node is a blob itself), walking each tree that `out` had not seen once.
    pub(crate) async fn walk_blobs<R: Reached>(
        &self,
        index: &Index,
        roots: &[Hash],
        out: &mut R,
    ) -> Result<()> {
        let mut level: Vec<Hash> = Vec::new();
        for r in roots {
            if index.get(r).is_some_and(|b| b.kind == BlobKind::Tree) {
                if out.tree(*r) {
                    level.push(*r);
                }
                continue;
            }
            out.blob(*r);
            if index.get(r).is_none() {
                return Err(Error::Corrupt {
                    path: format!("tree {r}"),
                    detail: "missing from the store".into(),
                });
            }
        }
        while !level.is_empty() {
            // Trees are handled as they come, a few in memory at a time (a level of a wide
            // dataset holds hundreds of thousands of entries).
            let mut trees = futures::stream::iter(
                std::mem::take(&mut level)
                    .into_iter()
                    .map(|h| async move { self.load_tree(index, &h).await }),
            )
            .buffer_unordered(CONCURRENCY);
            let mut next = Vec::new();
            while let Some(t) = trees.try_next().await? {
                for e in &t.entries {
                    match &e.node {
                        Node::File { chunks, .. } => {
                            for c in chunks {
                                out.blob(c.0);
                            }
                        }
                        Node::Dir { tree } => {
                            if out.tree(*tree) {
                                next.push(*tree);
                            }
                        }
                        Node::Symlink { .. } => {}
                    }
                }
            }
            level = next;
        }
        Ok(())
    }

    /// Reads every index object once: the packs, oldest first (those the listing of `packs/`
    /// does not show last), and an index of the tree nodes, all that marking needs.
    async fn scan_index(&self) -> Result<(Vec<PackInfo>, Index, usize)> {
        let sizes: HashMap<String, u64> = self.store.list(keys::PACKS).await?.into_iter().collect();
        let sizes = &sizes;
        let listed = self.store.list_times(keys::INDEX).await?;
        let largest = listed.iter().map(|(_, n, _)| *n).max().unwrap_or(1).max(1);
        let at_once = usize::try_from(INDEX_BYTES_IN_FLIGHT / largest)
            .unwrap_or(CONCURRENCY)
            .clamp(2, CONCURRENCY);
        let mut scanned =
            futures::stream::iter(listed.into_iter().map(|(key, _, time)| async move {
                let Some((id, entries)) = self.pack_entries(&key).await? else {
                    return Ok(None);
                };
                let size = sizes.get(&keys::pack(&id)).copied();
                let trees: Vec<PackEntry> = entries
                    .iter()
                    .filter(|e| e.kind == BlobKind::Tree)
                    .copied()
                    .collect();
                let info = PackInfo {
                    id,
                    key,
                    bytes: size.unwrap_or(0),
                    time,
                    gone: size.is_none(),
                    blobs: entries.len(),
                    stored: entries.iter().map(|e| u64::from(e.stored_len)).sum(),
                    live: 0,
                };
                Ok::<_, Error>(Some((info, trees)))
            }))
            .buffer_unordered(at_once)
            .try_filter_map(|x| async move { Ok(x) })
            .try_collect::<Vec<_>>()
            .await?;
        // A blob stored in several packs has its primary copy in the oldest pack still there.
        scanned.sort_by_key(|(p, _)| (p.gone, p.time, p.id));
        let trees = Index::from_packs(
            scanned
                .iter_mut()
                .map(|(p, trees)| (p.id, std::mem::take(trees))),
        );
        Ok((
            scanned.into_iter().map(|(p, _)| p).collect(),
            trees,
            at_once,
        ))
    }

    /// A pack's id and entries, from its index object; `None` when the object is gone (a
    /// concurrent collection deleted it).
    async fn pack_entries(&self, key: &str) -> Result<Option<(Hash, Vec<PackEntry>)>> {
        match self.store.get(key).await {
            Ok(b) => Ok(Some(self.store.decode_index_object(key, b)?)),
            Err(datamon_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Reads every index object again, oldest first, a few at a time: sets each pack's live
    /// bytes (those of the primary copies of live blobs), finds the safe copies of `wanted`
    /// (in packs present and condemned by no unfinished plan), and, for each purge, the packs
    /// that hold one of its blobs dead (`purges` maps a blob to the purges that name it).
    #[allow(clippy::too_many_arguments)]
    async fn weigh(
        &self,
        at_once: usize,
        packs: &mut [PackInfo],
        live: &mut Live,
        wanted: &HashSet<Hash>,
        condemned: &HashSet<Hash>,
        purges: &HashMap<Hash, Vec<usize>>,
        dirty: &mut [HashSet<usize>],
    ) -> Result<Copies> {
        let keys: Vec<String> = packs.iter().map(|p| p.key.clone()).collect();
        let mut read = futures::stream::iter(
            keys.into_iter()
                .map(|k| async move { self.pack_entries(&k).await }),
        )
        .buffered(at_once)
        .enumerate();
        let mut copies = Copies::default();
        while let Some((i, entries)) = read.next().await {
            let pack = &mut packs[i];
            let Some((_, entries)) = entries? else {
                pack.gone = true;
                continue;
            };
            let safe = !pack.gone && !condemned.contains(&pack.id);
            for e in &entries {
                let primary = live.first_copy(&e.hash);
                if primary {
                    pack.live += u64::from(e.stored_len);
                }
                if safe && wanted.contains(&e.hash) {
                    copies.safe.entry(e.hash).or_default().push((
                        pack.id,
                        e.stored_len,
                        e.compression,
                    ));
                }
                if let (false, Some(ps)) = (primary, purges.get(&e.hash)) {
                    for &p in ps {
                        dirty[p].insert(i);
                    }
                }
            }
        }
        Ok(copies)
    }

    /// The roots: every live bundle's tree (staged records listed before bundle records, so a
    /// commit moving from one to the other is seen), and every pin.
    async fn gc_roots(&self) -> Result<Vec<Hash>> {
        let mut roots = Vec::new();
        for repo in self.list_repos().await? {
            let staged = keys::staged(repo.name.as_str());
            for (k, _) in self.store.list(&staged).await? {
                match self.store.get_json::<Bundle>(&k).await {
                    Ok(b) => roots.push(b.root),
                    Err(datamon_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            for b in self.list_bundles(&repo.name).await? {
                roots.push(b.root);
            }
            // Open diamonds' splits, and commits that are not bundles yet.
            roots.extend(self.diamond_gc_roots(&repo.name).await?);
        }
        for (k, _) in self.store.list(keys::GC_PINS).await? {
            match self.store.get_json::<GcPin>(&k).await {
                Ok(p) => roots.extend(p.roots),
                Err(datamon_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(roots)
    }

    /// Collects garbage, with no lock: carries out the plans older than the grace period
    /// (deleting their packs that hold no live blob now, and repacking those that hold few),
    /// then plans the next collection (see the module docs and `docs/format/gc.md`). Uploads,
    /// downloads, mounts and other gc runs may go on meanwhile, anywhere.
    ///
    /// Cancel-safe: a run stopped at any point leaves a consistent store, and the next run
    /// finishes the work.
    ///
    /// # Errors
    /// [`Error::Cancelled`]; [`Error::InvalidInput`] for a repack fraction outside 0..=1; a
    /// store error.
    pub async fn gc(
        &self,
        opts: &GcOptions,
        cancel: &CancellationToken,
        progress: &dyn Progress,
    ) -> Result<GcReport> {
        let cancelled = || Error::Cancelled {
            what: "garbage collection".into(),
        };
        if !(0.0..=1.0).contains(&opts.repack_below) {
            return Err(Error::InvalidInput(format!(
                "the repack fraction must be between 0 and 1, not {}",
                opts.repack_below
            )));
        }
        let grace = chrono::Duration::from_std(opts.grace).unwrap_or(chrono::Duration::MAX);
        let now = Utc::now();
        // Plans first, then roots: a plan read here was made before the roots are listed.
        let plans = self.open_plans().await?;
        let purges = self.load_purges().await?;
        let roots = self.gc_roots().await?;
        // Memory follows the packs and the live blobs (8 bytes each), not the index: entries
        // are read in three passes, one index object at a time (see `docs/format/gc.md`).
        let (mut packs, trees, at_once) = self.scan_index().await?;
        if cancel.is_cancelled() {
            return Err(cancelled());
        }
        progress.begin("marking", roots.len() as u64, Unit::Items);
        let mut marks = Marks::default();
        for r in &roots {
            if cancel.is_cancelled() {
                progress.end();
                return Err(cancelled());
            }
            // A root whose tree is missing is damage (fsck reports it); gc keeps going.
            match self
                .walk_blobs(&trees, std::slice::from_ref(r), &mut marks)
                .await
            {
                Ok(()) | Err(Error::Corrupt { .. }) => {}
                Err(e) => return Err(e),
            }
            progress.advance(1);
        }
        progress.end();
        drop(trees);
        let mut live = marks.finish();
        let mut report = GcReport {
            dry_run: opts.dry_run,
            packs: packs.len(),
            bytes: packs.iter().map(|p| p.bytes).sum(),
            live_blobs: live.len(),
            roots: roots.len(),
            ..GcReport::default()
        };
        let by_pack: HashMap<Hash, usize> =
            packs.iter().enumerate().map(|(i, p)| (p.id, i)).collect();

        // The live blobs of the packs collected now: all they may need to copy.
        let condemned: HashSet<Hash> = plans
            .iter()
            .flat_map(|(_, p)| p.packs.iter().copied())
            .collect();
        let mut candidates: HashMap<Hash, Vec<PackEntry>> = HashMap::new();
        for (_, plan) in plans.iter().filter(|(_, p)| now - p.time >= grace) {
            for pack in &plan.packs {
                let Some(&i) = by_pack.get(pack) else {
                    continue;
                };
                if packs[i].gone || candidates.contains_key(pack) {
                    continue;
                }
                match self.pack_entries(&packs[i].key).await? {
                    Some((_, entries)) => {
                        // Copied out, so that a pack's worth of dead entries is not kept.
                        let kept = entries.iter().filter(|e| live.contains(&e.hash)).copied();
                        candidates.insert(*pack, kept.collect());
                    }
                    None => packs[i].gone = true,
                }
            }
        }
        let wanted: HashSet<Hash> = candidates.values().flatten().map(|e| e.hash).collect();
        let mut purge_of: HashMap<Hash, Vec<usize>> = HashMap::new();
        for (k, (_, p)) in purges.iter().enumerate() {
            for h in &p.blobs {
                purge_of.entry(*h).or_default().push(k);
            }
        }
        // Per purge, the packs that hold one of its blobs dead.
        let mut dirty: Vec<HashSet<usize>> = vec![HashSet::new(); purges.len()];
        let mut copies = self
            .weigh(
                at_once, &mut packs, &mut live, &wanted, &condemned, &purge_of, &mut dirty,
            )
            .await?;
        drop((live, wanted, purge_of));
        if cancel.is_cancelled() {
            return Err(cancelled());
        }
        let holds_dead_purge = |i: usize| dirty.iter().any(|d| d.contains(&i));

        // Collect: plans old enough.
        let mut still_condemned: HashSet<Hash> = HashSet::new();
        let mut deleted_now: HashSet<Hash> = HashSet::new();
        for (seq, plan) in &plans {
            if now - plan.time < grace {
                still_condemned.extend(plan.packs.iter().copied());
                continue;
            }
            let (mut deleted, mut spared, mut removed_blobs) = (Vec::new(), Vec::new(), 0);
            // Packs to delete once the copies of their live blobs are durable.
            let mut repack: Vec<usize> = Vec::new();
            let mut writer = Repacker::new(self);
            progress.begin("collecting", plan.packs.len() as u64, Unit::Items);
            for pack in &plan.packs {
                if cancel.is_cancelled() {
                    progress.end();
                    return Err(cancelled());
                }
                progress.advance(1);
                let Some(&i) = by_pack.get(pack) else {
                    // Gone already (a concurrent or killed run deleted it).
                    if !opts.dry_run {
                        let _ = self.store.delete(&keys::pack(pack)).await;
                    }
                    continue;
                };
                let info = &packs[i];
                // A pack already deleted (by a run stopped before it deleted the index object)
                // is never spared, whatever now uses its blobs: its index object goes, so a
                // commit reusing its blobs finds them in no index and is refused.
                let mut needed: Vec<PackEntry> = if info.gone {
                    Vec::new()
                } else {
                    candidates
                        .get(pack)
                        .into_iter()
                        .flatten()
                        .filter(|e| !copies.safe_elsewhere(e, pack))
                        .copied()
                        .collect()
                };
                if !needed.is_empty() {
                    let needed_bytes: u64 = needed.iter().map(|e| u64::from(e.stored_len)).sum();
                    #[allow(clippy::cast_precision_loss)]
                    let mostly_live = needed_bytes as f64 >= opts.repack_below * info.stored as f64;
                    if mostly_live && !holds_dead_purge(i) {
                        spared.push(*pack);
                        continue;
                    }
                    let outcome = if opts.dry_run {
                        Copied::Done
                    } else {
                        writer.copy(pack, &needed).await?
                    };
                    match outcome {
                        Copied::Done => {
                            copies.copied(&needed);
                            report.blobs_copied += needed.len();
                            report.bytes_copied +=
                                needed.iter().map(|e| u64::from(e.stored_len)).sum::<u64>();
                        }
                        // A live blob that does not verify is not copied: fsck names it.
                        Copied::Damaged => {
                            spared.push(*pack);
                            continue;
                        }
                        // Another gc run collecting the same plan deleted it, after copying
                        // the blobs live for it; the blobs it did not see live, commits made
                        // since copied themselves (see docs/format/gc.md). Its index object
                        // goes here too.
                        Copied::Gone => needed.clear(),
                    }
                }
                removed_blobs += info.blobs.saturating_sub(needed.len());
                report.bytes_deleted += info.bytes;
                if needed.is_empty() {
                    deleted.push(*pack);
                } else {
                    repack.push(i);
                }
                report.packs_deleted += 1;
            }
            progress.end();
            report.packs_spared += spared.len();
            report.packs_repacked += repack.len();
            if !opts.dry_run {
                // The copies are durable before any pack they replace goes.
                writer.finish().await?;
                let repacked: Vec<Hash> = repack.iter().map(|&i| packs[i].id).collect();
                for pack in deleted.iter().chain(&repacked) {
                    // The pack first: an index object without its pack is only a dead name
                    // until this collection finishes (commits copy condemned blobs, and fail
                    // if the pack is gone; readers find the copies of live blobs); a pack
                    // without an index object would be re-indexed by the next upload.
                    self.delete_if_present(&keys::pack(pack)).await?;
                    self.delete_if_present(&keys::index(pack)).await?;
                    deleted_now.insert(*pack);
                }
                self.store.sync().await?;
                let done = GcDone {
                    author: self.author.clone(),
                    time: Utc::now(),
                    deleted,
                    spared,
                    removed_blobs,
                    repacked,
                };
                match self.store.create_json(&keys::gc_done(*seq), &done).await {
                    Ok(()) | Err(datamon_store::Error::AlreadyExists { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            report.plans_collected.push(*seq);
        }

        // Plan: packs old enough that no unfinished plan condemned yet, and that hold no
        // live blob, or few, or a blob a purge removes.
        let condemn: Vec<usize> = (0..packs.len())
            .filter(|&i| {
                let p = &packs[i];
                if now - p.time < grace
                    || still_condemned.contains(&p.id)
                    || report_deleted(&plans, now, grace, &p.id)
                {
                    return false;
                }
                #[allow(clippy::cast_precision_loss)]
                let sparse = (p.live as f64) < opts.repack_below * p.stored as f64;
                p.live == 0 || sparse || holds_dead_purge(i)
            })
            .collect();
        report.packs_condemned = condemn.len();
        report.bytes_condemned = condemn.iter().map(|&i| packs[i].bytes).sum();
        if !condemn.is_empty() && !opts.dry_run {
            let plan = GcPlan {
                author: self.author.clone(),
                time: Utc::now(),
                packs: condemn.iter().map(|&i| packs[i].id).collect(),
                grace_secs: opts.grace.as_secs(),
            };
            let (seq, _) = self
                .store
                .append::<GcPlan, Error>(keys::GC_PLANS, |_| Ok(plan.clone()))
                .await?;
            report.plan = Some(seq);
        }

        // A purge is finished once no pack left holds one of its blobs dead.
        for ((key, _), dirty) in purges.iter().zip(&dirty) {
            if dirty.iter().all(|&i| deleted_now.contains(&packs[i].id)) {
                if !opts.dry_run {
                    self.delete_if_present(key).await?;
                }
                report.purges_finished += 1;
            }
        }
        Ok(report)
    }

    /// Asks gc to remove `blobs` from the store at its next collections, whatever the live
    /// fraction of the packs that hold them (those still used by a live bundle stay).
    pub(crate) async fn purge(&self, blobs: Vec<Hash>) -> Result<()> {
        let purge = GcPurge {
            author: self.author.clone(),
            time: Utc::now(),
            blobs,
        };
        let id = BundleId::generate().to_string();
        Ok(self.store.create_json(&keys::gc_purge(&id), &purge).await?)
    }

    /// Every purge record, with its key.
    async fn load_purges(&self) -> Result<Vec<(String, GcPurge)>> {
        let mut out = Vec::new();
        for (k, _) in self.store.list(keys::GC_PURGES).await? {
            match self.store.get_json::<GcPurge>(&k).await {
                Ok(p) => out.push((k, p)),
                Err(datamon_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(out)
    }

    async fn delete_if_present(&self, key: &str) -> Result<()> {
        match self.store.delete(key).await {
            Ok(()) | Err(datamon_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// Whether a plan carried out by this run already took `pack`.
fn report_deleted(
    plans: &[(u64, GcPlan)],
    now: DateTime<Utc>,
    grace: chrono::Duration,
    pack: &Hash,
) -> bool {
    plans
        .iter()
        .any(|(_, p)| now - p.time >= grace && p.packs.contains(pack))
}

/// Where the live blobs of the packs gc collects are stored: which copy of a live blob may
/// stand for another that gc deletes.
#[derive(Default)]
struct Copies {
    /// Live blob -> its copies (pack, stored length, compression) in packs that are present
    /// and condemned by no unfinished plan.
    safe: HashMap<Hash, Vec<(Hash, u32, datamon_chunk::Compression)>>,
    /// Live blobs this run copied into new packs.
    fresh: HashSet<Hash>,
}

impl Copies {
    /// Whether a reader of `e` in `pack` finds the same stored bytes in another pack that
    /// stays (so `pack` may go without copying `e`).
    fn safe_elsewhere(&self, e: &PackEntry, pack: &Hash) -> bool {
        self.fresh.contains(&e.hash)
            || self.safe.get(&e.hash).is_some_and(|v| {
                v.iter()
                    .any(|(p, len, c)| p != pack && *len == e.stored_len && *c == e.compression)
            })
    }

    fn copied(&mut self, entries: &[PackEntry]) {
        self.fresh.extend(entries.iter().map(|e| e.hash));
    }
}

/// What [`Repacker::copy`] did.
enum Copied {
    /// The blobs are in the pack being built.
    Done,
    /// One does not verify; nothing was copied.
    Damaged,
    /// The pack is gone (a concurrent collection of the same plan); nothing was copied.
    Gone,
}

/// Copies live blobs out of packs being repacked into new packs, as they are stored.
struct Repacker<'a> {
    dm: &'a Datamon,
    writer: Option<datamon_store::PackWriter>,
}

/// Repacked packs are cut at about this size.
const REPACK_PACK: usize = 16 << 20;
/// Neighbouring live blobs of a pack are read in one request when this close.
const REPACK_GAP: u64 = 256 << 10;
/// The largest such request.
const REPACK_READ: u64 = 8 << 20;

impl<'a> Repacker<'a> {
    fn new(dm: &'a Datamon) -> Self {
        Repacker { dm, writer: None }
    }

    /// Reads `entries` of `pack`, verifies each and adds it to the pack being built; copies
    /// nothing when one does not verify or the pack is gone.
    async fn copy(&mut self, pack: &Hash, entries: &[PackEntry]) -> Result<Copied> {
        let mut sorted = entries.to_vec();
        sorted.sort_by_key(|e| e.offset);
        let key = keys::pack(pack);
        let mut staged: Vec<(PackEntry, bytes::Bytes)> = Vec::with_capacity(sorted.len());
        let mut i = 0;
        while i < sorted.len() {
            let start = u64::from(sorted[i].offset);
            let mut end = start + u64::from(sorted[i].stored_len);
            let mut j = i + 1;
            while j < sorted.len() {
                let (o, l) = (u64::from(sorted[j].offset), u64::from(sorted[j].stored_len));
                if o > end + REPACK_GAP || o + l - start > REPACK_READ {
                    break;
                }
                end = end.max(o + l);
                j += 1;
            }
            let bytes = match self.dm.store.get_range(&key, start..end).await {
                Err(datamon_store::Error::NotFound { .. }) => return Ok(Copied::Gone),
                r => r?,
            };
            for e in &sorted[i..j] {
                let at = (u64::from(e.offset) - start) as usize;
                let stored = bytes.slice(at..at + e.stored_len as usize);
                if let Err(err) =
                    self.dm
                        .store
                        .decode_blob(&stored, e.compression, e.raw_len as usize, &e.hash)
                {
                    tracing::warn!(pack = %pack, blob = %e.hash, "not repacking a pack with a damaged live blob: {err}");
                    return Ok(Copied::Damaged);
                }
                staged.push((*e, stored));
            }
            i = j;
        }
        for (e, stored) in staged {
            let w = self
                .writer
                .get_or_insert_with(|| self.dm.store.pack_writer(REPACK_PACK));
            w.add_stored(&e, &stored);
            if w.len() >= REPACK_PACK {
                self.flush().await?;
            }
        }
        Ok(Copied::Done)
    }

    async fn flush(&mut self) -> Result<()> {
        if let Some(w) = self.writer.take() {
            let p = w.finish();
            tracing::debug!(pack = %p.id, blobs = p.entries.len(), "repacked live blobs");
            self.dm.store.put_pack(&p).await?;
        }
        Ok(())
    }

    /// Writes the last pack and makes every copy durable.
    async fn finish(mut self) -> Result<()> {
        self.flush().await?;
        self.dm.store.sync().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(i: u64) -> Hash {
        Hash(*blake3::hash(&i.to_le_bytes()).as_bytes())
    }

    #[test]
    fn marks_keep_every_blob_reached_once_through_compactions() {
        let mut marks = Marks::default();
        // Each blob reached three times, in an order that spans several compactions.
        for round in 0..3 {
            for i in 0..100_000u64 {
                marks.blob(hash((i * 7 + round) % 100_000));
            }
        }
        assert!(marks.tree(hash(1_000_000)));
        assert!(!marks.tree(hash(1_000_000)), "a tree is walked once");
        let mut live = marks.finish();
        assert_eq!(live.len(), 100_001);
        assert!((0..100_000).all(|i| live.contains(&hash(i))));
        assert!(live.contains(&hash(1_000_000)), "a tree node is live too");
        assert!((100_000..101_000).all(|i| !live.contains(&hash(i))));
        // The first copy met is the primary one; a dead blob has none.
        assert!(live.first_copy(&hash(5)));
        assert!(!live.first_copy(&hash(5)));
        assert!(live.first_copy(&hash(6)));
        assert!(!live.first_copy(&hash(200_000)));
    }

    #[test]
    fn a_dead_blob_sharing_a_live_prefix_counts_as_live() {
        let mut marks = Marks::default();
        let live_blob = hash(1);
        marks.blob(live_blob);
        let live = marks.finish();
        let mut twin = live_blob;
        twin.0[31] ^= 1;
        assert!(live.contains(&twin), "kept (never the reverse)");
    }
}
