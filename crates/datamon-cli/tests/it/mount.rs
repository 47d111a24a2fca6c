//! Real FUSE mounts of bundles, driven by ordinary tools (`diff`, `find`, `stat`) and std I/O.
//!
//! Needs `/dev/fuse` and root (or a FUSE setup that lets this user mount); otherwise every test
//! here prints why it is skipped and passes. `.ci/run` installs `fuse3`. Every mount is unmounted
//! in teardown, even when the test fails.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tempfile::TempDir;

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_datamon"))
}

/// Whether real mounts can run here.
fn fuse_available() -> bool {
    let ok = Path::new("/dev/fuse").exists()
        && std::fs::read_to_string("/proc/self/status")
            .map(|s| {
                s.lines()
                    .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
            })
            .unwrap_or(false);
    if !ok {
        eprintln!("skipping: FUSE mounts need /dev/fuse and root");
    }
    ok
}

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

fn is_mounted(dir: &Path) -> bool {
    let dir = dir.to_string_lossy();
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|m| m.lines().any(|l| l.split(' ').nth(4) == Some(dir.as_ref())))
        .unwrap_or(false)
}

/// A private datamon home and store, with a source folder uploaded as one bundle.
struct Env {
    tmp: TempDir,
}

impl Env {
    /// `datamon bundle commit --mount DIR [--message M]`; returns the new bundle's id.
    fn commit(&self, mnt: &Path, message: Option<&str>) -> String {
        let mut args = vec!["bundle", "commit", "--mount", mnt.to_str().expect("utf-8")];
        if let Some(m) = message {
            args.extend(["--message", m]);
        }
        let out = self.ok(&args);
        out.trim()
            .strip_prefix("Uploaded bundle id:")
            .unwrap_or_else(|| panic!("no id line in {out:?}"))
            .to_owned()
    }

