//! Damaged stores and killed processes.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::util::{
    assert_same_tree, random_bytes, snapshot, temp_leftovers, write, write_random, Compare, Dm,
    Kind,
};

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// The pack that holds `needle` (a piece of a file's incompressible content), and the offset of
/// the needle in it.
fn find_pack_with(dm: &Dm, needle: &[u8]) -> (PathBuf, usize) {
    let mut found = Vec::new();
    for p in dm.pack_files() {
        let bytes = fs::read(&p).expect("read pack");
        assert_eq!(
            &bytes[..8],
            b"DMPACK\0\x01",
            "{} is not a pack",
            p.display()
        );
        if let Some(at) = bytes.windows(needle.len()).position(|w| w == needle) {
            found.push((p, at));
        }
    }
    assert_eq!(
        found.len(),
        1,
        "expected exactly one pack holding the data: {found:?}"
    );
    found.remove(0)
}

fn flip_byte(path: &Path, at: usize) {
    let mut bytes = fs::read(path).expect("read");
    bytes[at] ^= 0x5a;
    fs::write(path, bytes).expect("write");
}

#[test]
fn fsck_is_clean_on_a_sound_store() {
    let dm = Dm::new();
    // An empty store.
    dm.ok(["fsck"]).stdout_has("no problems");
    dm.create_repo("r");
    let src = dm.dir("src");
    crate::util::build_tricky_tree(&src, &dm.dir("outside.txt"));
    dm.upload("r", &src, "m", &[]);
    write(&src.join("more.txt"), "more");
    dm.upload("r", &src, "m2", &["--branch", "dev", "--label", "l"]);
    let out = dm.ok(["fsck"]);
    assert!(!out.stdout.contains("problem:"), "{out:?}");
    assert!(out.stdout.contains("no problems"), "{out:?}");
    assert!(out.stdout.contains("2 bundles"), "{out:?}");
    let out = dm.ok(["fsck", "--read-data"]);
    assert!(out.stdout.contains("no problems"), "{out:?}");
    let j = dm.ok(["--json", "fsck", "--read-data"]).json();
    assert_eq!(j["problems"], serde_json::json!([]));
    assert_eq!(j["bundles"], 2);
    assert!(j["blobs_verified"].as_u64().expect("blobs_verified") > 0);
}

#[test]
fn corrupt_pack_data_is_detected_and_never_written_under_the_real_name() {
    let dm = Dm::new();
    dm.create_repo("r");
    let src = dm.dir("src");
    let content = random_bytes(1234, 300 * 1024);
    write(&src.join("victim.bin"), &content);
    write(&src.join("sub/fine.txt"), "this file is fine\n");
    let id = dm.upload("r", &src, "m", &[]);
    dm.ok(["fsck", "--read-data"]).stdout_has("no problems");

    // Flip one byte in the middle of the file's data inside its pack.
    let (pack, at) = find_pack_with(&dm, &content[..64]);
    assert!(at >= 8, "data starts after the magic");
    flip_byte(&pack, at + 100);

    // Whole download: fails, names the file, leaves no file under its name and no temp file.
    let dest = dm.dir("dest");
    dm.run([
        "bundle",
        "download",
        "--repo",
        "r",
        "--bundle",
        &id,
        "--destination",
        s(&dest),
    ])
    .failure()
    .stderr_has("victim.bin")
    .stderr_has("corrupt");
    assert!(
        fs::symlink_metadata(dest.join("victim.bin")).is_err(),
        "a damaged file was written under its real name"
    );
    assert!(
        temp_leftovers(&dest).is_empty(),
        "temp files left: {:?}",
        temp_leftovers(&dest)
    );

    // Single-file download: the same.
    let dest2 = dm.dir("dest2");
    dm.run([
        "bundle",
        "download",
        "file",
        "--file",
        "victim.bin",
        "--repo",
        "r",
        "--bundle",
        &id,
        "--destination",
        s(&dest2),
    ])
    .failure()
    .stderr_has("victim.bin");
    assert!(fs::symlink_metadata(dest2.join("victim.bin")).is_err());
    assert!(temp_leftovers(&dest2).is_empty());

    // --force over an existing good copy: the old file stays as it was.
    let dest3 = dm.dir("dest3");
    write(&dest3.join("victim.bin"), "previous version");
    dm.run([
        "bundle",
        "download",
        "--repo",
        "r",
        "--bundle",
        &id,
        "--destination",
        s(&dest3),
        "--force",
    ])
    .failure()
    .stderr_has("victim.bin");
    assert_eq!(
        fs::read(dest3.join("victim.bin")).expect("read"),
        b"previous version"
    );

    // The undamaged file is still readable on its own.
    let dest4 = dm.dir("dest4");
    dm.ok([
        "bundle",
        "download",
        "file",
        "--file",
        "sub/fine.txt",
        "--repo",
        "r",
        "--bundle",
        &id,
        "--destination",
        s(&dest4),
    ]);
    assert_eq!(
        fs::read(dest4.join("sub/fine.txt")).expect("read"),
        b"this file is fine\n"
    );

    // fsck --read-data finds it.
    let out = dm.run(["fsck", "--read-data"]).code(1);
    assert!(out.stdout.contains("problem:"), "{out:?}");
    assert!(out.stdout.contains("PROBLEMS"), "{out:?}");
    let j = dm.run(["--json", "fsck", "--read-data"]).code(1).json();
    assert!(!j["problems"].as_array().expect("problems").is_empty());

    // `bundle diff --destination` against the original folder is unaffected (it reads no data).
    dm.run([
        "bundle",
        "diff",
        "--repo",
        "r",
        "--bundle",
        &id,
        "--destination",
        s(&src),
    ])
    .code(0);
}

