//! The one test harness of the CLI's end-to-end tests: a private datamon home per test, helpers to
//! run the real binary (in the foreground, as a child, or as a FUSE mount), the stores to run it
//! against (local, or the S3 server named by the environment), the tools some tests need (FUSE,
//! git, SQLite: skipped with a message when missing, a failure when `DATAMON_TEST_REQUIRE` names
//! them), and helpers to build, snapshot and compare directory trees.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tempfile::TempDir;

/// The datamon binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_datamon"))
}

/// Prefixes of the environment variables of the user's shell that would change what datamon
/// does (its own settings, and the object store clients' credentials and endpoints). None of them
/// reaches the binary unless a test sets it.
const SCRUBBED_ENV_PREFIXES: &[&str] = &["DATAMON_", "AWS_", "AZURE_", "GOOGLE_"];

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

    /// The directory itself.
    pub fn path(&self) -> &Path {
        self.0.path()
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

/// Runs a prepared command (for instance [`Dm::command`] with more environment) and collects its
/// output (no assertion).
pub fn run_command(c: &mut Command) -> Out {
    let mut shown: Vec<String> = c
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    if c.get_program() != bin().as_os_str() {
        shown.insert(0, c.get_program().to_string_lossy().into_owned());
    }
    let o = c.output().expect("run the command");
    Out::from_output(shown, o)
}

impl Out {
    /// Waits for a child started with piped stdout and stderr and collects its output; `what`
    /// names it in messages.
    pub fn wait(child: Child, what: impl Into<String>) -> Out {
        let o = child.wait_with_output().expect("wait for the child");
        Out::from_output(vec![what.into()], o)
    }

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

/// One private datamon installation: its own `DATAMON_HOME` (and so its own embedded store),
/// and the environment and working directory its commands run with.
pub struct Dm {
    pub scratch: Scratch,
    /// Set in the environment of every command (after the scrubbing).
    env: Vec<(OsString, OsString)>,
    /// The working directory of every command (else the test's own).
    cwd: Option<PathBuf>,
}

impl Dm {
    pub fn new() -> Dm {
        Dm {
            scratch: Scratch::new(),
            env: Vec::new(),
            cwd: None,
        }
    }

    /// Sets `key=value` in the environment of every command of this installation.
    pub fn with_env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Dm {
        self.env
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// Sets each pair in the environment of every command (see [`Dm::with_env`]).
    pub fn with_envs<K: AsRef<OsStr>, V: AsRef<OsStr>>(
        mut self,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Dm {
        for (k, v) in vars {
            self = self.with_env(k, v);
        }
        self
    }

    /// Runs every command in the scratch directory `name` (created), so relative paths in
    /// arguments are resolved there; [`Dm::cwd`] returns it.
    pub fn in_dir(mut self, name: &str) -> Dm {
        let dir = self.scratch.join(name);
        fs::create_dir_all(&dir).expect("create the working directory");
        self.cwd = Some(dir);
        self
    }

    /// The working directory of the commands: the one of [`Dm::in_dir`], else the scratch root.
    pub fn cwd(&self) -> PathBuf {
        self.cwd
            .clone()
            .unwrap_or_else(|| self.scratch.path().to_owned())
    }

    /// The scratch directory of this test (home, work folders, mount points live below it).
    pub fn root(&self) -> &Path {
        self.scratch.path()
    }

    /// `rel` below the scratch directory (nothing is created).
    pub fn path(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.scratch.join(rel)
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
    pub fn command(&self) -> Command {
        let mut c = Command::new(bin());
        for (k, _) in std::env::vars_os() {
            let name = k.to_string_lossy();
            if SCRUBBED_ENV_PREFIXES.iter().any(|p| name.starts_with(p)) {
                c.env_remove(&k);
            }
        }
        c.env("DATAMON_HOME", self.home());
        c.env("NO_COLOR", "1");
        for (k, v) in &self.env {
            c.env(k, v);
        }
        if let Some(d) = &self.cwd {
            c.current_dir(d);
        }
        c.stdin(Stdio::null());
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
// What some tests need: tools and servers, skipped or required.

/// Whether `DATAMON_TEST_REQUIRE` (comma-separated, as for the store servers of
/// `datamon-testing`; `all` names everything) names `what`: then a missing tool or server is a
/// test failure, not a skip. `.ci/run` sets `s3,azure,gcs,fuse,git,sqlite`.
pub fn required(what: &str) -> bool {
    std::env::var("DATAMON_TEST_REQUIRE")
        .is_ok_and(|r| r.split(',').any(|x| x.trim() == what || x.trim() == "all"))
}

/// `what` is missing because `why`: fails the test when it is [`required`], else prints that
/// the test (or part) is skipped. Returns `false`, for `if !fuse_available() { return; }`.
#[track_caller]
pub fn missing(what: &str, why: &str) -> bool {
    assert!(
        !required(what),
        "{what} is required (DATAMON_TEST_REQUIRE={}) but {why}",
        std::env::var("DATAMON_TEST_REQUIRE").unwrap_or_default()
    );
    eprintln!(
        "skipping: {why} (with DATAMON_TEST_REQUIRE={what} this is a failure; .ci/run installs it)"
    );
    false
}

/// Whether `program` is on `PATH` (an executable file in one of its directories).
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|d| {
            fs::metadata(d.join(program)).is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0)
        })
    })
}

/// Whether `program ARGS` runs and exits 0.
fn runs_ok(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether the build tools the mount's real-program tests run are here: `make`, a C compiler
/// (`cc`) and `python3 -m pip`. Requirement name: `build`.
#[track_caller]
pub fn build_tools_available() -> bool {
    let mut why = Vec::new();
    for tool in ["make", "cc"] {
        if !on_path(tool) {
            why.push(format!("{tool} is not on PATH"));
        }
    }
    if !runs_ok("python3", &["-m", "pip", "--version"]) {
        why.push("python3 -m pip does not run".to_owned());
    }
    why.is_empty() || missing("build", &why.join(", "))
}

/// Whether real FUSE mounts can run here: `/dev/fuse`, root (the tests mount with mount(2)
/// and write as root), and `fusermount3` (package `fuse3`). Requirement name: `fuse`.
#[track_caller]
pub fn fuse_available() -> bool {
    let mut why = Vec::new();
    if !Path::new("/dev/fuse").exists() {
        why.push("/dev/fuse does not exist");
    }
    let root = fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
    });
    if !root {
        why.push("the tests do not run as root");
    }
    if !on_path("fusermount3") {
        why.push("fusermount3 is not installed (apt-get install fuse3)");
    }
    why.is_empty()
        || missing(
            "fuse",
            &format!("FUSE mounts cannot run: {}", why.join(", ")),
        )
}

/// Whether `git` runs. Requirement name: `git`.
#[track_caller]
pub fn git_available() -> bool {
    runs_ok("git", &["--version"]) || missing("git", "git is not installed (apt-get install git)")
}

/// Whether `sqlite3` runs. Requirement name: `sqlite`.
#[track_caller]
pub fn sqlite_available() -> bool {
    runs_ok("sqlite3", &["--version"])
        || missing(
            "sqlite",
            "sqlite3 is not installed (apt-get install sqlite3)",
        )
}

/// A store to run the binary against: the root of its URLs and the environment it needs.
pub struct Target {
    pub base: String,
    pub env: Vec<(String, String)>,
    _dir: Option<TempDir>,
}

impl Target {
    /// A local folder store in a fresh temporary directory.
    pub fn local() -> Target {
        let dir = tempfile::tempdir().expect("tempdir");
        Target {
            base: format!("file://{}", dir.path().display()),
            env: Vec::new(),
            _dir: Some(dir),
        }
    }

    /// The S3 server of `DATAMON_TEST_S3_ENDPOINT` (with `DATAMON_TEST_S3_BUCKET`,
    /// `DATAMON_TEST_S3_ACCESS_KEY`, `DATAMON_TEST_S3_SECRET_KEY`; see `scripts/servers/up.sh`).
    /// Without it: `None` and a message, or a failure when `DATAMON_TEST_REQUIRE` names `s3`.
    #[track_caller]
    pub fn s3() -> Option<Target> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let Some(endpoint) = var("DATAMON_TEST_S3_ENDPOINT") else {
            assert!(
                !required("s3"),
                "s3 is required but DATAMON_TEST_S3_ENDPOINT is not set"
            );
            eprintln!("skipping an S3 test: DATAMON_TEST_S3_ENDPOINT is not set (see scripts/servers/up.sh)");
            return None;
        };
        let bucket = var("DATAMON_TEST_S3_BUCKET").unwrap_or_else(|| "datamon".into());
        let key = var("DATAMON_TEST_S3_ACCESS_KEY").unwrap_or_else(|| "test".into());
        let secret = var("DATAMON_TEST_S3_SECRET_KEY").unwrap_or_else(|| "test".into());
        Some(Target {
            base: format!("s3://{bucket}"),
            env: vec![
                ("AWS_ENDPOINT_URL".into(), endpoint),
                ("AWS_ACCESS_KEY_ID".into(), key),
                ("AWS_SECRET_ACCESS_KEY".into(), secret),
                ("AWS_ALLOW_HTTP".into(), "true".into()),
                ("AWS_REGION".into(), "us-east-1".into()),
            ],
            _dir: None,
        })
    }

    /// A URL below the root no other test (or run) uses.
    pub fn fresh_url(&self, label: &str) -> String {
        let n: u64 = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_nanos() as u64;
        format!("{}/e2e-{label}-{n:x}-{}", self.base, std::process::id())
    }

    /// A private installation whose commands get this store's environment.
    pub fn dm(&self) -> Dm {
        Dm::new().with_envs(self.env.iter().map(|(k, v)| (k, v)))
    }
}

