//! Deletion, retention and garbage collection through the library, on the memory and local
//! stores, including uploads, deletes and gc runs racing each other.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use datamon::{
    CancellationToken, Datamon, DeleteOptions, DownloadOptions, Error, ErrorKind, GcOptions,
    NoProgress, RepoName, RetentionRules,
};

use super::{open, rt, snapshot, upload, write};

fn repo(name: &str) -> RepoName {
    name.parse().unwrap()
}

fn now_gc() -> GcOptions {
    GcOptions {
        dry_run: false,
        grace: Duration::ZERO,
        ..GcOptions::default()
    }
}

async fn gc(dm: &Datamon) -> datamon::GcReport {
    dm.gc(&now_gc(), &CancellationToken::new(), &NoProgress)
        .await
        .unwrap()
}

/// Bytes of every pack in a local store.
fn packs_bytes(root: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![root.join("packs")];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                total += std::fs::metadata(&p).unwrap().len();
            }
        }
    }
    total
}

/// Whether `needle` occurs in any file under `root`.
fn raw_store_has(root: &Path, needle: &[u8]) -> bool {
    let mut stack = vec![root.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if std::fs::read(&p)
                .unwrap()
                .windows(needle.len())
                .any(|w| w == needle)
            {
                return true;
            }
        }
    }
    false
}

/// Incompressible bytes from a seed.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn deleted_bundles_are_refused_everywhere_and_refs_block_the_delete() {
    rt().block_on(async {
        let dm = open("memory://lifecycle-delete").await;
        let r = repo("r");
        dm.create_repo(&r, "d").await.unwrap();
        let src = tempfile::tempdir().unwrap();
        write(&src.path().join("a.txt"), b"one");
        let b1 = upload(&dm, "r", src.path(), "one").await;
        write(&src.path().join("a.txt"), b"two");
        let b2 = upload(&dm, "r", src.path(), "two").await;
        dm.set_label(&r, &"prod".parse().unwrap(), &b1.id, None)
            .await
            .unwrap();

        // A label names b1: refused, naming it; nothing changed.
        let e = dm
            .delete_bundle(&r, &b1.id, &DeleteOptions::default())
            .await
            .unwrap_err();
        assert!(matches!(e, Error::BundleReferenced { .. }), "{e}");
        assert!(e.to_string().contains("label prod"), "{e}");
        assert_eq!(dm.bundle_ids(&r).await.unwrap(), vec![b1.id, b2.id]);
        // b2 is the head of main.
        let e = dm
            .delete_bundle(&r, &b2.id, &DeleteOptions::default())
            .await
            .unwrap_err();
        assert!(e.to_string().contains("branch main"), "{e}");

        let rep = dm
            .delete_bundle(
                &r,
                &b1.id,
                &DeleteOptions {
                    remove_refs: true,
                    reason: Some("test".into()),
                },
            )
            .await
            .unwrap();
        assert_eq!(rep.labels, vec!["prod".parse().unwrap()]);
        assert_eq!(dm.bundle_ids(&r).await.unwrap(), vec![b2.id]);
        assert_eq!(dm.list_bundles(&r).await.unwrap().len(), 1);
        let e = dm.get_bundle(&r, &b1.id).await.unwrap_err();
        assert!(matches!(e, Error::BundleDeleted { .. }), "{e}");
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert!(e.to_string().contains("was deleted"), "{e}");
        let dst = tempfile::tempdir().unwrap();
        let e = dm
            .download(
                &r,
                &b1.id,
                &dst.path().join("o"),
                &DownloadOptions::default(),
                &NoProgress,
            )
            .await
            .unwrap_err();
        assert!(matches!(e, Error::BundleDeleted { .. }), "{e}");
        let mounted = dm
            .vfs(
                &r,
                &b1.id,
                datamon::vfs::VfsOptions::default(),
                tokio::runtime::Handle::current(),
            )
            .await;
        let Err(e) = mounted else {
            panic!("a deleted bundle does not mount");
        };
        assert!(matches!(e, Error::BundleDeleted { .. }), "{e}");
        let e = dm
            .get_label(&r, &"prod".parse().unwrap())
            .await
            .unwrap_err();
        assert!(matches!(e, Error::LabelNotFound { .. }), "{e}");
        assert!(dm.list_labels(&r).await.unwrap().is_empty());
        // A label can't point at it again.
        let e = dm
            .set_label(&r, &"x".parse().unwrap(), &b1.id, None)
            .await
            .unwrap_err();
        assert!(matches!(e, Error::BundleDeleted { .. }), "{e}");
        // The log skips it; lineage still shows it, marked deleted.
        let log = dm.log(&r, None, None).await.unwrap();
        assert_eq!(
            log.iter().map(|l| l.bundle.id).collect::<Vec<_>>(),
            vec![b2.id]
        );
        let lin = dm
            .lineage(&r, &b1.id, datamon::LineageOptions::default())
            .await
            .unwrap();
        assert!(lin.bundles[0].deleted);
        // Deleting it again says it was deleted.
        let e = dm
            .delete_bundle(&r, &b1.id, &DeleteOptions::default())
            .await
            .unwrap_err();
        assert!(matches!(e, Error::BundleDeleted { .. }), "{e}");
    });
}