#[test]
fn missing_pack_and_damaged_records_are_reported() {
    let dm = Dm::new();
    dm.create_repo("r");
    let src = dm.dir("src");
    let content = random_bytes(99, 64 * 1024);
    write(&src.join("data.bin"), &content);
    let id = dm.upload("r", &src, "m", &[]);
    write(&src.join("other.txt"), "other");
    let id2 = dm.upload("r", &src, "m2", &[]);

    // A damaged bundle record: fsck reports it; reading it is an error (not a crash).
    let record = dm.store_dir().join(format!("repos/r/bundles/{id2}.json"));
    assert!(record.is_file(), "bundle record at {}", record.display());
    let original = fs::read(&record).expect("read record");
    write(&record, "{ not json");
    let out = dm.run(["fsck"]).code(1);
    assert!(out.stdout.contains(&id2), "{out:?}");
    dm.run(["bundle", "get", "--repo", "r", "--bundle", &id2])
        .failure()
        .stderr_has(&id2);
    fs::write(&record, original).expect("restore record");
    dm.ok(["fsck"]);
    // A record deleted while a branch still names it: fsck says so.
    let saved = fs::read(&record).expect("read record");
    fs::remove_file(&record).expect("rm");
    dm.run(["fsck"])
        .code(1)
        .stdout_has(&id2)
        .stdout_has("missing");
    dm.run(["bundle", "get", "--repo", "r", "--branch", "main"])
        .code(2)
        .stderr_has(&id2);
    fs::write(&record, saved).expect("restore record");
    dm.ok(["fsck"]);

    // A pack deleted from under the index: plain fsck notices; download fails cleanly.
    let (pack, _) = find_pack_with(&dm, &content[..64]);
    fs::remove_file(&pack).expect("rm pack");
    let out = dm.run(["fsck"]).code(1);
    assert!(out.stdout.contains("problem:"), "{out:?}");
    assert!(out.stdout.contains("missing"), "{out:?}");
    let dest = dm.dir("dest");
    let out = dm
        .run([
            "bundle",
            "download",
            "--repo",
            "r",
            "--bundle",
            &id,
            "--destination",
            s(&dest),
        ])
        .failure();
    assert!(fs::symlink_metadata(dest.join("data.bin")).is_err());
    // The bundle exists: damage is not "not found" (exit 2 means the bundle does not exist), and
    // the message says which file cannot be restored.
    assert_eq!(
        out.code, 1,
        "a damaged store must not look like a missing bundle: {out:?}"
    );
    out.stderr_has("data.bin");
}

/// Writes the three 50 MiB incompressible parts of [`big_tree`] from `seed`.
fn big_parts(root: &Path, seed: u64) {
    for i in 0..3u64 {
        write_random(
            &root.join(format!("part{i}.bin")),
            seed + i,
            50 * 1024 * 1024,
        );
    }
}

/// A ~150 MiB tree in a few incompressible files, plus some small ones.
fn big_tree(root: &Path) {
    big_parts(root, 1000);
    for i in 0..20u64 {
        write(
            &root.join(format!("small/s{i}.txt")),
            format!("small file {i}\n"),
        );
    }
}