    fn new() -> Env {
        Env {
            tmp: tempfile::Builder::new()
                .prefix("datamon-mount-")
                .tempdir()
                .expect("temp dir"),
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.tmp.path().join(p)
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new(bin());
        for k in [
            "DATAMON_STORE",
            "DATAMON_CONTEXT",
            "DATAMON_LOG",
            "DATAMON_CACHE",
        ] {
            c.env_remove(k);
        }
        c.env("DATAMON_HOME", self.path("home"));
        c
    }

    #[track_caller]
    fn ok(&self, args: &[&str]) -> String {
        let o: Output = self.cmd().args(args).output().expect("run datamon");
        assert!(
            o.status.success(),
            "datamon {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Uploads `dir` to repo `r` with label `l`; returns the bundle id.
    fn upload(&self, dir: &Path) -> String {
        self.ok(&["repo", "create", "--repo", "r", "--description", "d"]);
        let out = self.ok(&[
            "bundle",
            "upload",
            "--repo",
            "r",
            "--path",
            dir.to_str().expect("utf-8"),
            "--message",
            "m",
            "--label",
            "l",
        ]);
        out.trim()
            .rsplit("id:")
            .next()
            .expect("bundle id")
            .to_owned()
    }

    /// Starts `datamon bundle mount ARGS --mount DIR` in the foreground and waits until it says
    /// the mount is ready.
    fn mount(&self, dir: &Path, args: &[&str]) -> Mount {
        self.start_mount(dir, &["bundle", "mount"], args)
    }

    /// Starts `datamon bundle mount new ARGS --mount DIR`.
    fn mount_new(&self, dir: &Path, args: &[&str]) -> Mount {
        self.start_mount(dir, &["bundle", "mount", "new"], args)
    }

    fn start_mount(&self, dir: &Path, cmd: &[&str], args: &[&str]) -> Mount {
        std::fs::create_dir_all(dir).expect("mount point");
        let log = dir.with_extension("log");
        let mut child = self
            .cmd()
            .args(cmd)
            .args(args)
            .args(["--mount", dir.to_str().expect("utf-8")])
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start datamon bundle mount");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mount = Mount {
            child: Some(child),
            dir: dir.to_owned(),
            lines: rx,
        };
        match mount.lines.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => assert!(line.starts_with("Mounted "), "unexpected: {line}"),
            Err(_) => panic!("the mount did not become ready: {}", mount.log()),
        }
        assert!(is_mounted(dir), "{} is not in mountinfo", dir.display());
        mount
    }
}

/// A running mount process; unmounted and reaped on drop.
struct Mount {
    child: Option<Child>,
    dir: PathBuf,
    /// Lines the process printed on stdout after "Mounted ...".
    lines: mpsc::Receiver<String>,
}

impl Mount {
    /// What the process logged on stderr.
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.with_extension("log")).unwrap_or_default()
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Waits for the next `Uploaded bundle id:` line and returns the id.
    fn next_upload(&self, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.starts_with("Uploaded bundle id:") => {
                    return l["Uploaded bundle id:".len()..].to_owned()
                }
                Ok(_) => {}
                Err(_) => panic!("no `Uploaded bundle id:` line within {within:?}"),
            }
        }
    }

    /// Sends a signal and returns the exit code.
    fn stop(&mut self, signal: &str) -> Option<i32> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .args([format!("-{signal}"), child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        self.stop("TERM");
        if is_mounted(&self.dir) {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

fn set_mtime(p: &Path, secs: i64, nanos: u32, symlink: bool) {
    let t = format!("@{secs}.{nanos:09}");
    let mut c = Command::new("touch");
    if symlink {
        c.arg("-h");
    }
    assert!(c.args(["-d", &t]).arg(p).status().expect("touch").success());
}

fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A source tree with what a mount must show exactly.
fn make_tree(root: &Path) {
    let w = |p: &str, data: &[u8], mode: u32| {
        let p = root.join(p);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("dirs");
        std::fs::write(&p, data).expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
    };
    w("big.bin", &pseudo_random(5_000_000, 7), 0o644);
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
    set_mtime(&root.join("big.bin"), 1_600_000_000, 123_456_789, false);
    set_mtime(&root.join("sub/link"), 1_500_000_000, 5, true);
    set_mtime(&root.join("empty-dir"), 1_400_000_000, 0, false);
    std::fs::set_permissions(
        root.join("sub/deeper"),
        std::fs::Permissions::from_mode(0o750),
    )
    .expect("chmod");
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
    let env = Env::new();
    let src = env.path("src");
    make_tree(&src);
    env.upload(&src);
    let mnt = env.path("mnt");
    let mount = env.mount(&mnt, &["--repo", "r", "--label", "l"]);

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
    let env = Env::new();
    let src = env.path("src");
    make_tree(&src);
    let id = env.upload(&src);
    let mnt = env.path("mnt");
    let _mount = env.mount(&mnt, &["--repo", "r", "--bundle", &id]);
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
    let env = Env::new();
    let src = env.path("src");
    make_tree(&src);
    env.upload(&src);

    // A tiny inode bound: the kernel is told to forget names all the time, and listings and
    // reads stay exact.
    let mnt = env.path("mnt-bound");
    let mut mount = env.mount(&mnt, &["--repo", "r", "--label", "l", "--max-inodes", "4"]);
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
    assert_eq!(mount.stop("TERM"), Some(0));

    // Foreground: SIGINT unmounts and exits 0 (while a file is open).
    let mnt = env.path("mnt-int");
    let mut mount = env.mount(&mnt, &["--repo", "r", "--branch", "main"]);
    let open = std::fs::File::open(mnt.join("big.bin")).expect("open");
    assert_eq!(mount.stop("INT"), Some(0));
    assert!(!is_mounted(&mnt));
    drop(open);

    // Daemon: returns once mounted; SIGTERM to the server unmounts and exits.
    let mnt = env.path("mnt-daemon");
    std::fs::create_dir_all(&mnt).expect("mount point");
    let o = env
        .cmd()
        .args([
            "bundle", "mount", "--repo", "r", "--label", "l", "--daemon", "--mount",
        ])
        .arg(&mnt)
        .output()
        .expect("datamon --daemon");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("Mounted bundle"));
    assert!(is_mounted(&mnt), "mounted when --daemon returns");
    let guard = scopeguard_umount(&mnt);
    assert_eq!(
        std::fs::read(mnt.join("script.sh")).expect("read"),
        b"#!/bin/sh\necho hi\n"
    );
    let pid: String = stderr
        .split("Serving from process ")
        .nth(1)
        .expect("pid on stderr")
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill")
        .success());
    let deadline = Instant::now() + Duration::from_secs(20);
    while is_mounted(&mnt) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!is_mounted(&mnt), "SIGTERM unmounted the daemon's mount");
    drop(guard);

    // Bad mount points are refused before mounting, naming the problem: missing, not empty
    // (mounting would hide the files), already a mount point.
    let full = env.path("full");
    std::fs::create_dir_all(&full).expect("dir");
    std::fs::write(full.join("keep.txt"), b"mine").expect("write");
    let taken = env.path("taken");
    let mut first = env.mount(&taken, &["--repo", "r", "--label", "l"]);
    for (dir, why) in [
        (env.path("missing"), "does not exist"),
        (full.clone(), "is not empty"),
        (taken.clone(), "already a mount point"),
    ] {
        let o = env
            .cmd()
            .args(["bundle", "mount", "--repo", "r", "--label", "l", "--mount"])
            .arg(&dir)
            .output()
            .expect("datamon");
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(err.contains(why), "{why}: {err}");
    }
    assert_eq!(std::fs::read(full.join("keep.txt")).expect("kept"), b"mine");
    assert!(!is_mounted(&full));
    assert_eq!(first.stop("TERM"), Some(0));

    // A missing bundle fails before mounting, with exit code 2.
    let o = env
        .cmd()
        .args([
            "bundle", "mount", "--repo", "r", "--label", "nope", "--mount",
        ])
        .arg(&mnt)
        .output()
        .expect("datamon");
    assert_eq!(o.status.code(), Some(2));
    assert!(!is_mounted(&mnt));
}

