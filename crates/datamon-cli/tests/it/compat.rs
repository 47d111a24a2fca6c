//! Scripts written for the original Go datamon keep working: its flags and spellings
//! (`--force-dest`, `--daemonize`, `bundle diff --label`, `label list --prefix`,
//! `repo get --with-size`, `context create --context --blob ...`), its `Using bundle: <ID>` line
//! and its `--format` templates on listings (docs/cli-compat.md, docs/cli-format.md).

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::util::{write, Dm, Out};

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A repo `r` with two bundles: `a.txt` (100 bytes), then `a.txt` and `b.txt` (50 bytes, and
/// `a.txt` changed); returns (first id, second id, a folder holding the first bundle's content,
/// a folder holding the second's).
fn two_bundles(dm: &Dm) -> (String, String, std::path::PathBuf, std::path::PathBuf) {
    dm.create_repo("r");
    let one = dm.dir("one");
    write(&one.join("a.txt"), "a".repeat(100));
    let b1 = dm.upload("r", &one, "first", &[]);
    let two = dm.dir("two");
    write(&two.join("a.txt"), "A".repeat(100));
    write(&two.join("b.txt"), "b".repeat(50));
    let b2 = dm.upload("r", &two, "second", &[]);
    assert_ne!(b1, b2);
    (b1, b2, one, two)
}

/// The lines of stderr that say `Using bundle: ...`.
fn using_lines(out: &Out) -> Vec<String> {
    out.stderr
        .lines()
        .filter(|l| l.starts_with("Using bundle:"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn compat_force_dest_is_force() {
    let dm = Dm::new();
    let (b1, _, _, _) = two_bundles(&dm);
    let dest = dm.dir("dest");
    write(&dest.join("a.txt"), "old");
    write(&dest.join("mine.txt"), "keep me");
    let download = |extra: &[&str]| {
        let mut args = vec![
            "bundle",
            "download",
            "--repo",
            "r",
            "--bundle",
            &b1,
            "--destination",
            s(&dest),
        ];
        args.extend_from_slice(extra);
        dm.run(args)
    };
    download(&[]).failure().stderr_has("not empty");
    assert_eq!(fs::read(dest.join("a.txt")).expect("read"), b"old");
    download(&["--force-dest"]).success();
    assert_eq!(
        fs::read(dest.join("a.txt")).expect("read"),
        "a".repeat(100).as_bytes()
    );
    assert_eq!(fs::read(dest.join("mine.txt")).expect("read"), b"keep me");

    // `download file` takes it too: it overwrites the file.
    write(&dest.join("a.txt"), "old again");
    let file = |extra: &[&str]| {
        let mut args = vec![
            "bundle",
            "download",
            "file",
            "--file",
            "a.txt",
            "--repo",
            "r",
            "--bundle",
            &b1,
            "--destination",
            s(&dest),
        ];
        args.extend_from_slice(extra);
        dm.run(args)
    };
    file(&[]).failure();
    assert_eq!(fs::read(dest.join("a.txt")).expect("read"), b"old again");
    file(&["--force-dest"]).success();
    assert_eq!(
        fs::read(dest.join("a.txt")).expect("read"),
        "a".repeat(100).as_bytes()
    );
}

#[test]
fn compat_using_bundle_line_names_the_resolved_bundle() {
    let dm = Dm::new();
    let (b1, b2, _, _) = two_bundles(&dm);
    dm.ok([
        "label", "set", "--repo", "r", "--label", "prod", "--bundle", &b1,
    ]);
    let want = |id: &str| vec![format!("Using bundle: {id}")];

    // A label, the latest, a branch: one line on stderr naming the bundle; stdout unchanged.
    let dest = dm.dir("by-label");
    let out = dm.ok([
        "bundle",
        "download",
        "--repo",
        "r",
        "--label",
        "prod",
        "--destination",
        s(&dest),
    ]);
    assert_eq!(using_lines(&out), want(&b1), "{out:?}");
    assert!(!out.stdout.contains("Using"), "{out:?}");

    let out = dm.ok(["bundle", "list", "files", "--repo", "r"]);
    assert_eq!(using_lines(&out), want(&b2), "{out:?}");
    assert_eq!(out.lines().len(), 2, "only the files on stdout: {out:?}");

    let out = dm.ok(["bundle", "get", "--repo", "r", "--label", "prod"]);
    assert_eq!(using_lines(&out), want(&b1), "{out:?}");
    assert!(out.stdout.starts_with(&b1), "{out:?}");

    let out = dm.ok(["bundle", "get", "--repo", "r", "--branch", "main"]);
    assert_eq!(using_lines(&out), want(&b2), "{out:?}");

    let file_dest = dm.dir("one-file");
    let out = dm.ok([
        "bundle",
        "download",
        "file",
        "--file",
        "b.txt",
        "--repo",
        "r",
        "--branch",
        "main",
        "--destination",
        s(&file_dest),
    ]);
    assert_eq!(using_lines(&out), want(&b2), "{out:?}");

    // An explicit id needs no such line; --quiet and --json keep stderr free of it.
    let out = dm.ok(["bundle", "get", "--repo", "r", "--bundle", &b1]);
    assert_eq!(using_lines(&out), Vec::<String>::new(), "{out:?}");
    let out = dm.ok(["-q", "bundle", "get", "--repo", "r", "--label", "prod"]);
    assert_eq!(out.stderr, "", "{out:?}");
    let out = dm.ok(["--json", "bundle", "list", "files", "--repo", "r"]);
    assert_eq!(using_lines(&out), Vec::<String>::new(), "{out:?}");
    assert_eq!(out.json_lines().len(), 2, "{out:?}");
}

#[test]
fn compat_diff_takes_a_label_or_the_latest() {
    let dm = Dm::new();
    let (b1, b2, one, two) = two_bundles(&dm);
    dm.ok([
        "label", "set", "--repo", "r", "--label", "old", "--bundle", &b1,
    ]);

    // The labelled bundle against another bundle: they differ (exit 1), the changes listed.
    let out = dm
        .run([
            "bundle",
            "diff",
            "--repo",
            "r",
            "--label",
            "old",
            "--with-bundle",
            &b2,
        ])
        .code(1);
    assert_eq!(out.lines(), ["M a.txt", "A b.txt"], "{out:?}");
    assert_eq!(
        using_lines(&out),
        [format!("Using bundle: {b1}")],
        "{out:?}"
    );

    // The original form: a label against a downloaded folder.
    dm.ok([
        "bundle",
        "diff",
        "--repo",
        "r",
        "--label",
        "old",
        "--destination",
        s(&one),
    ]);
    let out = dm
        .run([
            "bundle",
            "diff",
            "--repo",
            "r",
            "--label",
            "old",
            "--destination",
            s(&two),
        ])
        .code(1);
    assert_eq!(out.lines(), ["M a.txt", "A b.txt"], "{out:?}");

    // No selector: the latest bundle.
    let out = dm.ok(["bundle", "diff", "--repo", "r", "--destination", s(&two)]);
    assert_eq!(
        using_lines(&out),
        [format!("Using bundle: {b2}")],
        "{out:?}"
    );
    assert_eq!(out.lines(), Vec::<String>::new());

    // A label that does not exist: exit 2, naming it.
    dm.run([
        "bundle",
        "diff",
        "--repo",
        "r",
        "--label",
        "nope",
        "--with-bundle",
        &b2,
    ])
    .code(2)
    .stderr_has("nope");
}

#[test]
fn compat_label_list_prefix() {
    let dm = Dm::new();
    let (b1, b2, _, _) = two_bundles(&dm);
    for (label, id) in [
        ("prod-eu", &b1),
        ("prod-us", &b2),
        ("dev", &b2),
        ("pro", &b1),
    ] {
        dm.ok([
            "label", "set", "--repo", "r", "--label", label, "--bundle", id,
        ]);
    }
    let names = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["label", "list", "--repo", "r"];
        all.extend_from_slice(args);
        dm.ok(all)
            .lines()
            .iter()
            .map(|l| l.split(" , ").next().expect("a label line").to_owned())
            .collect()
    };
    assert_eq!(names(&[]), ["dev", "pro", "prod-eu", "prod-us"]);
    assert_eq!(names(&["--prefix", "prod"]), ["prod-eu", "prod-us"]);
    assert_eq!(names(&["--prefix", "pro"]), ["pro", "prod-eu", "prod-us"]);
    assert_eq!(names(&["--prefix", "prod-us"]), ["prod-us"]);
    assert_eq!(names(&["--prefix", "x"]), Vec::<String>::new());
    let json = dm
        .ok([
            "--json", "label", "list", "--repo", "r", "--prefix", "prod-",
        ])
        .json_lines();
    assert_eq!(json.len(), 2, "{json:?}");
    assert_eq!(json[0]["name"], "prod-eu");
    assert_eq!(json[0]["bundle"], b1.as_str());
    // An unknown repo is still exit 2.
    dm.run(["label", "list", "--repo", "nope", "--prefix", "p"])
        .code(2);
}

#[test]
fn compat_repo_get_with_size() {
    let dm = Dm::new();
    let (b1, b2, _, _) = two_bundles(&dm);
    let stored = |id: &str| {
        dm.bundle_json("r", id)["stored_bytes"]
            .as_u64()
            .expect("stored_bytes")
    };
    let stored_all = stored(&b1) + stored(&b2);
    assert!(stored_all > 0);

    let j = dm
        .ok(["--json", "repo", "get", "--repo", "r", "--with-size"])
        .json();
    assert_eq!(j["name"], "r");
    assert_eq!(j["description"], "test repo");
    let size = &j["size"];
    assert_eq!(size["bundles"], 2, "{j}");
    assert_eq!(size["latest_bundle"], b2.as_str(), "{j}");
    assert_eq!(size["files"], 2, "{j}");
    assert_eq!(size["bytes"], 150, "{j}");
    assert_eq!(size["total_bytes"], 250, "{j}");
    assert_eq!(size["stored_bytes"], stored_all, "{j}");
    // Without the flag the view is unchanged.
    let j = dm.ok(["--json", "repo", "get", "--repo", "r"]).json();
    assert!(j.get("size").is_none(), "{j}");

    // Text: the repo line, each bundle's size and the grand total as the original printed
    // them, then the latest bundle and the stored bytes.
    let out = dm.ok(["repo", "get", "--repo", "r", "--with-size"]);
    let lines = out.lines();
    assert_eq!(lines.len(), 6, "{out:?}");
    assert!(lines[0].starts_with("r , test repo , "), "{out:?}");
    assert_eq!(lines[1], "All bundles with their total size:");
    assert!(lines[2].starts_with(&format!("{b1} , first, ")), "{out:?}");
    assert!(lines[2].ends_with(", 100 (100 B)"), "{out:?}");
    assert!(lines[3].starts_with(&format!("{b2} , second, ")), "{out:?}");
    assert!(lines[3].ends_with(", 150 (150 B)"), "{out:?}");
    assert_eq!(lines[4], "Grand total for repo \"r\": 250 (250 B)");
    assert!(
        lines[5].starts_with(&format!(
            "Latest bundle {b2}: 2 files, 150 (150 B); stored for 2 bundles: {stored_all} ("
        )),
        "{out:?}"
    );

    // `repo list --with-size` too, and a repo without bundles.
    dm.create_repo("empty");
    let list = dm
        .ok(["--json", "repo", "list", "--with-size"])
        .json_lines();
    assert_eq!(list.len(), 2, "{list:?}");
    let empty = list
        .iter()
        .find(|r| r["name"] == "empty")
        .expect("empty listed");
    assert_eq!(empty["size"]["bundles"], 0);
    assert!(empty["size"]["latest_bundle"].is_null());
    assert_eq!(empty["size"]["bytes"], 0);
    let out = dm.ok(["repo", "get", "--repo", "empty", "--with-size"]);
    assert_eq!(
        out.lines().last().map(String::as_str),
        Some("No bundles yet")
    );

    // With --format, one line per repo over the view's fields, `size` included.
    let out = dm.ok([
        "repo",
        "get",
        "--repo",
        "r",
        "--with-size",
        "--format",
        "{{.Name}} {{.Size.total_bytes}} {{.size.latest_bundle}}",
    ]);
    assert_eq!(out.lines(), [format!("r 250 {b2}")]);

    dm.run(["repo", "get", "--repo", "nope", "--with-size"])
        .code(2)
        .stderr_has("nope");
}

#[test]
fn compat_context_create_with_the_original_flags() {
    let dm = Dm::new();
    let store = dm.dir("legacy-store");
    let url = format!("file://{}", s(&store));

    // The original's separate buckets are refused, saying how to write it now; nothing saved.
    let out = dm
        .run([
            "context",
            "create",
            "--context",
            "old",
            "--blob",
            "my-bucket",
            "--meta",
            "my-meta",
            "--vmeta",
            "my-vmeta",
            "--wal",
            "my-wal",
            "--read-log",
            "my-read-log",
        ])
        .code(1)
        .stderr_has("datamon keeps metadata with the data")
        .stderr_has("--meta, --vmeta, --wal and --read-log")
        .stderr_has("--store-url gs://my-bucket");
    assert!(!out.stderr.contains("unexpected argument"), "{out:?}");
    dm.run(["context", "create", "--name", "old", "--meta", "m"])
        .code(1)
        .stderr_has("--meta is not used")
        .stderr_has("--store-url gs://BUCKET/PREFIX");
    // Neither a store URL nor a blob bucket.
    dm.run(["context", "create", "--name", "old"])
        .code(1)
        .stderr_has("--store-url");
    assert_eq!(dm.ok(["context", "list"]).lines().len(), 1, "nothing saved");

    // `--context NAME --blob URL`: the name from --context, the store from --blob.
    let out = dm.ok(["context", "create", "--context", "old", "--blob", &url]);
    assert_eq!(out.lines(), [format!("  old , {url}")], "{out:?}");
    // `context get --context NAME` shows that context, as the original's did.
    let out = dm.ok(["context", "get", "--context", "old"]);
    assert_eq!(out.lines(), [format!("  old , {url}")], "{out:?}");
    // And it is usable.
    dm.ok(["--context", "old", "repo", "create", "--repo", "in-old"]);
    assert!(store.join("repos/in-old").exists());
    // --blob and --store-url are one thing: not both.
    dm.run([
        "context",
        "create",
        "--name",
        "both",
        "--blob",
        &url,
        "--store-url",
        &url,
    ])
    .failure();
}

#[test]
fn compat_context_blob_bucket_is_a_gcs_store() {
    // A bare bucket name (as the original took it) means gs://BUCKET: the store check fails
    // here (no GCS server), naming the URL it tried.
    let dm = Dm::new();
    let mut c = dm.command();
    c.env("GOOGLE_STORAGE_ENDPOINT", "http://127.0.0.1:9")
        .env("GOOGLE_SKIP_SIGNATURE", "true")
        .env("GOOGLE_CONNECT_TIMEOUT", "1s")
        .env("GOOGLE_TIMEOUT", "2s")
        .args([
            "context",
            "create",
            "--context",
            "gcs",
            "--blob",
            "my-bucket",
        ]);
    let started = Instant::now();
    let o = c.output().expect("run datamon");
    let out = Out {
        args: vec!["context create --context gcs --blob my-bucket".into()],
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    };
    let out = out.failure().stderr_has("gs://my-bucket");
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "took {:?}: {out:?}",
        started.elapsed()
    );
    assert_eq!(dm.ok(["context", "list"]).lines().len(), 1, "nothing saved");
}

#[test]
fn compat_format_on_every_listing() {
    use std::os::unix::fs::PermissionsExt as _;
    let dm = Dm::new();
    let (b1, b2, _, two) = two_bundles(&dm);
    dm.ok([
        "label", "set", "--repo", "r", "--label", "prod", "--bundle", &b1,
    ]);
    let fmt = |args: &[&str]| dm.ok(args).lines();

    assert_eq!(
        fmt(&[
            "bundle",
            "list",
            "--repo",
            "r",
            "--format",
            "{{.ID}} {{.Message}}"
        ]),
        [format!("{b1} first"), format!("{b2} second")]
    );
    // The original's field names, any case, and `{{- -}}` trimming.
    let out = fmt(&[
        "bundle",
        "list",
        "--repo",
        "r",
        "--format",
        "{{.id}}|{{.Timestamp}}|{{.created_at}}|{{ .Files -}} , {{.Bytes}}",
    ]);
    let j = dm.bundle_json("r", &b2);
    let t = j["created_at"].as_str().expect("created_at");
    assert_eq!(out[1], format!("{b2}|{t}|{t}|2, 150"));
    // --format wins over --json.
    assert_eq!(
        fmt(&["--json", "bundle", "list", "--repo", "r", "--format", "{{.ID}}"]),
        [b1.clone(), b2.clone()]
    );
    assert_eq!(
        fmt(&[
            "bundle",
            "get",
            "--repo",
            "r",
            "--label",
            "prod",
            "--format",
            "{{.Message}} by {{.Author}}"
        ]),
        [format!(
            "first by {}",
            j["author"].as_str().expect("author")
        )]
    );
    assert_eq!(
        fmt(&[
            "bundle",
            "list",
            "files",
            "--repo",
            "r",
            "--bundle",
            &b2,
            "--format",
            "{{.Path}}:{{.Size}}:{{.type}}:{{.Mode}}"
        ]),
        ["a.txt:100:file", "b.txt:50:file"].map(|l| {
            let name = l.split(':').next().expect("a name");
            let mode = fs::metadata(two.join(name))
                .expect("stat")
                .permissions()
                .mode();
            format!("{l}:{:04o}", mode & 0o7777)
        })
    );
    assert_eq!(
        fmt(&["repo", "list", "--format", "{{.Name}} = {{.Description}}"]),
        ["r = test repo"]
    );
    assert_eq!(
        fmt(&[
            "label",
            "list",
            "--repo",
            "r",
            "--format",
            "{{.Name}} -> {{.BundleID}} ({{.previous}})"
        ]),
        [format!("prod -> {b1} ()")]
    );
    let main = dm.ok(["--json", "branch", "list", "--repo", "r"]).json();
    assert_eq!(
        fmt(&[
            "branch",
            "list",
            "--repo",
            "r",
            "--format",
            "{{.Name}} {{.Head}} {{.Updates}}"
        ]),
        [format!("main {b2} {}", main["updates"])]
    );
    assert_eq!(
        fmt(&["context", "list", "--format", "{{.Name}} {{.Current}}"]),
        ["default true"]
    );
    // `{{.}}` is the whole JSON view.
    let whole = fmt(&["label", "list", "--repo", "r", "--format", "{{.}}"]);
    let v: serde_json::Value = serde_json::from_str(&whole[0]).expect("JSON");
    assert_eq!(v["bundle"], b1.as_str());
}

#[test]
fn compat_format_errors_name_the_field_and_the_valid_ones() {
    let dm = Dm::new();
    let (_, _, _, _) = two_bundles(&dm);
    dm.run([
        "bundle",
        "list",
        "--repo",
        "r",
        "--format",
        "{{.ID}} {{.Nope}}",
    ])
    .code(1)
    .stderr_has("unknown field `Nope`")
    .stderr_has("id, repo, message, author, created_at");
    dm.run(["label", "list", "--repo", "r", "--format", "{{.ID}}"])
        .code(1)
        .stderr_has("unknown field `ID`")
        .stderr_has("name, bundle, previous, author, time");
    for bad in [
        "{{printf \"%s\" .ID}}",
        "{{range .Parents}}x{{end}}",
        "{{.ID",
    ] {
        let out = dm
            .run(["bundle", "list", "--repo", "r", "--format", bad])
            .code(1);
        assert!(out.stdout.is_empty(), "{out:?}");
        assert!(out.stderr.contains("--format"), "{out:?}");
    }
    // The template is checked before anything else: even for a repo that does not exist.
    dm.run(["repo", "list", "--format", "{{.Bogus}}"])
        .code(1)
        .stderr_has("name, description, created_at, created_by");
    dm.run(["branch", "list", "--repo", "nope", "--format", "{{.Bogus}}"])
        .code(1)
        .stderr_has("name, head, updates");
    dm.run(["context", "list", "--format", "{{.Bogus}}"])
        .code(1)
        .stderr_has("name, store, current, description, replica");
    dm.run([
        "bundle",
        "list",
        "files",
        "--repo",
        "r",
        "--format",
        "{{.Bogus}}",
    ])
    .code(1)
    .stderr_has("path, type, size, hash, mode, mtime");
}

// ---------------------------------------------------------------------------------------------
// `bundle mount --daemonize`.

/// Whether real FUSE mounts can run here: /dev/fuse, root, and fusermount3 to unmount.
fn fuse_available() -> bool {
    let root = fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
    });
    let fusermount = Command::new("fusermount3")
        .arg("--version")
        .output()
        .is_ok();
    let ok = Path::new("/dev/fuse").exists() && root && fusermount;
    if !ok {
        eprintln!("skipping the FUSE part: it needs /dev/fuse, root and fusermount3 (fuse3)");
    }
    ok
}