#[test]
fn labels_branches_and_repos_delete_and_rename() {
    rt().block_on(async {
        let dm = open("memory://lifecycle-refs").await;
        let r = repo("r");
        dm.create_repo(&r, "desc").await.unwrap();
        let src = tempfile::tempdir().unwrap();
        write(&src.path().join("a.txt"), b"one");
        let b1 = upload(&dm, "r", src.path(), "one").await;
        let l = "l".parse().unwrap();
        dm.set_label(&r, &l, &b1.id, None).await.unwrap();
        dm.delete_label(&r, &l).await.unwrap();
        assert!(dm.get_label(&r, &l).await.is_err());
        assert!(matches!(
            dm.delete_label(&r, &l).await.unwrap_err(),
            Error::LabelNotFound { .. }
        ));
        // Set again: alive, with its whole history.
        dm.set_label(&r, &l, &b1.id, None).await.unwrap();
        assert_eq!(dm.get_label(&r, &l).await.unwrap().bundle, b1.id);
        assert_eq!(dm.label_history(&r, &l).await.unwrap().len(), 2);

        let dev = "dev".parse().unwrap();
        dm.create_branch(&r, &dev, Some(b1.id)).await.unwrap();
        dm.delete_branch(&r, &dev).await.unwrap();
        assert_eq!(dm.branch_head(&r, &dev).await.unwrap(), None);
        assert!(dm
            .list_branches(&r)
            .await
            .unwrap()
            .iter()
            .all(|b| b.name != dev));
        // The name can be created again.
        dm.create_branch(&r, &dev, None).await.unwrap();
        assert!(dm
            .list_branches(&r)
            .await
            .unwrap()
            .iter()
            .any(|b| b.name == dev));

        // Rename: bundles, labels, branches under the new name; the old one says where.
        let r2 = repo("r2");
        dm.rename_repo(&r, &r2).await.unwrap();
        let e = dm.get_repo(&r).await.unwrap_err();
        assert!(e.to_string().contains("renamed to \"r2\""), "{e}");
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert_eq!(dm.get_repo(&r2).await.unwrap().description, "desc");
        assert_eq!(dm.bundle_ids(&r2).await.unwrap(), vec![b1.id]);
        assert_eq!(dm.get_bundle(&r2, &b1.id).await.unwrap().repo, r2);
        assert_eq!(dm.get_label(&r2, &l).await.unwrap().bundle, b1.id);
        assert_eq!(dm.label_history(&r2, &l).await.unwrap().len(), 2);
        let names: Vec<String> = dm
            .list_repos()
            .await
            .unwrap()
            .iter()
            .map(|x| x.name.to_string())
            .collect();
        assert_eq!(names, vec!["r2"]);
        let dst = tempfile::tempdir().unwrap();
        dm.download(
            &r2,
            &b1.id,
            &dst.path().join("o"),
            &DownloadOptions::default(),
            &NoProgress,
        )
        .await
        .unwrap();

        dm.delete_repo(&r2, None).await.unwrap();
        let e = dm.get_repo(&r2).await.unwrap_err();
        assert!(
            matches!(
                e,
                Error::RepoDeleted {
                    renamed_to: None,
                    ..
                }
            ),
            "{e}"
        );
        assert!(dm.list_repos().await.unwrap().is_empty());
        assert!(
            dm.create_repo(&r2, "").await.is_err(),
            "the name stays taken"
        );
    });
}

#[test]
fn retention_keeps_what_each_rule_names_and_dry_run_changes_nothing() {
    rt().block_on(async {
        let dm = open("memory://lifecycle-retention").await;
        let r = repo("r");
        dm.create_repo(&r, "d").await.unwrap();
        let src = tempfile::tempdir().unwrap();
        let mut ids = Vec::new();
        for i in 0..6 {
            write(&src.path().join("a.txt"), format!("v{i}").as_bytes());
            let ctx = datamon::UploadContext {
                repo: r.clone(),
                path: src.path().to_owned(),
                message: format!("v{i}"),
            };
            let mut opts = datamon::UploadOptions::default();
            if i == 1 {
                opts.meta = BTreeMap::from([("keep".to_owned(), "yes".to_owned())]);
            }
            ids.push(dm.upload(ctx, opts, &NoProgress).await.unwrap().bundle.id);
        }
        dm.set_label(&r, &"gold".parse().unwrap(), &ids[0], None)
            .await
            .unwrap();
        let since = dm.get_bundle(&r, &ids[3]).await.unwrap().created_at;
        // Labelled (0), metadata (1), newer than 3's time (3, 4, 5), branch head (5): 2 goes.
        let rules = RetentionRules {
            keep_labelled: true,
            keep_newest: None,
            keep_since: Some(since),
            keep_meta: vec![("keep".into(), "yes".into())],
        };
        let dry = dm.apply_retention(&r, &rules, true).await.unwrap();
        assert_eq!(
            dry.delete.iter().map(|b| b.id).collect::<Vec<_>>(),
            vec![ids[2]]
        );
        assert_eq!(
            dm.bundle_ids(&r).await.unwrap().len(),
            6,
            "dry run deletes nothing"
        );
        let done = dm.apply_retention(&r, &rules, false).await.unwrap();
        assert_eq!(done, dry);
        assert_eq!(
            dm.bundle_ids(&r).await.unwrap(),
            vec![ids[0], ids[1], ids[3], ids[4], ids[5]]
        );
        // Newest 2 only: the head (5) and 4 stay.
        let rules = RetentionRules {
            keep_newest: Some(2),
            ..Default::default()
        };
        let plan = dm.apply_retention(&r, &rules, false).await.unwrap();
        assert_eq!(plan.keep, vec![ids[4], ids[5]]);
        assert_eq!(dm.bundle_ids(&r).await.unwrap(), vec![ids[4], ids[5]]);
        assert!(
            dm.list_labels(&r).await.unwrap().is_empty(),
            "its label went with it"
        );
    });
}

