//! Error cases: unknown names, malformed input, bad paths and URLs.

use std::fs;
use std::path::Path;

use crate::util::{write, Dm};

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

const MISSING_ID: &str = "1INzQ5TV4vAAfU2PbRFgPfnzEwR";

#[test]
fn unknown_repo_is_exit_2_and_says_so_for_every_command() {
    let dm = Dm::new();
    dm.create_repo("real");
    let src = dm.dir("src");
    write(&src.join("a"), "a");
    let id = dm.upload("real", &src, "m", &[]);
    let dest = dm.dir("dest");
    let dest = s(&dest);
    let srcs = s(&src);
    let commands: Vec<Vec<&str>> = vec![
        vec!["repo", "get", "--repo", "nope"],
        vec!["bundle", "list", "--repo", "nope"],
        vec!["bundle", "list", "files", "--repo", "nope", "--bundle", &id],
        vec!["bundle", "get", "--repo", "nope"],
        vec!["bundle", "get", "--repo", "nope", "--bundle", &id],
        vec![
            "bundle",
            "upload",
            "--repo",
            "nope",
            "--path",
            srcs,
            "--message",
            "m",
        ],
        vec![
            "bundle",
            "download",
            "--repo",
            "nope",
            "--bundle",
            &id,
            "--destination",
            dest,
        ],
        vec![
            "bundle",
            "download",
            "file",
            "--repo",
            "nope",
            "--bundle",
            &id,
            "--file",
            "a",
            "--destination",
            dest,
        ],
        vec![
            "bundle",
            "diff",
            "--repo",
            "nope",
            "--bundle",
            &id,
            "--with-bundle",
            &id,
        ],
        vec![
            "bundle",
            "diff",
            "--repo",
            "nope",
            "--bundle",
            &id,
            "--destination",
            srcs,
        ],
        vec![
            "bundle",
            "update",
            "--repo",
            "nope",
            "--bundle",
            &id,
            "--destination",
            dest,
        ],
        vec!["label", "list", "--repo", "nope"],
        vec!["label", "get", "--repo", "nope", "--label", "l"],
        vec![
            "label",
            "get",
            "--repo",
            "nope",
            "--label",
            "l",
            "--history",
        ],
        vec![
            "label", "set", "--repo", "nope", "--label", "l", "--bundle", &id,
        ],
        vec!["branch", "list", "--repo", "nope"],
        vec!["branch", "get", "--repo", "nope", "--branch", "main"],
        vec!["branch", "create", "--repo", "nope", "--branch", "b"],
    ];
    let mut wrong = Vec::new();
    for c in &commands {
        let out = dm.run(c);
        if out.code != 2 || !out.stderr.contains("repo \"nope\" not found") {
            wrong.push(format!("{out:?}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} commands did not answer exit 2 + `repo \"nope\" not found` for an unknown \
         repo:\n{}",
        wrong.len(),
        commands.len(),
        wrong.join("\n")
    );
    assert!(
        !Path::new(dest).exists(),
        "a failed command created the destination"
    );
    assert!(
        !dm.store_dir().join("repos/nope").exists(),
        "a failed command created the repo"
    );
}

#[test]
fn unknown_bundle_is_exit_2() {
    let dm = Dm::new();
    dm.create_repo("r");
    // No bundles yet: "latest" does not exist.
    dm.run(["bundle", "get", "--repo", "r"])
        .code(2)
        .stderr_has("no bundles");
    let src = dm.dir("src");
    write(&src.join("a"), "a");
    let id = dm.upload("r", &src, "m", &[]);
    let dest = dm.dir("dest");
    for c in [
        vec!["bundle", "get", "--repo", "r", "--bundle", MISSING_ID],
        vec![
            "bundle", "list", "files", "--repo", "r", "--bundle", MISSING_ID,
        ],
        vec![
            "bundle",
            "download",
            "--repo",
            "r",
            "--bundle",
            MISSING_ID,
            "--destination",
            s(&dest),
        ],
        vec![
            "bundle",
            "download",
            "file",
            "--repo",
            "r",
            "--bundle",
            MISSING_ID,
            "--file",
            "a",
            "--destination",
            s(&dest),
        ],
        vec![
            "bundle",
            "diff",
            "--repo",
            "r",
            "--bundle",
            MISSING_ID,
            "--with-bundle",
            &id,
        ],
        vec![
            "bundle",
            "diff",
            "--repo",
            "r",
            "--bundle",
            &id,
            "--with-bundle",
            MISSING_ID,
        ],
        vec![
            "bundle",
            "diff",
            "--repo",
            "r",
            "--bundle",
            MISSING_ID,
            "--destination",
            s(&src),
        ],
        vec![
            "bundle",
            "update",
            "--repo",
            "r",
            "--bundle",
            MISSING_ID,
            "--destination",
            s(&dest),
        ],
    ] {
        dm.run(&c)
            .code(2)
            .stderr_has(&format!("bundle {MISSING_ID} not found"))
            .stderr_has("bundle list");
    }
    assert!(!dest.exists(), "a failed command created the destination");
}

#[test]
fn malformed_bundle_id_is_refused() {
    let dm = Dm::new();
    dm.create_repo("r");
    let dest = dm.dir("dest");
    for bad in [
        "abc",
        "1INzQ5TV4vAAfU2PbRFgPfnzEw!",
        "1INzQ5TV4vAAfU2PbRFgPfnzEwRX",
        "",
    ] {
        for c in [
            vec!["bundle", "get", "--repo", "r"],
            vec![
                "bundle",
                "download",
                "--repo",
                "r",
                "--destination",
                s(&dest),
            ],
            vec!["label", "set", "--repo", "r", "--label", "l"],
        ] {
            let mut c = c.clone();
            let arg = format!("--bundle={bad}");
            c.push(&arg);
            dm.run(&c).failure().stderr_has("invalid bundle id");
        }
    }
    assert!(!dest.exists());
}

#[test]
fn bad_upload_paths() {
    let dm = Dm::new();
    dm.create_repo("r");
    let missing = dm.dir("does-not-exist");
    dm.run([
        "bundle",
        "upload",
        "--repo",
        "r",
        "--path",
        s(&missing),
        "--message",
        "m",
    ])
    .failure()
    .stderr_has("does-not-exist");
    let file = dm.dir("plain-file");
    write(&file, "x");
    dm.run([
        "bundle",
        "upload",
        "--repo",
        "r",
        "--path",
        s(&file),
        "--message",
        "m",
    ])
    .failure()
    .stderr_has("plain-file")
    .stderr_has("not a directory");
    assert_eq!(dm.ok(["bundle", "list", "--repo", "r"]).stdout, "");
    dm.ok(["fsck"]).stdout_has("no problems");
}

#[test]
fn invalid_store_urls_explain_the_accepted_forms() {
    let dm = Dm::new();
    for bad in ["ftp://x", "file://relative/x", "relative/path", "nonsense"] {
        dm.run(["--store", bad, "repo", "list"])
            .code(1)
            .stderr_has("file:///")
            .stderr_has("s3://");
    }
    let out = dm.run(["--store", "ftp://x", "repo", "list"]).code(1);
    assert!(out.stderr.contains("ftp"), "{out:?}");
}

#[test]
fn files_list_with_a_missing_entry() {
    let dm = Dm::new();
    dm.create_repo("r");
    let src = dm.dir("src");
    write(&src.join("present.txt"), "here");
    write(&src.join("dir/also.txt"), "here too");
    let list = dm.dir("list.txt");
    write(&list, "present.txt\nmissing.txt\ndir/also.txt\n");
    let args = |extra: &[&'static str]| {
        let mut a: Vec<String> = [
            "bundle",
            "upload",
            "--repo",
            "r",
            "--message",
            "m",
            "--path",
            s(&src),
            "--files",
            s(&list),
        ]
        .iter()
        .map(|x| (*x).to_owned())
        .collect();
        a.extend(extra.iter().map(|x| (*x).to_owned()));
        a
    };
    dm.run(args(&[]))
        .failure()
        .stderr_has("missing.txt")
        .stderr_has("--skip-on-error");
    assert_eq!(
        dm.ok(["bundle", "list", "--repo", "r"]).stdout,
        "",
        "a failed upload committed"
    );

    let out = dm.ok(args(&["--skip-on-error"]));
    assert!(
        out.stderr.contains("missing.txt"),
        "the skipped path is not reported: {out:?}"
    );
    let id = crate::util::parse_uploaded(&out);
    assert_eq!(
        crate::util::listed_paths(&dm.list_files("r", &id)),
        ["dir/also.txt", "present.txt"]
    );

    // A list file that does not exist.
    let out = dm.run([
        "bundle",
        "upload",
        "--repo",
        "r",
        "--message",
        "m",
        "--path",
        s(&src),
        "--files",
        s(&dm.dir("no-such-list")),
    ]);
    out.failure().stderr_has("no-such-list");
}

#[test]
fn unsupported_entries_are_skipped_or_refused() {
    let dm = Dm::new();
    dm.create_repo("r");
    let src = dm.dir("src");
    write(&src.join("ok.txt"), "ok");
    // A FIFO has no content to version: skipped and reported.
    let st = std::process::Command::new("mkfifo")
        .arg(src.join("pipe"))
        .status()
        .expect("mkfifo");
    assert!(st.success());
    let out = dm.ok([
        "bundle",
        "upload",
        "--repo",
        "r",
        "--path",
        s(&src),
        "--message",
        "fifo",
    ]);
    assert!(
        out.stderr.contains("pipe"),
        "the FIFO is not reported: {out:?}"
    );
    let id = crate::util::parse_uploaded(&out);
    assert_eq!(
        crate::util::listed_paths(&dm.list_files("r", &id)),
        ["ok.txt"]
    );
    fs::remove_file(src.join("pipe")).expect("rm fifo");

    // A file name that is not UTF-8: refused unless --skip-on-error.
    use std::os::unix::ffi::OsStrExt;
    let bad_name = std::ffi::OsStr::from_bytes(b"bad-\xff-name");
    write(&src.join(bad_name), "x");
    dm.run([
        "bundle",
        "upload",
        "--repo",
        "r",
        "--path",
        s(&src),
        "--message",
        "bad",
    ])
    .failure()
    .stderr_has("UTF-8")
    .stderr_has("--skip-on-error");
    assert_eq!(dm.bundle_ids("r").len(), 1);
    let out = dm.ok([
        "bundle",
        "upload",
        "--repo",
        "r",
        "--path",
        s(&src),
        "--message",
        "skip",
        "--skip-on-error",
    ]);
    assert!(
        out.stderr.contains("bad-"),
        "the skipped name is not reported: {out:?}"
    );
    let id = crate::util::parse_uploaded(&out);
    assert_eq!(
        crate::util::listed_paths(&dm.list_files("r", &id)),
        ["ok.txt"]
    );
}

#[test]
fn usage_errors() {
    let dm = Dm::new();
    dm.create_repo("r");
    // download needs a selector.
    dm.run([
        "bundle",
        "download",
        "--repo",
        "r",
        "--destination",
        s(&dm.dir("d")),
    ])
    .failure()
    .stderr_has("--bundle");
    // Conflicting selectors.
    dm.run([
        "bundle", "get", "--repo", "r", "--bundle", MISSING_ID, "--label", "x",
    ])
    .failure();
    // diff needs the other side.
    dm.run(["bundle", "diff", "--repo", "r", "--bundle", MISSING_ID])
        .failure();
    // Unknown subcommand.
    dm.run(["frobnicate"]).failure();
}
