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

/// How many index objects or tree nodes are read at once.
const CONCURRENCY: usize = 32;

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
    /// The blobs that went with the deleted packs (commits check they reuse none).
    #[serde(default)]
    blobs: Vec<Hash>,
    /// Packs deleted after their live blobs were copied into new packs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    repacked: Vec<Hash>,
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

/// The raw index: every index object's pack and entries.
struct RawIndex {
    packs: Vec<(Hash, Vec<PackEntry>, u64, DateTime<Utc>)>,
    /// Packs of `packs` that the listing of `packs/` (made first) did not show: deleted by a
    /// gc run stopped before it deleted their index objects. (A pack written after that
    /// listing may show here too, but no plan can name it.)
    gone: HashSet<Hash>,
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
    /// those carried out less than their grace period ago (with the blobs they removed).
    async fn plans_to_check(
        &self,
        seen: Option<&HashSet<u64>>,
    ) -> Result<Vec<(u64, Vec<(Hash, PackEntry)>, Vec<Hash>)>> {
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
                let done: GcDone = self.store.get_json(&key).await?;
                let window = chrono::Duration::seconds(
                    i64::try_from(plan.grace_secs).unwrap_or(i64::MAX / 2000),
                );
                // Carried out after the commit's data loaded its index (or, when that is not
                // known, recently): its blobs may be among those the data reuses.
                let unseen = seen.map_or(now - done.time < window, |s| !s.contains(&seq));
                if unseen {
                    out.push((seq, Vec::new(), done.blobs));
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
            out.push((seq, entries, Vec::new()));
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
                .flat_map(|(_, entries, _)| entries.iter().map(|(p, _)| *p))
                .collect();
            let fresh: Vec<_> = plans
                .into_iter()
                .filter(|(s, _, _)| !handled.contains(s))
                .collect();
            if fresh.is_empty() {
                return Ok(());
            }
            handled.extend(fresh.iter().map(|(s, _, _)| *s));
            let mut at_risk: HashMap<Hash, (Hash, PackEntry)> = HashMap::new();
            let mut removed: HashSet<Hash> = HashSet::new();
            for (_, entries, blobs) in fresh {
                at_risk.extend(entries.into_iter().map(|(p, e)| (e.hash, (p, e))));
                removed.extend(blobs);
            }
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
                } else if !index.contains(&h) && (removed.contains(&h) || missing.is_none()) {
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

    /// Adds to `out` every blob reachable from `roots` (trees walked; a root that is not a tree
    /// node is a blob itself), walking each tree not in `out` yet once.
    pub(crate) async fn walk_blobs(
        &self,
        index: &Index,
        roots: &[Hash],
        out: &mut HashSet<Hash>,
    ) -> Result<()> {
        let mut level: Vec<Hash> = Vec::new();
        for r in roots {
            let is_tree = index.get(r).is_some_and(|b| b.kind == BlobKind::Tree);
            if out.insert(*r) && is_tree {
                level.push(*r);
            } else if index.get(r).is_none() {
                return Err(Error::Corrupt {
                    path: format!("tree {r}"),
                    detail: "missing from the store".into(),
                });
            }
        }
        while !level.is_empty() {
            let trees: Vec<_> = futures::stream::iter(
                level
                    .iter()
                    .copied()
                    .map(|h| async move { self.load_tree(index, &h).await }),
            )
            .buffer_unordered(CONCURRENCY)
            .try_collect()
            .await?;
            let mut next = Vec::new();
            for t in trees {
                for e in &t.entries {
                    match &e.node {
                        Node::File { chunks, .. } => out.extend(chunks.iter().map(|c| c.0)),
                        Node::Dir { tree } => {
                            if out.insert(*tree) {
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

    /// Every index object with its pack's size (from one listing of `packs/`) and the time
    /// the index object was written.
    async fn load_raw_index(&self) -> Result<RawIndex> {
        let sizes: HashMap<String, u64> = self.store.list(keys::PACKS).await?.into_iter().collect();
        let sizes = &sizes;
        let listed = self.store.list_times(keys::INDEX).await?;
        let packs = futures::stream::iter(listed.into_iter().map(|(k, _, t)| async move {
            let b = match self.store.get(&k).await {
                // Collected by a concurrent gc run.
                Err(datamon_store::Error::NotFound { .. }) => return Ok(None),
                r => r?,
            };
            let (pack, entries) = self.store.decode_index_object(&k, b)?;
            let bytes = sizes.get(&keys::pack(&pack)).copied().unwrap_or(0);
            Ok::<_, Error>(Some((pack, entries, bytes, t)))
        }))
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
        let packs: Vec<_> = packs.into_iter().flatten().collect();
        let gone = packs
            .iter()
            .filter(|p| !sizes.contains_key(&keys::pack(&p.0)))
            .map(|p| p.0)
            .collect();
        Ok(RawIndex { packs, gone })
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
        let mut raw = self.load_raw_index().await?;
        if cancel.is_cancelled() {
            return Err(cancelled());
        }
        // A blob stored in several packs has its primary copy in the oldest pack still there.
        raw.packs
            .sort_by_key(|(p, _, _, t)| (raw.gone.contains(p), *t, *p));
        // Marking walks trees only: an index of the tree nodes is all it needs (a small part of
        // the whole, which would double what the raw entries already take).
        let index = Index::from_packs(raw.packs.iter().map(|(p, e, _, _)| {
            let trees = e.iter().filter(|e| e.kind == BlobKind::Tree).copied();
            (*p, trees.collect::<Vec<_>>())
        }));
        progress.begin("marking", roots.len() as u64, Unit::Items);
        let mut live: HashSet<Hash> = HashSet::new();
        for r in &roots {
            if cancel.is_cancelled() {
                progress.end();
                return Err(cancelled());
            }
            // A root whose tree is missing is damage (fsck reports it); gc keeps going.
            match self
                .walk_blobs(&index, std::slice::from_ref(r), &mut live)
                .await
            {
                Ok(()) | Err(Error::Corrupt { .. }) => {}
                Err(e) => return Err(e),
            }
            progress.advance(1);
        }
        progress.end();
        drop(index);
        let mut report = GcReport {
            dry_run: opts.dry_run,
            packs: raw.packs.len(),
            bytes: raw.packs.iter().map(|p| p.2).sum(),
            live_blobs: live.len(),
            roots: roots.len(),
            ..GcReport::default()
        };
        // Live blob -> the pack of its primary copy (the first in `raw.packs`' order).
        let live: HashMap<Hash, u32> = {
            let mut primary = HashMap::with_capacity(live.len());
            for (i, (_, entries, _, _)) in raw.packs.iter().enumerate() {
                let i = u32::try_from(i).expect("fewer than 4G packs");
                for e in entries.iter().filter(|e| live.contains(&e.hash)) {
                    primary.entry(e.hash).or_insert(i);
                }
            }
            primary
        };
        let by_pack: HashMap<Hash, usize> = raw
            .packs
            .iter()
            .enumerate()
            .map(|(i, p)| (p.0, i))
            .collect();
        // Whether an entry of pack `i` is the primary copy of a live blob.
        let primary_live =
            |i: usize, e: &PackEntry| live.get(&e.hash).is_some_and(|&p| p as usize == i);
        let purge_blobs: HashSet<Hash> = purges
            .iter()
            .flat_map(|(_, p)| p.blobs.iter().copied())
            .collect();
        let holds_dead_purge = |i: usize| {
            raw.packs[i]
                .1
                .iter()
                .any(|e| purge_blobs.contains(&e.hash) && !primary_live(i, e))
        };

        // Collect: plans old enough.
        let condemned: HashSet<Hash> = plans
            .iter()
            .flat_map(|(_, p)| p.packs.iter().copied())
            .collect();
        // Copies are looked up only for the live blobs of packs collected now.
        let collected_now: HashSet<Hash> = plans
            .iter()
            .filter(|(_, p)| now - p.time >= grace)
            .flat_map(|(_, p)| p.packs.iter().copied())
            .collect();
        let mut copies = Copies::new(&raw, &live, &condemned, &collected_now);
        let mut still_condemned: HashSet<Hash> = HashSet::new();
        let mut deleted_now: HashSet<Hash> = HashSet::new();
        for (seq, plan) in &plans {
            if now - plan.time < grace {
                still_condemned.extend(plan.packs.iter().copied());
                continue;
            }
            let (mut deleted, mut spared, mut blobs) = (Vec::new(), Vec::new(), Vec::new());
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
                let (_, entries, bytes, _) = &raw.packs[i];
                // A pack already deleted (by a run stopped before it deleted the index object)
                // is never spared, whatever now uses its blobs: its index object goes, and its
                // blobs are listed in the done record, so a commit reusing them is refused.
                let mut needed: Vec<PackEntry> = if raw.gone.contains(pack) {
                    Vec::new()
                } else {
                    entries
                        .iter()
                        .filter(|e| live.contains_key(&e.hash) && !copies.safe_elsewhere(e, pack))
                        .copied()
                        .collect()
                };
                if !needed.is_empty() {
                    let needed_bytes: u64 = needed.iter().map(|e| u64::from(e.stored_len)).sum();
                    let total: u64 = entries.iter().map(|e| u64::from(e.stored_len)).sum();
                    #[allow(clippy::cast_precision_loss)]
                    let mostly_live = needed_bytes as f64 >= opts.repack_below * total as f64;
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
                let kept: HashSet<Hash> = needed.iter().map(|e| e.hash).collect();
                blobs.extend(entries.iter().map(|e| e.hash).filter(|h| !kept.contains(h)));
                report.bytes_deleted += bytes;
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
                let repacked: Vec<Hash> = repack.iter().map(|&i| raw.packs[i].0).collect();
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
                    blobs,
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
        let condemn: Vec<usize> = (0..raw.packs.len())
            .filter(|&i| {
                let (id, entries, _, t) = &raw.packs[i];
                if now - *t < grace
                    || still_condemned.contains(id)
                    || report_deleted(&plans, now, grace, id)
                {
                    return false;
                }
                let total: u64 = entries.iter().map(|e| u64::from(e.stored_len)).sum();
                let live_bytes: u64 = entries
                    .iter()
                    .filter(|e| primary_live(i, e))
                    .map(|e| u64::from(e.stored_len))
                    .sum();
                #[allow(clippy::cast_precision_loss)]
                let sparse = (live_bytes as f64) < opts.repack_below * total as f64;
                live_bytes == 0 || sparse || holds_dead_purge(i)
            })
            .collect();
        report.packs_condemned = condemn.len();
        report.bytes_condemned = condemn.iter().map(|&i| raw.packs[i].2).sum();
        if !condemn.is_empty() && !opts.dry_run {
            let plan = GcPlan {
                author: self.author.clone(),
                time: Utc::now(),
                packs: condemn.iter().map(|&i| raw.packs[i].0).collect(),
                grace_secs: opts.grace.as_secs(),
            };
            let (seq, _) = self
                .store
                .append::<GcPlan, Error>(keys::GC_PLANS, |_| Ok(plan.clone()))
                .await?;
            report.plan = Some(seq);
        }

        // A purge is finished once no pack left holds one of its blobs dead.
        for (key, purge) in &purges {
            let blobs: HashSet<Hash> = purge.blobs.iter().copied().collect();
            let pending = (0..raw.packs.len()).any(|i| {
                !deleted_now.contains(&raw.packs[i].0)
                    && raw.packs[i]
                        .1
                        .iter()
                        .any(|e| blobs.contains(&e.hash) && !primary_live(i, e))
            });
            if !pending {
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

/// Where the live blobs of the packs gc reads are stored: which copy of a live blob may stand
/// for another that gc deletes.
struct Copies {
    /// Live blob -> its copies (pack, stored length, compression) in packs that are present
    /// and condemned by no unfinished plan.
    safe: HashMap<Hash, Vec<(Hash, u32, datamon_chunk::Compression)>>,
    /// Live blobs this run copied into new packs.
    fresh: HashSet<Hash>,
}

impl Copies {
    /// The safe copies of the live blobs of the packs in `collecting` (only those, so that
    /// memory follows what is collected, not the store).
    fn new(
        raw: &RawIndex,
        live: &HashMap<Hash, u32>,
        condemned: &HashSet<Hash>,
        collecting: &HashSet<Hash>,
    ) -> Copies {
        let wanted: HashSet<Hash> = raw
            .packs
            .iter()
            .filter(|(p, _, _, _)| collecting.contains(p))
            .flat_map(|(_, entries, _, _)| entries.iter().map(|e| e.hash))
            .filter(|h| live.contains_key(h))
            .collect();
        let mut safe: HashMap<Hash, Vec<_>> = HashMap::new();
        for (pack, entries, _, _) in &raw.packs {
            if wanted.is_empty() {
                break;
            }
            if raw.gone.contains(pack) || condemned.contains(pack) {
                continue;
            }
            for e in entries.iter().filter(|e| wanted.contains(&e.hash)) {
                safe.entry(e.hash)
                    .or_default()
                    .push((*pack, e.stored_len, e.compression));
            }
        }
        Copies {
            safe,
            fresh: HashSet::new(),
        }
    }

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