#[test]
fn kill_9_during_upload_leaves_a_consistent_store() {
    let dm = Dm::new();
    dm.create_repo("r");
    let src = dm.dir("src");
    big_tree(&src);
    // An earlier bundle, so that "no new bundle" is meaningful.
    let seed = dm.dir("seed");
    write(&seed.join("seed.txt"), "seed");
    let first = dm.upload("r", &seed, "seed", &[]);

    let mut killed_mid_upload = 0;
    let mut committed = vec![first];
    let delays = [300u64, 400, 500, 600, 100];
    for (round, delay_ms) in delays.into_iter().enumerate() {
        // New content every round, so that every upload has data to read and store (the stat
        // cache and dedup would otherwise make the later rounds finish at once).
        if round > 0 {
            big_parts(&src, 2000 + round as u64 * 10);
        }
        let mut child = dm
            .command()
            .args(["bundle", "upload", "--repo", "r", "--message", "big"])
            .args(["--label", "big", "--path"])
            .arg(&src)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn upload");
        let started = Instant::now();
        // Wait for the delay, noticing an upload that finished before it.
        let mut done_early = false;
        while started.elapsed() < Duration::from_millis(delay_ms) {
            if child.try_wait().expect("try_wait").is_some() {
                done_early = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if !done_early {
            // SIGKILL (it may have exited meanwhile: then there is nothing to kill).
            let _ = child.kill();
        }
        let st = child.wait().expect("wait");
        let finished = if st.code().is_none() {
            killed_mid_upload += 1;
            None
        } else {
            assert!(st.success(), "the upload failed by itself: {st:?}");
            Some(st)
        };

        // Only complete bundles are listed: each new one holds exactly the source tree.
        let ids = dm.bundle_ids("r");
        assert_eq!(
            &ids[..committed.len()],
            &committed[..],
            "earlier bundles changed"
        );
        let new: Vec<String> = ids[committed.len()..].to_vec();
        assert!(new.len() <= 1, "one upload created {} bundles", new.len());
        if finished.is_some() {
            assert_eq!(new.len(), 1, "a finished upload is listed");
        }
        for id in &new {
            dm.run([
                "bundle",
                "diff",
                "--repo",
                "r",
                "--bundle",
                id,
                "--destination",
                s(&src),
            ])
            .code(0);
        }
        committed.extend(new);

        let out = dm.run(["fsck"]);
        assert_eq!(out.code, 0, "fsck after a kill at {delay_ms} ms: {out:?}");
        assert!(out.stdout.contains("no problems"), "{out:?}");
        // Every listed bundle can still be read.
        for id in &committed {
            dm.ok(["bundle", "list", "files", "--repo", "r", "--bundle", id]);
        }
    }
    eprintln!(
        "killed mid-upload {killed_mid_upload} of {} times",
        delays.len()
    );
    // Not a timing assertion: a sanity check that this test exercised what it is about (150 MiB
    // of new data cannot be uploaded by a debug build within 100 ms).
    assert!(killed_mid_upload >= 1, "no upload was killed while it ran");

    // Rerunning the upload succeeds and gives exactly the source back.
    let id = dm.upload("r", &src, "final", &["--label", "big"]);
    let out = dm.dir("out");
    dm.download("r", &id, &out);
    assert_same_tree(&src, &out, Compare::ALL);
    let label = dm
        .ok(["--json", "label", "get", "--repo", "r", "--label", "big"])
        .json();
    assert_eq!(label["bundle"], id.as_str());
    let out = dm.run(["fsck", "--read-data"]);
    assert_eq!(out.code, 0, "{out:?}");
    let files = snapshot(&src)
        .into_iter()
        .filter(|(_, m)| matches!(m.kind, Kind::File { .. }))
        .count();
    assert_eq!(dm.bundle_json("r", &id)["files"], files);
}

#[test]
fn kill_9_during_download_leaves_no_file_under_a_real_name_that_is_wrong() {
    let dm = Dm::new();
    dm.create_repo("r");
    let src = dm.dir("src");
    big_tree(&src);
    let id = dm.upload("r", &src, "big", &[]);
    for delay_ms in [200u64, 400] {
        let dest = dm.dir(&format!("dest-{delay_ms}"));
        let mut child = dm
            .command()
            .args([
                "bundle",
                "download",
                "--repo",
                "r",
                "--bundle",
                &id,
                "--destination",
            ])
            .arg(&dest)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn download");
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        child.wait().expect("wait");
        // Whatever exists under a real name is complete and correct.
        if dest.exists() {
            for (p, m) in snapshot(&dest) {
                let name = p.rsplit('/').next().expect("name");
                if name.starts_with('.') && name.contains(".datamon-") {
                    continue;
                }
                if let Kind::File { .. } = m.kind {
                    assert!(
                        crate::util::same_bytes(&src.join(&p), &dest.join(&p)),
                        "{p} exists under its real name with wrong content"
                    );
                }
            }
        }
        // A forced re-download completes it.
        dm.ok([
            "bundle",
            "download",
            "--repo",
            "r",
            "--bundle",
            &id,
            "--destination",
            s(&dest),
            "--force",
        ]);
        for leftover in temp_leftovers(&dest) {
            fs::remove_file(dest.join(leftover)).expect("rm leftover");
        }
        assert_same_tree(&src, &dest, Compare::ALL);
    }
}
