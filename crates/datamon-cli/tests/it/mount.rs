//! Real FUSE mounts of bundles, driven by ordinary tools (`diff`, `find`, `stat`) and std I/O.
//!
//! Needs `/dev/fuse`, root and `fusermount3` (see [`fuse_available`]); otherwise every test here
//! prints why it is skipped and passes, unless `DATAMON_TEST_REQUIRE` names `fuse` (as `.ci/run`,
//! which installs `fuse3`, does): then it fails. Likewise for `git` and `sqlite`, which one test
//! runs inside a mount. Every mount is unmounted in teardown, even when the test fails.

use std::collections::BTreeMap;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::util::{
    build_tools_available, fuse_available, git_available, is_mounted, random_bytes, run_command,
    set_mtime, set_symlink_mtime, sqlite_available, time, Daemon, Dm,
};

/// Checks that the mount at `dir` names datamon, as source and type (`findmnt`,
/// `/proc/mounts`), and has the option `ro` or `rw`.
fn assert_named_datamon(dir: &Path, mode: &str) {
    let mounts = std::fs::read_to_string("/proc/self/mounts").expect("mounts");
    let line = mounts
        .lines()
        .find(|l| l.split(' ').nth(1) == Some(&*dir.to_string_lossy()))
        .expect("listed in /proc/self/mounts");
    let fields: Vec<&str> = line.split(' ').collect();
    assert_eq!(fields[0], "datamon", "{line}");
    assert_eq!(fields[2], "fuse.datamon", "{line}");
    assert!(fields[3].split(',').any(|o| o == mode), "{line}");
}

/// Uploads `dir` to a new repo `r` with label `l`; returns the bundle id.
#[track_caller]
fn upload(dm: &Dm, dir: &Path) -> String {
    dm.create_repo("r");
    dm.upload("r", dir, "m", &["--label", "l"])
}

/// `datamon bundle commit --mount DIR [--message M]`; returns the new bundle's id.
#[track_caller]
fn commit(dm: &Dm, mnt: &Path, message: Option<&str>) -> String {
    let mut args = vec!["bundle", "commit", "--mount", mnt.to_str().expect("utf-8")];
    if let Some(m) = message {
        args.extend(["--message", m]);
    }
    let out = dm.ok(&args).stdout;
    out.trim()
        .strip_prefix("Uploaded bundle id:")
        .unwrap_or_else(|| panic!("no id line in {out:?}"))
        .to_owned()
}

/// A source tree with what a mount must show exactly.
fn make_tree(root: &Path) {
    let w = |p: &str, data: &[u8], mode: u32| {
        let p = root.join(p);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("dirs");
        std::fs::write(&p, data).expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
    };
    w("big.bin", &random_bytes(7, 5_000_000), 0o644);
    w("empty.txt", b"", 0o600);
    w("script.sh", b"#!/bin/sh\necho hi\n", 0o755);
    w("sub/deeper/notes.md", b"# notes\n", 0o640);
    w("sub/ünïcode näme.txt", "grüße\n".as_bytes(), 0o644);
    for i in 0..50 {
        w(
            &format!("many/f{i:03}"),
            format!("file {i}\n").as_bytes(),
            0o644,
        );
    }
    std::fs::create_dir_all(root.join("empty-dir")).expect("dir");
    std::os::unix::fs::symlink("../big.bin", root.join("sub/link")).expect("symlink");
    std::os::unix::fs::symlink("does/not/exist", root.join("dangling")).expect("symlink");
    set_mtime(&root.join("big.bin"), time(1_600_000_000, 123_456_789));
    set_symlink_mtime(&root.join("sub/link"), 1_500_000_000, 5);
    set_mtime(&root.join("empty-dir"), time(1_400_000_000, 0));
    std::fs::set_permissions(
        root.join("sub/deeper"),
        std::fs::Permissions::from_mode(0o750),
    )
    .expect("chmod");
}

