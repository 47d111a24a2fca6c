//! Downloads planned across files: many small files in few range reads, large files spread over
//! several reads, modes, mtimes, `--force`, damaged data.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use datamon::{Datamon, DownloadOptions, Error, NoProgress, OpenOptions};

use super::{rt, snapshot, upload, write};

/// Every entry below `root` with its mode, mtime (ns) and content (files) or target (symlinks).
fn full_snapshot(root: &Path) -> Vec<(String, u32, i64, Vec<u8>)> {
    snapshot(root)
        .into_iter()
        .map(|(rel, mode, data)| {
            let p = root.join(rel.trim_end_matches('/'));
            let m = std::fs::symlink_metadata(&p).unwrap();
            let mtime = m.mtime() * 1_000_000_000 + m.mtime_nsec();
            (rel, mode, mtime, data)
        })
        .collect()
}

/// Pseudo-random bytes (xorshift), incompressible.
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

fn set_mtime(p: &Path, secs: i64, nanos: u32) {
    let t = filetime::FileTime::from_unix_time(secs, nanos);
    filetime::set_symlink_file_times(p, t, t).unwrap();
}

async fn open_local(store: &Path, concurrency: usize) -> Datamon {
    Datamon::open(
        &format!("file://{}", store.display()),
        OpenOptions {
            author: Some("tester".into()),
            concurrency: Some(concurrency),
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

/// `n` small files in 20 directories, with varied modes and mtimes, some empty, some
/// duplicates of each other, plus symlinks and an empty directory.
fn small_tree(root: &Path, n: usize) {
    for i in 0..n {
        let p = root.join(format!("d{:02}/f{i:05}", i % 20));
        let data = match i % 7 {
            0 => Vec::new(),
            1 => b"the same content in several files\n".to_vec(),
            2 => format!("text file {i}\n").repeat(i % 50 + 1).into_bytes(),
            _ => noise(i as u64, 200 + (i * 37) % 4000),
        };
        write(&p, &data);
        let mode = [0o644, 0o600, 0o755, 0o640, 0o777, 0o666, 0o444][i % 7];
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        set_mtime(
            &p,
            1_600_000_000 + i as i64,
            (i as u32 * 7919) % 1_000_000_000,
        );
    }
    std::os::unix::fs::symlink("../d00/f00001", root.join("d01/link")).unwrap();
    std::fs::create_dir_all(root.join("empty/inner")).unwrap();
    for d in ["empty/inner", "empty", "d03"] {
        set_mtime(&root.join(d), 1_500_000_000, 5);
    }
    std::fs::set_permissions(root.join("d03"), std::fs::Permissions::from_mode(0o555)).unwrap();
}

fn make_writable(root: &Path) {
    let _ = std::fs::set_permissions(root.join("d03"), std::fs::Permissions::from_mode(0o755));
}

#[test]
fn many_small_files_come_in_few_range_reads_with_modes_and_mtimes() {
    rt().block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let dm = open_local(&tmp.path().join("store"), 8).await;
        dm.create_repo(&"r".parse().unwrap(), "d").await.unwrap();
        let src = tmp.path().join("src");
        small_tree(&src, 3000);
        let b = upload(&dm, "r", &src, "small").await;
        let out = tmp.path().join("out");
        let report = dm
            .download(
                &"r".parse().unwrap(),
                &b.id,
                &out,
                &DownloadOptions::default(),
                &NoProgress,
            )
            .await
            .unwrap();
        assert_eq!(report.files, 3000);
        assert_eq!(report.symlinks, 1);
        assert_eq!(full_snapshot(&src), full_snapshot(&out));
        // About 5 MiB in a few packs: a handful of reads, not one per file.
        assert!(
            report.range_reads >= 1 && report.range_reads * 100 <= report.files,
            "{report:?}"
        );
        make_writable(&src);
        make_writable(&out);
    });
}

#[test]
fn large_files_over_several_reads_at_any_concurrency() {
    rt().block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        // 24 MiB (several regions, several packs), a compressible 10 MiB, small ones around.
        write(&src.join("a/big.bin"), &noise(1, 24 << 20));
        write(
            &src.join("a/text.csv"),
            &b"1,2,3,hello,world\n".repeat(600_000),
        );
        for i in 0..50 {
            write(&src.join(format!("b/{i}")), &noise(100 + i, 3000));
        }
        // The same big content twice (shared chunks), and a file that repeats a chunk.
        write(&src.join("c/big-copy.bin"), &noise(1, 24 << 20));
        let mut twice = noise(7, 3 << 20);
        twice.extend_from_within(..);
        write(&src.join("c/twice.bin"), &twice);
        for concurrency in [1, 3, 16] {
            let dm = open_local(&tmp.path().join(format!("store{concurrency}")), concurrency).await;
            dm.create_repo(&"r".parse().unwrap(), "d").await.unwrap();
            let b = upload(&dm, "r", &src, "large").await;
            let out = tmp.path().join(format!("out{concurrency}"));
            let report = dm
                .download(
                    &"r".parse().unwrap(),
                    &b.id,
                    &out,
                    &DownloadOptions::default(),
                    &NoProgress,
                )
                .await
                .unwrap();
            assert_eq!(full_snapshot(&src), full_snapshot(&out), "{concurrency}");
            assert!(report.range_reads >= 6, "{report:?}");
            assert_eq!(temps(&out), Vec::<PathBuf>::new());
        }
    });
}

