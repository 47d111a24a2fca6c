//! Diamonds through the library: 16 concurrent split writers with conflicts under each policy,
//! concurrent commits, cancelled and late splits, a commit cut short, gc while a diamond is open.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use datamon::{
    BundleSelector, CancellationToken, ConflictPolicy, Datamon, DiamondCommitOptions, DiamondId,
    DiamondState, DownloadOptions, Error, GcOptions, NoProgress, RepoName, SplitOptions,
};

use super::{open, rt, snapshot, write};

const SPLITS: usize = 16;
const FILES: usize = 20;

fn repo() -> RepoName {
    "dia".parse().unwrap()
}

fn commit_opts(policy: ConflictPolicy) -> DiamondCommitOptions {
    DiamondCommitOptions {
        message: "merged".into(),
        label: None,
        branch: None,
        policy,
        meta: BTreeMap::new(),
    }
}

/// Split `i`'s folder: `part<i>/f<j>` of its own, `common.txt` the same in every split, and
/// `shared/conflict.txt` different in each.
fn make_split(root: &Path, i: usize) {
    for j in 0..FILES {
        write(
            &root.join(format!("part{i:02}/f{j:03}")),
            format!("split {i} file {j}").as_bytes(),
        );
    }
    write(&root.join("common.txt"), b"the same in every split");
    write(
        &root.join("shared/conflict.txt"),
        format!("version of split {i}").as_bytes(),
    );
}

