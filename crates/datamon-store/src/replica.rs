//! A store with a replica: every write goes to both, reads fall back to the replica.
//!
//! A read goes to the primary. It goes on to the replica only when the primary's failure may
//! be the primary's alone: a transient failure (after [`crate::retry::RetryPolicy::OPERATION`]
//! gave up), or data that does not verify ([`ErrorKind::Corrupt`]). Every other answer of the
//! primary stands: a missing object is missing (the replica is written after the primary, so it
//! cannot hold more), and a denied or misconfigured primary is reported, not masked.
//!
//! After a transient failure, reads go to the replica first for [`PRIMARY_SUSPEND`] (so a dead
//! primary does not cost its timeouts on every read); what the replica cannot answer is then
//! asked of the primary, whose answer stands.

use std::fmt::Display;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::{keys, Error, ErrorKind, Result, Store};

/// How long reads go to the replica first after a transient failure of the primary.
const PRIMARY_SUSPEND: Duration = Duration::from_secs(30);

/// The replica of a store, and until when reads go to it first.
#[derive(Debug)]
pub(crate) struct Replica {
    /// The replica (a store without a replica of its own).
    pub(crate) store: Store,
    /// Until when reads go to the replica first.
    suspended_until: Mutex<Option<Instant>>,
}

impl Replica {
    fn new(store: Store) -> Replica {
        Replica {
            store,
            suspended_until: Mutex::new(None),
        }
    }

    /// Whether reads go to the replica first.
    fn primary_suspended(&self) -> bool {
        let until = *self.suspended_until.lock().expect("not poisoned");
        until.is_some_and(|t| Instant::now() < t)
    }

    /// Sends reads to the replica first for a while.
    fn suspend_primary(&self) {
        *self.suspended_until.lock().expect("not poisoned") =
            Some(Instant::now() + PRIMARY_SUSPEND);
    }
}

/// Whether a read that failed on the primary may succeed on the replica.
fn falls_back(e: &Error) -> bool {
    matches!(e.kind(), ErrorKind::Transient | ErrorKind::Corrupt)
}

impl Store {
    /// Opens the store at `url` with a replica at `replica`: every write goes to both (the
    /// primary first; a create-if-absent is decided by the primary), and a read that fails on the
    /// primary transiently, or whose data does not verify (a short read, a record that does not
    /// decode, a blob whose hash does not match), is served by the replica. Other failures of
    /// the primary (a missing object, denied access) are returned as they are. The replica gets
    /// the primary's config when it has none. When the primary cannot be reached at all, the
    /// store opens on the replica's config and reads from it.
    ///
    /// # Errors
    /// As [`Store::open`], for either store.
    pub async fn open_with_replica(
        url: &str,
        replica: &str,
        options: &[(String, String)],
    ) -> Result<Store> {
        Store::open_with_replica_unlocked(url, replica, options, &crate::Unlock::from_env()).await
    }

    /// [`Store::open_with_replica`], unlocking an encrypted store with `unlock`'s secrets.
    ///
    /// # Errors
    /// As [`Store::open_with_replica`].
    pub async fn open_with_replica_unlocked(
        url: &str,
        replica: &str,
        options: &[(String, String)],
        unlock: &crate::Unlock,
    ) -> Result<Store> {
        let mut rep = Store::open_raw(replica, options)?;
        let mut primary = match Store::open_with(url, options, unlock).await {
            Ok(p) => p,
            Err(e) if e.is_transient() => {
                // The primary is unreachable: read through the replica (which must exist).
                tracing::warn!(error = %e, replica = %rep.url, "the primary store fails; using the replica");
                rep.config = rep.get_json(keys::CONFIG).await.map_err(|_| e)?;
                rep.unlock(unlock).await?;
                let mut p = Store::open_raw(url, options)?;
                p.config = rep.config.clone();
                rep.identity = unlock.identity.clone();
                rep.load_trust(unlock.trust_root.as_deref()).await?;
                p.sealer = rep.sealer.clone();
                p.identity = rep.identity.clone();
                p.policy = rep.policy.clone();
                let rep = Replica::new(rep);
                rep.suspend_primary();
                p.replica = Some(std::sync::Arc::new(rep));
                return Ok(p);
            }
            Err(e) => return Err(e),
        };
        let config = Bytes::from(
            serde_json::to_vec_pretty(&primary.config).expect("records always serialize"),
        );
        match rep.create_primary(keys::CONFIG, config).await {
            Ok(()) | Err(Error::AlreadyExists { .. }) => {}
            Err(e) => return Err(e),
        }
        rep.config = rep.load_or_create_config().await?;
        rep.sealer = primary.sealer.clone();
        rep.identity = primary.identity.clone();
        rep.policy = primary.policy.clone();
        primary.replica = Some(std::sync::Arc::new(Replica::new(rep)));
        Ok(primary)
    }