#[test]
fn gc_reclaims_deleted_data_in_two_passes_and_nothing_of_live_bundles() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let dm = open(&format!("file://{}", dir.path().display())).await;
        let r = repo("r");
        dm.create_repo(&r, "d").await.unwrap();
        let src = tempfile::tempdir().unwrap();
        let secret = noise(7, 300_000);
        // The secret is uploaded alone, so its packs hold nothing else (gc does not repack
        // packs shared with live data yet).
        write(&src.path().join("secret.bin"), &secret);
        let b1 = upload(&dm, "r", src.path(), "with secret").await;
        std::fs::remove_file(src.path().join("secret.bin")).unwrap();
        write(&src.path().join("keep.bin"), &noise(1, 200_000));
        let b2 = upload(&dm, "r", src.path(), "without").await;
        let before = packs_bytes(dir.path());

        // Nothing is garbage yet.
        let r0 = gc(&dm).await;
        assert_eq!((r0.packs_condemned, r0.packs_deleted), (0, 0), "{r0:?}");

        dm.delete_bundle(&r, &b1.id, &DeleteOptions::default())
            .await
            .unwrap();
        let dry = dm
            .gc(
                &GcOptions {
                    dry_run: true,
                    grace: Duration::ZERO,
                    ..GcOptions::default()
                },
                &CancellationToken::new(),
                &NoProgress,
            )
            .await
            .unwrap();
        assert!(dry.packs_condemned > 0 && dry.plan.is_none(), "{dry:?}");
        let first = gc(&dm).await;
        assert_eq!(first.packs_condemned, dry.packs_condemned);
        assert_eq!(first.packs_deleted, 0, "the first pass only plans");
        assert!(raw_store_has(dir.path(), &secret[1000..1064]));
        let second = gc(&dm).await;
        assert_eq!(second.packs_deleted, first.packs_condemned, "{second:?}");
        assert_eq!(second.bytes_deleted, first.bytes_condemned);
        let after = packs_bytes(dir.path());
        assert_eq!(before - after, second.bytes_deleted);
        assert!(second.bytes_deleted >= secret.len() as u64, "{second:?}");
        assert!(
            !raw_store_has(dir.path(), &secret[1000..1064]),
            "no byte of it is left"
        );

        let out = tempfile::tempdir().unwrap();
        dm.download(
            &r,
            &b2.id,
            &out.path().join("o"),
            &DownloadOptions::default(),
            &NoProgress,
        )
        .await
        .unwrap();
        assert_eq!(snapshot(src.path()), snapshot(&out.path().join("o")));
        let f = dm.fsck(true, &NoProgress).await.unwrap();
        assert!(f.is_ok(), "{:?}", f.problems);
        // A third run has nothing left to do.
        let third = gc(&dm).await;
        assert_eq!(
            (third.packs_condemned, third.packs_deleted),
            (0, 0),
            "{third:?}"
        );
    });
}

/// The race of fossil collection: data condemned by a plan is reused by an upload (it dedups
/// against the index, which still lists the condemned pack) that commits before the plan is
/// carried out. The commit keeps the data; the collection spares or no longer needs the pack.
#[test]
fn an_upload_reusing_condemned_data_keeps_it() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let dm = open(&format!("file://{}", dir.path().display())).await;
        let r = repo("r");
        dm.create_repo(&r, "d").await.unwrap();
        let src = tempfile::tempdir().unwrap();
        let data = noise(3, 250_000);
        write(&src.path().join("x.bin"), &data);
        let b1 = upload(&dm, "r", src.path(), "one").await;
        write(&src.path().join("x.bin"), b"other");
        upload(&dm, "r", src.path(), "two").await;
        dm.delete_bundle(&r, &b1.id, &DeleteOptions::default())
            .await
            .unwrap();
        let plan = gc(&dm).await;
        assert!(plan.packs_condemned > 0);
        // The same content again: every chunk is found in the (condemned) pack.
        write(&src.path().join("x.bin"), &data);
        let b3 = upload(&dm, "r", src.path(), "three").await;
        assert_eq!(
            b3.stats.new_chunks, 0,
            "the upload reused the condemned chunks"
        );
        let collect = gc(&dm).await;
        assert_eq!(collect.plans_collected.len(), 1);
        let out = tempfile::tempdir().unwrap();
        dm.download(
            &r,
            &b3.id,
            &out.path().join("o"),
            &DownloadOptions::default(),
            &NoProgress,
        )
        .await
        .unwrap();
        assert_eq!(std::fs::read(out.path().join("o/x.bin")).unwrap(), data);
        let f = dm.fsck(true, &NoProgress).await.unwrap();
        assert!(f.is_ok(), "{:?}", f.problems);
    });
}