/// A repo, a diamond and its 16 splits added concurrently; returns the diamond.
async fn sixteen_splits(dm: &Datamon, tmp: &Path) -> DiamondId {
    dm.create_repo(&repo(), "diamonds").await.unwrap();
    let d = dm.diamond_initialize(&repo()).await.unwrap();
    let tasks: Vec<_> = (0..SPLITS)
        .map(|i| {
            let dir = tmp.join(format!("src{i}"));
            make_split(&dir, i);
            let dm = dm.clone();
            tokio::spawn(async move {
                dm.diamond_add_split(&repo(), &d.id, dir, SplitOptions::default(), &NoProgress)
                    .await
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    d.id
}

async fn download(dm: &Datamon, id: &datamon::BundleId, dest: &Path) -> BTreeMap<String, Vec<u8>> {
    dm.download(&repo(), id, dest, &DownloadOptions::default(), &NoProgress)
        .await
        .unwrap();
    snapshot(dest)
        .into_iter()
        .filter(|(p, _, _)| !p.ends_with('/'))
        .map(|(p, _, b)| (p, b))
        .collect()
}

#[test]
fn diamond_sixteen_concurrent_splits_fail_then_latest() {
    rt().block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let dm = open("memory://diamond-latest").await;
        let d = sixteen_splits(&dm, tmp.path()).await;
        let info = dm.diamond_get(&repo(), &d).await.unwrap();
        assert_eq!(info.splits.len(), SPLITS);
        assert_eq!(info.state, DiamondState::Open);

        // Fail: nothing committed, the conflict listed with all 16 splits, the diamond open.
        let e = dm
            .diamond_commit(&repo(), &d, commit_opts(ConflictPolicy::Fail))
            .await
            .unwrap_err();
        let Error::DiamondConflicts { conflicts, .. } = &e else {
            panic!("{e}")
        };
        assert_eq!(conflicts.len(), 1, "{e}");
        assert_eq!(conflicts[0].path, "shared/conflict.txt");
        assert_eq!(conflicts[0].splits.len(), SPLITS);
        assert!(e.to_string().contains("shared/conflict.txt"), "{e}");
        assert!(!e.to_string().contains("--"), "no CLI flags: {e}");
        assert!(dm.list_bundles(&repo()).await.unwrap().is_empty());
        assert_eq!(
            dm.diamond_get(&repo(), &d).await.unwrap().state,
            DiamondState::Open
        );

        // Latest: the split that completed last wins.
        let r = dm
            .diamond_commit(&repo(), &d, commit_opts(ConflictPolicy::Latest))
            .await
            .unwrap();
        assert_eq!(r.splits.len(), SPLITS);
        assert_eq!(r.conflicts.len(), 1);
        let latest = info.splits.iter().max_by_key(|s| s.id).unwrap();
        let latest_i: usize = latest.source.rsplit("src").next().unwrap().parse().unwrap();
        let files = download(&dm, &r.bundle.id, &tmp.path().join("out")).await;
        assert_eq!(files.len(), SPLITS * FILES + 2);
        assert_eq!(
            files["shared/conflict.txt"],
            format!("version of split {latest_i}").into_bytes()
        );
        assert_eq!(files["common.txt"], b"the same in every split");
        for i in 0..SPLITS {
            assert_eq!(
                files[&format!("part{i:02}/f007")],
                format!("split {i} file 7").into_bytes()
            );
        }
        assert_eq!(r.bundle.stats.files, (SPLITS * FILES + 2) as u64);
        assert_eq!(r.bundle.stats.dirs, SPLITS as u64 + 1);
        assert_eq!(r.bundle.meta.get("diamond"), Some(&d.to_string()));
        assert_eq!(
            dm.diamond_get(&repo(), &d).await.unwrap().state,
            DiamondState::Committed(r.bundle.id)
        );
        assert_eq!(
            dm.resolve(&repo(), &BundleSelector::Latest).await.unwrap(),
            r.bundle.id
        );
        let f = dm.fsck(true, &NoProgress).await.unwrap();
        assert!(f.is_ok(), "{:?}", f.problems);
    });
}

#[test]
fn diamond_sixteen_concurrent_splits_keep_all() {
    rt().block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let dm = open("memory://diamond-keep-all").await;
        let d = sixteen_splits(&dm, tmp.path()).await;
        let info = dm.diamond_get(&repo(), &d).await.unwrap();
        let r = dm
            .diamond_commit(&repo(), &d, commit_opts(ConflictPolicy::KeepAll))
            .await
            .unwrap();
        let files = download(&dm, &r.bundle.id, &tmp.path().join("out")).await;
        // Every version under .conflicts/<split>/, the latest also at the path.
        assert_eq!(files.len(), SPLITS * FILES + 2 + SPLITS);
        for s in &info.splits {
            let i: usize = s.source.rsplit("src").next().unwrap().parse().unwrap();
            assert_eq!(
                files[&format!(".conflicts/{}/shared/conflict.txt", s.id)],
                format!("version of split {i}").into_bytes()
            );
        }
        let latest = info.splits.iter().max_by_key(|s| s.id).unwrap();
        assert_eq!(
            files["shared/conflict.txt"],
            files[&format!(".conflicts/{}/shared/conflict.txt", latest.id)]
        );
        assert!(!files
            .keys()
            .any(|k| k.starts_with(".conflicts/") && k.ends_with("common.txt")));
        assert_eq!(r.bundle.stats.files, files.len() as u64);
        let f = dm.fsck(true, &NoProgress).await.unwrap();
        assert!(f.is_ok(), "{:?}", f.problems);
    });
}

