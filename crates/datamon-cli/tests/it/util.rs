//! Test harness: a private datamon home per test, helpers to run the real binary, and helpers to
//! build, snapshot and compare directory trees.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tempfile::TempDir;

/// The datamon binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_datamon"))
}

/// Environment variables of the user's shell that would change what datamon does.
const SCRUBBED_ENV: &[&str] = &[
    "DATAMON_STORE",
    "DATAMON_CONTEXT",
    "DATAMON_HOME",
    "DATAMON_JSON",
    "DATAMON_QUIET",
    "DATAMON_CONCURRENCY",
    "DATAMON_LOG",
];

/// A temporary directory that is removed even when tests made parts of it read-only.
pub struct Scratch(TempDir);

impl Scratch {
    pub fn new() -> Scratch {
        Scratch(
            tempfile::Builder::new()
                .prefix("datamon-it-")
                .tempdir()
                .expect("create a temp dir"),
        )
    }

    pub fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        self.0.path().join(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        make_writable(self.0.path());
    }
}

/// Makes every directory below `root` writable again (so it can be removed).
pub fn make_writable(root: &Path) {
    let Ok(m) = fs::symlink_metadata(root) else {
        return;
    };
    if m.is_dir() {
        let _ = fs::set_permissions(root, fs::Permissions::from_mode(0o755));
        if let Ok(rd) = fs::read_dir(root) {
            for e in rd.flatten() {
                make_writable(&e.path());
            }
        }
    }
}

/// The result of one run of the binary.
pub struct Out {
    pub args: Vec<String>,
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl std::fmt::Debug for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`datamon {}` exited {}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.args.join(" "),
            self.code,
            self.stdout,
            self.stderr
        )
    }
}

impl Out {
    fn from_output(args: Vec<String>, o: Output) -> Out {
        Out {
            args,
            // A signal leaves no code: -1 never matches an expected code.
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    /// Asserts exit code 0 and returns self.
    #[track_caller]
    pub fn success(self) -> Out {
        assert_eq!(self.code, 0, "expected success: {self:?}");
        self
    }

    /// Asserts this exit code and returns self.
    #[track_caller]
    pub fn code(self, code: i32) -> Out {
        assert_eq!(self.code, code, "expected exit code {code}: {self:?}");
        self
    }

    /// Asserts a non-zero exit code and returns self.
    #[track_caller]
    pub fn failure(self) -> Out {
        assert!(
            self.code != 0 && self.code != -1,
            "expected a clean failure: {self:?}"
        );
        self
    }

    /// Asserts that stderr contains `needle`.
    #[track_caller]
    pub fn stderr_has(self, needle: &str) -> Out {
        assert!(
            self.stderr.contains(needle),
            "expected stderr to contain {needle:?}: {self:?}"
        );
        self
    }

    /// Asserts that stdout contains `needle`.
    #[track_caller]
    pub fn stdout_has(self, needle: &str) -> Out {
        assert!(
            self.stdout.contains(needle),
            "expected stdout to contain {needle:?}: {self:?}"
        );
        self
    }

    /// The non-empty lines of stdout.
    pub fn lines(&self) -> Vec<String> {
        self.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// Every stdout line parsed as JSON (NDJSON).
    #[track_caller]
    pub fn json_lines(&self) -> Vec<Value> {
        self.lines()
            .iter()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("line {l:?} is not JSON ({e}): {self:?}"))
            })
            .collect()
    }

    /// Stdout as exactly one JSON value.
    #[track_caller]
    pub fn json(&self) -> Value {
        let mut v = self.json_lines();
        assert_eq!(v.len(), 1, "expected one JSON line: {self:?}");
        v.remove(0)
    }
}

/// One private datamon installation: its own `DATAMON_HOME` (and so its own embedded store).
pub struct Dm {
    pub scratch: Scratch,
}

impl Dm {
    pub fn new() -> Dm {
        Dm {
            scratch: Scratch::new(),
        }
    }

    /// `DATAMON_HOME`.
    pub fn home(&self) -> PathBuf {
        self.scratch.join("home")
    }

    /// The directory of the default (embedded) store.
    pub fn store_dir(&self) -> PathBuf {
        self.home().join("store")
    }

    /// A fresh directory for the test's own files.
    pub fn dir(&self, name: &str) -> PathBuf {
        let p = self.scratch.join("work").join(name);
        fs::create_dir_all(p.parent().expect("has a parent")).expect("create work dir");
        p
    }

