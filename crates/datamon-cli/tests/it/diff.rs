//! `datamon bundle diff` (bundle to bundle, bundle to folder) and `datamon bundle update`.

use std::fs;
use std::path::Path;

use crate::util::{
    assert_same_tree, assert_same_tree_but_mtimes_of, build_tricky_tree, chmod, set_mtime, symlink,
    temp_leftovers, time, write, Compare, Dm,
};

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// The tree of the "old" bundle.
fn old_tree(root: &Path) {
    write(&root.join("same.txt"), "same");
    write(&root.join("changed.txt"), "old content");
    write(&root.join("removed.txt"), "bye");
    write(&root.join("mode.txt"), "mode");
    chmod(&root.join("mode.txt"), 0o644);
    write(&root.join("becomes-dir"), "I am a file for now");
    write(&root.join("becomes-file/inner.txt"), "inside a dir for now");
    write(&root.join("dir/keep.txt"), "keep");
    write(&root.join("dir/drop.txt"), "drop");
    fs::create_dir_all(root.join("old-empty")).expect("mkdir");
    symlink("same.txt", &root.join("link"));
    write(&root.join("touched.txt"), "only the mtime changes");
    set_mtime(&root.join("touched.txt"), time(1_000_000_000, 0));
}

/// Turns the old tree into the "new" one.
fn make_new(root: &Path) {
    write(&root.join("changed.txt"), "new content, longer");
    fs::remove_file(root.join("removed.txt")).expect("rm");
    write(&root.join("added.txt"), "hello");
    chmod(&root.join("mode.txt"), 0o600);
    fs::remove_file(root.join("becomes-dir")).expect("rm");
    write(&root.join("becomes-dir/child.txt"), "now a dir");
    fs::remove_dir_all(root.join("becomes-file")).expect("rm");
    write(&root.join("becomes-file"), "now a file");
    fs::remove_file(root.join("dir/drop.txt")).expect("rm");
    fs::remove_dir(root.join("old-empty")).expect("rmdir");
    fs::create_dir_all(root.join("new-empty")).expect("mkdir");
    fs::remove_file(root.join("link")).expect("rm");
    symlink("changed.txt", &root.join("link"));
    set_mtime(&root.join("touched.txt"), time(1_100_000_000, 0));
}

fn expected_changes() -> Vec<&'static str> {
    let mut v = vec![
        "A added.txt",
        "M becomes-dir",
        "A becomes-dir/child.txt",
        "M becomes-file",
        "D becomes-file/inner.txt",
        "M changed.txt",
        "D dir/drop.txt",
        "M link",
        "M mode.txt",
        "A new-empty/",
        "D old-empty/",
        "D removed.txt",
    ];
    v.sort_unstable();
    v
}