#[test]
fn diamond_concurrent_commits_make_exactly_one_bundle() {
    rt().block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let url = format!("file://{}", tmp.path().join("store").display());
        let dm = open(&url).await;
        let d = sixteen_splits(&dm, tmp.path()).await;
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let dm = dm.clone();
                tokio::spawn(async move {
                    let mut o = commit_opts(ConflictPolicy::Latest);
                    o.label = Some("merged".parse().unwrap());
                    dm.diamond_commit(&repo(), &d, o).await
                })
            })
            .collect();
        let mut won = Vec::new();
        let mut told = Vec::new();
        for t in tasks {
            match t.await.unwrap() {
                Ok(r) => won.push(r.bundle.id),
                Err(Error::DiamondCommitted { bundle, .. }) => told.push(bundle),
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(won.len(), 1, "exactly one winner");
        assert_eq!(told.len(), 7);
        assert!(
            told.iter().all(|b| *b == won[0]),
            "losers are told the winner"
        );
        let bundles = dm.list_bundles(&repo()).await.unwrap();
        assert_eq!(bundles.len(), 1);
        assert_eq!(bundles[0].id, won[0]);
        let main = "main".parse().unwrap();
        assert_eq!(dm.branch_history(&repo(), &main).await.unwrap().len(), 1);
        assert_eq!(
            dm.get_label(&repo(), &"merged".parse().unwrap())
                .await
                .unwrap()
                .bundle,
            won[0]
        );
        // A later commit is told too.
        let e = dm
            .diamond_commit(&repo(), &d, commit_opts(ConflictPolicy::Latest))
            .await
            .unwrap_err();
        assert!(
            matches!(e, Error::DiamondCommitted { bundle, .. } if bundle == won[0]),
            "{e}"
        );
    });
}

#[test]
fn diamond_closed_refuses_splits_and_cancelled_splits_never_appear() {
    rt().block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let dm = open("memory://diamond-closed").await;
        dm.create_repo(&repo(), "d").await.unwrap();
        let d = dm.diamond_initialize(&repo()).await.unwrap().id;
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        write(&a.join("a.txt"), b"a");
        write(&b.join("b.txt"), &vec![7u8; 4 << 20]);
        dm.diamond_add_split(&repo(), &d, a.clone(), SplitOptions::default(), &NoProgress)
            .await
            .unwrap();
        // A split cancelled while it uploads writes no record.
        let cancel = CancellationToken::new();
        cancel.cancel();
        let e = dm
            .diamond_add_split(
                &repo(),
                &d,
                b.clone(),
                SplitOptions {
                    cancel,
                    ..Default::default()
                },
                &NoProgress,
            )
            .await
            .unwrap_err();
        assert_eq!(e.kind(), datamon::ErrorKind::Cancelled, "{e}");
        assert_eq!(dm.diamond_get(&repo(), &d).await.unwrap().splits.len(), 1);
        let r = dm
            .diamond_commit(&repo(), &d, commit_opts(ConflictPolicy::Fail))
            .await
            .unwrap();
        let files: Vec<String> = dm
            .list_files(&repo(), &r.bundle.id)
            .await
            .unwrap()
            .into_iter()
            .map(|f| f.path)
            .collect();
        assert_eq!(files, ["a.txt"]);
        // Committed: no more splits, no cancel.
        let e = dm
            .diamond_add_split(&repo(), &d, b.clone(), SplitOptions::default(), &NoProgress)
            .await
            .unwrap_err();
        assert!(matches!(e, Error::DiamondClosed { .. }), "{e}");
        assert!(e.to_string().contains(&r.bundle.id.to_string()), "{e}");
        let e = dm.diamond_cancel(&repo(), &d).await.unwrap_err();
        assert!(matches!(e, Error::DiamondClosed { .. }), "{e}");
        assert_eq!(dm.diamond_get(&repo(), &d).await.unwrap().splits.len(), 1);

        // Cancelled: no splits, no commit; cancelling again is fine.
        let d2 = dm.diamond_initialize(&repo()).await.unwrap().id;
        dm.diamond_add_split(
            &repo(),
            &d2,
            a.clone(),
            SplitOptions::default(),
            &NoProgress,
        )
        .await
        .unwrap();
        dm.diamond_cancel(&repo(), &d2).await.unwrap();
        dm.diamond_cancel(&repo(), &d2).await.unwrap();
        let e = dm
            .diamond_add_split(&repo(), &d2, b, SplitOptions::default(), &NoProgress)
            .await
            .unwrap_err();
        assert!(matches!(e, Error::DiamondClosed { .. }), "{e}");
        let e = dm
            .diamond_commit(&repo(), &d2, commit_opts(ConflictPolicy::Fail))
            .await
            .unwrap_err();
        assert!(matches!(e, Error::DiamondClosed { .. }), "{e}");
        assert_eq!(dm.list_bundles(&repo()).await.unwrap().len(), 1);

        // An empty diamond has nothing to commit; an unknown one is not found.
        let d3 = dm.diamond_initialize(&repo()).await.unwrap().id;
        let e = dm
            .diamond_commit(&repo(), &d3, commit_opts(ConflictPolicy::Fail))
            .await
            .unwrap_err();
        assert!(matches!(e, Error::DiamondEmpty { .. }), "{e}");
        let e = dm
            .diamond_get(&repo(), &DiamondId::generate())
            .await
            .unwrap_err();
        assert_eq!(e.kind(), datamon::ErrorKind::NotFound);

        let list = dm.diamond_list(&repo()).await.unwrap();
        let states: Vec<_> = list.iter().map(|i| i.state.clone()).collect();
        assert_eq!(
            states,
            [
                DiamondState::Committed(r.bundle.id),
                DiamondState::Cancelled,
                DiamondState::Open
            ]
        );
    });
}