/// Pins (the hook for mutable mount bases and diamonds) keep deleted bundles' data.
#[test]
fn pinned_trees_survive_gc_until_released() {
    rt().block_on(async {
        let dm = open("memory://lifecycle-pin").await;
        let r = repo("r");
        dm.create_repo(&r, "d").await.unwrap();
        let src = tempfile::tempdir().unwrap();
        write(&src.path().join("x.bin"), &noise(9, 100_000));
        let b1 = upload(&dm, "r", src.path(), "one").await;
        write(&src.path().join("x.bin"), b"y");
        upload(&dm, "r", src.path(), "two").await;
        let pin = dm
            .pin_bundle(&r, &b1.id, "mutable mount base")
            .await
            .unwrap();
        dm.delete_bundle(&r, &b1.id, &DeleteOptions::default())
            .await
            .unwrap();
        assert_eq!(gc(&dm).await.packs_condemned, 0, "pinned");
        dm.unpin(&pin).await.unwrap();
        assert!(gc(&dm).await.packs_condemned > 0);
        assert!(gc(&dm).await.packs_deleted > 0);
    });
}

/// Uploads, deletes and gc runs race on one local store from separate handles, for many
/// rounds: after each round every listed bundle downloads exactly and fsck is clean; at the
/// end, two more gc passes leave no more than the live bundles need.
#[test]
fn uploads_deletes_and_gc_race_for_many_rounds() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().display());
        let dm = open(&url).await;
        let r = repo("r");
        dm.create_repo(&r, "d").await.unwrap();
        // What each bundle holds: bundle id -> (file name -> content seed).
        let expect: Arc<tokio::sync::Mutex<BTreeMap<String, Vec<u64>>>> = Arc::default();
        let rounds = 8;
        for round in 0..rounds {
            let mut tasks = Vec::new();
            for w in 0..3u64 {
                let (url, expect) = (url.clone(), expect.clone());
                tasks.push(tokio::spawn(async move {
                    let dm = open(&url).await;
                    let src = tempfile::tempdir().unwrap();
                    // Seeds from a small pool, so uploads reuse chunks of deleted bundles.
                    let seeds: Vec<u64> = (0..3).map(|i| (round * 7 + w * 3 + i) % 11).collect();
                    for (i, s) in seeds.iter().enumerate() {
                        write(&src.path().join(format!("f{i}")), &noise(*s, 40_000));
                    }
                    let ctx = datamon::UploadContext {
                        repo: "r".parse().unwrap(),
                        path: src.path().to_owned(),
                        message: format!("round {round} writer {w}"),
                    };
                    let opts = datamon::UploadOptions {
                        branch: Some(format!("w{w}").parse().unwrap()),
                        ..Default::default()
                    };
                    match dm.upload(ctx, opts, &NoProgress).await {
                        Ok(rep) => {
                            expect.lock().await.insert(rep.bundle.id.to_string(), seeds);
                        }
                        // Allowed: the commit found reused data gone and committed nothing.
                        Err(Error::CollectedMeanwhile { .. }) => {}
                        Err(e) => panic!("upload: {e}"),
                    }
                }));
            }
            // A deleter: every bundle but the branch heads and the newest few.
            {
                let url = url.clone();
                tasks.push(tokio::spawn(async move {
                    let dm = open(&url).await;
                    let r = repo("r");
                    let rules = RetentionRules {
                        keep_newest: Some(2),
                        ..Default::default()
                    };
                    dm.apply_retention(&r, &rules, false).await.unwrap();
                }));
            }
            for _ in 0..2 {
                let url = url.clone();
                tasks.push(tokio::spawn(async move {
                    let dm = open(&url).await;
                    gc(&dm).await;
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
            let listed = dm.bundle_ids(&r).await.unwrap();
            let expect = expect.lock().await.clone();
            for id in &listed {
                let seeds = &expect[&id.to_string()];
                let out = tempfile::tempdir().unwrap();
                let o = out.path().join("o");
                dm.download(&r, id, &o, &DownloadOptions::default(), &NoProgress)
                    .await
                    .unwrap_or_else(|e| panic!("round {round}: bundle {id}: {e}"));
                for (i, s) in seeds.iter().enumerate() {
                    assert_eq!(
                        std::fs::read(o.join(format!("f{i}"))).unwrap(),
                        noise(*s, 40_000)
                    );
                }
            }
            let f = dm.fsck(true, &NoProgress).await.unwrap();
            assert!(f.is_ok(), "round {round}: {:?}", f.problems);
        }
        // Settle: two passes reclaim everything unreferenced.
        gc(&dm).await;
        let last = gc(&dm).await;
        let live: usize = dm.bundle_ids(&r).await.unwrap().len();
        let stored = packs_bytes(dir.path());
        // Each live bundle holds at most 3 x 40 kB of incompressible data (plus trees); packs
        // shared with kept data may hold a few dead chunks (stated slack: 2x).
        assert!(
            stored <= (live as u64) * 3 * 40_000 * 2 + 64 * 1024,
            "{stored} bytes for {live} live bundles: {last:?}"
        );
    });
}

/// A gc run killed between deleting a condemned pack and its index object leaves the index
/// naming a pack that is gone. Uploads that would reuse its blobs are refused meanwhile, and
/// the next run deletes the index object even when something wants those blobs again (it
/// cannot spare what is gone), so no later commit ever refers to the missing pack.
#[test]
fn a_gc_killed_between_pack_and_index_deletes_is_finished_by_the_next_run() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let dm = open(&format!("file://{}", dir.path().display())).await;
        let r = repo("r");
        dm.create_repo(&r, "d").await.unwrap();
        let src = tempfile::tempdir().unwrap();
        write(&src.path().join("f.bin"), &noise(3, 500_000));
        let b1 = upload(&dm, "r", src.path(), "one").await;
        let del = DeleteOptions {
            remove_refs: true,
            ..Default::default()
        };
        dm.delete_bundle(&r, &b1.id, &del).await.unwrap();
        let plan = gc(&dm).await;
        assert!(plan.packs_condemned > 0, "{plan:?}");
        // What a killed run leaves: the condemned packs deleted, their index objects kept.
        let mut removed = 0;
        let mut stack = vec![dir.path().join("packs")];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                if e.file_type().unwrap().is_dir() {
                    stack.push(e.path());
                } else {
                    std::fs::remove_file(e.path()).unwrap();
                    removed += 1;
                }
            }
        }
        assert_eq!(
            removed, plan.packs_condemned,
            "only the condemned packs existed"
        );
        // The same data again, before gc runs: refused, nothing committed.
        let ctx = datamon::UploadContext {
            repo: r.clone(),
            path: src.path().to_owned(),
            message: "again".into(),
        };
        match dm
            .upload(ctx.clone(), Default::default(), &NoProgress)
            .await
        {
            Err(Error::CollectedMeanwhile { .. }) => {}
            other => panic!(
                "expected CollectedMeanwhile, got {:?}",
                other.map(|r| r.bundle.id)
            ),
        }
        // The next run finishes the collection; then the upload stores the data anew.
        gc(&dm).await;
        let b2 = upload(&dm, "r", src.path(), "again").await;
        let f = dm.fsck(true, &NoProgress).await.unwrap();
        assert!(f.is_ok(), "{:?}", f.problems);
        let out = tempfile::tempdir().unwrap();
        dm.download(
            &r,
            &b2.id,
            &out.path().join("o"),
            &DownloadOptions::default(),
            &NoProgress,
        )
        .await
        .unwrap();
        assert_eq!(snapshot(src.path()), snapshot(&out.path().join("o")));
    });
}