fn is_mounted(dir: &Path) -> bool {
    let dir = dir.to_string_lossy();
    fs::read_to_string("/proc/self/mountinfo")
        .map(|m| m.lines().any(|l| l.split(' ').nth(4) == Some(dir.as_ref())))
        .unwrap_or(false)
}

/// Unmounts `dir` on drop (lazily), so a failing test leaves no mount behind.
struct Unmount<'a>(&'a Path);

impl Drop for Unmount<'_> {
    fn drop(&mut self) {
        if is_mounted(self.0) {
            let _ = Command::new("fusermount3")
                .args(["-u", "-z"])
                .arg(self.0)
                .status();
        }
    }
}

#[test]
fn compat_mount_daemonize_returns_once_mounted() {
    let dm = Dm::new();
    let (_, b2, _, _) = two_bundles(&dm);
    dm.ok([
        "label", "set", "--repo", "r", "--label", "l", "--bundle", &b2,
    ]);
    let cache = dm.dir("cache");

    // The flags parse (with the original's --destination for the cache) and the mount point
    // is checked first.
    let missing = dm.dir("no-such-mount-point");
    dm.run([
        "bundle",
        "mount",
        "--repo",
        "r",
        "--label",
        "l",
        "--daemonize",
        "--destination",
        s(&cache),
        "--mount",
        s(&missing),
    ])
    .code(1)
    .stderr_has("does not exist");

    if !fuse_available() {
        return;
    }
    let mnt = dm.dir("mnt");
    fs::create_dir_all(&mnt).expect("mount point");
    let _guard = Unmount(&mnt);
    let out = dm.ok([
        "bundle",
        "mount",
        "--repo",
        "r",
        "--label",
        "l",
        "--daemonize",
        "--destination",
        s(&cache),
        "--mount",
        s(&mnt),
    ]);
    assert_eq!(out.lines().len(), 1, "{out:?}");
    assert!(
        out.stdout.starts_with(&format!("Mounted bundle {b2} ")),
        "{out:?}"
    );
    assert_eq!(
        using_lines(&out),
        [format!("Using bundle: {b2}")],
        "{out:?}"
    );
    assert!(is_mounted(&mnt), "mounted when --daemonize returns");
    assert_eq!(
        fs::read(mnt.join("b.txt")).expect("read through the mount"),
        "b".repeat(50).as_bytes()
    );
    assert!(
        fs::read_dir(&cache).expect("cache dir").next().is_some(),
        "--destination is the chunk cache"
    );
    let pid: String = out
        .stderr
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
    assert!(!is_mounted(&mnt), "SIGTERM unmounted the background mount");
}