/// A committer that died after winning its commit record leaves a commit the next one finishes,
/// with the bundle id it chose, on the branch once.
#[test]
fn diamond_commit_cut_after_its_record_is_finished_by_a_rerun() {
    rt().block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let dm = open("memory://diamond-cut").await;
        dm.create_repo(&repo(), "d").await.unwrap();
        let d = dm.diamond_initialize(&repo()).await.unwrap().id;
        write(&tmp.path().join("a/x"), b"x");
        let s = dm
            .diamond_add_split(
                &repo(),
                &d,
                tmp.path().join("a"),
                SplitOptions::default(),
                &NoProgress,
            )
            .await
            .unwrap()
            .split;
        // What the dead committer wrote: its commit record, nothing else.
        let id = datamon::BundleId::generate();
        let rec = datamon::DiamondCommit {
            bundle: datamon::Bundle {
                id,
                repo: repo(),
                parents: Vec::new(),
                branch: Some("main".parse().unwrap()),
                message: "cut".into(),
                author: "dead".into(),
                created_at: chrono::Utc::now(),
                root: s.root,
                stats: s.stats.clone(),
                meta: BTreeMap::new(),
            },
            branch: "main".parse().unwrap(),
            label: None,
            splits: vec![s.id],
            policy: ConflictPolicy::Fail,
            conflicts: Vec::new(),
        };
        dm.store()
            .create_json(&format!("repos/dia/diamonds/{d}/commit.json"), &rec)
            .await
            .unwrap();
        assert!(dm.list_bundles(&repo()).await.unwrap().is_empty());
        for _ in 0..2 {
            let e = dm
                .diamond_commit(&repo(), &d, commit_opts(ConflictPolicy::Fail))
                .await
                .unwrap_err();
            assert!(
                matches!(e, Error::DiamondCommitted { bundle, .. } if bundle == id),
                "{e}"
            );
        }
        let bundles = dm.list_bundles(&repo()).await.unwrap();
        assert_eq!(bundles.len(), 1);
        assert_eq!(bundles[0].id, id);
        assert_eq!(bundles[0].message, "cut");
        let main = "main".parse().unwrap();
        assert_eq!(dm.branch_history(&repo(), &main).await.unwrap().len(), 1);
    });
}

