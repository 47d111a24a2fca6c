//! Whether a store can be used at all ([`Store::check`]): reachable, writable, and honouring
//! create-if-absent, before it is put to use.

use bytes::Bytes;

use crate::error::StoreCheck;
use crate::{keys, Error, Result, Store};

impl Store {
    /// Checks that the store at `url` can be used: reachable (a list and a read answer),
    /// writable (an object written under `tmp/` reads back the same and is deleted), and
    /// honouring create-if-absent (a second create of one key fails). It writes no config.
    ///
    /// # Errors
    /// [`Error::Check`] naming the first check that failed, with its cause.
    pub async fn check(url: &str, options: &[(String, String)]) -> Result<()> {
        let store = Store::open_raw(url, options)?;
        let fail = |check: StoreCheck, e: Error| Error::Check {
            check,
            source: Box::new(e),
        };
        store
            .list(keys::INDEX)
            .await
            .map_err(|e| fail(StoreCheck::Reachable, e))?;
        match store.get(keys::CONFIG).await {
            Ok(_) | Err(Error::NotFound { .. }) => {}
            Err(e) => return Err(fail(StoreCheck::Reachable, e)),
        }
        let nonce = format!("{:016x}", rand::random::<u64>());
        let probe = format!("tmp/check-{nonce}");
        let body = Bytes::from(format!("datamon store check {nonce}"));
        store
            .put(&probe, body.clone())
            .await
            .map_err(|e| fail(StoreCheck::Writable, e))?;
        let back = store
            .get(&probe)
            .await
            .map_err(|e| fail(StoreCheck::Writable, e))?;
        if back != body {
            return Err(fail(
                StoreCheck::Writable,
                Error::Corrupt {
                    what: probe,
                    detail: "read back different bytes than written".into(),
                },
            ));
        }
        store
            .delete(&probe)
            .await
            .map_err(|e| fail(StoreCheck::Writable, e))?;
        let once = format!("tmp/check-{nonce}-create");
        store
            .create(&once, Bytes::from_static(b"first"))
            .await
            .map_err(|e| fail(StoreCheck::CreateIfAbsent, e))?;
        let second = store.create(&once, Bytes::from_static(b"second")).await;
        let kept = store.get(&once).await;
        store.delete(&once).await.ok();
        match (second, kept) {
            (Err(Error::AlreadyExists { .. }), Ok(b)) if b.as_ref() == b"first" => Ok(()),
            (Err(Error::AlreadyExists { .. }), Ok(_)) => Err(fail(
                StoreCheck::CreateIfAbsent,
                Error::Corrupt {
                    what: once,
                    detail: "a refused create still replaced the object".into(),
                },
            )),
            (Ok(()), _) => Err(fail(
                StoreCheck::CreateIfAbsent,
                Error::Corrupt {
                    what: once,
                    detail: "a second create-if-absent of the same key succeeded: this store would lose concurrent ref updates (on S3-compatible stores, check that the server supports If-None-Match: *)".into(),
                },
            )),
            (Err(e), _) => Err(fail(StoreCheck::CreateIfAbsent, e)),
        }
    }
}