    /// A `std::process::Command` for the binary, with this home and a clean environment.
    pub fn command(&self) -> std::process::Command {
        let mut c = std::process::Command::new(bin());
        for k in SCRUBBED_ENV {
            c.env_remove(k);
        }
        c.env("DATAMON_HOME", self.home());
        c.env("NO_COLOR", "1");
        c.stdin(std::process::Stdio::null());
        c
    }

    /// An `assert_cmd` command for the binary, with this home and a clean environment.
    pub fn cmd(&self) -> assert_cmd::Command {
        assert_cmd::Command::from_std(self.command())
    }

    /// Runs the binary with `args` and collects its output (no assertion).
    pub fn run<I, S>(&self, args: I) -> Out
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let shown = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let o = self
            .cmd()
            .args(&args)
            .timeout(Duration::from_secs(600))
            .output()
            .expect("run datamon");
        Out::from_output(shown, o)
    }

    /// Runs the binary and asserts success.
    #[track_caller]
    pub fn ok<I, S>(&self, args: I) -> Out
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.run(args).success()
    }

    #[track_caller]
    pub fn create_repo(&self, repo: &str) {
        self.ok([
            "repo",
            "create",
            "--repo",
            repo,
            "--description",
            "test repo",
        ])
        .stdout_has(repo);
    }

    /// Uploads `path` to `repo`; returns the new bundle id from the last stdout line.
    #[track_caller]
    pub fn upload(&self, repo: &str, path: &Path, message: &str, extra: &[&str]) -> String {
        let mut args: Vec<&OsStr> = vec![
            "bundle".as_ref(),
            "upload".as_ref(),
            "--repo".as_ref(),
            repo.as_ref(),
            "--path".as_ref(),
            path.as_os_str(),
            "--message".as_ref(),
            message.as_ref(),
        ];
        args.extend(extra.iter().map(OsStr::new));
        let out = self.ok(args);
        parse_uploaded(&out)
    }

    /// `bundle get --json`.
    #[track_caller]
    pub fn bundle_json(&self, repo: &str, id: &str) -> Value {
        self.ok(["--json", "bundle", "get", "--repo", repo, "--bundle", id])
            .json()
    }

    /// The ids of `bundle list`, in the order printed.
    #[track_caller]
    pub fn bundle_ids(&self, repo: &str) -> Vec<String> {
        self.ok(["bundle", "list", "--repo", repo])
            .lines()
            .iter()
            .map(|l| {
                l.split(" , ")
                    .next()
                    .expect("a bundle line has an id")
                    .to_owned()
            })
            .collect()
    }

    /// Downloads bundle `id` into `dest`.
    #[track_caller]
    pub fn download(&self, repo: &str, id: &str, dest: &Path) -> Out {
        self.ok([
            "bundle".as_ref(),
            "download".as_ref(),
            "--repo".as_ref(),
            repo.as_ref(),
            "--bundle".as_ref(),
            id.as_ref(),
            "--destination".as_ref(),
            dest.as_os_str(),
        ])
    }

    /// `bundle list files` output lines.
    #[track_caller]
    pub fn list_files(&self, repo: &str, id: &str) -> Vec<String> {
        self.ok(["bundle", "list", "files", "--repo", repo, "--bundle", id])
            .lines()
    }

    /// Every pack file of the embedded store.
    pub fn pack_files(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let packs = self.store_dir().join("packs");
        if let Ok(rd) = fs::read_dir(&packs) {
            for d in rd.flatten() {
                if let Ok(rd2) = fs::read_dir(d.path()) {
                    for f in rd2.flatten() {
                        let name = f.file_name().to_string_lossy().into_owned();
                        if name.len() == 64 && name.bytes().all(|c| c.is_ascii_hexdigit()) {
                            out.push(f.path());
                        }
                    }
                }
            }
        }
        out.sort();
        out
    }
}

/// The bundle id of `Uploaded bundle id:<ID>` on the last stdout line.
#[track_caller]
pub fn parse_uploaded(out: &Out) -> String {
    let lines = out.lines();
    let last = lines.last().unwrap_or_else(|| panic!("no output: {out:?}"));
    let id = last
        .strip_prefix("Uploaded bundle id:")
        .unwrap_or_else(|| panic!("last line is not `Uploaded bundle id:<ID>`: {out:?}"));
    assert_valid_id(id);
    id.to_owned()
}

