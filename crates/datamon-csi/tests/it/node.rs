use std::time::{Duration, Instant};

use datamon_csi::csi;
use datamon_csi::csi::volume_capability::access_mode::Mode as AccessMode;
use tonic::Code;

use crate::harness::{
    attrs, block_cap, connect, fuse_available, mounted, publish, tree, unpublish, Child, Fixture,
    InProcess, UnmountOnDrop,
};

/// Not a test: the body of the driver process of [`Child`] (this binary, run with
/// `--exact node::driver_process` and the `DATAMON_CSI_TEST_*` variables). Run as a test
/// without them, it returns at once.
#[test]
fn driver_process() {
    let (Ok(store), Ok(state)) = (
        std::env::var("DATAMON_CSI_TEST_STORE"),
        std::env::var("DATAMON_CSI_TEST_STATE"),
    ) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let state = std::path::PathBuf::from(state);
        let socket = state.join("csi.sock");
        let opts = datamon_csi::DriverOptions::new(&store, "node-1", state);
        let driver = datamon_csi::Driver::new(opts);
        driver.recover().await;
        let listener = datamon_csi::bind(&format!("unix://{}", socket.display())).unwrap();
        datamon_csi::serve(driver, listener, std::future::pending())
            .await
            .unwrap();
    });
}