/// gc keeps an open diamond's splits, and reclaims a cancelled one's.
#[test]
fn diamond_gc_keeps_open_splits() {
    rt().block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let dm = open("memory://diamond-gc").await;
        dm.create_repo(&repo(), "d").await.unwrap();
        let d = dm.diamond_initialize(&repo()).await.unwrap().id;
        write(&tmp.path().join("a/big"), &vec![3u8; 1 << 20]);
        dm.diamond_add_split(
            &repo(),
            &d,
            tmp.path().join("a"),
            SplitOptions::default(),
            &NoProgress,
        )
        .await
        .unwrap();
        let opts = GcOptions {
            dry_run: false,
            grace: Duration::ZERO,
            ..GcOptions::default()
        };
        let cancel = CancellationToken::new();
        for _ in 0..2 {
            let g = dm.gc(&opts, &cancel, &NoProgress).await.unwrap();
            assert_eq!(g.packs_condemned, 0, "the open diamond's data is kept");
        }
        let r = dm
            .diamond_commit(&repo(), &d, commit_opts(ConflictPolicy::Fail))
            .await
            .unwrap();
        let files = download(&dm, &r.bundle.id, &tmp.path().join("out")).await;
        assert_eq!(files["big"], vec![3u8; 1 << 20]);

        let d2 = dm.diamond_initialize(&repo()).await.unwrap().id;
        write(&tmp.path().join("b/other"), &vec![9u8; 1 << 20]);
        dm.diamond_add_split(
            &repo(),
            &d2,
            tmp.path().join("b"),
            SplitOptions::default(),
            &NoProgress,
        )
        .await
        .unwrap();
        dm.diamond_cancel(&repo(), &d2).await.unwrap();
        let g = dm.gc(&opts, &cancel, &NoProgress).await.unwrap();
        assert!(
            g.packs_condemned > 0,
            "a cancelled diamond's data is garbage"
        );
    });
}

/// A split recorded while a commit is listing splits waits for that commit, and is told whether
/// it made it into the bundle.
#[test]
fn diamond_split_recorded_during_a_commit_waits_for_its_outcome() {
    rt().block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let dm = open("memory://diamond-closing").await;
        dm.create_repo(&repo(), "d").await.unwrap();
        let d = dm.diamond_initialize(&repo()).await.unwrap().id;
        write(&tmp.path().join("a/x"), b"x");
        let first = dm
            .diamond_add_split(
                &repo(),
                &d,
                tmp.path().join("a"),
                SplitOptions::default(),
                &NoProgress,
            )
            .await
            .unwrap()
            .split;
        // A committer has started listing splits (its marker), and will not list the next one.
        let marker = format!("repos/dia/diamonds/{d}/closing/test.json");
        dm.store()
            .create_json(
                &marker,
                &serde_json::json!({"author": "c", "time": chrono::Utc::now()}),
            )
            .await
            .unwrap();
        write(&tmp.path().join("b/y"), b"y");
        let late = {
            let dm = dm.clone();
            let dir = tmp.path().join("b");
            tokio::spawn(async move {
                dm.diamond_add_split(&repo(), &d, dir, SplitOptions::default(), &NoProgress)
                    .await
            })
        };
        // The late split is recorded, then waits.
        let t = std::time::Instant::now();
        while dm.diamond_get(&repo(), &d).await.unwrap().splits.len() < 2 {
            assert!(t.elapsed() < Duration::from_secs(30));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!late.is_finished(), "waits for the commit in progress");
        // The commit lands without it.
        let rec = datamon::DiamondCommit {
            bundle: datamon::Bundle {
                id: datamon::BundleId::generate(),
                repo: repo(),
                parents: Vec::new(),
                branch: Some("main".parse().unwrap()),
                message: "m".into(),
                author: "c".into(),
                created_at: chrono::Utc::now(),
                root: first.root,
                stats: first.stats.clone(),
                meta: BTreeMap::new(),
            },
            branch: "main".parse().unwrap(),
            label: None,
            splits: vec![first.id],
            policy: ConflictPolicy::Fail,
            conflicts: Vec::new(),
        };
        dm.store()
            .create_json(&format!("repos/dia/diamonds/{d}/commit.json"), &rec)
            .await
            .unwrap();
        let e = late.await.unwrap().unwrap_err();
        assert!(matches!(e, Error::DiamondClosed { .. }), "{e}");
        assert!(e.to_string().contains(&rec.bundle.id.to_string()), "{e}");
    });
}