/// A bundle id is a 27-character base62 KSUID.
#[track_caller]
pub fn assert_valid_id(id: &str) {
    assert!(
        id.len() == 27 && id.bytes().all(|c| c.is_ascii_alphanumeric()),
        "not a 27-char base62 id: {id:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Building trees.

/// A deterministic pseudo-random generator (splitmix64): incompressible test data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        let last = self.next_u64().to_le_bytes();
        let n = rest.len();
        rest.copy_from_slice(&last[..n]);
    }
}

/// `size` pseudo-random bytes.
pub fn random_bytes(seed: u64, size: usize) -> Vec<u8> {
    let mut v = vec![0u8; size];
    Rng::new(seed).fill(&mut v);
    v
}

/// Writes a file of `size` pseudo-random bytes, creating parent directories.
pub fn write_random(path: &Path, seed: u64, size: u64) {
    if let Some(p) = path.parent() {
        fs::create_dir_all(p).expect("create parent");
    }
    let mut f = fs::File::create(path).expect("create random file");
    let mut rng = Rng::new(seed);
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill(&mut buf[..n]);
        f.write_all(&buf[..n]).expect("write random file");
        left -= n as u64;
    }
}

/// Writes a file, creating parent directories.
pub fn write(path: &Path, content: impl AsRef<[u8]>) {
    if let Some(p) = path.parent() {
        fs::create_dir_all(p).expect("create parent");
    }
    fs::write(path, content).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

pub fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

pub fn symlink(target: &str, link: &Path) {
    std::os::unix::fs::symlink(target, link)
        .unwrap_or_else(|e| panic!("symlink {}: {e}", link.display()));
}

/// A fixed time, `secs` after the epoch plus `nanos`.
pub fn time(secs: u64, nanos: u32) -> SystemTime {
    UNIX_EPOCH + Duration::new(secs, nanos)
}

/// Sets the mtime of a file or directory (following symlinks).
pub fn set_mtime(path: &Path, t: SystemTime) {
    let f = fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    f.set_modified(t)
        .unwrap_or_else(|e| panic!("set mtime of {}: {e}", path.display()));
}

/// Sets the mtime of a symlink itself (std has no lutimes: uses `touch -h`).
pub fn set_symlink_mtime(path: &Path, secs: u64, nanos: u32) {
    let status = std::process::Command::new("touch")
        .arg("-h")
        .arg("-d")
        .arg(format!("@{secs}.{nanos:09}"))
        .arg(path)
        .status()
        .expect("run touch");
    assert!(status.success(), "touch -h {}", path.display());
}

/// Copies a tree (files, dirs, symlinks as links), keeping modes and mtimes.
pub fn copy_tree(from: &Path, to: &Path) {
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .expect("run cp");
    assert!(
        status.success(),
        "cp -a {} {}",
        from.display(),
        to.display()
    );
}

// ---------------------------------------------------------------------------------------------
// Snapshots and comparisons.

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    File { size: u64 },
    Dir,
    Symlink { target: String },
    Other,
}

/// What a tree comparison looks at for one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    pub kind: Kind,
    /// Permission bits (not compared for symlinks, whose mode is always 0777 on Linux).
    pub mode: u32,
    pub mtime_s: i64,
    pub mtime_ns: i64,
}

/// Every path below `root` (not `root` itself), `/`-separated, with its metadata.
pub fn snapshot(root: &Path) -> BTreeMap<String, Meta> {
    let mut out = BTreeMap::new();
    snap(root, "", &mut out);
    out
}

fn snap(dir: &Path, prefix: &str, out: &mut BTreeMap<String, Meta>) {
    let rd = fs::read_dir(dir).unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()));
    for e in rd {
        let e = e.expect("dir entry");
        let name = e.file_name().to_string_lossy().into_owned();
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let m = fs::symlink_metadata(e.path()).expect("lstat");
        let ft = m.file_type();
        let kind = if ft.is_symlink() {
            Kind::Symlink {
                target: fs::read_link(e.path())
                    .expect("readlink")
                    .to_string_lossy()
                    .into_owned(),
            }
        } else if ft.is_dir() {
            Kind::Dir
        } else if ft.is_file() {
            Kind::File { size: m.len() }
        } else {
            Kind::Other
        };
        let is_dir = kind == Kind::Dir;
        let is_link = matches!(kind, Kind::Symlink { .. });
        out.insert(
            rel.clone(),
            Meta {
                kind,
                mode: if is_link { 0 } else { m.mode() & 0o7777 },
                mtime_s: m.mtime(),
                mtime_ns: m.mtime_nsec(),
            },
        );
        if is_dir {
            snap(&e.path(), &rel, out);
        }
    }
}

