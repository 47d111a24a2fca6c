//! Library-level tests of the datamon API on the in-memory and local stores.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use datamon::{
    BundleSelector, ChangeKind, Datamon, DownloadOptions, NoProgress, OpenOptions, UploadContext,
    UploadOptions,
};
use proptest::prelude::*;

mod compare;
mod diamond;
mod download;
mod lifecycle;
mod pipeline;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn open(url: &str) -> Datamon {
    Datamon::open(
        url,
        OpenOptions {
            author: Some("tester".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

fn write(path: &Path, data: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
}

async fn upload(dm: &Datamon, repo: &str, dir: &Path, msg: &str) -> datamon::Bundle {
    let ctx = UploadContext {
        repo: repo.parse().unwrap(),
        path: dir.to_owned(),
        message: msg.into(),
    };
    dm.upload(ctx, UploadOptions::default(), &NoProgress)
        .await
        .unwrap()
        .bundle
}

/// Files, modes and symlinks of a tree, for comparison.
fn snapshot(root: &Path) -> Vec<(String, u32, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let mode = m.permissions().mode() & 0o7777;
            if m.file_type().is_symlink() {
                out.push((
                    rel,
                    0,
                    std::fs::read_link(&p)
                        .unwrap()
                        .into_os_string()
                        .into_encoded_bytes(),
                ));
            } else if m.is_dir() {
                out.push((format!("{rel}/"), mode, Vec::new()));
                stack.push(p);
            } else {
                out.push((rel, mode, std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn round_trip_diff_and_labels_on_memory_store() {
    rt().block_on(async {
        let dm = open("memory://lib-round-trip").await;
        dm.create_repo(&"r".parse().unwrap(), "d").await.unwrap();
        let src = tempfile::tempdir().unwrap();
        write(&src.path().join("a/b.txt"), b"hello");
        write(&src.path().join("big.bin"), &vec![42u8; 300_000]);
        std::fs::create_dir_all(src.path().join("empty")).unwrap();
        std::os::unix::fs::symlink("a/b.txt", src.path().join("link")).unwrap();
        let b1 = upload(&dm, "r", src.path(), "one").await;
        assert_eq!(b1.stats.files, 2);
        assert!(b1.parents.is_empty());

        let dst = tempfile::tempdir().unwrap();
        let out = dst.path().join("out");
        dm.download(
            &"r".parse().unwrap(),
            &b1.id,
            &out,
            &DownloadOptions::default(),
            &NoProgress,
        )
        .await
        .unwrap();
        assert_eq!(snapshot(src.path()), snapshot(&out));

        write(&src.path().join("a/b.txt"), b"hello again");
        std::fs::remove_dir(src.path().join("empty")).unwrap();
        write(&src.path().join("new.txt"), b"new");
        let b2 = upload(&dm, "r", src.path(), "two").await;
        assert_eq!(
            b2.parents,
            vec![b1.id],
            "parent is the previous head of main"
        );
        let changes = dm
            .diff_bundles(&"r".parse().unwrap(), &b1.id, &b2.id)
            .await
            .unwrap();
        let shown: Vec<String> = changes.iter().map(ToString::to_string).collect();
        assert_eq!(shown, vec!["M a/b.txt", "D empty/", "A new.txt"]);
        assert!(dm
            .diff_bundles(&"r".parse().unwrap(), &b2.id, &b2.id)
            .await
            .unwrap()
            .is_empty());

        // The folder still holds b1: updating it to b2 makes it equal to the source.
        let applied = dm
            .update_dir(&"r".parse().unwrap(), &b2.id, &out, &NoProgress)
            .await
            .unwrap();
        assert!(applied
            .iter()
            .any(|c| c.kind == ChangeKind::Added && c.path == "new.txt"));
        assert_eq!(snapshot(src.path()), snapshot(&out));
        assert!(dm
            .diff_dir(&"r".parse().unwrap(), &b2.id, &out)
            .await
            .unwrap()
            .is_empty());

        let latest = dm
            .resolve(&"r".parse().unwrap(), &BundleSelector::Latest)
            .await
            .unwrap();
        assert_eq!(latest, b2.id);
        let label = "prod".parse().unwrap();
        dm.set_label(&"r".parse().unwrap(), &label, &b1.id, Some(None))
            .await
            .unwrap();
        let conflict = dm
            .set_label(&"r".parse().unwrap(), &label, &b2.id, Some(None))
            .await
            .unwrap_err();
        assert_eq!(conflict.kind(), datamon::ErrorKind::Conflict);
        dm.set_label(&"r".parse().unwrap(), &label, &b2.id, Some(Some(b1.id)))
            .await
            .unwrap();
        let history = dm
            .label_history(&"r".parse().unwrap(), &label)
            .await
            .unwrap();
        assert_eq!(
            history.iter().map(|h| h.bundle).collect::<Vec<_>>(),
            vec![b1.id, b2.id]
        );

        let report = dm.fsck(true, &NoProgress).await.unwrap();
        assert!(report.is_ok(), "{:?}", report.problems);
        assert!(report.blobs_verified > 0);
    });
}

#[test]
fn concurrent_label_and_branch_updates_are_all_kept() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().display());
        let dm = open(&url).await;
        dm.create_repo(&"r".parse().unwrap(), "d").await.unwrap();
        let src = tempfile::tempdir().unwrap();
        write(&src.path().join("f"), b"x");
        let b = upload(&dm, "r", src.path(), "base").await;
        // Eight label sets and eight uploads to one branch, all at once, each from its own
        // handle on the store.
        let mut labels = Vec::new();
        let mut uploads = Vec::new();
        for i in 0..8 {
            let dm = open(&url).await;
            labels.push(tokio::spawn(async move {
                dm.set_label(&"r".parse().unwrap(), &"l".parse().unwrap(), &b.id, None)
                    .await
                    .unwrap();
            }));
            let dm = open(&url).await;
            let data = tempfile::tempdir().unwrap();
            write(&data.path().join("f"), format!("upload {i}").as_bytes());
            uploads.push(tokio::spawn(async move {
                let ctx = UploadContext {
                    repo: "r".parse().unwrap(),
                    path: data.path().to_owned(),
                    message: format!("upload {i}"),
                };
                let opts = UploadOptions {
                    branch: Some("b".parse().unwrap()),
                    ..Default::default()
                };
                dm.upload(ctx, opts, &NoProgress).await.unwrap().bundle.id
            }));
        }
        for t in labels {
            t.await.unwrap();
        }
        let mut ids = Vec::new();
        for t in uploads {
            ids.push(t.await.unwrap());
        }
        let h = dm
            .label_history(&"r".parse().unwrap(), &"l".parse().unwrap())
            .await
            .unwrap();
        assert_eq!(h.len(), 8);
        let branch = dm
            .branch_history(&"r".parse().unwrap(), &"b".parse().unwrap())
            .await
            .unwrap();
        let mut heads: Vec<_> = branch.iter().filter_map(|r| r.head).collect();
        assert_eq!(heads.len(), 8, "every branch update is kept");
        // Each record follows the one before it.
        for pair in branch.windows(2) {
            assert_eq!(pair[1].previous, pair[0].head);
        }
        heads.sort();
        ids.sort();
        assert_eq!(heads, ids);
    });
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(8))]
    /// Any set of files (names, sizes, content) comes back byte for byte.
    #[test]
    fn any_tree_round_trips(files in proptest::collection::btree_map("[a-z]{1,8}(/[a-z]{1,8}){0,2}", (0usize..200_000, any::<u8>()), 1..12)) {
        let src = tempfile::tempdir().unwrap();
        let mut written = 0;
        for (path, (len, seed)) in &files {
            let p = src.path().join(path);
            // Skip paths that clash with a directory or file already written.
            if p.exists() || p.ancestors().skip(1).any(|a| a.is_file()) {
                continue;
            }
            let data: Vec<u8> = (0..*len).map(|i| (i as u8).wrapping_mul(*seed).wrapping_add((i >> 9) as u8)).collect();
            write(&p, &data);
            written += 1;
        }
        prop_assume!(written > 0);
        rt().block_on(async {
            let dm = open(&format!("memory://prop-{}", rand_suffix())).await;
            dm.create_repo(&"r".parse().unwrap(), "").await.unwrap();
            let b = upload(&dm, "r", src.path(), "p").await;
            let dst = tempfile::tempdir().unwrap();
            dm.download(&"r".parse().unwrap(), &b.id, dst.path(), &DownloadOptions::default(), &NoProgress).await.unwrap();
            assert_eq!(snapshot(src.path()), snapshot(dst.path()));
        });
    }
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

#[test]
fn damaged_chunk_on_the_primary_is_read_from_the_replica() {
    rt().block_on(async {
        let primary = tempfile::tempdir().unwrap();
        let replica = tempfile::tempdir().unwrap();
        let (p_url, r_url) = (
            format!("file://{}", primary.path().display()),
            format!("file://{}", replica.path().display()),
        );
        let opts = OpenOptions {
            author: Some("tester".into()),
            ..Default::default()
        };
        let dm = Datamon::open_with_replica(&p_url, &r_url, opts.clone())
            .await
            .unwrap();
        dm.create_repo(&"r".parse().unwrap(), "").await.unwrap();
        let src = tempfile::tempdir().unwrap();
        // Incompressible content, so a flipped byte in the pack lands in stored chunk data.
        let data: Vec<u8> = (0..400_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        write(&src.path().join("data.bin"), &data);
        let b = upload(&dm, "r", src.path(), "one").await;

        // Flip one byte inside the data pack (the largest) of the primary only.
        let mut packs = Vec::new();
        let mut stack = vec![primary.path().join("packs")];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p)
                } else {
                    packs.push(p)
                }
            }
        }
        let data_pack = packs
            .iter()
            .max_by_key(|p| std::fs::metadata(p).unwrap().len())
            .unwrap();
        let mut bytes = std::fs::read(data_pack).unwrap();
        let mid = bytes.len() / 3;
        bytes[mid] ^= 0x40;
        std::fs::write(data_pack, bytes).unwrap();

        // Without the replica the download fails, naming the file; with it, it succeeds.
        let alone = Datamon::open(&p_url, opts.clone()).await.unwrap();
        let out1 = tempfile::tempdir().unwrap();
        let err = alone
            .download(
                &"r".parse().unwrap(),
                &b.id,
                out1.path(),
                &DownloadOptions::default(),
                &NoProgress,
            )
            .await
            .unwrap_err();
        assert!(err.to_string().contains("data.bin"), "{err}");
        assert!(!out1.path().join("data.bin").exists());
        let out2 = tempfile::tempdir().unwrap();
        dm.download(
            &"r".parse().unwrap(),
            &b.id,
            out2.path(),
            &DownloadOptions::default(),
            &NoProgress,
        )
        .await
        .unwrap();
        assert_eq!(std::fs::read(out2.path().join("data.bin")).unwrap(), data);

        // The same through the mount's filesystem: EIO-worthy error alone, right bytes with it.
        let read_all = |dm: Datamon| {
            let id = b.id;
            async move {
                let vfs = dm
                    .vfs(
                        &"r".parse().unwrap(),
                        &id,
                        datamon::vfs::VfsOptions::default(),
                        tokio::runtime::Handle::current(),
                    )
                    .await
                    .unwrap();
                tokio::task::spawn_blocking(move || {
                    let a = vfs
                        .lookup_blocking(datamon::vfs::ROOT_INODE, "data.bin")?
                        .expect("exists");
                    let fh = vfs.open_blocking(a.ino)?;
                    vfs.read_blocking(fh, 0, a.size as u32)
                })
                .await
                .unwrap()
            }
        };
        assert!(
            read_all(alone).await.is_err(),
            "damaged data is never served"
        );
        assert_eq!(read_all(dm).await.unwrap(), data[..]);
    });
}