/// The inode number of every path below `root` (`lstat`, so each is looked up).
fn inode_numbers(root: &Path) -> BTreeMap<String, u64> {
    fn walk(dir: &Path, prefix: &str, out: &mut BTreeMap<String, u64>) {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        for name in names {
            let p = dir.join(&name);
            let rel = format!("{prefix}{name}");
            let m = std::fs::symlink_metadata(&p).expect("lstat");
            out.insert(rel.clone(), m.ino());
            if m.is_dir() {
                walk(&p, &format!("{rel}/"), out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, "", &mut out);
    out
}

/// Walks `root` every half second until at most `keep` of the paths of `seen` still have the
/// inode number they had there (or `within` passed); returns those that kept theirs.
fn wait_for_renumbering(
    root: &Path,
    seen: &BTreeMap<String, u64>,
    keep: usize,
    within: Duration,
) -> Vec<String> {
    let deadline = Instant::now() + within;
    let mut renumbered = std::collections::BTreeSet::new();
    loop {
        std::thread::sleep(Duration::from_millis(500));
        for (p, ino) in inode_numbers(root) {
            if seen.get(&p).is_some_and(|&before| before != ino) {
                renumbered.insert(p);
            }
        }
        if seen.len() - renumbered.len() <= keep || Instant::now() > deadline {
            return seen
                .keys()
                .filter(|p| !renumbered.contains(*p))
                .cloned()
                .collect();
        }
    }
}

/// Every path below `root` with kind, mode, size, mtime and link target.
fn stat_tree(root: &Path) -> Vec<String> {
    let out = Command::new("find")
        .arg(".")
        .arg("-printf")
        .arg("%p %y %m %s %T@ %l\n")
        .current_dir(root)
        .output()
        .expect("find");
    assert!(out.status.success());
    let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with(". "))
        // Directory sizes are not part of a bundle.
        .map(|l| {
            let f: Vec<&str> = l.splitn(6, ' ').collect();
            let size = if f[1] == "d" { "-" } else { f[3] };
            format!("{} {} {} {} {} {}", f[0], f[1], f[2], size, f[4], f[5])
        })
        .collect();
    lines.sort();
    lines
}

#[test]
fn read_only_mount_shows_the_bundle_exactly() {
    if !fuse_available() {
        return;
    }
    let dm = Dm::new();
    let src = dm.path("src");
    make_tree(&src);
    upload(&dm, &src);
    let mnt = dm.path("mnt");
    let mount = dm.mount(&mnt, &["--repo", "r", "--label", "l"]);

    assert_named_datamon(&mnt, "ro");

    let diff = Command::new("diff")
        .args(["-r", "--no-dereference"])
        .arg(&src)
        .arg(&mnt)
        .output()
        .expect("diff");
    assert!(
        diff.status.success(),
        "diff -r: {}{}",
        String::from_utf8_lossy(&diff.stdout),
        String::from_utf8_lossy(&diff.stderr)
    );
    assert_eq!(
        stat_tree(&src),
        stat_tree(&mnt),
        "find -printf of both trees"
    );
    assert_eq!(
        std::fs::read_link(mnt.join("sub/link")).expect("readlink"),
        Path::new("../big.bin")
    );
    assert_eq!(
        std::fs::read(mnt.join("sub/link")).expect("read through link"),
        std::fs::read(src.join("big.bin")).expect("read")
    );
    let m = std::fs::metadata(mnt.join("big.bin")).expect("stat");
    assert_eq!(
        (m.size(), m.mtime(), m.mtime_nsec()),
        (5_000_000, 1_600_000_000, 123_456_789)
    );

    // Read-only: every kind of write fails with EROFS.
    let erofs = |r: std::io::Result<()>, what: &str| {
        let e = r.expect_err(what);
        assert_eq!(e.raw_os_error(), Some(30), "{what}: {e}");
    };
    erofs(std::fs::write(mnt.join("new.txt"), b"x"), "create");
    erofs(
        std::fs::OpenOptions::new()
            .append(true)
            .open(mnt.join("script.sh"))
            .map(drop),
        "open for append",
    );
    erofs(std::fs::create_dir(mnt.join("d")), "mkdir");
    erofs(std::fs::remove_file(mnt.join("empty.txt")), "unlink");
    erofs(
        std::fs::rename(mnt.join("empty.txt"), mnt.join("e2")),
        "rename",
    );
    erofs(
        std::fs::set_permissions(
            mnt.join("empty.txt"),
            std::fs::Permissions::from_mode(0o777),
        ),
        "chmod",
    );

    // The mount names datamon.
    let info = std::fs::read_to_string("/proc/self/mounts").expect("mounts");
    let line = info
        .lines()
        .find(|l| l.split(' ').nth(1) == mnt.to_str())
        .expect("listed in /proc/self/mounts");
    assert!(line.starts_with("datamon "), "{line}");
    assert!(line.contains(" ro,"), "{line}");
    drop(mount);
    assert!(!is_mounted(&mnt));
}

#[test]
fn random_offset_and_parallel_reads_match_the_source() {
    if !fuse_available() {
        return;
    }
    let dm = Dm::new();
    let src = dm.path("src");
    make_tree(&src);
    let id = upload(&dm, &src);
    let mnt = dm.path("mnt");
    let _mount = dm.mount(&mnt, &["--repo", "r", "--bundle", &id]);
    let want = std::fs::read(src.join("big.bin")).expect("read");
    let f = std::fs::File::open(mnt.join("big.bin")).expect("open");
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..300 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let off = (x % want.len() as u64) as usize;
        let len = ((x >> 32) % 200_000) as usize + 1;
        let mut buf = vec![0u8; len];
        let n = f.read_at(&mut buf, off as u64).expect("pread");
        let end = (off + len).min(want.len());
        assert!(n > 0 && off + n <= end, "short read at {off}");
        assert_eq!(
            &buf[..n],
            &want[off..off + n],
            "bytes at {off}..{}",
            off + n
        );
    }
    // Parallel readers of the same and of different files.
    let handles: Vec<_> = (0..6)
        .map(|i| {
            let (mnt, src) = (mnt.clone(), src.clone());
            std::thread::spawn(move || {
                let name = if i % 2 == 0 {
                    "big.bin".to_owned()
                } else {
                    format!("many/f{:03}", i * 7)
                };
                for _ in 0..3 {
                    assert_eq!(
                        std::fs::read(mnt.join(&name)).expect("read mount"),
                        std::fs::read(src.join(&name)).expect("read src"),
                        "{name}"
                    );
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("reader thread");
    }
}

#[test]
fn signals_unmount_cleanly_and_daemon_returns_when_ready() {
    if !fuse_available() {
        return;
    }
    let dm = Dm::new();
    let src = dm.path("src");
    make_tree(&src);
    upload(&dm, &src);

    // A tiny inode bound: the kernel is told to forget names all the time, and listings and
    // reads stay exact.
    let mnt = dm.path("mnt-bound");
    let mut mount = dm.mount(&mnt, &["--repo", "r", "--label", "l", "--max-inodes", "4"]);
    for _ in 0..3 {
        assert_eq!(
            stat_tree(&src),
            stat_tree(&mnt),
            "find -printf of both trees"
        );
        std::thread::sleep(Duration::from_millis(600));
    }
    assert_eq!(
        std::fs::read(mnt.join("big.bin")).expect("read"),
        std::fs::read(src.join("big.bin")).expect("read")
    );
    // And the kernel really forgets: the vfs numbers an inode afresh when a name it dropped is
    // looked up again, so a moment after one walk every entry (but the few the bound keeps)
    // has a new inode number. With a bound that is never reached (below) the numbers stay.
    let seen = inode_numbers(&mnt);
    assert!(seen.len() > 50, "{} entries", seen.len());
    let kept = wait_for_renumbering(&mnt, &seen, 4, Duration::from_secs(20));
    assert!(
        kept.len() <= 4,
        "with --max-inodes 4, {} of {} names kept their inode: the kernel was not made to \
         forget them: {kept:?}\n{}",
        kept.len(),
        seen.len(),
        mount.log()
    );
    assert_eq!(mount.stop("TERM"), Some(0));

    // Foreground: SIGINT unmounts and exits 0 (while a file is open).
    let mnt = dm.path("mnt-int");
    let mut mount = dm.mount(&mnt, &["--repo", "r", "--branch", "main"]);
    // The default bound (100,000) is far: nothing is forgotten, every inode number stays.
    let seen = inode_numbers(&mnt);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        inode_numbers(&mnt),
        seen,
        "no bound reached, no name forgotten"
    );
    let open = std::fs::File::open(mnt.join("big.bin")).expect("open");
    assert_eq!(mount.stop("INT"), Some(0));
    assert!(!is_mounted(&mnt));
    drop(open);

    // Daemon: returns once mounted; SIGTERM to the server unmounts and exits.
    let mnt = dm.path("mnt-daemon");
    std::fs::create_dir_all(&mnt).expect("mount point");
    let o = run_command(
        dm.command()
            .args([
                "bundle", "mount", "--repo", "r", "--label", "l", "--daemon", "--mount",
            ])
            .arg(&mnt),
    )
    .success();
    assert!(o.stdout.starts_with("Mounted bundle"));
    assert!(is_mounted(&mnt), "mounted when --daemon returns");
    let daemon = Daemon::from_stderr(&mnt, &o.stderr);
    assert_eq!(
        std::fs::read(mnt.join("script.sh")).expect("read"),
        b"#!/bin/sh\necho hi\n"
    );
    assert!(Command::new("kill")
        .args(["-TERM", &daemon.pid])
        .status()
        .expect("kill")
        .success());
    let deadline = Instant::now() + Duration::from_secs(20);
    while is_mounted(&mnt) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!is_mounted(&mnt), "SIGTERM unmounted the daemon's mount");
    drop(daemon);

    // Bad mount points are refused before mounting, naming the problem: missing, not empty
    // (mounting would hide the files), already a mount point.
    let full = dm.path("full");
    std::fs::create_dir_all(&full).expect("dir");
    std::fs::write(full.join("keep.txt"), b"mine").expect("write");
    let taken = dm.path("taken");
    let mut first = dm.mount(&taken, &["--repo", "r", "--label", "l"]);
    for (dir, why) in [
        (dm.path("missing"), "does not exist"),
        (full.clone(), "is not empty"),
        (taken.clone(), "already a mount point"),
    ] {
        let o = run_command(
            dm.command()
                .args(["bundle", "mount", "--repo", "r", "--label", "l", "--mount"])
                .arg(&dir),
        )
        .code(1);
        assert!(o.stderr.contains(why), "{why}: {o:?}");
    }
    assert_eq!(std::fs::read(full.join("keep.txt")).expect("kept"), b"mine");
    assert!(!is_mounted(&full));
    assert_eq!(first.stop("TERM"), Some(0));

    // A missing bundle fails before mounting, with exit code 2.
    run_command(
        dm.command()
            .args([
                "bundle", "mount", "--repo", "r", "--label", "nope", "--mount",
            ])
            .arg(&mnt),
    )
    .code(2);
    assert!(!is_mounted(&mnt));
}

#[test]
fn store_gone_while_mounted_gives_eio_without_hanging() {
    if !fuse_available() {
        return;
    }
    let dm = Dm::new();
    let src = dm.path("src");
    make_tree(&src);
    upload(&dm, &src);
    let mnt = dm.path("mnt");
    let cache = dm.path("cache");
    let mount = dm.mount(
        &mnt,
        &[
            "--repo",
            "r",
            "--label",
            "l",
            "--timeout",
            "5",
            "--cache",
            cache.to_str().expect("utf-8"),
        ],
    );
    assert_eq!(
        std::fs::read(mnt.join("many/f001")).expect("read"),
        b"file 1\n"
    );
    let packs = dm.path("home/store/packs");
    let moved = dm.path("home/store/packs.away");
    std::fs::rename(&packs, &moved).expect("hide the packs");
    let t = Instant::now();
    let e = std::fs::read(mnt.join("big.bin")).expect_err("the data is gone");
    assert_eq!(e.raw_os_error(), Some(5), "EIO, got {e}");
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "answered in {:?}",
        t.elapsed()
    );
    // What was read before is still served from the cache.
    assert_eq!(
        std::fs::read(mnt.join("many/f001")).expect("cached"),
        b"file 1\n"
    );
    // The store comes back: reads work again.
    std::fs::rename(&moved, &packs).expect("restore the packs");
    assert_eq!(
        std::fs::read(mnt.join("big.bin")).expect("read"),
        std::fs::read(src.join("big.bin")).expect("read")
    );
    let _ = mount.pid();
}

fn sh(dir: &Path, script: &str) {
    let o = Command::new("sh")
        .arg("-ec")
        .arg(script)
        .current_dir(dir)
        .output()
        .expect("sh");
    assert!(
        o.status.success(),
        "{script}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

#[track_caller]
fn download(dm: &Dm, sel: &[&str], dest: &Path) {
    let mut args = vec!["bundle", "download", "--repo", "r", "--destination"];
    args.push(dest.to_str().expect("utf-8"));
    args.extend_from_slice(sel);
    dm.ok(&args);
}

#[track_caller]
fn assert_same_tree(a: &Path, b: &Path) {
    let diff = Command::new("diff")
        .args(["-r", "--no-dereference"])
        .arg(a)
        .arg(b)
        .output()
        .expect("diff");
    assert!(
        diff.status.success(),
        "diff -r: {}{}",
        String::from_utf8_lossy(&diff.stdout),
        String::from_utf8_lossy(&diff.stderr)
    );
    assert_eq!(stat_tree(a), stat_tree(b), "find -printf of both trees");
}

#[test]
fn mutable_mount_real_programs_then_commit_and_download() {
    if !fuse_available() {
        return;
    }
    let dm = Dm::new();
    let src = dm.path("src");
    make_tree(&src);
    let base = upload(&dm, &src);
    let mnt = dm.path("work");
    let mut mount = dm.mount_new(
        &mnt,
        &[
            "--repo",
            "r",
            "--message",
            "notebook",
            "--from-label",
            "l",
            "--label",
            "work",
        ],
    );
    assert_same_tree(&src, &mnt);

    // What programs do: create, write at offsets, truncate, rename over a file, unlink, mkdir,
    // rmdir, chmod, utimens, symlink, fsync.
    {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(mnt.join("offsets.bin"))
            .expect("create");
        f.write_all_at(b"hello", 0).expect("write");
        f.write_all_at(b"world", 1_000_000)
            .expect("write past the end");
        f.sync_all().expect("fsync");
        let big = std::fs::OpenOptions::new()
            .write(true)
            .open(mnt.join("big.bin"))
            .expect("open big");
        big.write_all_at(&[0xAB; 4096], 123_456).expect("overwrite");
        big.set_len(4_000_000).expect("truncate");
    }
    std::fs::write(mnt.join(".script.sh.tmp"), b"#!/bin/sh\necho new\n").expect("tmp");
    std::fs::rename(mnt.join(".script.sh.tmp"), mnt.join("script.sh")).expect("rename over");
    std::fs::remove_file(mnt.join("empty.txt")).expect("unlink");
    std::fs::create_dir_all(mnt.join("newdir/inner")).expect("mkdir");
    std::fs::remove_dir(mnt.join("newdir/inner")).expect("rmdir");
    std::fs::remove_dir(mnt.join("empty-dir")).expect("rmdir");
    std::fs::set_permissions(
        mnt.join("many/f001"),
        std::fs::Permissions::from_mode(0o600),
    )
    .expect("chmod");
    set_mtime(&mnt.join("many/f002"), time(1_234_567_890, 42));
    std::os::unix::fs::symlink("many/f003", mnt.join("newdir/link")).expect("symlink");
    std::fs::rename(mnt.join("sub"), mnt.join("sub-renamed")).expect("rename dir");
    // Jupyter-style save: write a temporary file, then rename it over the notebook.
    std::fs::write(mnt.join("nb.ipynb"), b"{\"cells\": []}").expect("save");
    std::fs::write(mnt.join(".~nb.ipynb"), b"{\"cells\": [1]}").expect("save tmp");
    std::fs::rename(mnt.join(".~nb.ipynb"), mnt.join("nb.ipynb")).expect("save by rename");

    // git clone, tar x and SQLite inside the mount.
    let git = git_available();
    if git {
        let upstream = dm.path("upstream");
        std::fs::create_dir_all(&upstream).expect("dir");
        sh(
            &upstream,
            "git init -q . && echo one > one.txt && git add one.txt && \
             git -c user.name=t -c user.email=t@e commit -qm first",
        );
        sh(
            &mnt,
            &format!(
                "git clone -q {} cloned && git -C cloned log --oneline | grep -q first",
                upstream.display()
            ),
        );
    }
    sh(
        &dm.root().join("src"),
        &format!("tar cf {}/sub.tar sub", dm.root().display()),
    );
    sh(
        &mnt,
        &format!(
            "mkdir untar && tar xf {}/sub.tar -C untar",
            dm.root().display()
        ),
    );
    let sqlite = sqlite_available();
    if sqlite {
        sh(
            &mnt,
            "sqlite3 db.sqlite 'create table t(x); insert into t values (1),(2),(3);' && \
         sqlite3 db.sqlite 'update t set x = x * 10; delete from t where x = 20;'",
        );
    }

    // Commit without unmounting; the bundle equals the working copy.
    let c1 = commit(&dm, &mnt, Some("c1"));
    let dl = dm.path("dl1");
    download(&dm, &["--bundle", &c1], &dl);
    assert_same_tree(&mnt, &dl);
    if sqlite {
        sh(
            &dl,
            "test \"$(sqlite3 db.sqlite 'select group_concat(x) from t')\" = 10,30",
        );
    }
    if git {
        sh(&dl, "git -C cloned status --short | wc -l | grep -qx 0");
    }
    let listed = dm
        .ok(["bundle", "get", "--repo", "r", "--label", "work"])
        .stdout;
    assert!(listed.contains(&c1), "label work moved to {c1}: {listed}");
    assert_ne!(c1, base);

    // One more change; unmounting commits it once more and exits 0.
    std::fs::write(mnt.join("after.txt"), b"after commit").expect("write");
    assert_eq!(mount.stop("TERM"), Some(0));
    let c2 = mount.next_upload(Duration::from_secs(5));
    assert!(!is_mounted(&mnt));
    let dl2 = dm.path("dl2");
    download(&dm, &["--label", "work"], &dl2);
    assert_eq!(
        std::fs::read(dl2.join("after.txt")).expect("read"),
        b"after commit"
    );
    let got = dm
        .ok(["bundle", "get", "--repo", "r", "--label", "work"])
        .stdout;
    assert!(got.contains(&c2));
    assert_eq!(
        std::fs::read_dir(dm.path("home/scratch"))
            .expect("scratch root")
            .count(),
        0,
        "the scratch area is removed after the final commit"
    );
}

#[test]
fn mutable_mount_autosave_kill9_recover_and_failed_commit() {
    if !fuse_available() {
        return;
    }
    let dm = Dm::new();
    dm.ok(["repo", "create", "--repo", "r", "--description", "d"]);

    // Autosave commits on its own when something changed.
    let mnt = dm.path("nb");
    let mut mount = dm.mount_new(
        &mnt,
        &[
            "--repo",
            "r",
            "--message",
            "autosaved",
            "--autosave",
            "1s",
            "--branch",
            "nb",
            "--label",
            "nb",
        ],
    );
    std::fs::write(mnt.join("a.txt"), b"first").expect("write");
    let first = mount.next_upload(Duration::from_secs(20));

    // kill -9 leaves the working copy (and the bind mount): recover commits it.
    std::fs::write(mnt.join("b.txt"), b"second").expect("write");
    assert_eq!(mount.stop("KILL"), None, "killed, no exit code");
    let out = dm.ok(["bundle", "mount", "recover"]).stdout;
    let recovered = out
        .trim()
        .strip_prefix("Uploaded bundle id:")
        .expect("id line")
        .to_owned();
    assert!(!is_mounted(&mnt), "recover unmounts the stale mount");
    let dl = dm.path("dl");
    download(&dm, &["--branch", "nb"], &dl);
    assert_eq!(std::fs::read(dl.join("b.txt")).expect("read"), b"second");
    let log = dm
        .ok(["bundle", "get", "--repo", "r", "--bundle", &recovered])
        .stdout;
    assert!(log.contains("autosaved"), "{log}");
    assert_ne!(first, recovered);

    // A commit that fails (store gone) keeps the work; recover finishes it later.
    let mnt2 = dm.path("nb2");
    let mut mount = dm.mount_new(&mnt2, &["--repo", "r", "--message", "m2", "--label", "two"]);
    std::fs::write(mnt2.join("keep.txt"), b"precious").expect("write");
    let store = dm.path("home/store");
    let away = dm.path("store-away");
    std::fs::rename(&store, &away).expect("hide the store");
    assert_eq!(
        mount.stop("TERM"),
        Some(1),
        "the final commit fails: {}",
        mount.log()
    );
    assert!(!is_mounted(&mnt2));
    let scratch: Vec<_> = std::fs::read_dir(dm.path("home/scratch"))
        .expect("scratch root")
        .flatten()
        .collect();
    assert_eq!(scratch.len(), 1, "the work is kept");
    std::fs::remove_dir_all(&store).ok();
    std::fs::rename(&away, &store).expect("bring the store back");
    let out = dm
        .ok([
            "bundle",
            "mount",
            "recover",
            "--mount",
            mnt2.to_str().expect("utf-8"),
        ])
        .stdout;
    assert!(out.starts_with("Uploaded bundle id:"), "{out}");
    let dl = dm.path("dl2");
    download(&dm, &["--label", "two"], &dl);
    assert_eq!(
        std::fs::read(dl.join("keep.txt")).expect("read"),
        b"precious"
    );
}

#[test]
fn hanging_store_gives_eio_after_the_timeout() {
    if !fuse_available() {
        return;
    }
    // A store that hangs: store B lives on a datamon mount (of a bundle holding B's files) whose
    // server is then stopped with SIGSTOP, so every access to B blocks.
    let dm = Dm::new();
    let src = dm.path("src");
    make_tree(&src);
    let inner_home = dm.path("inner-home");
    run_command(dm.command().env("DATAMON_HOME", &inner_home).args([
        "repo",
        "create",
        "--repo",
        "r",
        "--description",
        "d",
    ]))
    .success();
    run_command(
        dm.command()
            .env("DATAMON_HOME", &inner_home)
            .args([
                "bundle",
                "upload",
                "--repo",
                "r",
                "--label",
                "l",
                "--message",
                "m",
                "--path",
            ])
            .arg(&src),
    )
    .success();
    // Store A holds store B's directory as a bundle.
    upload(&dm, &inner_home.join("store"));
    let host = dm.path("host");
    let mut host_mount = dm.mount(&host, &["--repo", "r", "--label", "l"]);
    let store_b = format!("file://{}", host.display());
    let mnt = dm.path("mnt");
    let cache = dm.path("cache");
    let _mount = dm.mount(
        &mnt,
        &[
            "--store",
            &store_b,
            "--repo",
            "r",
            "--label",
            "l",
            "--timeout",
            "3",
            "--cache",
            cache.to_str().expect("utf-8"),
        ],
    );
    assert_eq!(
        std::fs::read(mnt.join("script.sh")).expect("read"),
        b"#!/bin/sh\necho hi\n"
    );
    let host_pid = host_mount.pid().to_string();
    assert!(Command::new("kill")
        .args(["-STOP", &host_pid])
        .status()
        .expect("kill")
        .success());
    let t = Instant::now();
    let r = std::fs::read(mnt.join("big.bin"));
    let took = t.elapsed();
    assert!(Command::new("kill")
        .args(["-CONT", &host_pid])
        .status()
        .expect("kill")
        .success());
    let e = r.expect_err("the store hangs");
    assert_eq!(e.raw_os_error(), Some(5), "EIO, got {e}");
    assert!(took < Duration::from_secs(15), "answered after {took:?}");
    eprintln!("EIO after {took:?}");
    // Once the store answers again, reads work.
    let t = Instant::now();
    assert_eq!(
        std::fs::read(mnt.join("big.bin")).expect("read"),
        std::fs::read(src.join("big.bin")).expect("read")
    );
    eprintln!("read after CONT {:?}", t.elapsed());
    let t = Instant::now();
    drop(_mount);
    eprintln!("stop mount {:?}", t.elapsed());
    host_mount.stop("TERM");
    eprintln!("stop host {:?}", t.elapsed());
}

/// Bytes `du` counts for a directory tree (allocated blocks, not sizes).
fn disk_usage(dir: &Path) -> u64 {
    let out = Command::new("du")
        .args(["-s", "--block-size=1"])
        .arg(dir)
        .output()
        .expect("du");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .expect("du output")
}

#[test]
fn mutable_mount_is_copy_on_write() {
    if !fuse_available() {
        return;
    }
    const MIB: usize = 1 << 20;
    let dm = Dm::new();
    let src = dm.path("src");
    std::fs::create_dir_all(src.join("sub")).expect("dirs");
    for (i, name) in ["a.bin", "b.bin", "c.bin"].iter().enumerate() {
        std::fs::write(src.join(name), random_bytes(i as u64 + 11, 20 * MIB)).expect("write");
    }
    std::fs::write(src.join("d.bin"), random_bytes(5, 2 * MIB)).expect("write");
    std::fs::write(src.join("sub/keep.txt"), b"keep\n").expect("write");
    let data_size = (62 * MIB) as u64;
    let base = upload(&dm, &src);

    let mnt = dm.path("cow");
    let started = Instant::now();
    let mut mount = dm.mount_new(
        &mnt,
        &["--repo", "r", "--message", "cow", "--from-label", "l"],
    );
    let mount_time = started.elapsed();
    assert_named_datamon(&mnt, "rw");
    let scratch: Vec<PathBuf> = std::fs::read_dir(dm.path("home/scratch"))
        .expect("scratch root")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(scratch.len(), 1);
    let files = scratch[0].join("files");
    let used = disk_usage(&files);
    assert!(
        used < data_size / 50,
        "mounting wrote {used} bytes to the scratch area for {data_size} bytes of data"
    );
    assert!(
        mount_time < Duration::from_secs(30),
        "mounting took {mount_time:?}"
    );
    let mounts = std::fs::read_to_string("/proc/self/mounts").expect("mounts");
    let line = mounts
        .lines()
        .find(|l| l.split(' ').nth(1) == mnt.to_str())
        .expect("in /proc/self/mounts");
    assert!(line.starts_with("datamon "), "{line}");
    assert!(line.contains(" rw,"), "{line}");

    // What the mount shows is the bundle, exactly; reads come from the store, unhydrated.
    assert_eq!(stat_tree(&src), stat_tree(&mnt));
    assert_eq!(
        std::fs::read(mnt.join("b.bin")).expect("cat"),
        std::fs::read(src.join("b.bin")).expect("read")
    );
    sh(&mnt, "cat c.bin | cmp - ../src/c.bin");
    assert!(
        disk_usage(&files) < data_size / 50,
        "reading hydrated nothing"
    );

    // Append to one file, chmod another, rename a third, truncate a fourth to zero.
    {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(mnt.join("a.bin"))
            .expect("open for append");
        f.write_all(b"appended tail").expect("append");
        f.sync_all().expect("fsync");
    }
    std::fs::set_permissions(mnt.join("b.bin"), std::fs::Permissions::from_mode(0o600))
        .expect("chmod");
    std::fs::rename(mnt.join("c.bin"), mnt.join("sub/c-renamed.bin")).expect("rename");
    sh(&mnt, ": > d.bin");
    let used = disk_usage(&files);
    assert!(
        used > (20 * MIB) as u64 && used < (25 * MIB) as u64,
        "only a.bin was copied: {used} bytes"
    );
    let mut expected_a = std::fs::read(src.join("a.bin")).expect("read");
    expected_a.extend_from_slice(b"appended tail");
    assert_eq!(std::fs::read(mnt.join("a.bin")).expect("read"), expected_a);
    assert_eq!(
        std::fs::read(mnt.join("sub/c-renamed.bin")).expect("read"),
        std::fs::read(src.join("c.bin")).expect("read")
    );
    assert_eq!(std::fs::metadata(mnt.join("d.bin")).expect("stat").len(), 0);
    // Extended attributes: the placeholder's own is hidden, the user's are kept.
    let mut buf = [0u8; 1024];
    assert!(
        rustix::fs::lgetxattr(
            files.join("sub/c-renamed.bin"),
            "user.datamon.base",
            &mut buf[..]
        )
        .is_ok(),
        "still a placeholder after the rename"
    );
    assert_eq!(
        rustix::fs::lgetxattr(
            mnt.join("sub/c-renamed.bin"),
            "user.datamon.base",
            &mut buf[..]
        ),
        Err(rustix::io::Errno::NODATA)
    );
    let n = rustix::fs::llistxattr(mnt.join("sub/c-renamed.bin"), &mut buf[..]).expect("list");
    assert!(!String::from_utf8_lossy(&buf[..n]).contains("datamon"));
    assert_eq!(
        rustix::fs::lsetxattr(
            mnt.join("b.bin"),
            "user.datamon.base",
            b"x",
            rustix::fs::XattrFlags::empty()
        ),
        Err(rustix::io::Errno::PERM)
    );
    rustix::fs::lsetxattr(
        mnt.join("b.bin"),
        "user.x",
        b"1",
        rustix::fs::XattrFlags::empty(),
    )
    .expect("setxattr");
    let n = rustix::fs::lgetxattr(mnt.join("b.bin"), "user.x", &mut buf[..]).expect("getxattr");
    assert_eq!(&buf[..n], b"1");

    // Commit, download, compare.
    let new = commit(&dm, &mnt, Some("changed four"));
    let dl = dm.path("dl");
    download(&dm, &["--bundle", &new], &dl);
    assert_same_tree(&mnt, &dl);
    let expected = dm.path("expected");
    sh(
        dm.root(),
        "cp -a src expected && printf 'appended tail' >> expected/a.bin && \
         chmod 600 expected/b.bin && mv expected/c.bin expected/sub/c-renamed.bin && \
         : > expected/d.bin",
    );
    let diff = Command::new("diff")
        .args(["-r", "--no-dereference"])
        .arg(&expected)
        .arg(&dl)
        .output()
        .expect("diff");
    assert!(
        diff.status.success(),
        "{}",
        String::from_utf8_lossy(&diff.stdout)
    );
    assert_eq!(
        std::fs::metadata(dl.join("b.bin")).expect("stat").mode() & 0o7777,
        0o600
    );
    // Exit 1: the bundles differ.
    let out = dm.run([
        "bundle",
        "diff",
        "--repo",
        "r",
        "--bundle",
        &base,
        "--with-bundle",
        &new,
    ]);
    let mut changes: Vec<String> = out.stdout.lines().map(str::to_owned).collect();
    changes.sort();
    assert_eq!(
        changes,
        [
            "A sub/c-renamed.bin",
            "D c.bin",
            "M a.bin",
            "M b.bin",
            "M d.bin"
        ]
    );

    // Nothing changed since the commit: unmounting commits nothing and cleans up.
    assert_eq!(mount.stop("TERM"), Some(0), "{}", mount.log());
    assert!(!is_mounted(&mnt));
    assert!(!scratch[0].exists(), "the scratch area is removed");
}

#[test]
fn mutable_mount_renames_links_and_readers_of_placeholders() {
    if !fuse_available() {
        return;
    }
    let dm = Dm::new();
    let src = dm.path("src");
    std::fs::create_dir_all(src.join("dir")).expect("dirs");
    std::fs::write(src.join("x.bin"), random_bytes(1, 8 << 20)).expect("write");
    std::fs::write(src.join("y.bin"), random_bytes(2, 1 << 20)).expect("write");
    std::fs::write(src.join("z.bin"), random_bytes(3, 300_000)).expect("write");
    std::fs::write(src.join("dir/w.bin"), random_bytes(4, 200_000)).expect("write");
    std::fs::write(src.join("ro.bin"), random_bytes(5, 100_000)).expect("write");
    std::fs::set_permissions(src.join("ro.bin"), std::fs::Permissions::from_mode(0o444))
        .expect("chmod");
    upload(&dm, &src);
    let mnt = dm.path("m");
    let mut mount = dm.mount_new(
        &mnt,
        &["--repo", "r", "--message", "m", "--from-label", "l"],
    );
    let read = |p: &str| std::fs::read(mnt.join(p)).expect("read");
    let orig = |p: &str| std::fs::read(src.join(p)).expect("read");

    // A reader of a placeholder keeps reading right while another handle writes to it.
    let reader = std::fs::File::open(mnt.join("x.bin")).expect("open");
    let mut buf = vec![0u8; 4096];
    reader.read_exact_at(&mut buf, 0).expect("read");
    assert_eq!(buf, orig("x.bin")[..4096]);
    let writer = std::fs::OpenOptions::new()
        .write(true)
        .open(mnt.join("x.bin"))
        .expect("open for write");
    writer.write_all_at(b"NEW", 6 << 20).expect("write");
    reader.read_exact_at(&mut buf[..3], 6 << 20).expect("read");
    assert_eq!(&buf[..3], b"NEW");
    reader.read_exact_at(&mut buf, 7 << 20).expect("read");
    assert_eq!(buf, orig("x.bin")[7 << 20..(7 << 20) + 4096]);
    drop((reader, writer));

    // renameat2: NOREPLACE refuses, EXCHANGE swaps two placeholders (still unread).
    let cwd = rustix::fs::CWD;
    assert_eq!(
        rustix::fs::renameat_with(
            cwd,
            mnt.join("y.bin"),
            cwd,
            mnt.join("z.bin"),
            rustix::fs::RenameFlags::NOREPLACE
        ),
        Err(rustix::io::Errno::EXIST)
    );
    rustix::fs::renameat_with(
        cwd,
        mnt.join("y.bin"),
        cwd,
        mnt.join("z.bin"),
        rustix::fs::RenameFlags::EXCHANGE,
    )
    .expect("exchange");
    assert_eq!(read("y.bin"), orig("z.bin"));
    assert_eq!(read("z.bin"), orig("y.bin"));

    // A directory renamed with a placeholder inside; truncation to a non-zero size.
    std::fs::rename(mnt.join("dir"), mnt.join("dir2")).expect("rename dir");
    assert_eq!(read("dir2/w.bin"), orig("dir/w.bin"));
    sh(&mnt, "truncate -s 1000 dir2/w.bin");
    assert_eq!(read("dir2/w.bin"), orig("dir/w.bin")[..1000]);

    // A hard link to a placeholder: both names are one file with the content.
    std::fs::hard_link(mnt.join("z.bin"), mnt.join("z-link")).expect("link");
    std::fs::OpenOptions::new()
        .write(true)
        .open(mnt.join("z-link"))
        .and_then(|f| f.write_all_at(b"LINKED", 0))
        .expect("write");
    assert_eq!(&read("z.bin")[..6], b"LINKED");
    assert_eq!(read("z.bin")[6..], orig("y.bin")[6..]);

    // A read-only placeholder: root may still write to it, and its mode stays.
    std::fs::OpenOptions::new()
        .append(true)
        .open(mnt.join("ro.bin"))
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"+"))
        .expect("root writes");
    assert_eq!(
        std::fs::metadata(mnt.join("ro.bin")).expect("stat").mode() & 0o7777,
        0o444
    );

    // An open, unlinked file is still truncated, chmodded and touched through its descriptor.
    let f = std::fs::File::create(mnt.join("scratch.tmp")).expect("create");
    std::fs::remove_file(mnt.join("scratch.tmp")).expect("unlink");
    f.set_len(10).expect("ftruncate");
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .expect("fchmod");
    f.set_modified(std::time::UNIX_EPOCH + Duration::from_secs(1_000))
        .expect("futimens");
    let m = f.metadata().expect("fstat");
    assert_eq!((m.len(), m.mode() & 0o7777, m.mtime()), (10, 0o600, 1_000));
    drop(f);

    let id = commit(&dm, &mnt, None);
    let dl = dm.path("dl");
    download(&dm, &["--bundle", &id], &dl);
    assert_same_tree(&mnt, &dl);
    assert_eq!(mount.stop("TERM"), Some(0), "{}", mount.log());
}

/// Build tools inside a mutable mount: `make` builds C sources and rebuilds only what an
/// edit made out of date (mtimes as ext4 keeps them), and `pip install --target` of a wheel
/// made here (no network) installs a package that imports; the commit keeps both.
#[test]
fn mutable_mount_make_and_pip_install() {
    if !fuse_available() || !build_tools_available() {
        return;
    }
    let dm = Dm::new();
    let src = dm.path("src");
    std::fs::create_dir_all(src.join("c")).expect("src");
    for (name, n) in [("one", 1), ("two", 2), ("three", 3)] {
        std::fs::write(
            src.join(format!("c/{name}.c")),
            format!("int {name}(void) {{ return {n}; }}\n"),
        )
        .expect("source");
    }
    std::fs::write(
        src.join("c/main.c"),
        "#include <stdio.h>\nint one(void); int two(void); int three(void);\n\
         int main(void) { printf(\"%d\\n\", one() + two() + three()); return 0; }\n",
    )
    .expect("main.c");
    std::fs::write(
        src.join("Makefile"),
        "OBJS = build/main.o build/one.o build/two.o build/three.o\n\
         prog: $(OBJS)\n\tcc -o $@ $(OBJS)\n\
         build/%.o: c/%.c | build\n\tcc -c -o $@ $<\n\
         build:\n\tmkdir -p build\n",
    )
    .expect("Makefile");
    upload(&dm, &src);
    let mnt = dm.path("work");
    let mut mount = dm.mount_new(
        &mnt,
        &[
            "--repo",
            "r",
            "--message",
            "build",
            "--from-label",
            "l",
            "--label",
            "built",
        ],
    );
    sh(&mnt, "make -s && test \"$(./prog)\" = 6 && make -q");
    // An edit rebuilds its object and the program, nothing else.
    std::thread::sleep(Duration::from_millis(20));
    sh(&mnt, "echo 'int two(void) { return 20; }' > c/two.c");
    let plan = Command::new("make")
        .arg("-n")
        .current_dir(&mnt)
        .output()
        .expect("make -n");
    let plan = String::from_utf8_lossy(&plan.stdout);
    assert!(plan.contains("build/two.o"), "{plan}");
    for other in [
        "build/one.o c/one.c",
        "build/three.o c/three.c",
        "build/main.o c/main.c",
    ] {
        assert!(!plan.contains(other), "{other} is not out of date: {plan}");
    }
    sh(&mnt, "make -s && test \"$(./prog)\" = 24 && make -q");

    // A wheel made here (a zip with its metadata and RECORD), installed with pip, no network.
    let wheel_dir = dm.path("wheels");
    std::fs::create_dir_all(&wheel_dir).expect("wheels");
    let made = Command::new("python3")
        .arg("-c")
        .arg(
            "import base64, hashlib, sys, zipfile\n\
             files = {'dmfixture/__init__.py': b'VALUE = 42\\n',\n\
             'dmfixture/data/table.csv': b'a,b\\n1,2\\n',\n\
             'dmfixture-1.0.dist-info/METADATA': b'Metadata-Version: 2.1\\nName: dmfixture\\nVersion: 1.0\\n',\n\
             'dmfixture-1.0.dist-info/WHEEL': b'Wheel-Version: 1.0\\nGenerator: test\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n'}\n\
             rec = ''.join('%s,sha256=%s,%d\\n' % (n, base64.urlsafe_b64encode(hashlib.sha256(d).digest()).rstrip(b'=').decode(), len(d)) for n, d in files.items())\n\
             rec += 'dmfixture-1.0.dist-info/RECORD,,\\n'\n\
             with zipfile.ZipFile(sys.argv[1], 'w') as z:\n\
             \x20   [z.writestr(n, d) for n, d in files.items()]\n\
             \x20   z.writestr('dmfixture-1.0.dist-info/RECORD', rec)\n",
        )
        .arg(wheel_dir.join("dmfixture-1.0-py3-none-any.whl"))
        .status()
        .expect("python3");
    assert!(made.success(), "the test wheel could not be made");
    sh(
        &mnt,
        &format!(
            "python3 -m pip install -q --no-index --no-deps --disable-pip-version-check \
             --target site {}/dmfixture-1.0-py3-none-any.whl && \
             test \"$(PYTHONPATH=site python3 -c 'import dmfixture; print(dmfixture.VALUE)')\" = 42 && \
             test -f site/dmfixture-1.0.dist-info/RECORD && test -f site/dmfixture/data/table.csv",
            wheel_dir.display()
        ),
    );

    // The commit on unmount keeps the build and the installed package.
    assert_eq!(mount.stop("TERM"), Some(0));
    mount.next_upload(Duration::from_secs(5));
    let dl = dm.path("dl");
    download(&dm, &["--label", "built"], &dl);
    sh(
        &dl,
        "test \"$(./prog)\" = 24 && test \"$(PYTHONPATH=site python3 -c 'import dmfixture; print(dmfixture.VALUE)')\" = 42",
    );
}

/// The samples of `GET /metrics` at the address a mount printed (`Serving metrics at ...`
/// in its log), as `name{labels}` -> value.
fn scrape_metrics(log: &str) -> BTreeMap<String, f64> {
    use std::io::{Read as _, Write as _};
    let addr = log
        .split("Serving metrics at http://")
        .nth(1)
        .and_then(|r| r.split("/metrics").next())
        .unwrap_or_else(|| panic!("no metrics address in the log: {log}"));
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the metrics endpoint");
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")
        .expect("request");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("response");
    let (head, body) = resp.split_once("\r\n\r\n").expect("a response");
    assert!(head.starts_with("HTTP/1.0 200"), "{head}");
    assert!(head.contains("application/openmetrics-text"), "{head}");
    assert!(body.ends_with("# EOF\n"), "{body}");
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').expect("name value");
            (k.to_owned(), v.parse().expect("a number"))
        })
        .collect()
}

