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

/// Files below `root` while a download writes there: path and size, for temporary files too.
/// Entries renamed or removed meanwhile are skipped (unlike [`snapshot`]).
fn live_files(root: &Path) -> Vec<(String, u64)> {
    fn walk(dir: &Path, prefix: &str, out: &mut Vec<(String, u64)>) {
        let Ok(rd) = fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let rel = format!("{prefix}{}", e.file_name().to_string_lossy());
            let Ok(m) = fs::symlink_metadata(e.path()) else {
                continue;
            };
            if m.is_dir() {
                walk(&e.path(), &format!("{rel}/"), out);
            } else {
                out.push((rel, m.len()));
            }
        }
    }
    let mut out = Vec::new();
    walk(root, "", &mut out);
    out
}

fn is_temp(path: &str) -> bool {
    path.rsplit('/')
        .next()
        .is_some_and(|n| n.starts_with('.') && n.contains(".datamon-"))
}

/// The state of every thread of process `pid` (`R`, `S`, `D`, `T` stopped, `Z`...).
fn thread_states(pid: u32) -> Vec<char> {
    let Ok(rd) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|t| fs::read_to_string(t.path().join("stat")).ok())
        // `pid (comm) S ...`: the state follows the last `)`.
        .filter_map(|s| s.rsplit_once(')')?.1.trim_start().chars().next())
        .collect()
}

fn signal(pid: u32, sig: &str) {
    let st = std::process::Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .status()
        .expect("run kill");
    assert!(st.success(), "kill -{sig} {pid}");
}

#[test]
fn kill_9_during_download_leaves_no_file_under_a_real_name_that_is_wrong() {
    use std::os::unix::process::ExitStatusExt as _;

    let dm = Dm::new();
    dm.create_repo("r");
    let src = dm.dir("src");
    big_tree(&src);
    let id = dm.upload("r", &src, "big", &[]);
    let files: Vec<String> = snapshot(&src)
        .into_iter()
        .filter(|(_, m)| matches!(m.kind, Kind::File { .. }))
        .map(|(p, _)| p)
        .collect();
    // Two moments: as soon as the first file is being written, and once at least one of the
    // 50 MiB files is complete under its real name while another one is still being written.
    for (round, needs_a_done_part) in [("early", false), ("late", true)] {
        let dest = dm.dir(&format!("dest-{round}"));
        // One file at a time (the throttle): each 50 MiB part is written for a long while.
        let mut child = dm
            .command()
            .args(["--concurrency", "1", "bundle", "download", "--repo", "r"])
            .args(["--bundle", &id, "--destination"])
            .arg(&dest)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn download");
        let pid = child.id();
        let moment = |live: &[(String, u64)]| {
            let writing = live.iter().any(|(p, n)| is_temp(p) && *n > 0);
            let done_part = live
                .iter()
                .any(|(p, _)| !is_temp(p) && p.starts_with("part"));
            writing && (done_part || !needs_a_done_part)
        };
        // Wait for the moment, then freeze the process there (SIGSTOP): what is on disk when
        // the SIGKILL lands is what is checked below. If the moment passed before the process
        // stopped, let it go on (SIGCONT) and wait for the next.
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let live = live_files(&dest);
            if moment(&live) {
                signal(pid, "STOP");
                let stopping = Instant::now();
                while !thread_states(pid).iter().all(|&s| s == 'T' || s == 't') {
                    assert!(
                        stopping.elapsed() < Duration::from_secs(20),
                        "{round}: not stopped: {:?}",
                        thread_states(pid)
                    );
                    std::thread::sleep(Duration::from_millis(5));
                }
                if moment(&live_files(&dest)) {
                    break;
                }
                signal(pid, "CONT");
            }
            let exited = child.try_wait().expect("try_wait");
            assert!(
                exited.is_none(),
                "{round}: the download ended ({exited:?}) before it could be stopped at the \
                 moment to kill it; files then: {live:?}"
            );
            assert!(Instant::now() < deadline, "{round}: no progress: {live:?}");
            std::thread::sleep(Duration::from_millis(2));
        }
        // The download had started and had not finished when the SIGKILL landed.
        let at_kill = snapshot(&dest);
        let temps: Vec<&String> = at_kill.keys().filter(|p| is_temp(p)).collect();
        let real: Vec<&String> = files.iter().filter(|p| at_kill.contains_key(*p)).collect();
        assert!(!temps.is_empty(), "{round}: no file was being written");
        assert!(
            real.len() < files.len(),
            "{round}: every file was already there: {real:?}"
        );
        assert!(
            child.try_wait().expect("try_wait").is_none(),
            "{round}: the download is still running (stopped)"
        );
        child.kill().expect("SIGKILL");
        let status = child.wait().expect("wait");
        assert_eq!(status.signal(), Some(9), "{round}: killed by SIGKILL");
        eprintln!(
            "{round}: killed while writing {temps:?}, {} of {} files done",
            real.len(),
            files.len()
        );

        // Whatever exists under a real name is complete and correct.
        let mut checked = 0;
        for (p, m) in snapshot(&dest) {
            if is_temp(&p) {
                continue;
            }
            if let Kind::File { .. } = m.kind {
                assert!(
                    crate::util::same_bytes(&src.join(&p), &dest.join(&p)),
                    "{round}: {p} exists under its real name with wrong content"
                );
                checked += 1;
            }
        }
        if needs_a_done_part {
            assert!(checked > 0, "{round}: no complete file to check");
        }
        // A forced re-download completes it, byte for byte, and removes the temporary files.
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
        assert_eq!(
            temp_leftovers(&dest),
            Vec::<String>::new(),
            "{round}: temporary files left"
        );
        assert_same_tree(&src, &dest, Compare::ALL);
    }
}