/// Whether two files have the same bytes (streamed).
pub fn same_bytes(a: &Path, b: &Path) -> bool {
    let mut fa = fs::File::open(a).unwrap_or_else(|e| panic!("open {}: {e}", a.display()));
    let mut fb = fs::File::open(b).unwrap_or_else(|e| panic!("open {}: {e}", b.display()));
    let mut ba = vec![0u8; 1 << 20];
    let mut bb = vec![0u8; 1 << 20];
    loop {
        let na = read_full(&mut fa, &mut ba);
        let nb = read_full(&mut fb, &mut bb);
        if na != nb || ba[..na] != bb[..nb] {
            return false;
        }
        if na == 0 {
            return true;
        }
    }
}

fn read_full(f: &mut fs::File, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]).expect("read") {
            0 => break,
            k => n += k,
        }
    }
    n
}

/// Which aspects [`assert_same_tree`] compares.
#[derive(Debug, Clone, Copy)]
pub struct Compare {
    pub modes: bool,
    pub mtimes: bool,
    /// Compare mtimes to the nanosecond (else to the second).
    pub nanos: bool,
}

impl Compare {
    pub const ALL: Compare = Compare {
        modes: true,
        mtimes: true,
        nanos: true,
    };
}

/// Asserts that two trees hold the same paths, types, bytes, symlink targets and (per `cmp`)
/// modes and mtimes. Lists every difference on failure.
#[track_caller]
pub fn assert_same_tree(expected: &Path, actual: &Path, cmp: Compare) {
    assert_same_tree_but_mtimes_of(expected, actual, cmp, &[]);
}

/// As [`assert_same_tree`], not comparing the mtimes of the paths in `skip_mtime`.
#[track_caller]
pub fn assert_same_tree_but_mtimes_of(
    expected: &Path,
    actual: &Path,
    cmp: Compare,
    skip_mtime: &[&str],
) {
    let a = snapshot(expected);
    let b = snapshot(actual);
    let mut problems = Vec::new();
    for (p, ma) in &a {
        let Some(mb) = b.get(p) else {
            problems.push(format!("missing: {p}"));
            continue;
        };
        if ma.kind != mb.kind {
            problems.push(format!("{p}: kind {:?} != {:?}", ma.kind, mb.kind));
            continue;
        }
        if cmp.modes && ma.mode != mb.mode {
            problems.push(format!("{p}: mode {:o} != {:o}", ma.mode, mb.mode));
        }
        if cmp.mtimes
            && !skip_mtime.contains(&p.as_str())
            && (ma.mtime_s != mb.mtime_s || (cmp.nanos && ma.mtime_ns != mb.mtime_ns))
        {
            problems.push(format!(
                "{p}: mtime {}.{:09} != {}.{:09}",
                ma.mtime_s, ma.mtime_ns, mb.mtime_s, mb.mtime_ns
            ));
        }
        if let Kind::File { .. } = ma.kind {
            if !same_bytes(&expected.join(p), &actual.join(p)) {
                problems.push(format!("{p}: content differs"));
            }
        }
    }
    for p in b.keys() {
        if !a.contains_key(p) {
            problems.push(format!("unexpected: {p}"));
        }
    }
    assert!(
        problems.is_empty(),
        "trees {} and {} differ:\n  {}",
        expected.display(),
        actual.display(),
        problems.join("\n  ")
    );
}

/// Names of leftover temporary download files below `root` (`.NAME.datamon-XXXX`).
pub fn temp_leftovers(root: &Path) -> Vec<String> {
    snapshot(root)
        .into_keys()
        .filter(|p| {
            p.rsplit('/')
                .next()
                .is_some_and(|n| n.starts_with('.') && n.contains(".datamon-"))
        })
        .collect()
}

/// Paths of `bundle list files` lines (`path , size , hash`).
pub fn listed_paths(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .map(|l| {
            l.split(" , ")
                .next()
                .expect("a files line has a path")
                .to_owned()
        })
        .collect()
}

