//! End-to-end tests of the `datamon` binary on an S3 server on loopback (and, for comparison,
//! on a local store). The S3 server comes from `DATAMON_TEST_S3_ENDPOINT` (with
//! `DATAMON_TEST_S3_BUCKET`, `DATAMON_TEST_S3_ACCESS_KEY`, `DATAMON_TEST_S3_SECRET_KEY`); see
//! `scripts/servers/up.sh`. Without it the S3 tests are skipped with a message, unless
//! `DATAMON_TEST_REQUIRE` names `s3`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// A store to run the binary against: its URL root and the environment it needs.
struct Target {
    base: String,
    env: Vec<(String, String)>,
    _dir: Option<tempfile::TempDir>,
}

impl Target {
    fn local() -> Target {
        let dir = tempfile::tempdir().expect("tempdir");
        Target {
            base: format!("file://{}", dir.path().display()),
            env: Vec::new(),
            _dir: Some(dir),
        }
    }

    fn s3() -> Option<Target> {
        let Some(endpoint) = var("DATAMON_TEST_S3_ENDPOINT") else {
            let required = var("DATAMON_TEST_REQUIRE")
                .is_some_and(|r| r.split(',').any(|x| x == "s3" || x == "all"));
            assert!(
                !required,
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

    fn fresh_url(&self, label: &str) -> String {
        let n: u64 = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_nanos() as u64;
        format!("{}/e2e-{label}-{n:x}-{}", self.base, std::process::id())
    }
}

/// The binary with a private home, a clean environment and the target's variables.
fn datamon(home: &Path, env: &[(String, String)]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_datamon"));
    for (k, _) in std::env::vars() {
        if k.starts_with("AWS_") || k.starts_with("DATAMON_") || k.starts_with("AZURE_") {
            c.env_remove(k);
        }
    }
    c.env("DATAMON_HOME", home).env("NO_COLOR", "1");
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

fn run(c: &mut Command) -> Output {
    c.output().expect("run datamon")
}

fn ok(c: &mut Command) -> String {
    let out = run(c);
    assert!(
        out.status.success(),
        "{c:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

fn fail(c: &mut Command) -> String {
    let out = run(c);
    assert!(!out.status.success(), "{c:?} should have failed");
    String::from_utf8(out.stderr).expect("utf-8 output")
}

fn write_files(dir: &Path, seed: u32, n: u32) {
    std::fs::create_dir_all(dir.join("sub")).expect("mkdir");
    for i in 0..n {
        let body: Vec<u8> = (0..(1000 + i * 997))
            .map(|j| (j.wrapping_mul(31).wrapping_add(seed * 7 + i) % 251) as u8)
            .collect();
        let p = if i % 2 == 0 {
            dir.join(format!("f{i}.bin"))
        } else {
            dir.join("sub").join(format!("g{i}.bin"))
        };
        std::fs::write(p, body).expect("write");
    }
}

fn same_files(a: &Path, b: &Path) {
    fn all(root: &Path, d: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
        let mut es: Vec<_> = std::fs::read_dir(d)
            .expect("read_dir")
            .map(|e| e.expect("entry").path())
            .collect();
        es.sort();
        for p in es {
            if p.is_dir() {
                all(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).expect("under root").to_path_buf();
                out.push((rel, std::fs::read(&p).expect("read")));
            }
        }
    }
    let (mut x, mut y) = (Vec::new(), Vec::new());
    all(a, a, &mut x);
    all(b, b, &mut y);
    assert!(x == y, "{} and {} differ", a.display(), b.display());
}

#[test]
fn s3_context_create_checks_the_store_and_commands_round_trip() {
    let Some(t) = Target::s3() else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let home = tmp.path().join("home");
    let url = t.fresh_url("ctx");

    // A good store passes the three checks and becomes the current context.
    ok(datamon(&home, &t.env).args([
        "context",
        "create",
        "--name",
        "s3",
        "--store-url",
        &url,
        "--use",
    ]));

    // Each failing check is named.
    let mut closed = t.env.clone();
    closed.retain(|(k, _)| k != "AWS_ENDPOINT_URL");
    closed.push(("AWS_ENDPOINT_URL".into(), "http://127.0.0.1:9".into()));
    let started = std::time::Instant::now();
    let e = fail(datamon(&home, &closed).args([
        "context",
        "create",
        "--name",
        "x1",
        "--store-url",
        &url,
    ]));
    assert!(e.contains("the store is not reachable"), "{e}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "an unreachable store took {:?} to fail",
        started.elapsed()
    );
    let mut no_cas = t.env.clone();
    no_cas.push(("AWS_CONDITIONAL_PUT".into(), "disabled".into()));
    let e = fail(datamon(&home, &no_cas).args([
        "context",
        "create",
        "--name",
        "x2",
        "--store-url",
        &url,
    ]));
    assert!(e.contains("does not honour create-if-absent"), "{e}");

    // The foundation's commands work the same on S3.
    let src = tmp.path().join("src");
    write_files(&src, 1, 12);
    ok(datamon(&home, &t.env).args(["repo", "create", "--repo", "r", "--description", "d"]));
    let src_s = src.display().to_string();
    ok(datamon(&home, &t.env).args([
        "bundle",
        "upload",
        "--repo",
        "r",
        "--path",
        &src_s,
        "--message",
        "v1",
        "--label",
        "prod",
    ]));
    let list = ok(datamon(&home, &t.env).args(["bundle", "list", "--repo", "r"]));
    assert_eq!(list.lines().count(), 1, "{list}");
    let dst = tmp.path().join("dst");
    let dst_s = dst.display().to_string();
    ok(datamon(&home, &t.env).args([
        "bundle",
        "download",
        "--repo",
        "r",
        "--label",
        "prod",
        "--destination",
        &dst_s,
    ]));
    same_files(&src, &dst);

    // The read-only mount reads from S3 too (when FUSE can be used here).
    let root = std::fs::metadata("/proc/self").is_ok_and(|m| {
        use std::os::unix::fs::MetadataExt as _;
        m.uid() == 0
    });
    if root && Path::new("/dev/fuse").exists() {
        let mnt = tmp.path().join("mnt");
        std::fs::create_dir_all(&mnt).expect("mount point");
        let mnt_s = mnt.display().to_string();
        let out = run(datamon(&home, &t.env).args([
            "bundle", "mount", "--repo", "r", "--label", "prod", "--mount", &mnt_s, "--daemon",
        ]));
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "{err}");
        let pid: String = err
            .split("Serving from process ")
            .nth(1)
            .expect("pid on stderr")
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        let compared = std::panic::catch_unwind(|| same_files(&src, &mnt));
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        for _ in 0..100 {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        compared.expect("the mount shows the bundle");
    }
    let fsck = run(datamon(&home, &t.env).args(["fsck", "--read-data"]));
    assert!(
        fsck.status.success(),
        "{}",
        String::from_utf8_lossy(&fsck.stderr)
    );
    let missing =
        run(datamon(&home, &t.env).args(["label", "get", "--repo", "r", "--label", "nope"]));
    assert_eq!(missing.status.code(), Some(2));
}

fn eight_concurrent_uploads(t: &Target) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let home = tmp.path().join("home");
    let url = t.fresh_url("race");
    ok(datamon(&home, &t.env).args([
        "--store",
        &url,
        "repo",
        "create",
        "--repo",
        "r",
        "--description",
        "d",
    ]));
    let dirs: Vec<PathBuf> = (0..8)
        .map(|i| {
            let d = tmp.path().join(format!("src{i}"));
            write_files(&d, i, 6);
            d
        })
        .collect();
    let children: Vec<_> = dirs
        .iter()
        .enumerate()
        .map(|(i, d)| {
            datamon(&home, &t.env)
                .args([
                    "--store", &url, "--quiet", "bundle", "upload", "--repo", "r", "--path",
                ])
                .arg(d)
                .args([
                    "--message",
                    &format!("writer {i}"),
                    "--label",
                    "shared",
                    "--branch",
                    "main",
                ])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn datamon")
        })
        .collect();
    for (i, c) in children.into_iter().enumerate() {
        let out = c.wait_with_output().expect("wait");
        assert!(
            out.status.success(),
            "writer {i} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let history = ok(datamon(&home, &t.env).args([
        "--store",
        &url,
        "label",
        "get",
        "--repo",
        "r",
        "--label",
        "shared",
        "--history",
    ]));
    assert_eq!(
        history.lines().count(),
        8,
        "label history lost an update:\n{history}"
    );
    let bundles =
        ok(datamon(&home, &t.env).args(["--store", &url, "bundle", "list", "--repo", "r"]));
    assert_eq!(bundles.lines().count(), 8, "{bundles}");
    let branch =
        ok(datamon(&home, &t.env)
            .args(["--store", &url, "--json", "branch", "list", "--repo", "r"]));
    assert!(branch.contains("main"), "{branch}");
}

#[test]
fn s3_eight_concurrent_uploads_to_one_label_lose_nothing() {
    let Some(t) = Target::s3() else { return };
    eight_concurrent_uploads(&t);
}

#[test]
fn local_eight_concurrent_uploads_to_one_label_lose_nothing() {
    eight_concurrent_uploads(&Target::local());
}

#[test]
fn store_sync_copies_a_local_store_to_s3_and_resumes() {
    let Some(t) = Target::s3() else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let home = tmp.path().join("home");
    let local = format!("file://{}", tmp.path().join("local").display());
    let remote = t.fresh_url("sync");
    let src = tmp.path().join("src");
    write_files(&src, 3, 10);
    let src_s = src.display().to_string();
    ok(datamon(&home, &t.env).args([
        "--store",
        &local,
        "repo",
        "create",
        "--repo",
        "r",
        "--description",
        "d",
    ]));
    ok(datamon(&home, &t.env).args([
        "--store",
        &local,
        "bundle",
        "upload",
        "--repo",
        "r",
        "--path",
        &src_s,
        "--message",
        "one",
        "--label",
        "l",
    ]));

    let first =
        ok(datamon(&home, &t.env)
            .args(["--json", "store", "sync", "--from", &local, "--to", &remote]));
    let v: serde_json::Value = serde_json::from_str(first.trim()).expect("json");
    assert!(v["copied"].as_u64().expect("copied") > 3, "{first}");

    // The copy is a working store: same bundles, same label, same files.
    let a = ok(datamon(&home, &t.env).args(["--store", &local, "bundle", "list", "--repo", "r"]));
    let b = ok(datamon(&home, &t.env).args(["--store", &remote, "bundle", "list", "--repo", "r"]));
    assert_eq!(a, b);
    let dst = tmp.path().join("dst");
    let dst_s = dst.display().to_string();
    ok(datamon(&home, &t.env).args([
        "--store",
        &remote,
        "bundle",
        "download",
        "--repo",
        "r",
        "--label",
        "l",
        "--destination",
        &dst_s,
    ]));
    same_files(&src, &dst);

    // A rerun copies nothing; after a new bundle, only what is new.
    let again =
        ok(datamon(&home, &t.env)
            .args(["--json", "store", "sync", "--from", &local, "--to", &remote]));
    let v: serde_json::Value = serde_json::from_str(again.trim()).expect("json");
    assert_eq!(v["copied"], 0, "{again}");
    write_files(&src.join("more"), 4, 3);
    ok(datamon(&home, &t.env).args([
        "--store",
        &local,
        "bundle",
        "upload",
        "--repo",
        "r",
        "--path",
        &src_s,
        "--message",
        "two",
        "--label",
        "l",
    ]));
    let third =
        ok(datamon(&home, &t.env)
            .args(["--json", "store", "sync", "--from", &local, "--to", &remote]));
    let v: serde_json::Value = serde_json::from_str(third.trim()).expect("json");
    let copied = v["copied"].as_u64().expect("copied");
    assert!(
        copied > 0 && v["present"].as_u64().expect("present") > copied,
        "{third}"
    );
    let h = ok(datamon(&home, &t.env).args([
        "--store",
        &remote,
        "label",
        "get",
        "--repo",
        "r",
        "--label",
        "l",
        "--history",
    ]));
    assert_eq!(h.lines().count(), 2, "{h}");
}

#[test]
fn context_with_a_replica_writes_to_both() {
    let Some(t) = Target::s3() else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let home = tmp.path().join("home");
    let primary = t.fresh_url("primary");
    let replica = format!("file://{}", tmp.path().join("replica").display());
    ok(datamon(&home, &t.env).args([
        "context",
        "create",
        "--name",
        "geo",
        "--store-url",
        &primary,
        "--replica",
        &replica,
        "--use",
    ]));
    let shown = ok(datamon(&home, &t.env).args(["context", "get", "--name", "geo"]));
    assert!(shown.contains(&format!("replica {replica}")), "{shown}");
    let src = tmp.path().join("src");
    write_files(&src, 9, 5);
    let src_s = src.display().to_string();
    ok(datamon(&home, &t.env).args(["repo", "create", "--repo", "r", "--description", "d"]));
    ok(datamon(&home, &t.env).args([
        "bundle",
        "upload",
        "--repo",
        "r",
        "--path",
        &src_s,
        "--message",
        "m",
        "--label",
        "l",
    ]));
    let on_primary =
        ok(datamon(&home, &t.env).args(["--store", &primary, "bundle", "list", "--repo", "r"]));
    let on_replica =
        ok(datamon(&home, &t.env).args(["--store", &replica, "bundle", "list", "--repo", "r"]));
    assert_eq!(on_primary.lines().count(), 1);
    assert_eq!(on_primary, on_replica);
    let dst = tmp.path().join("dst");
    let dst_s = dst.display().to_string();
    ok(datamon(&home, &t.env).args([
        "--store",
        &replica,
        "bundle",
        "download",
        "--repo",
        "r",
        "--label",
        "l",
        "--destination",
        &dst_s,
    ]));
    same_files(&src, &dst);
}

#[test]
fn s3_settings_from_an_aws_profile() {
    let Some(t) = Target::s3() else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let home = tmp.path().join("home");
    let get = |k: &str| {
        t.env
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
            .expect("set")
    };
    // Keys, region and endpoint only in the profile's files; the environment names the profile.
    let creds = tmp.path().join("credentials");
    let config = tmp.path().join("config");
    std::fs::write(
        &creds,
        format!(
            "[default]\naws_access_key_id = wrong\naws_secret_access_key = wrong\n\n[ci]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            get("AWS_ACCESS_KEY_ID"),
            get("AWS_SECRET_ACCESS_KEY")
        ),
    )
    .expect("write");
    std::fs::write(
        &config,
        format!(
            "[default]\nregion = us-east-1\nendpoint_url = {0}\n\n[profile ci]\nregion = us-east-1\nendpoint_url = {0}\n",
            get("AWS_ENDPOINT_URL")
        ),
    )
    .expect("write");
    let env: Vec<(String, String)> = vec![
        ("AWS_PROFILE".into(), "ci".into()),
        (
            "AWS_SHARED_CREDENTIALS_FILE".into(),
            creds.display().to_string(),
        ),
        ("AWS_CONFIG_FILE".into(), config.display().to_string()),
    ];
    let url = t.fresh_url("profile");
    let dm = |args: &[&str]| {
        let mut c = datamon(&home, &env);
        c.arg("--store").arg(&url).args(args);
        c
    };
    let src = tmp.path().join("src");
    write_files(&src, 7, 5);
    ok(&mut dm(&[
        "repo",
        "create",
        "--repo",
        "r",
        "--description",
        "d",
    ]));
    let src_s = src.display().to_string();
    ok(&mut dm(&[
        "bundle",
        "upload",
        "--repo",
        "r",
        "--path",
        &src_s,
        "--message",
        "m",
    ]));
    let dst = tmp.path().join("dst");
    let dst_s = dst.display().to_string();
    ok(&mut dm(&[
        "bundle",
        "download",
        "--repo",
        "r",
        "--branch",
        "main",
        "--destination",
        &dst_s,
    ]));
    same_files(&src, &dst);
    // The default profile's wrong keys are refused: the profile is really what is used.
    let mut wrong = env.clone();
    wrong[0].1 = "default".into();
    let mut c = datamon(&home, &wrong);
    c.args(["--store", &url, "bundle", "list", "--repo", "r"]);
    fail(&mut c);
}