/// Temporary files of a download left below `root`.
fn temps(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else if e.file_name().to_string_lossy().starts_with(".datamon-tmp-") {
                out.push(e.path());
            }
        }
    }
    out
}

#[test]
fn force_replaces_what_is_in_the_way_and_keeps_the_rest() {
    rt().block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let dm = open_local(&tmp.path().join("store"), 4).await;
        dm.create_repo(&"r".parse().unwrap(), "d").await.unwrap();
        let src = tmp.path().join("src");
        small_tree(&src, 200);
        let b = upload(&dm, "r", &src, "small").await;
        let out = tmp.path().join("out");
        // A directory where a file goes, a file where a directory goes, an old version of a
        // file, a stale temporary file, an unrelated file.
        std::fs::create_dir_all(out.join("d05/f00005/deep")).unwrap();
        write(&out.join("d06"), b"in the way");
        write(&out.join("d07/f00007"), b"old version");
        write(&out.join("d08/.datamon-tmp-0123456789abcdef"), b"stale");
        write(&out.join("unrelated.txt"), b"kept");
        let opts = DownloadOptions::default();
        let err = dm
            .download(&"r".parse().unwrap(), &b.id, &out, &opts, &NoProgress)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::DestinationNotEmpty { .. }), "{err:?}");
        let opts = DownloadOptions {
            force: true,
            ..Default::default()
        };
        dm.download(&"r".parse().unwrap(), &b.id, &out, &opts, &NoProgress)
            .await
            .unwrap();
        assert_eq!(std::fs::read(out.join("unrelated.txt")).unwrap(), b"kept");
        std::fs::remove_file(out.join("unrelated.txt")).unwrap();
        assert_eq!(full_snapshot(&src), full_snapshot(&out));
        assert_eq!(temps(&out), Vec::<PathBuf>::new());
        // A name filter restores only what matches.
        let some = tmp.path().join("some");
        let opts = DownloadOptions {
            name_filter: Some(regex::Regex::new("^d1[0-2]/f0011").unwrap()),
            ..Default::default()
        };
        let r = dm
            .download(&"r".parse().unwrap(), &b.id, &some, &opts, &NoProgress)
            .await
            .unwrap();
        let got: Vec<String> = full_snapshot(&some)
            .into_iter()
            .filter(|e| !e.0.ends_with('/'))
            .map(|e| e.0)
            .collect();
        assert_eq!(got, vec!["d10/f00110", "d11/f00111", "d12/f00112"]);
        assert_eq!(r.files, 3);
        make_writable(&src);
        make_writable(&out);
    });
}

/// The pack file below `store` that holds `needle`, and where.
fn find_in_packs(store: &Path, needle: &[u8]) -> (PathBuf, usize) {
    let mut stack = vec![store.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
                continue;
            }
            let data = std::fs::read(e.path()).unwrap();
            if let Some(at) = data.windows(needle.len()).position(|w| w == needle) {
                return (e.path(), at);
            }
        }
    }
    panic!("not found in any pack")
}

#[test]
fn damaged_data_names_the_file_and_leaves_no_file_and_no_temp() {
    rt().block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let store = tmp.path().join("store");
        let dm = open_local(&store, 4).await;
        dm.create_repo(&"r".parse().unwrap(), "d").await.unwrap();
        let src = tmp.path().join("src");
        let big = noise(3, 20 << 20);
        write(&src.join("big.bin"), &big);
        let small = noise(4, 5000);
        write(&src.join("small.bin"), &small);
        for i in 0..100 {
            write(&src.join(format!("x/{i}")), &noise(1000 + i, 2000));
        }
        let b = upload(&dm, "r", &src, "m").await;
        for (name, needle) in [
            ("big.bin", &big[15 << 20..(15 << 20) + 64]),
            ("small.bin", &small[..64]),
        ] {
            let (pack, at) = find_in_packs(&store, needle);
            let mut data = std::fs::read(&pack).unwrap();
            data[at + 10] ^= 0xff;
            std::fs::write(&pack, &data).unwrap();
            let out = tmp.path().join(format!("out-{name}"));
            let err = dm
                .download(
                    &"r".parse().unwrap(),
                    &b.id,
                    &out,
                    &DownloadOptions::default(),
                    &NoProgress,
                )
                .await
                .unwrap_err();
            match &err {
                Error::Corrupt { path, .. } => assert_eq!(path, name),
                e => panic!("{e:?}"),
            }
            assert!(
                std::fs::symlink_metadata(out.join(name)).is_err(),
                "{name} written"
            );
            assert_eq!(temps(&out), Vec::<PathBuf>::new());
            data[at + 10] ^= 0xff;
            std::fs::write(&pack, &data).unwrap();
        }
    });
}