    /// The replica, if this store has one.
    pub fn replica(&self) -> Option<&Store> {
        self.replica.as_deref().map(|r| &r.store)
    }

    /// Runs a read (`call`, on one backend) on the primary and, when its failure allows (see
    /// the module docs), on the replica. `op` and `key` name the read in the logs.
    ///
    /// `call` takes the store it runs on, borrowed for as long as `self` is (both are borrowed
    /// from it), so its future is a plain type whose `Send` the compiler sees (which an
    /// `AsyncFn` over any borrow would hide).
    pub(crate) async fn read<'s, T, K, F, Fut>(
        &'s self,
        op: &'static str,
        key: &K,
        call: F,
    ) -> Result<T>
    where
        K: Display + Sync + ?Sized,
        F: Fn(&'s Store) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let Some(rep) = self.replica.as_deref() else {
            return call(self).await;
        };
        if rep.primary_suspended() {
            let replica_error = match call(&rep.store).await {
                Ok(v) => return Ok(v),
                Err(e) => {
                    tracing::debug!(op, key = %key, error = %e, "the replica cannot answer; asking the suspended primary");
                    e
                }
            };
            let r = call(self).await;
            return match r {
                // The primary is still down: the replica, which gets every write, says what is
                // not there (a tombstone that was never written, say).
                Err(e) if e.is_transient() => {
                    rep.suspend_primary();
                    if replica_error.kind() == crate::ErrorKind::NotFound {
                        Err(replica_error)
                    } else {
                        Err(e)
                    }
                }
                r => r,
            };
        }
        match call(self).await {
            Err(e) if falls_back(&e) => {
                if e.is_transient() {
                    rep.suspend_primary();
                }
                tracing::warn!(op, key = %key, error = %e, replica = %rep.store.url, "reading from the replica");
                match call(&rep.store).await {
                    Ok(v) => Ok(v),
                    // An unreachable primary: the replica's "not there" is the answer.
                    Err(re) if e.is_transient() && re.kind() == crate::ErrorKind::NotFound => {
                        Err(re)
                    }
                    Err(_) => Err(e),
                }
            }
            r => r,
        }
    }

    /// Writes what [`Store::put`] wrote to the primary to the replica, if any.
    pub(crate) async fn put_replica(&self, key: &str, bytes: Bytes) -> Result<()> {
        match &self.replica {
            Some(r) => r.store.put_primary(key, bytes).await,
            None => Ok(()),
        }
    }

    /// Copies what [`Store::create`] created on the primary to the replica, if any; an object
    /// already there is left as it is (with a warning when it holds other bytes).
    pub(crate) async fn create_replica(&self, key: &str, bytes: Bytes) -> Result<()> {
        let Some(r) = &self.replica else {
            return Ok(());
        };
        match r.store.create_primary(key, bytes.clone()).await {
            Ok(()) => Ok(()),
            Err(Error::AlreadyExists { .. }) => {
                if r.store.get_primary(key).await? != bytes {
                    tracing::warn!(key, replica = %r.store.url, "the replica holds other bytes under this key; left as it is");
                }
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Deletes from the replica, if any, what [`Store::delete`] deleted from the primary.
    pub(crate) async fn delete_replica(&self, key: &str) -> Result<()> {
        match &self.replica {
            Some(r) => match r.store.delete_primary(key).await {
                Ok(()) | Err(Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(e),
            },
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use object_store::path::Path;

    use super::*;
    use crate::testing::{denied_error, transient_error, Faulty};
    use crate::{BlobKind, PackWriter, StoreUrl};

    fn on(name: &str, os: Arc<dyn object_store::ObjectStore>) -> Store {
        Store::on_backend(
            StoreUrl::Memory(format!("memory://{name}")),
            os,
            Path::default(),
        )
    }

    /// A primary on `primary` with a replica on `replica`.
    fn pair(primary: Arc<Faulty>, replica: Arc<Faulty>) -> Store {
        let mut s = on("primary", primary);
        s.replica = Some(Arc::new(Replica::new(on("replica", replica))));
        s
    }

    #[tokio::test(start_paused = true)]
    async fn a_missing_object_is_answered_by_the_primary_alone() {
        let (p, r) = (Faulty::new(), Faulty::new());
        let s = pair(p.clone(), r.clone());
        let e = s.get("repos/missing/repo.json").await.expect_err("missing");
        assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
        let e = s
            .get_json::<serde_json::Value>("repos/missing/repo.json")
            .await
            .expect_err("missing");
        assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
        assert_eq!(
            s.size("nothing").await.expect_err("missing").kind(),
            ErrorKind::NotFound
        );
        assert_eq!(p.reads(), 3);
        assert_eq!(r.reads(), 0, "the replica was asked about a missing object");
    }

    #[tokio::test(start_paused = true)]
    async fn a_denied_primary_is_reported_not_masked() {
        let (p, r) = (Faulty::new(), Faulty::new());
        let s = pair(p.clone(), r.clone());
        s.put("k", Bytes::from_static(b"v")).await.expect("put");
        p.fail_reads(Some(denied_error));
        let e = s.get("k").await.expect_err("denied");
        assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
        let e = s.list("").await.expect_err("denied");
        assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
        assert_eq!(r.reads(), 0, "a denied primary was masked by the replica");
    }

    #[tokio::test(start_paused = true)]
    async fn a_transient_failure_falls_back_then_the_replica_goes_first() {
        let (p, r) = (Faulty::new(), Faulty::new());
        let s = pair(p.clone(), r.clone());
        s.put("k", Bytes::from_static(b"v"))
            .await
            .expect("put to both");
        p.fail_reads(Some(transient_error));
        assert_eq!(s.get("k").await.expect("from the replica"), "v");
        // The operation retries of the primary, then one read of the replica.
        assert_eq!(p.reads(), 3);
        assert_eq!(r.reads(), 1);
        // Suspended: the replica answers first, the primary is not asked.
        assert_eq!(s.list("").await.expect("from the replica").len(), 1);
        assert_eq!((p.reads(), r.reads()), (3, 2));
        // What the replica lacks is asked of the primary, whose answer stands.
        p.fail_reads(None);
        assert_eq!(
            s.get("gone").await.expect_err("missing").kind(),
            ErrorKind::NotFound
        );
        assert_eq!((p.reads(), r.reads()), (4, 3));
    }

    #[tokio::test(start_paused = true)]
    async fn data_that_does_not_verify_is_read_from_the_replica() {
        let (p, r) = (Faulty::new(), Faulty::new());
        let s = pair(p.clone(), r.clone());
        let mut w = PackWriter::new(0);
        w.add_raw(Hash::of(b"blob"), BlobKind::Tree, b"blob");
        let pack = w.finish();
        s.put_pack(&pack).await.expect("put pack");
        s.create_json("r/rec.json", &serde_json::json!({"a": 1}))
            .await
            .expect("create record");
        // Damage the primary's copies.
        let primary = s.replica_free();
        let junk = Bytes::from(vec![0x5a; pack.bytes.len()]);
        primary
            .put(&keys::pack(&pack.id), junk)
            .await
            .expect("damage the pack");
        primary.delete("r/rec.json").await.expect("delete");
        primary
            .put("r/rec.json", Bytes::from_static(b"{ not json"))
            .await
            .expect("damage the record");
        let index = s.load_index().await.expect("index");
        assert_eq!(
            s.read_blob(&index, &Hash::of(b"blob"))
                .await
                .expect("blob from the replica"),
            b"blob"
        );
        let rec: serde_json::Value = s.get_json("r/rec.json").await.expect("from the replica");
        assert_eq!(rec["a"], 1);
        // Without a replica the damage is reported.
        let e = primary
            .read_blob(&index, &Hash::of(b"blob"))
            .await
            .expect_err("damaged");
        assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    }

    #[test]
    fn reads_of_a_replicated_store_can_be_spawned() {
        fn spawnable<F: std::future::Future + Send + 'static>(_: F) {}
        let s = pair(Faulty::new(), Faulty::new());
        let (a, b, c) = (s.clone(), s.clone(), s.clone());
        spawnable(async move { a.get("k").await });
        spawnable(async move { b.get_json::<u64>("k").await });
        spawnable(async move { c.read_blob(&crate::Index::new(), &Hash::of(b"x")).await });
    }

    use datamon_types::Hash;

    impl Store {
        /// This store without its replica (to write to the primary alone).
        fn replica_free(&self) -> Store {
            let mut s = self.clone();
            s.replica = None;
            s
        }
    }
}
