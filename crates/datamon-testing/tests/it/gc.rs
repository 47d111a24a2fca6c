//! Garbage collection racing uploads and deletes on the real object stores (radosgw S3,
//! fake-gcs, Azurite), as well as a local directory: no lock, several processes' worth of
//! `Datamon` handles, and after every round each listed bundle downloads exactly and
//! `fsck --read-data` is clean.

// Tests unwrap, and write their fixtures directly.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use datamon::{
    CancellationToken, Datamon, DownloadOptions, Error, GcOptions, NoProgress, OpenOptions,
    RepoName, RetentionRules, UploadContext, UploadOptions,
};
use datamon_testing::backends::{self, Backend};

async fn open(url: &str, b: &Backend) -> Datamon {
    Datamon::open(
        url,
        OpenOptions {
            author: Some("gc-test".into()),
            cache_dir: None,
            store_options: b.options.clone(),
            concurrency: Some(8),
            unlock: None,
        },
    )
    .await
    .unwrap_or_else(|e| panic!("open {url} on {}: {e}", b.name))
}

/// Incompressible bytes from a seed.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

async fn gc(dm: &Datamon) -> datamon::GcReport {
    let opts = GcOptions {
        dry_run: false,
        grace: Duration::ZERO,
        ..GcOptions::default()
    };
    dm.gc(&opts, &CancellationToken::new(), &NoProgress)
        .await
        .unwrap_or_else(|e| panic!("gc: {e}"))
}

/// Bytes of every pack of the store, as its listing gives them.
async fn pack_bytes(dm: &Datamon) -> u64 {
    dm.store()
        .list(datamon_store::keys::PACKS)
        .await
        .unwrap()
        .iter()
        .map(|(_, size)| size)
        .sum()
}