fn stats(volume_id: &str, path: &std::path::Path) -> csi::NodeGetVolumeStatsRequest {
    csi::NodeGetVolumeStatsRequest {
        volume_id: volume_id.into(),
        volume_path: path.display().to_string(),
        staging_target_path: String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_provisioned_volume_is_published_read_only_and_unpublished() {
    if !fuse_available() {
        return;
    }
    let fx = Fixture::new().await;
    let (d, mut c) = InProcess::start(fx.options("state")).await;
    let ro = AccessMode::MultiNodeReaderOnly;
    let v = c
        .controller
        .create_volume(csi::CreateVolumeRequest {
            name: "pvc-1".into(),
            volume_capabilities: vec![crate::harness::cap(ro)],
            parameters: attrs(&[("repo", "data"), ("label", "prod")]),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    // The kubelet: .../pods/<uid>/volumes/kubernetes.io~csi/<pv>/mount (parent exists).
    let target = fx.path("kubelet/pods/p1/volumes/pv-1/mount");
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    let _guard = UnmountOnDrop(target.clone());
    let mut ctx = v.volume_context.clone();
    ctx.insert("csi.storage.k8s.io/pod.name".into(), "reader".into());
    let req = publish(&v.volume_id, &target, ctx, true, ro);
    let t0 = Instant::now();
    c.node.node_publish_volume(req.clone()).await.unwrap();
    eprintln!("publish: {:?}", t0.elapsed());
    assert!(mounted(&target));
    assert_eq!(tree(&target), tree(&fx.path("src1")), "the bundle's files");
    // Read-only, even for root.
    let e = std::fs::write(target.join("new"), b"x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc_erofs()), "{e}");
    let e = std::fs::OpenOptions::new()
        .write(true)
        .open(target.join("a.txt"))
        .unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc_erofs()), "{e}");

    // Again: idempotent.
    c.node.node_publish_volume(req.clone()).await.unwrap();
    // Another volume on the same target: AlreadyExists.
    let mut other = req.clone();
    other.volume_id = "another".into();
    other.volume_context = attrs(&[("repo", "data"), ("bundle", &fx.second.id.to_string())]);
    let e = c.node.node_publish_volume(other).await.unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");

    let s = c
        .node
        .node_get_volume_stats(stats(&v.volume_id, &target))
        .await
        .unwrap()
        .into_inner();
    let bytes = s.usage.iter().find(|u| u.unit == 1).unwrap();
    let inodes = s.usage.iter().find(|u| u.unit == 2).unwrap();
    assert_eq!(bytes.used as u64, fx.first.stats.bytes);
    assert_eq!(inodes.used as u64, fx.first.stats.files);
    assert!(!s.volume_condition.unwrap().abnormal);

    c.node
        .node_unpublish_volume(unpublish(&v.volume_id, &target))
        .await
        .unwrap();
    assert!(!mounted(&target));
    assert!(!target.exists(), "the target is removed");
    // Again: idempotent.
    c.node
        .node_unpublish_volume(unpublish(&v.volume_id, &target))
        .await
        .unwrap();
    let e = c
        .node
        .node_get_volume_stats(stats(&v.volume_id, &target))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    d.stop().await;
}

fn libc_erofs() -> i32 {
    rustix::io::Errno::ROFS.raw_os_error()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn static_and_inline_volumes_select_by_label_branch_or_bundle() {
    if !fuse_available() {
        return;
    }
    let fx = Fixture::new().await;
    let (d, mut c) = InProcess::start(fx.options("state")).await;
    let cases = [
        (
            "static-pv",
            attrs(&[("repo", "data"), ("label", "prod")]),
            AccessMode::MultiNodeReaderOnly,
            false,
            "src1",
        ),
        (
            // An inline ephemeral volume: the kubelet's context, a writer access mode, and
            // readOnly unset; still read-only.
            "csi-0123abcd",
            attrs(&[
                ("repo", "data"),
                ("branch", "main"),
                ("csi.storage.k8s.io/ephemeral", "true"),
                ("csi.storage.k8s.io/pod.name", "p"),
                ("csi.storage.k8s.io/pod.namespace", "ns"),
            ]),
            AccessMode::SingleNodeWriter,
            false,
            "src2",
        ),
        (
            "by-id",
            attrs(&[("repo", "data"), ("bundle", &fx.first.id.to_string())]),
            AccessMode::SingleNodeReaderOnly,
            true,
            "src1",
        ),
    ];
    for (i, (id, ctx, mode, readonly, src)) in cases.into_iter().enumerate() {
        let target = fx.path(&format!("t{i}"));
        let _guard = UnmountOnDrop(target.clone());
        c.node
            .node_publish_volume(publish(id, &target, ctx, readonly, mode))
            .await
            .unwrap();
        assert_eq!(tree(&target), tree(&fx.path(src)), "{id}");
        assert!(
            std::fs::write(target.join("x"), b"x").is_err(),
            "{id}: read-only"
        );
        c.node
            .node_unpublish_volume(unpublish(id, &target))
            .await
            .unwrap();
        assert!(!target.exists());
    }
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_node_requests_get_the_codes_the_spec_names() {
    let fx = Fixture::new().await;
    let (d, mut c) = InProcess::start(fx.options("state")).await;
    let target = fx.path("t");
    let ok = attrs(&[("repo", "data"), ("label", "prod")]);
    let ro = AccessMode::MultiNodeReaderOnly;
    let good = publish("v", &target, ok.clone(), true, ro);
    let mut cases: Vec<(csi::NodePublishVolumeRequest, Code, &str)> = vec![
        (
            csi::NodePublishVolumeRequest {
                volume_id: String::new(),
                ..good.clone()
            },
            Code::InvalidArgument,
            "volume id",
        ),
        (
            csi::NodePublishVolumeRequest {
                target_path: String::new(),
                ..good.clone()
            },
            Code::InvalidArgument,
            "target path",
        ),
        (
            csi::NodePublishVolumeRequest {
                volume_capability: None,
                ..good.clone()
            },
            Code::InvalidArgument,
            "capability",
        ),
        (
            csi::NodePublishVolumeRequest {
                volume_capability: Some(block_cap()),
                ..good.clone()
            },
            Code::InvalidArgument,
            "block",
        ),
        (
            publish("v", &target, attrs(&[("label", "prod")]), true, ro),
            Code::InvalidArgument,
            "repo",
        ),
        (
            publish(
                "v",
                &target,
                attrs(&[("repo", "nope"), ("label", "prod")]),
                true,
                ro,
            ),
            Code::NotFound,
            "repo nope",
        ),
        (
            publish(
                "v",
                &target,
                attrs(&[("repo", "data"), ("label", "gone")]),
                true,
                ro,
            ),
            Code::NotFound,
            "label gone",
        ),
        (
            publish(
                "v",
                &target,
                attrs(&[
                    ("repo", "data"),
                    ("bundle", &datamon::BundleId::generate().to_string()),
                ]),
                true,
                ro,
            ),
            Code::NotFound,
            "repo data",
        ),
        (
            publish(
                "v",
                &target,
                attrs(&[("repo", "data"), ("mode", "versioned")]),
                true,
                AccessMode::SingleNodeWriter,
            ),
            Code::FailedPrecondition,
            "read-write",
        ),
    ];
    cases.push((
        csi::NodePublishVolumeRequest {
            target_path: "relative/path".into(),
            ..good.clone()
        },
        Code::InvalidArgument,
        "absolute",
    ));
    for (req, code, needle) in cases {
        let e = c.node.node_publish_volume(req.clone()).await.unwrap_err();
        assert_eq!(e.code(), code, "{req:?}: {e:?}");
        assert!(e.message().contains(needle), "{req:?}: {}", e.message());
        assert!(!mounted(&target));
    }
    for req in [
        unpublish("", &target),
        unpublish("v", std::path::Path::new("")),
    ] {
        let e = c.node.node_unpublish_volume(req).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
    }
    let e = c
        .node
        .node_get_volume_stats(stats("", &target))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = c
        .node
        .node_get_volume_stats(stats("v", &target))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = c
        .node
        .node_stage_volume(csi::NodeStageVolumeRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unimplemented);
    // The store down: Unavailable (the kubelet retries).
    fx.store_down();
    let (d2, mut c2) = InProcess::start(fx.options("state2")).await;
    let e = c2.node.node_publish_volume(good).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    fx.store_up();
    d2.stop().await;
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_driver_is_restarted_and_mounts_its_volume_again() {
    if !fuse_available() {
        return;
    }
    let fx = Fixture::new().await;
    let target = fx.path("kubelet/pv/mount");
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    let _guard = UnmountOnDrop(target.clone());
    let ctx = attrs(&[("repo", "data"), ("label", "prod")]);
    let req = publish("pv", &target, ctx, true, AccessMode::MultiNodeReaderOnly);

    let child = Child::spawn(&fx, "state");
    let mut c = connect(&child.socket).await;
    c.node.node_publish_volume(req.clone()).await.unwrap();
    assert_eq!(tree(&target), tree(&fx.path("src1")));
    child.kill();
    // The mount is still there, dead.
    assert!(mounted(&target), "a killed driver leaves its mount");
    let e = std::fs::read_dir(&target).unwrap_err();
    assert_eq!(
        e.raw_os_error(),
        Some(rustix::io::Errno::NOTCONN.raw_os_error()),
        "{e}"
    );

    // The label moves meanwhile: the volume still shows the bundle it was published with.
    fx.dm
        .set_label(&fx.repo, &"prod".parse().unwrap(), &fx.second.id, None)
        .await
        .unwrap();

    // Restarted: it mounts the volume again by itself.
    let child = Child::spawn(&fx, "state");
    let mut c = connect(&child.socket).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::read_dir(&target).is_err() {
        assert!(Instant::now() < deadline, "never mounted again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(tree(&target), tree(&fx.path("src1")), "the same bundle");
    // The kubelet's repeated publish is recognised; stats work.
    c.node.node_publish_volume(req.clone()).await.unwrap();
    c.node
        .node_get_volume_stats(stats("pv", &target))
        .await
        .unwrap();

    // Killed again, and this time the restarted driver is asked to publish (the path a
    // driver takes when it could not mount at start) and then to unpublish.
    child.kill();
    assert!(std::fs::read_dir(&target).is_err(), "dead again");
    let (d, mut c) = {
        // A driver that skips its own recovery: the publish must clean the dead mount.
        let mut opts = fx.options("state");
        opts.node = true;
        let socket = opts.state_dir.join("csi.sock");
        let _ = std::fs::remove_file(&socket);
        let driver = datamon_csi::Driver::new(opts);
        let listener = datamon_csi::bind(&format!("unix://{}", socket.display())).unwrap();
        let d2 = driver.clone();
        let task = tokio::spawn(async move {
            datamon_csi::serve(d2, listener, std::future::pending())
                .await
                .unwrap();
        });
        (task, connect(&socket).await)
    };
    c.node.node_publish_volume(req.clone()).await.unwrap();
    assert_eq!(tree(&target), tree(&fx.path("src1")));
    c.node
        .node_unpublish_volume(unpublish("pv", &target))
        .await
        .unwrap();
    assert!(!mounted(&target));
    assert!(!target.exists());
    d.abort();
}

/// Publish time of a 100,000-file bundle and the node plugin's memory with 10 volumes
/// published (run with `--run-ignored only`; prints the numbers). The driver is this test
/// binary, or with `DATAMON_CSI_BIN=path/to/datamon` the real `datamon csi` (its allocator is
/// the one users run).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a measurement: about a minute"]
async fn measure_publish_of_100k_files_and_memory_of_10_volumes() {
    if !fuse_available() {
        return;
    }
    let fx = Fixture::new().await;
    let src = fx.path("many");
    for d in 0..100 {
        let dir = src.join(format!("d{d:03}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..1000 {
            std::fs::write(dir.join(format!("f{f:04}")), format!("{d}/{f}\n")).unwrap();
        }
    }
    let t0 = Instant::now();
    let big = crate::harness::upload(&fx.dm, &fx.repo, &src, Some("big")).await;
    eprintln!("upload of {} files: {:?}", big.stats.files, t0.elapsed());
    let child = match std::env::var_os("DATAMON_CSI_BIN") {
        Some(bin) => Child::spawn_binary(&fx, "state", std::path::Path::new(&bin)),
        None => Child::spawn(&fx, "state"),
    };
    let mut c = connect(&child.socket).await;
    let pid = child.child.id();
    let rss = || {
        let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        s.lines()
            .find(|l| l.starts_with("VmRSS"))
            .unwrap()
            .to_owned()
    };
    eprintln!("driver idle: {}", rss());
    let mut guards = Vec::new();
    let mut times = Vec::new();
    for i in 0..10 {
        let target = fx.path(&format!("big{i}"));
        guards.push(UnmountOnDrop(target.clone()));
        let req = publish(
            &format!("v{i}"),
            &target,
            attrs(&[("repo", "data"), ("label", "big")]),
            true,
            AccessMode::MultiNodeReaderOnly,
        );
        let t = Instant::now();
        c.node.node_publish_volume(req).await.unwrap();
        times.push(t.elapsed());
        // Read a directory and a file of each.
        assert_eq!(
            std::fs::read_dir(target.join("d042")).unwrap().count(),
            1000
        );
        assert_eq!(
            std::fs::read_to_string(target.join("d042/f0042")).unwrap(),
            "42/42\n"
        );
    }
    eprintln!("publish times (100,000 files): {times:?}");
    eprintln!("driver with 10 volumes published: {}", rss());
    // A full listing of one volume.
    let t = Instant::now();
    let n: usize = (0..100)
        .map(|d| {
            std::fs::read_dir(fx.path(&format!("big0/d{d:03}")))
                .unwrap()
                .count()
        })
        .sum();
    assert_eq!(n, 100_000);
    eprintln!("listing all 100,000 files of one volume: {:?}", t.elapsed());
    eprintln!("driver after the listing: {}", rss());
    assert!(
        times[0] < Duration::from_secs(5),
        "publish took {:?}",
        times[0]
    );
    for i in 0..10 {
        c.node
            .node_unpublish_volume(unpublish(&format!("v{i}"), &fx.path(&format!("big{i}"))))
            .await
            .unwrap();
    }
    // Read throughput of a 512 MiB file: through a published volume, then (with the real
    // binary) through `datamon bundle mount` of the same bundle, each with an empty chunk cache
    // (cold) and again from its chunk cache with the kernel's pages dropped (warm).
    let blob_src = fx.path("blob");
    std::fs::create_dir_all(&blob_src).unwrap();
    let mut bytes = vec![0u8; 512 << 20];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for w in bytes.chunks_exact_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        w.copy_from_slice(&x.to_le_bytes());
    }
    std::fs::write(blob_src.join("blob.bin"), &bytes).unwrap();
    drop(bytes);
    crate::harness::upload(&fx.dm, &fx.repo, &blob_src, Some("blob")).await;
    let read_twice = |file: std::path::PathBuf| {
        let mut out = Vec::new();
        for _ in 0..2 {
            let t = Instant::now();
            let n = std::fs::read(&file).unwrap().len();
            out.push(n as f64 / t.elapsed().as_secs_f64() / 1e6);
            let f = std::fs::File::open(&file).unwrap();
            rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed).unwrap();
        }
        out
    };
    let vb = fx.path("vblob");
    guards.push(UnmountOnDrop(vb.clone()));
    let req = publish(
        "vblob",
        &vb,
        attrs(&[("repo", "data"), ("label", "blob")]),
        true,
        AccessMode::MultiNodeReaderOnly,
    );
    c.node.node_publish_volume(req).await.unwrap();
    let csi = read_twice(vb.join("blob.bin"));
    eprintln!(
        "512 MiB read through the CSI volume: cold {:.0} MB/s, warm {:.0} MB/s",
        csi[0], csi[1]
    );
    if let Some(bin) = std::env::var_os("DATAMON_CSI_BIN") {
        let mnt = fx.path("mblob");
        std::fs::create_dir_all(&mnt).unwrap();
        guards.push(UnmountOnDrop(mnt.clone()));
        let mut m = std::process::Command::new(bin)
            .arg("--store")
            .arg(&fx.store_url)
            .args([
                "bundle", "mount", "--repo", "data", "--label", "blob", "--cache",
            ])
            .arg(fx.path("mount-cache"))
            .arg("--mount")
            .arg(&mnt)
            .env("DATAMON_HOME", fx.path("home"))
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(m.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        assert!(line.starts_with("Mounted"), "{line}");
        let mount = read_twice(mnt.join("blob.bin"));
        eprintln!(
            "512 MiB read through bundle mount: cold {:.0} MB/s, warm {:.0} MB/s",
            mount[0], mount[1]
        );
        let _ = std::process::Command::new("kill")
            .arg(m.id().to_string())
            .status();
        let _ = m.wait();
    }
    c.node
        .node_unpublish_volume(unpublish("vblob", &vb))
        .await
        .unwrap();
    child.kill();
}