/// The same changes seen from the other side: A and D swap, M stays.
fn swapped(lines: &[&str]) -> Vec<String> {
    lines
        .iter()
        .map(|l| match &l[..1] {
            "A" => format!("D{}", &l[1..]),
            "D" => format!("A{}", &l[1..]),
            _ => (*l).to_owned(),
        })
        .collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn diff_between_bundles() {
    let dm = Dm::new();
    dm.create_repo("r");
    let src = dm.dir("src");
    old_tree(&src);
    let a = dm.upload("r", &src, "old", &[]);
    make_new(&src);
    let b = dm.upload("r", &src, "new", &[]);

    let out = dm
        .run([
            "bundle",
            "diff",
            "--repo",
            "r",
            "--bundle",
            &a,
            "--with-bundle",
            &b,
        ])
        .code(1);
    assert_eq!(sorted(out.lines()), expected_changes(), "{out:?}");

    // The other way round: A and D swap, M stays.
    let out = dm
        .run([
            "bundle",
            "diff",
            "--repo",
            "r",
            "--bundle",
            &b,
            "--with-bundle",
            &a,
        ])
        .code(1);
    assert_eq!(
        sorted(out.lines()),
        sorted(swapped(&expected_changes())),
        "{out:?}"
    );

    // Identical: exit 0 and nothing printed.
    let out = dm
        .run([
            "bundle",
            "diff",
            "--repo",
            "r",
            "--bundle",
            &b,
            "--with-bundle",
            &b,
        ])
        .code(0);
    assert_eq!(out.stdout, "");

    // JSON form.
    let out = dm
        .run([
            "--json",
            "bundle",
            "diff",
            "--repo",
            "r",
            "--bundle",
            &a,
            "--with-bundle",
            &b,
        ])
        .code(1);
    let json = out.json_lines();
    assert_eq!(json.len(), expected_changes().len());
    assert!(
        json.iter()
            .any(|j| j["path"] == "added.txt" && j["kind"] == "A"),
        "{json:?}"
    );
}

#[test]
fn diff_bundle_with_folder() {
    let dm = Dm::new();
    dm.create_repo("r");
    let src = dm.dir("src");
    old_tree(&src);
    let a = dm.upload("r", &src, "old", &[]);

    // The folder it came from is identical.
    let out = dm
        .run([
            "bundle",
            "diff",
            "--repo",
            "r",
            "--bundle",
            &a,
            "--destination",
            s(&src),
        ])
        .code(0);
    assert_eq!(out.stdout, "");

    // A folder with the same content but other mtimes is identical (content counts).
    let copy = dm.dir("copy");
    crate::util::copy_tree(&src, &copy);
    set_mtime(&copy.join("same.txt"), time(1_234_567_890, 1));
    dm.run([
        "bundle",
        "diff",
        "--repo",
        "r",
        "--bundle",
        &a,
        "--destination",
        s(&copy),
    ])
    .code(0);

    // A same-size change is found by content.
    write(&copy.join("same.txt"), "SAME");
    let out = dm
        .run([
            "bundle",
            "diff",
            "--repo",
            "r",
            "--bundle",
            &a,
            "--destination",
            s(&copy),
        ])
        .code(1);
    assert_eq!(out.lines(), ["M same.txt"]);

    // A = only in the folder, D = only in the bundle, M = differs.
    make_new(&src);
    let out = dm
        .run([
            "bundle",
            "diff",
            "--repo",
            "r",
            "--bundle",
            &a,
            "--destination",
            s(&src),
        ])
        .code(1);
    assert_eq!(sorted(out.lines()), expected_changes(), "{out:?}");

    // A missing folder is an error, not "everything deleted".
    dm.run([
        "bundle",
        "diff",
        "--repo",
        "r",
        "--bundle",
        &a,
        "--destination",
        s(&dm.dir("missing")),
    ])
    .failure()
    .stderr_has("missing");
}

#[test]
fn update_makes_a_folder_exactly_the_bundle() {
    let dm = Dm::new();
    dm.create_repo("r");
    let src = dm.dir("src");
    old_tree(&src);
    let a = dm.upload("r", &src, "old", &[]);
    make_new(&src);
    let b = dm.upload("r", &src, "new", &[]);

    // Start from a download of A, with local junk added.
    let work = dm.dir("work");
    dm.download("r", &a, &work);
    write(&work.join("junk.txt"), "junk");
    write(&work.join("junkdir/deep/j.txt"), "junk");

    let out = dm.ok([
        "bundle",
        "update",
        "--repo",
        "r",
        "--bundle",
        &b,
        "--destination",
        s(&work),
    ]);
    // The changes printed are what happened to the folder: A = written because the folder
    // lacked it, D = removed because the bundle lacks it, M = rewritten.
    let mut expected: Vec<String> = expected_changes().iter().map(|l| (*l).to_owned()).collect();
    expected.push("D junk.txt".into());
    expected.push("D junkdir/deep/j.txt".into());
    assert_eq!(sorted(out.lines()), sorted(expected), "{out:?}");

    // Exactly B: compared with the source folder and with a fresh download of B. (The mtime of
    // touched.txt, whose content did not change, is checked by
    // `update_restores_the_mtime_of_files_whose_content_did_not_change`.)
    assert_same_tree_but_mtimes_of(&src, &work, Compare::ALL, &["touched.txt"]);
    let fresh = dm.dir("fresh");
    dm.download("r", &b, &fresh);
    assert_same_tree_but_mtimes_of(&fresh, &work, Compare::ALL, &["touched.txt"]);
    assert!(temp_leftovers(&work).is_empty());
    dm.run([
        "bundle",
        "diff",
        "--repo",
        "r",
        "--bundle",
        &b,
        "--destination",
        s(&work),
    ])
    .code(0);

    // Again: nothing to do.
    let out = dm.ok([
        "bundle",
        "update",
        "--repo",
        "r",
        "--bundle",
        &b,
        "--destination",
        s(&work),
    ]);
    assert_eq!(out.stdout, "", "{out:?}");

    // And back to A.
    let out = dm.ok([
        "bundle",
        "update",
        "--repo",
        "r",
        "--bundle",
        &a,
        "--destination",
        s(&work),
    ]);
    assert!(!out.lines().is_empty());
    let fresh_a = dm.dir("fresh-a");
    dm.download("r", &a, &fresh_a);
    assert_same_tree_but_mtimes_of(&fresh_a, &work, Compare::ALL, &["touched.txt"]);

    // Into a folder that does not exist yet: a full download.
    let new_dir = dm.dir("new-dir");
    dm.ok([
        "bundle",
        "update",
        "--repo",
        "r",
        "--bundle",
        &b,
        "--destination",
        s(&new_dir),
    ]);
    assert_same_tree(&fresh, &new_dir, Compare::ALL);
}

#[test]
fn update_tricky_tree_from_scratch_and_back() {
    let dm = Dm::new();
    dm.create_repo("r");
    let src = dm.dir("src");
    build_tricky_tree(&src, &dm.dir("outside.txt"));
    let id = dm.upload("r", &src, "tricky", &[]);
    let work = dm.dir("work");
    write(
        &work.join("hello.txt/not-a-file"),
        "a dir where the bundle has a file",
    );
    write(
        &work.join("empty"),
        "a file where the bundle has an empty dir",
    );
    dm.ok([
        "bundle",
        "update",
        "--repo",
        "r",
        "--bundle",
        &id,
        "--destination",
        s(&work),
    ]);
    assert_same_tree(&src, &work, Compare::ALL);
}

#[test]
fn update_restores_the_mtime_of_files_whose_content_did_not_change() {
    let dm = Dm::new();
    dm.create_repo("r");
    let src = dm.dir("src");
    write(&src.join("same.txt"), "same content");
    write(&src.join("sub/other.txt"), "other");
    set_mtime(&src.join("same.txt"), time(1_000_000_000, 111));
    let id = dm.upload("r", &src, "m", &[]);
    let work = dm.dir("work");
    dm.download("r", &id, &work);
    // Only the mtime differs locally: diff calls the folder identical (content counts)...
    set_mtime(&work.join("same.txt"), time(1_500_000_000, 0));
    dm.run([
        "bundle",
        "diff",
        "--repo",
        "r",
        "--bundle",
        &id,
        "--destination",
        s(&work),
    ])
    .code(0);
    // ...but after `update` the folder must be exactly the bundle, as a download would make it
    // (uploading it again must give the same bundle tree).
    dm.ok([
        "bundle",
        "update",
        "--repo",
        "r",
        "--bundle",
        &id,
        "--destination",
        s(&work),
    ]);
    assert_same_tree(&src, &work, Compare::ALL);
}

#[test]
fn directory_permission_changes_are_differences() {
    // Permission bits count for diff; two bundles whose directories have other modes are not
    // identical (they have different roots and download differently).
    let dm = Dm::new();
    dm.create_repo("r");
    let src = dm.dir("src");
    write(&src.join("full/x.txt"), "x");
    fs::create_dir_all(src.join("empty")).expect("mkdir");
    chmod(&src.join("full"), 0o755);
    chmod(&src.join("empty"), 0o755);
    let a = dm.upload("r", &src, "a", &[]);
    chmod(&src.join("full"), 0o700);
    chmod(&src.join("empty"), 0o700);
    let b = dm.upload("r", &src, "b", &[]);
    assert_ne!(
        dm.bundle_json("r", &a)["root"],
        dm.bundle_json("r", &b)["root"]
    );

    let out = dm.run([
        "bundle",
        "diff",
        "--repo",
        "r",
        "--bundle",
        &a,
        "--with-bundle",
        &b,
    ]);
    assert_eq!(
        out.code, 1,
        "bundles with other directory modes reported identical: {out:?}"
    );
    out.stdout_has("full").stdout_has("empty");
    let out = dm.run([
        "bundle",
        "diff",
        "--repo",
        "r",
        "--bundle",
        &a,
        "--destination",
        s(&src),
    ]);
    assert_eq!(
        out.code, 1,
        "a folder with other directory modes reported identical: {out:?}"
    );
    out.stdout_has("full").stdout_has("empty");
}

/// A repo with one small bundle, and a download of it in `work`.
fn bundle_and_copy(dm: &Dm) -> (String, std::path::PathBuf, std::path::PathBuf) {
    dm.create_repo("r");
    let src = dm.dir("src");
    write(&src.join("a.txt"), "a");
    let id = dm.upload("r", &src, "m", &[]);
    let work = dm.dir("work");
    dm.download("r", &id, &work);
    (id, src, work)
}

#[test]
fn update_removes_a_fifo_the_bundle_does_not_have() {
    // A FIFO cannot be in a bundle; a folder that has one is not the bundle: diff says so and
    // `update` removes it like any other extra path.
    let dm = Dm::new();
    let (id, src, work) = bundle_and_copy(&dm);
    let st = std::process::Command::new("mkfifo")
        .arg(work.join("fifo"))
        .status()
        .expect("mkfifo");
    assert!(st.success());
    let out = dm.run([
        "bundle",
        "update",
        "--repo",
        "r",
        "--bundle",
        &id,
        "--destination",
        s(&work),
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        fs::symlink_metadata(work.join("fifo")).is_err(),
        "update left a FIFO the bundle does not have: {out:?}"
    );
    assert_same_tree(&src, &work, Compare::ALL);
    let st = std::process::Command::new("mkfifo")
        .arg(work.join("fifo"))
        .status()
        .expect("mkfifo");
    assert!(st.success());
    let out = dm.run([
        "bundle",
        "diff",
        "--repo",
        "r",
        "--bundle",
        &id,
        "--destination",
        s(&work),
    ]);
    assert_eq!(
        out.code, 1,
        "a folder with an extra FIFO is not the bundle: {out:?}"
    );
    out.stdout_has("A fifo");
}

#[test]
fn update_removes_a_file_whose_name_is_not_utf8() {
    use std::os::unix::ffi::OsStrExt;
    let dm = Dm::new();
    let (id, src, work) = bundle_and_copy(&dm);
    let bad = work.join(std::ffi::OsStr::from_bytes(b"bad-\xff-name"));
    write(&bad, "x");
    let out = dm.run([
        "bundle",
        "update",
        "--repo",
        "r",
        "--bundle",
        &id,
        "--destination",
        s(&work),
    ]);
    assert!(
        !out.stderr.contains("--skip-on-error"),
        "update suggests a flag it does not have: {out:?}"
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        fs::symlink_metadata(&bad).is_err(),
        "update left a path the bundle does not have"
    );
    assert_same_tree(&src, &work, Compare::ALL);
}