// ---------------------------------------------------------------------------------------------
// FUSE mounts.

/// Whether `dir` is a mount point (listed in `/proc/self/mountinfo`).
pub fn is_mounted(dir: &Path) -> bool {
    let dir = dir.to_string_lossy();
    fs::read_to_string("/proc/self/mountinfo")
        .map(|m| m.lines().any(|l| l.split(' ').nth(4) == Some(dir.as_ref())))
        .unwrap_or(false)
}

/// Unmounts `dir` lazily if it is still mounted.
pub fn umount_lazily(dir: &Path) {
    if is_mounted(dir) {
        let _ = Command::new("umount").arg("-l").arg(dir).status();
    }
}

impl Dm {
    /// Starts `datamon bundle mount ARGS --mount DIR` in the foreground and waits until it says
    /// the mount is ready.
    #[track_caller]
    pub fn mount(&self, dir: &Path, args: &[&str]) -> Mount {
        self.start_mount(dir, &["bundle", "mount"], args)
    }

    /// Starts `datamon bundle mount new ARGS --mount DIR` (a mutable mount).
    #[track_caller]
    pub fn mount_new(&self, dir: &Path, args: &[&str]) -> Mount {
        self.start_mount(dir, &["bundle", "mount", "new"], args)
    }

    #[track_caller]
    fn start_mount(&self, dir: &Path, cmd: &[&str], args: &[&str]) -> Mount {
        fs::create_dir_all(dir).expect("mount point");
        let log = dir.with_extension("log");
        let mut child = self
            .command()
            .args(cmd)
            .args(args)
            .arg("--mount")
            .arg(dir)
            .stdout(Stdio::piped())
            .stderr(fs::File::create(&log).expect("log file"))
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

/// A running mount process; stopped (SIGTERM), reaped and if need be unmounted on drop.
pub struct Mount {
    child: Option<Child>,
    dir: PathBuf,
    /// Lines the process printed on stdout after "Mounted ...".
    lines: mpsc::Receiver<String>,
}

impl Mount {
    /// What the process logged on stderr.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.with_extension("log")).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Waits for the next `Uploaded bundle id:` line and returns the id.
    #[track_caller]
    pub fn next_upload(&self, within: Duration) -> String {
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

    /// Sends a signal (`TERM`, `INT`, `KILL`) and returns the exit code (`None`: killed by a
    /// signal, or not stopped within 20 s and then killed).
    pub fn stop(&mut self, signal: &str) -> Option<i32> {
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
        umount_lazily(&self.dir);
    }
}

/// A mount started with `--daemon`: the server process named on its stderr. On drop the
/// server gets SIGTERM (if still there) and the mount point is unmounted if need be.
pub struct Daemon {
    pub pid: String,
    dir: PathBuf,
}

impl Daemon {
    /// The server of the mount at `dir`, from the `Serving from process PID` line of `stderr`.
    #[track_caller]
    pub fn from_stderr(dir: &Path, stderr: &str) -> Daemon {
        let pid: String = stderr
            .split("Serving from process ")
            .nth(1)
            .expect("pid on stderr")
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        assert!(!pid.is_empty(), "no pid on stderr: {stderr}");
        Daemon {
            pid,
            dir: dir.to_owned(),
        }
    }

    /// Whether the server process still exists.
    pub fn running(&self) -> bool {
        Path::new(&format!("/proc/{}", self.pid)).exists()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.running() {
            let _ = Command::new("kill").args(["-TERM", &self.pid]).status();
            for _ in 0..100 {
                if !self.running() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        umount_lazily(&self.dir);
    }
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
    /// Paths, types, bytes and symlink targets only.
    pub const CONTENT: Compare = Compare {
        modes: false,
        mtimes: false,
        nanos: false,
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
