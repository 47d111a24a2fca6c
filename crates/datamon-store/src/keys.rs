//! The key layout of a store, relative to its root. Documented in `docs/format/layout.md`.

use datamon_types::{BundleId, Hash, RunId};

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