/// Reads whole files through a vfs opened earlier.
async fn vfs_read(vfs: datamon::vfs::Vfs, paths: Vec<String>) -> Vec<Vec<u8>> {
    tokio::task::spawn_blocking(move || {
        paths
            .iter()
            .map(|path| {
                let mut ino = datamon::vfs::ROOT_INODE;
                let mut size = 0;
                for name in path.split('/') {
                    let a = vfs.lookup_blocking(ino, name).unwrap().expect("exists");
                    (ino, size) = (a.ino, a.size);
                }
                let fh = vfs.open_blocking(ino).unwrap();
                let mut out = Vec::new();
                while (out.len() as u64) < size {
                    let b = vfs.read_blocking(fh, out.len() as u64, 1 << 20).unwrap();
                    assert!(!b.is_empty());
                    out.extend_from_slice(&b);
                }
                vfs.release(fh);
                out
            })
            .collect()
    })
    .await
    .unwrap()
}

/// Removing a file from history: every bundle that held it is rewritten (message, author,
/// time, metadata and lineage kept, refs moved), asking for an old id names its rewrite, and
/// after two gc runs no byte of the file, nor its name, is left anywhere in the store, even
/// though it shared packs with live data (gc repacks those). A mount opened before the gc
/// reads its files from their new packs.
#[test]
fn a_path_removed_from_history_leaves_no_byte_in_the_store() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let dm = open(&format!("file://{}", dir.path().display())).await;
        let r = repo("r");
        dm.create_repo(&r, "d").await.unwrap();
        let src = tempfile::tempdir().unwrap();
        let secret = noise(11, 120_000);
        let keep = noise(12, 90_000);
        write(&src.path().join("people/ssn-records.bin"), &secret);
        write(&src.path().join("keep.bin"), &keep);
        write(&src.path().join("sub/deep/a.txt"), b"kept text");
        let b1 = upload(&dm, "r", src.path(), "first").await;
        dm.set_label(&r, &"prod".parse().unwrap(), &b1.id, None)
            .await
            .unwrap();
        write(&src.path().join("more.txt"), b"second version");
        let b2 = upload(&dm, "r", src.path(), "second").await;
        std::fs::remove_dir_all(src.path().join("people")).unwrap();
        let b3 = upload(&dm, "r", src.path(), "third, without it").await;
        // A run that read b1 and wrote b2: its lineage must survive the rewrite.
        let now = chrono::Utc::now();
        let run = datamon::types::Run {
            id: datamon::types::RunId::generate(),
            step: "clean".into(),
            status: datamon::types::RunStatus::Succeeded,
            exit_code: Some(0),
            command: Vec::new(),
            code: datamon::types::CodeVersion::default(),
            host: "h".into(),
            user: "u".into(),
            started_at: now,
            finished_at: now,
            params: BTreeMap::new(),
            inputs: vec![datamon::types::RunInput {
                repo: r.clone(),
                bundle: b1.id,
                selector: None,
                path: None,
            }],
            outputs: vec![datamon::types::RunOutput {
                repo: r.clone(),
                bundle: b2.id,
            }],
            metrics: BTreeMap::new(),
            meta: BTreeMap::new(),
        };
        dm.record_run(&run).await.unwrap();

        let opts = datamon::RemovePathsOptions {
            patterns: vec!["people/*.bin".into()],
            dry_run: true,
            reason: None,
        };
        let cancel = CancellationToken::new();
        let dry = dm
            .remove_paths(&r, &opts, &cancel, &NoProgress)
            .await
            .unwrap();
        assert_eq!(dry.bundles.len(), 2, "{dry:?}");
        assert_eq!(dm.list_bundles(&r).await.unwrap().len(), 3, "dry run");
        let bad = datamon::RemovePathsOptions {
            patterns: vec!["../x".into()],
            ..opts.clone()
        };
        let e = dm
            .remove_paths(&r, &bad, &cancel, &NoProgress)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");

        // Mounts of the third bundle, opened before anything moves.
        let early2 = dm
            .vfs(
                &r,
                &b3.id,
                datamon::vfs::VfsOptions::default(),
                tokio::runtime::Handle::current(),
            )
            .await
            .unwrap();
        let early = dm
            .vfs(
                &r,
                &b3.id,
                datamon::vfs::VfsOptions::default(),
                tokio::runtime::Handle::current(),
            )
            .await
            .unwrap();

        let opts = datamon::RemovePathsOptions {
            dry_run: false,
            ..opts
        };
        let rep = dm
            .remove_paths(&r, &opts, &cancel, &NoProgress)
            .await
            .unwrap();
        assert_eq!(
            rep,
            datamon::RemovePathsReport {
                dry_run: false,
                ..dry.clone()
            }
        );
        let map: BTreeMap<_, _> = rep.bundles.iter().map(|b| (b.old, b.new)).collect();
        assert_eq!(map.keys().copied().collect::<Vec<_>>(), vec![b1.id, b2.id]);
        assert_eq!(rep.bundles[0].removed, vec!["people/ssn-records.bin"]);
        // A rerun (as after a kill) has nothing left to rewrite.
        let again = dm
            .remove_paths(&r, &opts, &cancel, &NoProgress)
            .await
            .unwrap();
        assert!(again.bundles.is_empty(), "{again:?}");

        let n1 = dm.get_bundle(&r, &map[&b1.id]).await.unwrap();
        let n2 = dm.get_bundle(&r, &map[&b2.id]).await.unwrap();
        assert_eq!(
            (&n1.message, &n1.author, n1.created_at, &n1.meta),
            (&b1.message, &b1.author, b1.created_at, &b1.meta)
        );
        assert_eq!(
            n2.parents,
            vec![n1.id],
            "parents are mapped to their rewrites"
        );
        assert_eq!(n1.stats.files, b1.stats.files - 1);
        assert_eq!(n1.stats.bytes, b1.stats.bytes - secret.len() as u64);
        let listed: Vec<_> = dm
            .list_bundles(&r)
            .await
            .unwrap()
            .into_iter()
            .map(|b| b.id)
            .collect();
        assert_eq!(listed, vec![n1.id, n2.id, b3.id], "same order as before");
        assert_eq!(
            dm.get_label(&r, &"prod".parse().unwrap())
                .await
                .unwrap()
                .bundle,
            n1.id
        );
        let e = dm.get_bundle(&r, &b1.id).await.unwrap_err();
        match &e {
            Error::BundleDeleted { replaced_by, .. } => assert_eq!(*replaced_by, Some(n1.id)),
            e => panic!("{e}"),
        }
        assert!(e.to_string().contains(&n1.id.to_string()), "{e}");
        let out = tempfile::tempdir().unwrap();
        dm.download(
            &r,
            &n2.id,
            &out.path().join("o"),
            &DownloadOptions::default(),
            &NoProgress,
        )
        .await
        .unwrap();
        assert!(!out.path().join("o/people/ssn-records.bin").exists());
        assert!(out.path().join("o/people").is_dir(), "its directory stays");
        assert_eq!(std::fs::read(out.path().join("o/keep.bin")).unwrap(), keep);
        // The rewrite of the run's output has the run upstream, and its input shows as
        // rewritten.
        let lineage = dm
            .lineage(&r, &n2.id, datamon::LineageOptions::default())
            .await
            .unwrap();
        assert_eq!(
            lineage.runs.iter().map(|r| r.id).collect::<Vec<_>>(),
            vec![run.id]
        );
        assert!(
            lineage
                .bundles
                .iter()
                .any(|b| b.id == b1.id && b.deleted && b.replaced_by == Some(n1.id)),
            "{lineage:?}"
        );
        // An old id given by a user resolves to its rewrite.
        assert_eq!(
            dm.resolve(&r, &datamon::BundleSelector::Id(b1.id))
                .await
                .unwrap(),
            n1.id
        );

        assert!(raw_store_has(dir.path(), &secret[5000..5064]));
        let plan = gc(&dm).await;
        assert!(plan.packs_condemned > 0, "{plan:?}");
        let collect = gc(&dm).await;
        assert!(collect.packs_repacked > 0, "{collect:?}");
        assert!(
            !raw_store_has(dir.path(), &secret[5000..5064]),
            "no byte of the removed file is left"
        );
        assert!(!raw_store_has(dir.path(), b"ssn-records"), "nor its name");
        assert!(
            dm.store().list("gc/purges/").await.unwrap().is_empty(),
            "the purge is finished"
        );
        // The mount opened before the repack finds the moved data.
        assert_eq!(vfs_read(early, vec!["keep.bin".into()]).await, vec![keep]);
        assert_eq!(
            vfs_read(early2, vec!["sub/deep/a.txt".into()]).await,
            vec![b"kept text".to_vec()]
        );
        let f = dm.fsck(true, &NoProgress).await.unwrap();
        assert!(f.is_ok(), "{:?}", f.problems);
    });
}

