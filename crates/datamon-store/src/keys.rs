//! The key layout of a store, relative to its root. Documented in `docs/format/layout.md`.

use datamon_types::{BundleId, Hash, RunId};

/// The prefix of an encrypted store's key objects (each wraps the master key for one user key).
pub const KEYS: &str = "keys/";

/// The key object `id`.
pub fn key(id: &str) -> String {
    format!("{KEYS}{id}.json")
}

/// The store's config record.
pub const CONFIG: &str = "config";
/// Prefix of all packs.
pub const PACKS: &str = "packs/";
/// Prefix of all index objects.
pub const INDEX: &str = "index/";
/// Prefix of all repos.
pub const REPOS: &str = "repos/";

/// Prefix of all run records.
pub const RUNS: &str = "runs/";

/// `runs/<run id>.json`: one run, written once.
pub fn run(id: &RunId) -> String {
    format!("runs/{id}.json")
}

/// `packs/<first two hex digits>/<pack id>`.
pub fn pack(id: &Hash) -> String {
    let h = id.to_hex();
    format!("packs/{}/{}", &h[..2], h)
}

/// `index/<pack id>`: the index object describing one pack.
pub fn index(pack: &Hash) -> String {
    format!("index/{}", pack.to_hex())
}

/// `repos/<repo>/repo.json`.
pub fn repo(repo: &str) -> String {
    format!("repos/{repo}/repo.json")
}

/// `repos/<repo>/bundles/`.
pub fn bundles(repo: &str) -> String {
    format!("repos/{repo}/bundles/")
}

/// `repos/<repo>/bundles/<id>.json`.
pub fn bundle(repo: &str, id: &BundleId) -> String {
    format!("repos/{repo}/bundles/{id}.json")
}

/// `repos/<repo>/staged/<id>.json`: a bundle record written before its branch append, whose
/// parent is not known yet (see `docs/format/layout.md`, "Commit"). Never listed as a bundle.
pub fn staged_bundle(repo: &str, id: &BundleId) -> String {
    format!("repos/{repo}/staged/{id}.json")
}

/// `repos/<repo>/labels/`.
pub fn labels(repo: &str) -> String {
    format!("repos/{repo}/labels/")
}

/// `repos/<repo>/labels/<label>/`: the label's append-only history.
pub fn label(repo: &str, label: &str) -> String {
    format!("repos/{repo}/labels/{label}/")
}

/// `repos/<repo>/branches/`.
pub fn branches(repo: &str) -> String {
    format!("repos/{repo}/branches/")
}

/// `repos/<repo>/branches/<branch>/`: the branch's append-only history.
pub fn branch(repo: &str, branch: &str) -> String {
    format!("repos/{repo}/branches/{branch}/")
}

/// The key of record `seq` in a sequence: ten decimal digits, so keys sort by number.
pub fn seq(prefix: &str, seq: u64) -> String {
    format!("{prefix}{seq:010}")
}

/// `repos/<repo>/staged/`: bundle records between their first and last commit step.
pub fn staged(repo: &str) -> String {
    format!("repos/{repo}/staged/")
}

/// `repos/<repo>/deleted.json`: the repo's tombstone (deleted, or renamed), write-once.
pub fn repo_tombstone(repo: &str) -> String {
    format!("repos/{repo}/deleted.json")
}

/// `repos/<repo>/deleted/`: the tombstones of a repo's deleted bundles.
pub fn bundle_tombstones(repo: &str) -> String {
    format!("repos/{repo}/deleted/")
}

/// `repos/<repo>/deleted/<id>.json`: a deleted bundle's tombstone, write-once.
pub fn bundle_tombstone(repo: &str, id: &BundleId) -> String {
    format!("repos/{repo}/deleted/{id}.json")
}

/// `repos/<repo>/label-deletions/`: which label records were deleted.
pub fn label_deletions(repo: &str) -> String {
    format!("repos/{repo}/label-deletions/")
}

/// `repos/<repo>/label-deletions/<label>/<seq>`: the label's value of record `seq` was deleted.
pub fn label_deletion(repo: &str, label: &str, seq: u64) -> String {
    format!("repos/{repo}/label-deletions/{label}/{seq:010}")
}