/// Lazily unmounts `dir` when dropped.
fn scopeguard_umount(dir: &Path) -> impl Drop + '_ {
    struct G<'a>(&'a Path);
    impl Drop for G<'_> {
        fn drop(&mut self) {
            if is_mounted(self.0) {
                let _ = Command::new("umount").arg("-l").arg(self.0).status();
            }
        }
    }
    G(dir)
}

#[test]
fn store_gone_while_mounted_gives_eio_without_hanging() {
    if !fuse_available() {
        return;
    }
    let env = Env::new();
    let src = env.path("src");
    make_tree(&src);
    env.upload(&src);
    let mnt = env.path("mnt");
    let cache = env.path("cache");
    let mount = env.mount(
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
    let packs = env.path("home/store/packs");
    let moved = env.path("home/store/packs.away");
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

fn download(env: &Env, sel: &[&str], dest: &Path) {
    let mut args = vec!["bundle", "download", "--repo", "r", "--destination"];
    args.push(dest.to_str().expect("utf-8"));
    args.extend_from_slice(sel);
    env.ok(&args);
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
    let env = Env::new();
    let src = env.path("src");
    make_tree(&src);
    let base = env.upload(&src);
    let mnt = env.path("work");
    let mut mount = env.mount_new(
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
    set_mtime(&mnt.join("many/f002"), 1_234_567_890, 42, false);
    std::os::unix::fs::symlink("many/f003", mnt.join("newdir/link")).expect("symlink");
    std::fs::rename(mnt.join("sub"), mnt.join("sub-renamed")).expect("rename dir");
    // Jupyter-style save: write a temporary file, then rename it over the notebook.
    std::fs::write(mnt.join("nb.ipynb"), b"{\"cells\": []}").expect("save");
    std::fs::write(mnt.join(".~nb.ipynb"), b"{\"cells\": [1]}").expect("save tmp");
    std::fs::rename(mnt.join(".~nb.ipynb"), mnt.join("nb.ipynb")).expect("save by rename");

    // git clone, tar x and SQLite inside the mount.
    let upstream = env.path("upstream");
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
    sh(
        &env.tmp.path().join("src"),
        &format!("tar cf {}/sub.tar sub", env.tmp.path().display()),
    );
    sh(
        &mnt,
        &format!(
            "mkdir untar && tar xf {}/sub.tar -C untar",
            env.tmp.path().display()
        ),
    );
    let sqlite = Command::new("sqlite3").arg("--version").output().is_ok();
    if sqlite {
        sh(
            &mnt,
            "sqlite3 db.sqlite 'create table t(x); insert into t values (1),(2),(3);' && \
         sqlite3 db.sqlite 'update t set x = x * 10; delete from t where x = 20;'",
        );
    } else {
        eprintln!("sqlite3 not installed: skipping the SQLite part");
    }

    // Commit without unmounting; the bundle equals the working copy.
    let c1 = env.commit(&mnt, Some("c1"));
    let dl = env.path("dl1");
    download(&env, &["--bundle", &c1], &dl);
    assert_same_tree(&mnt, &dl);
    if sqlite {
        sh(
            &dl,
            "test \"$(sqlite3 db.sqlite 'select group_concat(x) from t')\" = 10,30",
        );
    }
    sh(&dl, "git -C cloned status --short | wc -l | grep -qx 0");
    let listed = env.ok(&["bundle", "get", "--repo", "r", "--label", "work"]);
    assert!(listed.contains(&c1), "label work moved to {c1}: {listed}");
    assert_ne!(c1, base);

    // One more change; unmounting commits it once more and exits 0.
    std::fs::write(mnt.join("after.txt"), b"after commit").expect("write");
    assert_eq!(mount.stop("TERM"), Some(0));
    let c2 = mount.next_upload(Duration::from_secs(5));
    assert!(!is_mounted(&mnt));
    let dl2 = env.path("dl2");
    download(&env, &["--label", "work"], &dl2);
    assert_eq!(
        std::fs::read(dl2.join("after.txt")).expect("read"),
        b"after commit"
    );
    let got = env.ok(&["bundle", "get", "--repo", "r", "--label", "work"]);
    assert!(got.contains(&c2));
    assert_eq!(
        std::fs::read_dir(env.path("home/scratch"))
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
    let env = Env::new();
    env.ok(&["repo", "create", "--repo", "r", "--description", "d"]);

    // Autosave commits on its own when something changed.
    let mnt = env.path("nb");
    let mut mount = env.mount_new(
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
    let out = env.ok(&["bundle", "mount", "recover"]);
    let recovered = out
        .trim()
        .strip_prefix("Uploaded bundle id:")
        .expect("id line")
        .to_owned();
    assert!(!is_mounted(&mnt), "recover unmounts the stale mount");
    let dl = env.path("dl");
    download(&env, &["--branch", "nb"], &dl);
    assert_eq!(std::fs::read(dl.join("b.txt")).expect("read"), b"second");
    let log = env.ok(&["bundle", "get", "--repo", "r", "--bundle", &recovered]);
    assert!(log.contains("autosaved"), "{log}");
    assert_ne!(first, recovered);

    // A commit that fails (store gone) keeps the work; recover finishes it later.
    let mnt2 = env.path("nb2");
    let mut mount = env.mount_new(&mnt2, &["--repo", "r", "--message", "m2", "--label", "two"]);
    std::fs::write(mnt2.join("keep.txt"), b"precious").expect("write");
    let store = env.path("home/store");
    let away = env.path("store-away");
    std::fs::rename(&store, &away).expect("hide the store");
    assert_eq!(
        mount.stop("TERM"),
        Some(1),
        "the final commit fails: {}",
        mount.log()
    );
    assert!(!is_mounted(&mnt2));
    let scratch: Vec<_> = std::fs::read_dir(env.path("home/scratch"))
        .expect("scratch root")
        .flatten()
        .collect();
    assert_eq!(scratch.len(), 1, "the work is kept");
    std::fs::remove_dir_all(&store).ok();
    std::fs::rename(&away, &store).expect("bring the store back");
    let out = env.ok(&[
        "bundle",
        "mount",
        "recover",
        "--mount",
        mnt2.to_str().expect("utf-8"),
    ]);
    assert!(out.starts_with("Uploaded bundle id:"), "{out}");
    let dl = env.path("dl2");
    download(&env, &["--label", "two"], &dl);
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
    let env = Env::new();
    let src = env.path("src");
    make_tree(&src);
    let inner_home = env.path("inner-home");
    let o = env
        .cmd()
        .env("DATAMON_HOME", &inner_home)
        .args(["repo", "create", "--repo", "r", "--description", "d"])
        .output()
        .expect("run");
    assert!(o.status.success());
    let o = env
        .cmd()
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
        .arg(&src)
        .output()
        .expect("run");
    assert!(o.status.success());
    // Store A holds store B's directory as a bundle.
    env.upload(&inner_home.join("store"));
    let host = env.path("host");
    let mut host_mount = env.mount(&host, &["--repo", "r", "--label", "l"]);
    let store_b = format!("file://{}", host.display());
    let mnt = env.path("mnt");
    let cache = env.path("cache");
    let _mount = env.mount(
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
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(src.join("sub")).expect("dirs");
    for (i, name) in ["a.bin", "b.bin", "c.bin"].iter().enumerate() {
        std::fs::write(src.join(name), pseudo_random(20 * MIB, i as u64 + 11)).expect("write");
    }
    std::fs::write(src.join("d.bin"), pseudo_random(2 * MIB, 5)).expect("write");
    std::fs::write(src.join("sub/keep.txt"), b"keep\n").expect("write");
    let data_size = (62 * MIB) as u64;
    let base = env.upload(&src);

    let mnt = env.path("cow");
    let started = Instant::now();
    let mut mount = env.mount_new(
        &mnt,
        &["--repo", "r", "--message", "cow", "--from-label", "l"],
    );
    let mount_time = started.elapsed();
    assert_named_datamon(&mnt, "rw");
    let scratch: Vec<PathBuf> = std::fs::read_dir(env.path("home/scratch"))
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
    let new = env.commit(&mnt, Some("changed four"));
    let dl = env.path("dl");
    download(&env, &["--bundle", &new], &dl);
    assert_same_tree(&mnt, &dl);
    let expected = env.path("expected");
    sh(
        env.tmp.path(),
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
    let out = env
        .cmd()
        .args([
            "bundle",
            "diff",
            "--repo",
            "r",
            "--bundle",
            &base,
            "--with-bundle",
            &new,
        ])
        .output()
        .expect("diff");
    let mut changes: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
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
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(src.join("dir")).expect("dirs");
    std::fs::write(src.join("x.bin"), pseudo_random(8 << 20, 1)).expect("write");
    std::fs::write(src.join("y.bin"), pseudo_random(1 << 20, 2)).expect("write");
    std::fs::write(src.join("z.bin"), pseudo_random(300_000, 3)).expect("write");
    std::fs::write(src.join("dir/w.bin"), pseudo_random(200_000, 4)).expect("write");
    std::fs::write(src.join("ro.bin"), pseudo_random(100_000, 5)).expect("write");
    std::fs::set_permissions(src.join("ro.bin"), std::fs::Permissions::from_mode(0o444))
        .expect("chmod");
    env.upload(&src);
    let mnt = env.path("m");
    let mut mount = env.mount_new(
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

    let id = env.commit(&mnt, None);
    let dl = env.path("dl");
    download(&env, &["--bundle", &id], &dl);
    assert_same_tree(&mnt, &dl);
    assert_eq!(mount.stop("TERM"), Some(0), "{}", mount.log());
}