/// A pack whose live blobs fill less than the threshold is repacked: the live blobs move to a
/// new pack and the dead ones go; a mount opened before reads the live ones from their new
/// place. With repacking off, the dead data stays.
#[test]
fn sparse_packs_are_repacked_and_old_indexes_still_read() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let dm = open(&format!("file://{}", dir.path().display())).await;
        let r = repo("r");
        dm.create_repo(&r, "d").await.unwrap();
        let src = tempfile::tempdir().unwrap();
        // Forty files in one upload share a few packs; the second bundle keeps one in four.
        let files: Vec<Vec<u8>> = (0..40).map(|i| noise(100 + i, 8_000)).collect();
        for (i, f) in files.iter().enumerate() {
            write(&src.path().join(format!("f{i:02}.bin")), f);
        }
        let b1 = upload(&dm, "r", src.path(), "all").await;
        for i in (0..40).filter(|i| i % 4 != 0) {
            std::fs::remove_file(src.path().join(format!("f{i:02}.bin"))).unwrap();
        }
        let b2 = upload(&dm, "r", src.path(), "one in four").await;
        dm.delete_bundle(&r, &b1.id, &DeleteOptions::default())
            .await
            .unwrap();
        let gc_with = |o: GcOptions| {
            let dm = &dm;
            async move {
                dm.gc(&o, &CancellationToken::new(), &NoProgress)
                    .await
                    .unwrap()
            }
        };
        let off = GcOptions {
            repack_below: 0.0,
            ..now_gc()
        };
        gc_with(off.clone()).await;
        let r_off = gc_with(off).await;
        assert_eq!(r_off.packs_repacked, 0);
        // Packs of dead files alone went whole; those shared with live files stay.
        let dead: Vec<usize> = (0..40).filter(|i| i % 4 != 0).collect();
        let left = dead
            .iter()
            .filter(|&&i| raw_store_has(dir.path(), &files[i][100..164]))
            .count();
        assert!(
            left > 0,
            "with repacking off, dead files sharing packs with live ones stay"
        );
        let early = dm
            .vfs(
                &r,
                &b2.id,
                datamon::vfs::VfsOptions::default(),
                tokio::runtime::Handle::current(),
            )
            .await
            .unwrap();
        // Another, whose file is looked up and opened now but read only after two rounds of
        // repacking: the packs that replaced its pack are replaced in turn.
        let later = Arc::new(
            dm.vfs(
                &r,
                &b2.id,
                datamon::vfs::VfsOptions::default(),
                tokio::runtime::Handle::current(),
            )
            .await
            .unwrap(),
        );
        let (l2, later_fh) = {
            let l = later.clone();
            tokio::task::spawn_blocking(move || {
                let a = l
                    .lookup_blocking(datamon::vfs::ROOT_INODE, "f00.bin")
                    .unwrap()
                    .expect("exists");
                let fh = l.open_blocking(a.ino).unwrap();
                (l, fh)
            })
            .await
            .unwrap()
        };
        // How the upload's workers spread the files over packs varies from run to run (a pack
        // may end up exactly half live), so every pack holding a dead blob is repacked here.
        let sparse = GcOptions {
            repack_below: 1.0,
            ..now_gc()
        };
        let plan = gc_with(sparse.clone()).await;
        assert!(plan.packs_condemned > 0, "{plan:?}");
        let collect = gc_with(sparse).await;
        assert!(collect.packs_repacked > 0, "{collect:?}");
        assert_eq!(collect.packs_spared, 0, "{collect:?}");
        // Only live blobs are copied: at most the ten live files and the tree.
        assert!(
            collect.bytes_copied > 0 && collect.bytes_copied < 11 * 8_000,
            "{collect:?}"
        );
        for i in dead {
            assert!(!raw_store_has(dir.path(), &files[i][100..164]), "file {i}");
        }
        // Some of them now live in the new packs.
        let live: Vec<usize> = (0..40).filter(|i| i % 4 == 0).collect();
        let read = vfs_read(early, live.iter().map(|i| format!("f{i:02}.bin")).collect()).await;
        for (i, got) in live.iter().zip(read) {
            assert_eq!(got, files[*i], "file {i}");
        }
        let out = tempfile::tempdir().unwrap();
        dm.download(
            &r,
            &b2.id,
            &out.path().join("o"),
            &DownloadOptions::default(),
            &NoProgress,
        )
        .await
        .unwrap();
        assert_eq!(snapshot(src.path()), snapshot(&out.path().join("o")));
        let f = dm.fsck(true, &NoProgress).await.unwrap();
        assert!(f.is_ok(), "{:?}", f.problems);
        // Nothing is left to do: the new packs are fully live.
        let last = gc(&dm).await;
        assert_eq!(
            (last.packs_condemned, last.packs_deleted),
            (0, 0),
            "{last:?}"
        );
        // Round two: only f00 stays live, and every pack with a dead blob is repacked.
        for i in (1..40).filter(|i| i % 4 == 0) {
            std::fs::remove_file(src.path().join(format!("f{i:02}.bin"))).unwrap();
        }
        let b3 = upload(&dm, "r", src.path(), "f00 only").await;
        dm.delete_bundle(&r, &b2.id, &DeleteOptions::default())
            .await
            .unwrap();
        let all = GcOptions {
            repack_below: 1.0,
            ..now_gc()
        };
        gc_with(all.clone()).await;
        let again = gc_with(all).await;
        assert!(again.packs_deleted > 0, "{again:?}");
        let got = tokio::task::spawn_blocking(move || l2.read_blocking(later_fh, 0, 8_000))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, files[0], "read through two replacements");
        let out = tempfile::tempdir().unwrap();
        dm.download(
            &r,
            &b3.id,
            &out.path().join("o"),
            &DownloadOptions::default(),
            &NoProgress,
        )
        .await
        .unwrap();
        assert_eq!(
            std::fs::read(out.path().join("o/f00.bin")).unwrap(),
            files[0]
        );
        let bad = GcOptions {
            repack_below: 1.5,
            ..now_gc()
        };
        let e = dm
            .gc(&bad, &CancellationToken::new(), &NoProgress)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
    });
}