/// `repos/<repo>/branch-deletions/`: which branch records were deleted.
pub fn branch_deletions(repo: &str) -> String {
    format!("repos/{repo}/branch-deletions/")
}

/// `repos/<repo>/branch-deletions/<branch>/<seq>`: the branch as of record `seq` was deleted.
pub fn branch_deletion(repo: &str, branch: &str, seq: u64) -> String {
    format!("repos/{repo}/branch-deletions/{branch}/{seq:010}")
}

/// `repos/<repo>/rewrites/<old id>.json`: the bundle that replaced a rewritten one.
pub fn rewrite(repo: &str, old: &BundleId) -> String {
    format!("repos/{repo}/rewrites/{old}.json")
}

/// Prefix of every garbage-collection record.
pub const GC: &str = "gc/";

/// `gc/plans/`: the sequence of gc plans (`<seq>`, write-once; see `docs/format/gc.md`).
pub const GC_PLANS: &str = "gc/plans/";

/// `gc/done/<seq>`: plan `seq` was carried out; its packs are gone.
pub fn gc_done(seq: u64) -> String {
    format!("gc/done/{seq:010}")
}

/// Prefix of the done markers of gc plans.
pub const GC_DONE: &str = "gc/done/";

/// `gc/pins/`: roots that gc must keep besides bundles (mutable mount bases, diamonds).
pub const GC_PINS: &str = "gc/pins/";

/// `gc/pins/<id>.json`: one pin, written once and deleted when released.
pub fn gc_pin(id: &str) -> String {
    format!("gc/pins/{id}.json")
}

/// `gc/purges/`: blobs that must leave the store at the next collections, whatever their
/// pack's live fraction (written by a history rewrite).
pub const GC_PURGES: &str = "gc/purges/";

/// `gc/purges/<id>.json`: one purge, deleted by gc once no pack holds its dead blobs.
pub fn gc_purge(id: &str) -> String {
    format!("gc/purges/{id}.json")
}

/// `repos/<repo>/diamonds/`: the repo's diamonds (many writers of one bundle).
pub fn diamonds(repo: &str) -> String {
    format!("repos/{repo}/diamonds/")
}

/// `repos/<repo>/diamonds/<id>/diamond.json`: a diamond, written once at its initialization.
pub fn diamond(repo: &str, id: &str) -> String {
    format!("repos/{repo}/diamonds/{id}/diamond.json")
}

/// `repos/<repo>/diamonds/<id>/splits/`: the diamond's split records.
pub fn diamond_splits(repo: &str, id: &str) -> String {
    format!("repos/{repo}/diamonds/{id}/splits/")
}

/// `repos/<repo>/diamonds/<id>/splits/<split>.json`: one split, written once after its data.
pub fn diamond_split(repo: &str, id: &str, split: &str) -> String {
    format!("repos/{repo}/diamonds/{id}/splits/{split}.json")
}

/// `repos/<repo>/diamonds/<id>/closing/`: markers of commits in progress.
pub fn diamond_closing(repo: &str, id: &str) -> String {
    format!("repos/{repo}/diamonds/{id}/closing/")
}

/// `repos/<repo>/diamonds/<id>/closing/<committer>.json`: a commit has started listing splits.
pub fn diamond_closing_marker(repo: &str, id: &str, committer: &str) -> String {
    format!("repos/{repo}/diamonds/{id}/closing/{committer}.json")
}

/// `repos/<repo>/diamonds/<id>/commit.json`: the diamond's commit, create-if-absent (the one
/// arbitration point between committers).
pub fn diamond_commit(repo: &str, id: &str) -> String {
    format!("repos/{repo}/diamonds/{id}/commit.json")
}

/// `repos/<repo>/diamonds/<id>/cancel.json`: the diamond was cancelled, create-if-absent.
pub fn diamond_cancel(repo: &str, id: &str) -> String {
    format!("repos/{repo}/diamonds/{id}/cancel.json")
}