#[test]
fn mounts_serve_prometheus_metrics() {
    if !fuse_available() {
        return;
    }
    let dm = Dm::new();
    let src = dm.path("src");
    make_tree(&src);
    upload(&dm, &src);
    let big = std::fs::read(src.join("big.bin")).expect("read");

    // Read-only: reads and misses are counted.
    let mnt = dm.path("mnt");
    let mut mount = dm.mount(
        &mnt,
        &[
            "--repo",
            "r",
            "--label",
            "l",
            "--metrics-addr",
            "127.0.0.1:0",
        ],
    );
    let m = scrape_metrics(&mount.log());
    assert_eq!(m["datamon_mounts{mode=\"read-only\"}"], 1.0, "{m:?}");
    assert_eq!(m["datamon_read_bytes_total"], 0.0);
    assert!(std::fs::read(mnt.join("big.bin")).expect("read") == big);
    let m = scrape_metrics(&mount.log());
    assert!(m["datamon_read_bytes_total"] >= big.len() as f64, "{m:?}");
    assert!(m["datamon_cache_misses_total"] > 0.0, "{m:?}");
    assert!(m["datamon_store_reads_total"] > 0.0, "{m:?}");
    assert_eq!(m["datamon_fetch_errors_total"], 0.0);

    // A taken port fails before anything is mounted; a bad address is a usage error.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port().to_string();
    let other = dm.path("other");
    std::fs::create_dir_all(&other).expect("mount point");
    let o = run_command(
        dm.command()
            .args(["bundle", "mount", "--repo", "r", "--label", "l"])
            .args(["--metrics-addr", &format!("127.0.0.1:{port}"), "--mount"])
            .arg(&other),
    )
    .code(1);
    assert!(o.stderr.contains("cannot serve metrics"), "{o:?}");
    assert!(!is_mounted(&other));
    let o = run_command(
        dm.command()
            .args(["bundle", "mount", "--repo", "r", "--label", "l"])
            .args(["--metrics-addr", "localhost", "--mount"])
            .arg(&other),
    )
    .code(2);
    assert!(o.stderr.contains("HOST:PORT"), "{o:?}");
    assert_eq!(mount.stop("TERM"), Some(0));

    // A mutable mount counts its commits.
    let rw = dm.path("rw");
    let mut mount = dm.mount_new(
        &rw,
        &[
            "--repo",
            "r",
            "--message",
            "m",
            "--autosave",
            "1s",
            "--metrics-addr",
            "127.0.0.1:0",
        ],
    );
    std::fs::write(rw.join("new.txt"), b"new").expect("write");
    mount.next_upload(Duration::from_secs(30));
    let m = scrape_metrics(&mount.log());
    assert_eq!(m["datamon_mounts{mode=\"versioned\"}"], 1.0, "{m:?}");
    assert!(
        m["datamon_commits_total{result=\"committed\"}"] >= 1.0,
        "{m:?}"
    );
    assert_eq!(m["datamon_commits_total{result=\"failed\"}"], 0.0);
    assert_eq!(mount.stop("TERM"), Some(0));
}