/// Builds the "tricky" tree used by several tests under `root` (which must not exist):
/// nested and empty directories, a 0-byte file, a > 5 MiB random file, text files, modes
/// 0600/0755/0444, a read-only (0555) directory, symlinks (inside, dangling, absolute outside,
/// to a directory), unicode names, names with spaces, a hidden file, a hard link, a deep path,
/// and fixed mtimes with nanoseconds everywhere. `outside` is an absolute path outside the tree
/// that one symlink points at (it is created as a file).
pub fn build_tricky_tree(root: &Path, outside: &Path) {
    fs::create_dir_all(root).expect("create root");
    write(
        outside,
        "I live outside the tree and must not be uploaded\n",
    );

    write(&root.join("hello.txt"), "hello, world\n");
    write(&root.join("zero"), "");
    write_random(&root.join("big/random.bin"), 1, 5 * 1024 * 1024 + 12345);
    write(&root.join(".hidden"), "dot file\n");
    write(
        &root.join("text/lorem.txt"),
        "Lorem ipsum dolor sit amet, consectetur adipiscing elit.\n".repeat(2000),
    );
    write(&root.join("modes/secret.txt"), "only me\n");
    chmod(&root.join("modes/secret.txt"), 0o600);
    write(&root.join("modes/run.sh"), "#!/bin/sh\necho run\n");
    chmod(&root.join("modes/run.sh"), 0o755);
    write(&root.join("modes/readonly.txt"), "read me only\n");
    chmod(&root.join("modes/readonly.txt"), 0o444);
    fs::hard_link(root.join("hello.txt"), root.join("modes/hardlink.txt")).expect("hard link");
    write(&root.join("locked/inside.txt"), "in a read-only dir\n");
    fs::create_dir_all(root.join("locked/empty-in-locked")).expect("mkdir");
    fs::create_dir_all(root.join("empty")).expect("mkdir");
    fs::create_dir_all(root.join("nested/a/b/c/empty-leaf")).expect("mkdir");
    write(&root.join("nested/a/b/c/d.txt"), "deep\n");
    write(&root.join("nested/a/top.txt"), "top\n");
    write(
        &root.join("with space/file name with spaces.txt"),
        "spaces\n",
    );
    write(&root.join("données/résumé ✓.txt"), "unicode\n");
    write(&root.join("日本語/ファイル.txt"), "japanese\n");
    write(&root.join("emoji 🎉.txt"), "party\n");
    let mut deep = root.join("deep");
    for i in 0..30 {
        deep = deep.join(format!("level{i:02}"));
    }
    write(&deep.join("bottom.txt"), "the bottom\n");

    symlink("hello.txt", &root.join("link-to-hello"));
    symlink("../hello.txt", &root.join("nested/link-up"));
    symlink("does/not/exist", &root.join("dangling"));
    symlink(
        outside.to_str().expect("utf-8 path"),
        &root.join("abs-outside"),
    );
    symlink("nested/a", &root.join("link-to-dir"));
    symlink("loop", &root.join("loop"));
    write(
        &root.join("odd names/new\nline.txt"),
        "newline in the name\n",
    );
    write(
        &root.join("odd names/back\\slash:colon;semi*star?.txt"),
        "odd\n",
    );
    write(&root.join("modes/setuid"), "#!/bin/sh\n");
    chmod(&root.join("modes/setuid"), 0o4755);
    write(&root.join("sticky/in-sticky.txt"), "sticky dir\n");
    chmod(&root.join("sticky"), 0o1777);
    write(&root.join("times/pre-1970.txt"), "old\n");
    write(&root.join("times/year-2200.txt"), "future\n");

    // Fixed mtimes with nanoseconds: files and symlinks first, then directories deepest first
    // (creating entries changes a directory's mtime).
    let snap = snapshot(root);
    let mut n: u64 = 0;
    for (p, m) in &snap {
        n += 1;
        let secs = 1_000_000_000 + n * 86_400;
        let nanos = ((n * 123_456_789) % 1_000_000_000) as u32;
        match m.kind {
            Kind::File { .. } => set_mtime(&root.join(p), time(secs, nanos)),
            Kind::Symlink { .. } => set_symlink_mtime(&root.join(p), secs, nanos),
            _ => {}
        }
    }
    let mut dirs: Vec<&String> = snap
        .iter()
        .filter(|(_, m)| m.kind == Kind::Dir)
        .map(|(p, _)| p)
        .collect();
    dirs.sort_by_key(|p| std::cmp::Reverse(p.matches('/').count()));
    for (i, p) in dirs.iter().enumerate() {
        set_mtime(
            &root.join(p),
            time(1_200_000_000 + i as u64 * 3600, 987_654_321),
        );
    }
    // Times far from now, in both directions.
    set_mtime(
        &root.join("times/pre-1970.txt"),
        UNIX_EPOCH - Duration::new(315_532_800, 250_000_000),
    );
    set_mtime(
        &root.join("times/year-2200.txt"),
        time(7_258_118_400, 999_999_999),
    );
    // The read-only directory last: its mtime is already set, chmod does not change it.
    chmod(&root.join("locked"), 0o555);
}
