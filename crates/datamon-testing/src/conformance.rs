//! The store conformance suite: behaviours every backend must have, checked through
//! [`Store`] (so datamon's own retry and multipart layers are part of what is tested).

use bytes::Bytes;
use datamon_store::{ErrorKind, Store, MULTIPART_PART, MULTIPART_THRESHOLD};
use futures::future::join_all;
use rand::{Rng, SeedableRng};

/// Runs every check on `store` (which should be fresh and empty).
pub async fn run_all(store: &Store) {
    put_get(store).await;
    ranged_get(store).await;
    list(store).await;
    create_if_absent(store).await;
    create_race(store, 16).await;
    concurrent_appends(store, 8).await;
    large_object(store).await;
}

/// `bytes` pseudo-random bytes from `seed`.
pub fn random_bytes(seed: u64, len: usize) -> Bytes {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut v = vec![0u8; len];
    rng.fill(&mut v[..]);
    Bytes::from(v)
}

/// Put, get, overwrite with the same bytes, head, missing objects, delete.
pub async fn put_get(store: &Store) {
    let body = random_bytes(1, 1000);
    store.put("c/put/a", body.clone()).await.expect("put");
    assert_eq!(store.get("c/put/a").await.expect("get"), body);
    store.put("c/put/a", body.clone()).await.expect("put again");
    assert_eq!(store.get("c/put/a").await.expect("get again"), body);
    assert_eq!(store.size("c/put/a").await.expect("size"), 1000);
    store
        .put("c/put/empty", Bytes::new())
        .await
        .expect("put empty");
    assert!(store
        .get("c/put/empty")
        .await
        .expect("get empty")
        .is_empty());
    let missing = store
        .get("c/put/missing")
        .await
        .expect_err("missing object");
    assert_eq!(missing.kind(), ErrorKind::NotFound, "{missing}");
    store.delete("c/put/a").await.expect("delete");
    let gone = store.get("c/put/a").await.expect_err("deleted object");
    assert_eq!(gone.kind(), ErrorKind::NotFound, "{gone}");
}

/// Ranged reads at the start, middle and end of an object.
pub async fn ranged_get(store: &Store) {
    let body = random_bytes(2, 100_000);
    store.put("c/range/x", body.clone()).await.expect("put");
    for r in [0..1, 0..100, 4096..70_000, 99_999..100_000, 0..100_000] {
        let got = store
            .get_range("c/range/x", r.start as u64..r.end as u64)
            .await
            .unwrap_or_else(|e| panic!("range {r:?}: {e}"));
        assert_eq!(got, body.slice(r.clone()), "range {r:?}");
    }
}

/// Recursive, sorted listings with sizes; directory listings.
pub async fn list(store: &Store) {
    for (k, n) in [
        ("c/list/b/2", 2),
        ("c/list/a", 1),
        ("c/list/b/1", 3),
        ("c/lisx", 4),
    ] {
        store.put(k, random_bytes(3, n)).await.expect("put");
    }
    let got = store.list("c/list/").await.expect("list");
    assert_eq!(
        got,
        vec![
            ("c/list/a".to_owned(), 1),
            ("c/list/b/1".to_owned(), 3),
            ("c/list/b/2".to_owned(), 2)
        ]
    );
    assert_eq!(store.list_dirs("c/list/").await.expect("dirs"), vec!["b"]);
    assert!(store.list("c/none/").await.expect("empty list").is_empty());
}

/// A second create of one key fails with `AlreadyExists` and leaves the first object.
pub async fn create_if_absent(store: &Store) {
    store
        .create("c/create/k", Bytes::from_static(b"first"))
        .await
        .expect("first create");
    let e = store
        .create("c/create/k", Bytes::from_static(b"second"))
        .await
        .expect_err("second create must fail");
    assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");
    assert_eq!(
        store.get("c/create/k").await.expect("get"),
        Bytes::from_static(b"first")
    );
}

/// `n` writers create one key at once: exactly one wins, and its bytes are what is stored.
pub async fn create_race(store: &Store, n: usize) {
    let key = format!("c/race/{:x}", rand::random::<u64>());
    let results = join_all((0..n).map(|i| {
        let key = key.clone();
        async move {
            let body = Bytes::from(format!("writer {i}"));
            (i, store.create(&key, body).await)
        }
    }))
    .await;
    let winners: Vec<usize> = results
        .iter()
        .filter(|(_, r)| r.is_ok())
        .map(|(i, _)| *i)
        .collect();
    assert_eq!(
        winners.len(),
        1,
        "exactly one of {n} racers must win: {winners:?}"
    );
    for (i, r) in &results {
        if let Err(e) = r {
            assert_eq!(e.kind(), ErrorKind::AlreadyExists, "racer {i}: {e}");
        }
    }
    let stored = store.get(&key).await.expect("get the winner");
    assert_eq!(stored, Bytes::from(format!("writer {}", winners[0])));
}

/// `n` writers append to one sequence at once: every append lands, with distinct numbers.
pub async fn concurrent_appends(store: &Store, n: u64) {
    let prefix = format!("c/seq/{:x}/", rand::random::<u64>());
    let results = join_all((0..n).map(|i| {
        let prefix = prefix.clone();
        async move {
            store
                .append::<u64, datamon_store::Error>(&prefix, |_| Ok(i))
                .await
        }
    }))
    .await;
    let mut seqs: Vec<u64> = results.into_iter().map(|r| r.expect("append").0).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=n).collect::<Vec<_>>());
    let all = store.read_sequence::<u64>(&prefix).await.expect("read");
    let mut values: Vec<u64> = all.into_iter().map(|(_, v)| v).collect();
    values.sort_unstable();
    assert_eq!(values, (0..n).collect::<Vec<_>>(), "no append was lost");
}

/// An object above the multipart threshold: written in parts, read whole and across a part
/// boundary.
pub async fn large_object(store: &Store) {
    let len = MULTIPART_THRESHOLD + MULTIPART_PART / 2 + 12_345;
    let body = random_bytes(4, len);
    store
        .put("c/large/x", body.clone())
        .await
        .expect("put large");
    assert_eq!(store.size("c/large/x").await.expect("size"), len as u64);
    let got = store.get("c/large/x").await.expect("get large");
    assert!(got == body, "large object differs");
    let r = MULTIPART_PART - 1000..MULTIPART_PART + 1000;
    let part = store
        .get_range("c/large/x", r.start as u64..r.end as u64)
        .await
        .expect("range across parts");
    assert_eq!(part, body.slice(r));
}
