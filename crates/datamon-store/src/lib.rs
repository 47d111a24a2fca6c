//! The storage layer of datamon: packs, index, tree blobs and refs over [`object_store`].
//!
//! This is the only crate that talks to `object_store`. It knows the key layout (see
//! `docs/format/`), how packs and index objects are encoded, and how mutable state (labels,
//! branch heads) is kept as append-only sequences of write-once records, created with
//! [`object_store::PutMode::Create`] so that many writers can share one bucket with no lock.
//!
//! Main types:
//! - [`Store`]: an opened store (its URL, its config, raw and JSON objects, packs, refs).
//! - [`PackWriter`] / [`FinishedPack`]: building a pack of compressed blobs with its footer.
//! - [`Index`]: the map from blob hash to its place in a pack, rebuilt from index objects.
//!
//! Where things are: `store.rs` (the [`Store`] type and its object operations), `replica.rs`
//! (a store with a replica: dual writes, fallback reads), `sequence.rs` (append-only
//! sequences), `retry.rs` (the one retry policy of every backend and layer), `error.rs`
//! (errors and their [`ErrorKind`], backend errors classified by cause), `check.rs` (whether a
//! store can be used), `url.rs` (store URLs and the backends they open), `gcs.rs` (GCS over its
//! JSON API), `sync.rs` (copying a store), `pack.rs` and `index.rs` (their encodings),
//! `relocate.rs` (finding blobs whose pack gc replaced), [`keys`] (the key layout).
//!
//! ```no_run
//! # async fn demo() -> datamon_store::Result<()> {
//! let store = datamon_store::Store::open("memory://", &[]).await?;
//! let index = store.load_index().await?;
//! assert!(index.is_empty());
//! # Ok(()) }
//! ```

mod check;
mod crypto;
mod error;
mod gcs;
mod index;
pub mod keys;
mod pack;
mod relocate;
mod replica;
mod retry;
mod sequence;
mod sign;
mod store;
mod sync;
#[cfg(test)]
mod testing;
mod url;

pub use crypto::{
    generate_key_file, KeyInfo, KeyKind, Sealer, Secret, Unlock, ENV_KEY_FILE, ENV_PASSPHRASE,
    ENV_PASSPHRASE_FILE,
};
pub use error::{Error, ErrorKind, Result, StoreCheck};
pub use index::{BlobRef, Index};
pub use pack::{parse_footer, BlobKind, FinishedPack, PackEntry, PackWriter};
pub use relocate::Wanted;
pub use sign::{Identity, TrustedKey, ENV_SIGNING_KEY_FILE, ENV_TRUST_ROOT, TRUST};
pub use store::{Decoded, Store, MULTIPART_PART, MULTIPART_THRESHOLD};
pub use sync::SyncReport;
pub use url::StoreUrl;
