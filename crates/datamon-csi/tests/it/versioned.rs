use std::time::{Duration, Instant};

use datamon_csi::csi::volume_capability::access_mode::Mode as AccessMode;
use tonic::Code;

use crate::harness::{
    attrs, fuse_available, mounted, publish, tree, unpublish, Fixture, InProcess, UnmountOnDrop,
};

fn context(extra: &[(&str, &str)]) -> std::collections::HashMap<String, String> {
    let mut a = attrs(&[
        ("repo", "data"),
        ("mode", "versioned"),
        ("commitBranch", "notebook"),
        ("commitLabel", "nb-latest"),
        ("csi.storage.k8s.io/pod.name", "jupyter-0"),
        ("csi.storage.k8s.io/pod.namespace", "team-a"),
    ]);
    a.extend(attrs(extra));
    a
}

async fn branch_bundles(fx: &Fixture) -> Vec<datamon::Bundle> {
    let mut b: Vec<_> = fx
        .dm
        .list_bundles(&fx.repo)
        .await
        .unwrap()
        .into_iter()
        .filter(|b| b.branch.as_ref().is_some_and(|n| n.as_str() == "notebook"))
        .collect();
    b.sort_by_key(|b| b.id);
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_versioned_volume_autosaves_and_commits_on_unpublish() {
    if !fuse_available() {
        return;
    }
    let fx = Fixture::new().await;
    let (d, mut c) = InProcess::start(fx.options("state")).await;
    let target = fx.path("nb");
    let _guard = UnmountOnDrop(target.clone());
    let ctx = context(&[("label", "prod"), ("autosave", "1s")]);
    let req = publish("nb-1", &target, ctx, false, AccessMode::SingleNodeWriter);
    c.node.node_publish_volume(req.clone()).await.unwrap();
    c.node.node_publish_volume(req.clone()).await.unwrap();
    // It starts from the bundle and is writable.
    assert_eq!(tree(&target), tree(&fx.path("src1")));
    std::fs::write(target.join("notes.md"), b"first thoughts").unwrap();
    std::fs::write(target.join("a.txt"), b"changed\n").unwrap();

    // Autosaved within a few seconds.
    let deadline = Instant::now() + Duration::from_secs(20);
    let saved = loop {
        let b = branch_bundles(&fx).await;
        if let Some(last) = b.last() {
            break last.clone();
        }
        assert!(Instant::now() < deadline, "never autosaved");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        saved.meta.get("k8s.pod.name").map(String::as_str),
        Some("jupyter-0")
    );
    assert_eq!(
        saved.meta.get("k8s.pod.namespace").map(String::as_str),
        Some("team-a")
    );

    std::fs::write(target.join("notes.md"), b"final thoughts").unwrap();
    c.node
        .node_unpublish_volume(unpublish("nb-1", &target))
        .await
        .unwrap();
    assert!(!mounted(&target));
    assert!(!target.exists());
    // The last commit has everything; the label names it.
    let last = fx
        .dm
        .resolve(
            &fx.repo,
            &datamon::BundleSelector::Label("nb-latest".parse().unwrap()),
        )
        .await
        .unwrap();
    let out = fx.path("out");
    fx.dm
        .download(
            &fx.repo,
            &last,
            &out,
            &Default::default(),
            &datamon::NoProgress,
        )
        .await
        .unwrap();
    let mut want = tree(&fx.path("src1"));
    want.insert("notes.md".into(), Some(b"final thoughts".to_vec()));
    want.insert("a.txt".into(), Some(b"changed\n".to_vec()));
    assert_eq!(tree(&out), want);
    assert!(
        branch_bundles(&fx).await.len() >= 2,
        "autosave and final commit"
    );
    // No scratch area is left.
    let scratch = fx.path("state/node/scratch");
    assert_eq!(std::fs::read_dir(&scratch).map_or(0, |d| d.count()), 0);
    c.node
        .node_unpublish_volume(unpublish("nb-1", &target))
        .await
        .unwrap();
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_commit_that_fails_while_the_store_is_down_keeps_the_data_and_succeeds_later() {
    if !fuse_available() {
        return;
    }
    let fx = Fixture::new().await;
    let (d, mut c) = InProcess::start(fx.options("state")).await;
    let target = fx.path("nb");
    let _guard = UnmountOnDrop(target.clone());
    // Empty, no autosave.
    let ctx = context(&[("autosave", "0")]);
    c.node
        .node_publish_volume(publish(
            "nb-2",
            &target,
            ctx,
            false,
            AccessMode::SingleNodeWriter,
        ))
        .await
        .unwrap();
    assert!(tree(&target).is_empty());
    std::fs::create_dir(target.join("results")).unwrap();
    std::fs::write(
        target.join("results/model.bin"),
        crate::harness::data(2_000_000, 3),
    )
    .unwrap();

    fx.store_down();
    let e = c
        .node
        .node_unpublish_volume(unpublish("nb-2", &target))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(e.message().contains("repo data"), "{}", e.message());
    assert!(e.message().contains("kept"), "{}", e.message());
    assert!(!mounted(&target), "unmounted even so");
    // The data is on the node.
    let scratch: Vec<_> = std::fs::read_dir(fx.path("state/node/scratch"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(scratch.len(), 1);
    let kept = scratch[0].path().join("files/results/model.bin");
    assert_eq!(
        std::fs::read(&kept).unwrap(),
        crate::harness::data(2_000_000, 3)
    );
    // The kubelet retries while the store is still down: still Unavailable.
    let e = c
        .node
        .node_unpublish_volume(unpublish("nb-2", &target))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);

    fx.store_up();
    c.node
        .node_unpublish_volume(unpublish("nb-2", &target))
        .await
        .unwrap();
    let b = branch_bundles(&fx).await;
    assert_eq!(b.len(), 1, "one commit");
    let out = fx.path("out");
    fx.dm
        .download(
            &fx.repo,
            &b[0].id,
            &out,
            &Default::default(),
            &datamon::NoProgress,
        )
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(out.join("results/model.bin")).unwrap(),
        crate::harness::data(2_000_000, 3),
        "nothing lost"
    );
    assert_eq!(
        std::fs::read_dir(fx.path("state/node/scratch"))
            .unwrap()
            .count(),
        0
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pending_commit_is_retried_when_the_driver_restarts() {
    if !fuse_available() {
        return;
    }
    let fx = Fixture::new().await;
    let (d, mut c) = InProcess::start(fx.options("state")).await;
    let target = fx.path("nb");
    let _guard = UnmountOnDrop(target.clone());
    c.node
        .node_publish_volume(publish(
            "nb-3",
            &target,
            context(&[("autosave", "0")]),
            false,
            AccessMode::SingleNodeWriter,
        ))
        .await
        .unwrap();
    std::fs::write(target.join("x"), b"x").unwrap();
    fx.store_down();
    let e = c
        .node
        .node_unpublish_volume(unpublish("nb-3", &target))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    d.stop().await;
    fx.store_up();
    // A new driver on the same state commits at start.
    let (d, _c) = InProcess::start(fx.options("state")).await;
    let b = branch_bundles(&fx).await;
    assert_eq!(b.len(), 1, "committed at start");
    assert_eq!(
        std::fs::read_dir(fx.path("state/node/scratch"))
            .unwrap()
            .count(),
        0
    );
    d.stop().await;
}