/// Holds an upload at its first progress report until released.
struct Gate {
    reached: std::sync::Mutex<Option<std::sync::mpsc::Sender<()>>>,
    go: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
}

impl datamon::Progress for Gate {
    fn advance(&self, _: u64) {
        if let Some(tx) = self.reached.lock().unwrap().take() {
            tx.send(()).unwrap();
            self.go.lock().unwrap().recv().unwrap();
        }
    }
}

/// No clock bounds an upload: one that loaded the index before a gc plan was made and carried
/// out (with no grace at all), and commits long after, is refused rather than committing a
/// bundle whose reused data is gone.
#[test]
fn an_upload_that_outlives_a_whole_collection_commits_nothing_broken() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().display());
        let dm = open(&url).await;
        let r = repo("r");
        dm.create_repo(&r, "d").await.unwrap();
        let src = tempfile::tempdir().unwrap();
        let data = noise(31, 300_000);
        write(&src.path().join("x.bin"), &data);
        let b1 = upload(&dm, "r", src.path(), "one").await;
        write(&src.path().join("x.bin"), b"other");
        upload(&dm, "r", src.path(), "two").await;
        dm.delete_bundle(&r, &b1.id, &DeleteOptions::default())
            .await
            .unwrap();

        // The same content again, held after the index is loaded and the chunk deduplicated.
        let again = tempfile::tempdir().unwrap();
        write(&again.path().join("x.bin"), &data);
        let (reached_tx, reached) = std::sync::mpsc::channel();
        let (go, go_rx) = std::sync::mpsc::channel();
        let gate = Arc::new(Gate {
            reached: std::sync::Mutex::new(Some(reached_tx)),
            go: std::sync::Mutex::new(go_rx),
        });
        let (dm2, path, g) = (open(&url).await, again.path().to_owned(), gate.clone());
        let held = tokio::spawn(async move {
            let ctx = datamon::UploadContext {
                repo: "r".parse().unwrap(),
                path,
                message: "held".into(),
            };
            dm2.upload(ctx, datamon::UploadOptions::default(), g.as_ref())
                .await
        });
        tokio::task::spawn_blocking(move || reached.recv().unwrap())
            .await
            .unwrap();
        // Meanwhile a whole collection: plan, then carry it out.
        let plan = gc(&dm).await;
        assert!(plan.packs_condemned > 0, "{plan:?}");
        let collect = gc(&dm).await;
        assert!(collect.packs_deleted > 0, "{collect:?}");
        go.send(()).unwrap();
        let e = held.await.unwrap().unwrap_err();
        assert!(matches!(e, Error::CollectedMeanwhile { .. }), "{e}");
        assert_eq!(dm.list_bundles(&r).await.unwrap().len(), 1);
        let f = dm.fsck(true, &NoProgress).await.unwrap();
        assert!(f.is_ok(), "{:?}", f.problems);
        // Run again, the upload stores the data anew.
        let b3 = upload(&dm, "r", again.path(), "again").await;
        assert!(b3.stats.new_chunks > 0);
        let out = tempfile::tempdir().unwrap();
        dm.download(
            &r,
            &b3.id,
            &out.path().join("o"),
            &DownloadOptions::default(),
            &NoProgress,
        )
        .await
        .unwrap();
        assert_eq!(std::fs::read(out.path().join("o/x.bin")).unwrap(), data);
    });
}