async fn race(b: Backend, rounds: u64) {
    let url = b.fresh_url("gc-race");
    let dm = open(&url, &b).await;
    let repo: RepoName = "r".parse().unwrap();
    dm.create_repo(&repo, "gc race").await.unwrap();
    // What each bundle holds: bundle id -> content seeds of f0, f1, f2.
    let expect: Arc<tokio::sync::Mutex<BTreeMap<String, Vec<u64>>>> = Arc::default();
    for round in 0..rounds {
        let mut tasks = Vec::new();
        for w in 0..3u64 {
            let (url, b, expect) = (url.clone(), b.clone(), expect.clone());
            tasks.push(tokio::spawn(async move {
                let dm = open(&url, &b).await;
                let src = tempfile::tempdir().unwrap();
                // Seeds from a small pool, so uploads reuse chunks of deleted bundles.
                let seeds: Vec<u64> = (0..3).map(|i| (round * 7 + w * 3 + i) % 11).collect();
                for (i, s) in seeds.iter().enumerate() {
                    std::fs::write(src.path().join(format!("f{i}")), noise(*s, 40_000)).unwrap();
                }
                let ctx = UploadContext {
                    repo: "r".parse().unwrap(),
                    path: src.path().to_owned(),
                    message: format!("round {round} writer {w}"),
                };
                let opts = UploadOptions {
                    branch: Some(format!("w{w}").parse().unwrap()),
                    ..Default::default()
                };
                match dm.upload(ctx, opts, &NoProgress).await {
                    Ok(rep) => {
                        expect.lock().await.insert(rep.bundle.id.to_string(), seeds);
                    }
                    // Allowed: the commit found reused data collected and committed nothing.
                    Err(Error::CollectedMeanwhile { .. }) => {}
                    Err(e) => panic!("{}: upload: {e}", b.name),
                }
            }));
        }
        {
            let (url, b) = (url.clone(), b.clone());
            tasks.push(tokio::spawn(async move {
                let dm = open(&url, &b).await;
                let rules = RetentionRules {
                    keep_newest: Some(2),
                    ..Default::default()
                };
                dm.apply_retention(&"r".parse().unwrap(), &rules, false)
                    .await
                    .unwrap_or_else(|e| panic!("{}: retention: {e}", b.name));
            }));
        }
        for _ in 0..2 {
            let (url, b) = (url.clone(), b.clone());
            tasks.push(tokio::spawn(async move {
                gc(&open(&url, &b).await).await;
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let listed = dm.bundle_ids(&repo).await.unwrap();
        assert!(!listed.is_empty(), "{}: round {round}: no bundle", b.name);
        let expect = expect.lock().await.clone();
        for id in &listed {
            let seeds = &expect[&id.to_string()];
            let out = tempfile::tempdir().unwrap();
            let o = out.path().join("o");
            dm.download(&repo, id, &o, &DownloadOptions::default(), &NoProgress)
                .await
                .unwrap_or_else(|e| panic!("{}: round {round}: bundle {id}: {e}", b.name));
            for (i, s) in seeds.iter().enumerate() {
                assert!(
                    std::fs::read(o.join(format!("f{i}"))).unwrap() == noise(*s, 40_000),
                    "{}: round {round}: bundle {id}: f{i} differs",
                    b.name
                );
            }
        }
        let f = dm.fsck(true, &NoProgress).await.unwrap();
        assert!(f.is_ok(), "{}: round {round}: {:?}", b.name, f.problems);
    }
    // Settle: two passes reclaim everything unreferenced.
    gc(&dm).await;
    let last = gc(&dm).await;
    let live = dm.bundle_ids(&repo).await.unwrap().len() as u64;
    let stored = pack_bytes(&dm).await;
    // Each live bundle holds at most 3 x 40 kB of incompressible data (plus trees); packs
    // shared with kept data may hold dead chunks, but repacking keeps every pack at least
    // half live (the default `repack_below`), so the slack is 2x.
    assert!(
        stored <= live * 3 * 40_000 * 2 + 64 * 1024,
        "{}: {stored} bytes of packs for {live} live bundles: {last:?}",
        b.name
    );
    eprintln!(
        "{}: {rounds} rounds, {live} live bundles, {stored} bytes of packs",
        b.name
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gc_races_uploads_and_deletes_on_every_object_store() {
    let network: Vec<Backend> = backends::available()
        .into_iter()
        .filter(|b| b.endpoint.is_some())
        .collect();
    if network.is_empty() {
        eprintln!("no object store server is configured: only the local store runs");
    }
    race(Backend::local(), 3).await;
    for b in network {
        race(b, 4).await;
    }
}

/// Whether any object of the store holds `needle` (every key listed and read).
async fn store_holds(dm: &Datamon, needle: &[u8]) -> Option<String> {
    for (key, _) in dm.store().list("").await.unwrap() {
        let b = dm.store().get(&key).await.unwrap();
        if b.windows(needle.len()).any(|w| w == needle) {
            return Some(key);
        }
    }
    None
}

async fn remove_path(b: Backend) {
    let url = b.fresh_url("remove-path");
    let dm = open(&url, &b).await;
    let repo: RepoName = "r".parse().unwrap();
    dm.create_repo(&repo, "history rewrite").await.unwrap();
    let src = tempfile::tempdir().unwrap();
    let secret = noise(501, 60_000);
    let keep = noise(502, 60_000);
    std::fs::create_dir_all(src.path().join("private")).unwrap();
    std::fs::write(src.path().join("private/leaked-key.pem"), &secret).unwrap();
    std::fs::write(src.path().join("keep.bin"), &keep).unwrap();
    let ctx = |m: &str| UploadContext {
        repo: repo.clone(),
        path: src.path().to_owned(),
        message: m.into(),
    };
    let opts = UploadOptions {
        label: Some("prod".parse().unwrap()),
        ..Default::default()
    };
    dm.upload(ctx("one"), opts, &NoProgress).await.unwrap();
    std::fs::write(src.path().join("two.txt"), b"two").unwrap();
    dm.upload(ctx("two"), UploadOptions::default(), &NoProgress)
        .await
        .unwrap();
    let opts = datamon::RemovePathsOptions {
        patterns: vec!["**/*.pem".into()],
        ..Default::default()
    };
    let rep = dm
        .remove_paths(&repo, &opts, &CancellationToken::new(), &NoProgress)
        .await
        .unwrap_or_else(|e| panic!("{}: remove_paths: {e}", b.name));
    assert_eq!(rep.bundles.len(), 2, "{}: {rep:?}", b.name);
    // A mount of a rewritten bundle opened before gc moves its data.
    let early = dm
        .vfs(
            &repo,
            &rep.bundles[0].new,
            datamon::vfs::VfsOptions::default(),
            tokio::runtime::Handle::current(),
        )
        .await
        .unwrap();
    assert!(store_holds(&dm, &secret[7000..7064]).await.is_some());
    gc(&dm).await;
    let collected = gc(&dm).await;
    assert!(collected.packs_deleted > 0, "{}: {collected:?}", b.name);
    if let Some(key) = store_holds(&dm, &secret[7000..7064]).await {
        panic!("{}: {key} still holds bytes of the removed file", b.name);
    }
    if let Some(key) = store_holds(&dm, b"leaked-key").await {
        panic!("{}: {key} still holds the removed file's name", b.name);
    }
    // The old mount still reads what it kept, from the packs that replaced its own.
    let got = tokio::task::spawn_blocking(move || {
        let a = early
            .lookup_blocking(datamon::vfs::ROOT_INODE, "keep.bin")
            .unwrap()
            .expect("exists");
        let fh = early.open_blocking(a.ino).unwrap();
        early.read_blocking(fh, 0, a.size as u32).unwrap()
    })
    .await
    .unwrap();
    assert!(
        got == keep[..],
        "{}: the early mount read other bytes",
        b.name
    );
    let id = dm
        .resolve(
            &repo,
            &datamon::BundleSelector::Label("prod".parse().unwrap()),
        )
        .await
        .unwrap();
    let out = tempfile::tempdir().unwrap();
    let o = out.path().join("o");
    dm.download(&repo, &id, &o, &DownloadOptions::default(), &NoProgress)
        .await
        .unwrap();
    assert!(std::fs::read(o.join("keep.bin")).unwrap() == keep);
    assert!(!o.join("private/leaked-key.pem").exists());
    let f = dm.fsck(true, &NoProgress).await.unwrap();
    assert!(f.is_ok(), "{}: {:?}", b.name, f.problems);
}

/// A file removed from history leaves no byte and no name in the store once gc has run twice,
/// on every object store, and a mount opened before reads on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_removed_path_leaves_nothing_on_every_object_store() {
    remove_path(Backend::local()).await;
    for b in backends::available()
        .into_iter()
        .filter(|b| b.endpoint.is_some())
    {
        remove_path(b).await;
    }
}
