//! `datamon bundle download` (whole bundles, filters, single files, --force).

use std::fs;
use std::path::Path;

use crate::util::{
    assert_same_tree, build_tricky_tree, listed_paths, snapshot, temp_leftovers, write, Compare,
    Dm, Kind,
};

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn tricky_tree_round_trip() {
    let dm = Dm::new();
    dm.create_repo("r");
    let src = dm.dir("src");
    let outside = dm.dir("outside/target.txt");
    build_tricky_tree(&src, &outside);
    let id = dm.upload("r", &src, "tricky", &[]);

    // The listing: symlinks are links (never followed), the outside file is not in the bundle.
    let json = dm
        .ok([
            "--json", "bundle", "list", "files", "--repo", "r", "--bundle", &id,
        ])
        .json_lines();
    let by_path = |p: &str| {
        json.iter()
            .find(|j| j["path"] == p)
            .unwrap_or_else(|| panic!("{p} not listed: {json:?}"))
            .clone()
    };
    let abs = by_path("abs-outside");
    assert_eq!(abs["type"], "symlink");
    assert_eq!(abs["size"], s(&outside).len());
    assert_eq!(by_path("link-to-dir")["type"], "symlink");
    assert_eq!(by_path("dangling")["type"], "symlink");
    assert!(
        !json.iter().any(|j| j["path"]
            .as_str()
            .is_some_and(|p| p.starts_with("link-to-dir/"))),
        "a symlink to a directory was followed"
    );
    assert_eq!(by_path("modes/secret.txt")["mode"], "0600");
    assert_eq!(by_path("modes/run.sh")["mode"], "0755");
    assert_eq!(by_path("modes/readonly.txt")["mode"], "0444");
    assert_eq!(by_path("zero")["size"], 0);
    assert_eq!(by_path("big/random.bin")["size"], 5 * 1024 * 1024 + 12345);
    assert_eq!(
        by_path("modes/hardlink.txt")["hash"],
        by_path("hello.txt")["hash"],
        "hard links have the same content"
    );
    assert_eq!(by_path("loop")["type"], "symlink");
    assert_eq!(by_path("modes/setuid")["mode"], "4755");
    assert_eq!(by_path("odd names/new\nline.txt")["type"], "file");
    assert_eq!(
        by_path("times/pre-1970.txt")["mtime"],
        "1960-01-01T23:59:59Z"
    );
    assert_eq!(
        by_path("times/year-2200.txt")["mtime"],
        "2200-01-01T00:00:00Z"
    );
    let j = dm.bundle_json("r", &id);
    assert_eq!(j["symlinks"], 6);

    // Download and compare everything: bytes, kinds, modes, mtimes (to the ns), symlink targets,
    // empty directories, the read-only directory.
    let out = dm.dir("out");
    dm.download("r", &id, &out);
    assert_same_tree(&src, &out, Compare::ALL);
    let snap = snapshot(&out);
    assert_eq!(snap["locked"].mode, 0o555);
    assert_eq!(snap["sticky"].mode, 0o1777);
    assert_eq!(snap["times/pre-1970.txt"].mtime_s, -315_532_801);
    assert_eq!(snap["times/pre-1970.txt"].mtime_ns, 750_000_000);
    assert_eq!(snap["empty"].kind, Kind::Dir);
    assert_eq!(
        snap["abs-outside"].kind,
        Kind::Symlink {
            target: s(&outside).to_owned()
        }
    );
    assert!(temp_leftovers(&out).is_empty());

    // Selecting by label and branch gives the same result.
    dm.ok([
        "label", "set", "--repo", "r", "--label", "l", "--bundle", &id,
    ]);
    let out2 = dm.dir("out2");
    dm.ok([
        "bundle",
        "download",
        "--repo",
        "r",
        "--label",
        "l",
        "--destination",
        s(&out2),
    ]);
    assert_same_tree(&src, &out2, Compare::ALL);
    let out3 = dm.dir("out3");
    dm.ok([
        "bundle",
        "download",
        "--repo",
        "r",
        "--branch",
        "main",
        "--destination",
        s(&out3),
    ]);
    assert_same_tree(&src, &out3, Compare::ALL);
}

#[test]
fn download_with_low_concurrency_and_json_report() {
    let dm = Dm::new();
    dm.create_repo("r");
    let src = dm.dir("src");
    for i in 0..40 {
        write(
            &src.join(format!("d{}/f{i}.txt", i % 4)),
            format!("file {i}\n"),
        );
    }
    crate::util::write_random(&src.join("big.bin"), 9, 3 * 1024 * 1024);
    let id = dm.upload("r", &src, "m", &["--concurrency", "1"]);
    let out = dm.dir("out");
    let j = dm
        .ok([
            "--json",
            "--concurrency",
            "1",
            "bundle",
            "download",
            "--repo",
            "r",
            "--bundle",
            &id,
            "--destination",
            s(&out),
        ])
        .json();
    assert_eq!(j["bundle"], id.as_str());
    assert_eq!(j["files"], 41);
    assert_eq!(j["bytes"], dm.bundle_json("r", &id)["bytes"]);
    assert_same_tree(&src, &out, Compare::ALL);
}

#[test]
fn name_filter_restores_only_matching_paths() {
    let dm = Dm::new();
    dm.create_repo("r");
    let src = dm.dir("src");
    write(&src.join("a.csv"), "a");
    write(&src.join("b.txt"), "b");
    write(&src.join("sub/c.csv"), "c");
    write(&src.join("sub/d.json"), "d");
    fs::create_dir_all(src.join("emptydir")).expect("mkdir");
    let id = dm.upload("r", &src, "m", &[]);

    let out = dm.dir("out");
    dm.ok([
        "bundle",
        "download",
        "--repo",
        "r",
        "--bundle",
        &id,
        "--destination",
        s(&out),
        "--name-filter",
        r"\.csv$",
    ]);
    let files: Vec<String> = snapshot(&out)
        .into_iter()
        .filter(|(_, m)| m.kind != Kind::Dir)
        .map(|(p, _)| p)
        .collect();
    assert_eq!(files, ["a.csv", "sub/c.csv"]);
    assert_eq!(fs::read(out.join("sub/c.csv")).expect("read"), b"c");

    // An invalid regular expression is refused with a clear message, before writing anything.
    let out2 = dm.dir("out2");
    dm.run([
        "bundle",
        "download",
        "--repo",
        "r",
        "--bundle",
        &id,
        "--destination",
        s(&out2),
        "--name-filter",
        "(unclosed",
    ])
    .failure()
    .stderr_has("--name-filter");
    assert!(!out2.exists() || fs::read_dir(&out2).expect("read").count() == 0);
}

#[test]
fn non_empty_destination_is_refused_and_untouched_unless_force() {
    let dm = Dm::new();
    dm.create_repo("r");
    let src = dm.dir("src");
    write(&src.join("a.txt"), "new a");
    write(&src.join("sub/b.txt"), "new b");
    let id = dm.upload("r", &src, "m", &[]);

    let dest = dm.dir("dest");
    write(&dest.join("a.txt"), "old a");
    write(&dest.join("mine.txt"), "keep me");
    let before = snapshot(&dest);
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
    .stderr_has("not empty")
    .stderr_has("--force");
    assert_eq!(
        snapshot(&dest),
        before,
        "a refused download changed the destination"
    );
    assert_eq!(fs::read(dest.join("a.txt")).expect("read"), b"old a");

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
    assert_eq!(fs::read(dest.join("a.txt")).expect("read"), b"new a");
    assert_eq!(fs::read(dest.join("sub/b.txt")).expect("read"), b"new b");
    // --force replaces the bundle's files and leaves the others.
    assert_eq!(fs::read(dest.join("mine.txt")).expect("read"), b"keep me");
    assert!(temp_leftovers(&dest).is_empty());

    // A destination that is a file is refused.
    let file = dm.dir("a-file");
    write(&file, "x");
    dm.run([
        "bundle",
        "download",
        "--repo",
        "r",
        "--bundle",
        &id,
        "--destination",
        s(&file),
    ])
    .failure()
    .stderr_has("a-file");
    assert_eq!(fs::read(&file).expect("read"), b"x");
}

#[test]
fn force_replaces_a_directory_where_the_bundle_has_a_file() {
    let dm = Dm::new();
    dm.create_repo("r");
    let src = dm.dir("src");
    write(&src.join("thing"), "I am a file");
    crate::util::symlink("thing", &src.join("link"));
    let id = dm.upload("r", &src, "m", &[]);
    let dest = dm.dir("dest");
    write(&dest.join("thing/inner.txt"), "I was a dir");
    write(&dest.join("link"), "I was a file");
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
    assert_same_tree(&src, &dest, Compare::ALL);
}

#[test]
fn download_file_writes_only_that_file() {
    let dm = Dm::new();
    dm.create_repo("r");
    let src = dm.dir("src");
    write(&src.join("top.txt"), "top");
    write(&src.join("sub/deeper/wanted.txt"), "wanted");
    write(&src.join("sub/deeper/other.txt"), "other");
    write(&src.join("sub/sibling.txt"), "sibling");
    crate::util::chmod(&src.join("sub/deeper/wanted.txt"), 0o600);
    let id = dm.upload("r", &src, "m", &[]);

    let dest = dm.dir("dest");
    dm.ok([
        "bundle",
        "download",
        "file",
        "--file",
        "sub/deeper/wanted.txt",
        "--repo",
        "r",
        "--bundle",
        &id,
        "--destination",
        s(&dest),
    ]);
    let files: Vec<String> = snapshot(&dest)
        .into_iter()
        .filter(|(_, m)| m.kind != Kind::Dir)
        .map(|(p, _)| p)
        .collect();
    assert_eq!(files, ["sub/deeper/wanted.txt"]);
    assert_eq!(
        fs::read(dest.join("sub/deeper/wanted.txt")).expect("read"),
        b"wanted"
    );
    assert_eq!(snapshot(&dest)["sub/deeper/wanted.txt"].mode, 0o600);
    assert_eq!(
        snapshot(&dest)["sub/deeper/wanted.txt"].mtime_ns,
        snapshot(&src)["sub/deeper/wanted.txt"].mtime_ns
    );

    // Again without --force: refused, file untouched.
    write(&dest.join("sub/deeper/wanted.txt"), "locally changed");
    dm.run([
        "bundle",
        "download",
        "file",
        "--file",
        "sub/deeper/wanted.txt",
        "--repo",
        "r",
        "--bundle",
        &id,
        "--destination",
        s(&dest),
    ])
    .failure()
    .stderr_has("already exists");
    assert_eq!(
        fs::read(dest.join("sub/deeper/wanted.txt")).expect("read"),
        b"locally changed"
    );
    // With --force: overwritten.
    dm.ok([
        "bundle",
        "download",
        "file",
        "--file",
        "sub/deeper/wanted.txt",
        "--repo",
        "r",
        "--bundle",
        &id,
        "--destination",
        s(&dest),
        "--force",
    ]);
    assert_eq!(
        fs::read(dest.join("sub/deeper/wanted.txt")).expect("read"),
        b"wanted"
    );

    // A directory path downloads that directory.
    let dest2 = dm.dir("dest2");
    dm.ok([
        "bundle",
        "download",
        "file",
        "--file",
        "sub/deeper",
        "--repo",
        "r",
        "--bundle",
        &id,
        "--destination",
        s(&dest2),
    ]);
    let files: Vec<String> = snapshot(&dest2)
        .into_iter()
        .filter(|(_, m)| m.kind != Kind::Dir)
        .map(|(p, _)| p)
        .collect();
    assert_eq!(files, ["sub/deeper/other.txt", "sub/deeper/wanted.txt"]);

    // A path that is not in the bundle: exit 2, nothing written.
    let dest3 = dm.dir("dest3");
    dm.run([
        "bundle",
        "download",
        "file",
        "--file",
        "sub/nope.txt",
        "--repo",
        "r",
        "--bundle",
        &id,
        "--destination",
        s(&dest3),
    ])
    .code(2)
    .stderr_has("sub/nope.txt")
    .stderr_has("not in bundle");
    assert!(!dest3.join("sub/nope.txt").exists());
    // A path through a file, or escaping the bundle, is not in it either.
    for bad in ["top.txt/x", "../top.txt", "sub/../../top.txt"] {
        dm.run([
            "bundle",
            "download",
            "file",
            "--file",
            bad,
            "--repo",
            "r",
            "--bundle",
            &id,
            "--destination",
            s(&dest3),
        ])
        .code(2);
    }
    assert!(
        !dm.scratch.join("work/top.txt").exists(),
        "wrote outside --destination"
    );
    assert_eq!(listed_paths(&dm.list_files("r", &id)).len(), 4);
}

#[test]
fn longest_file_names_round_trip() {
    // 255 bytes is the longest name Linux file systems allow; such names must upload and
    // download like any other (including with multi-byte characters).
    let dm = Dm::new();
    dm.create_repo("r");
    let src = dm.dir("src");
    let ascii = "n".repeat(255);
    let unicode = "é".repeat(127); // 254 bytes
    write(&src.join(&ascii), "longest ascii name\n");
    write(&src.join("sub").join(&unicode), "longest unicode name\n");
    crate::util::symlink("target", &src.join("l".repeat(255)));
    let id = dm.upload("r", &src, "long names", &[]);
    assert_eq!(dm.list_files("r", &id).len(), 3);

    let out = dm.dir("out");
    dm.download("r", &id, &out);
    assert_same_tree(&src, &out, Compare::ALL);

    let one = dm.dir("one");
    dm.ok([
        "bundle",
        "download",
        "file",
        "--file",
        &ascii,
        "--repo",
        "r",
        "--bundle",
        &id,
        "--destination",
        s(&one),
    ]);
    assert_eq!(
        fs::read(one.join(&ascii)).expect("read"),
        b"longest ascii name\n"
    );

    let upd = dm.dir("upd");
    dm.ok([
        "bundle",
        "update",
        "--repo",
        "r",
        "--bundle",
        &id,
        "--destination",
        s(&upd),
    ]);
    assert_same_tree(&src, &upd, Compare::ALL);
}

#[test]
fn many_small_files_round_trip() {
    let dm = Dm::new();
    dm.create_repo("r");
    let src = dm.dir("src");
    for i in 0..2000u64 {
        let p = src.join(format!("d{:02}/e{:02}/f{i:05}.txt", i % 17, i % 5));
        if i % 7 == 0 {
            crate::util::write_random(&p, i, 1000 + i * 13);
        } else {
            write(&p, format!("small file number {i}\n"));
        }
    }
    let id = dm.upload("r", &src, "many", &["--concurrency", "64"]);
    assert_eq!(dm.bundle_json("r", &id)["files"], 2000);
    let out = dm.dir("out");
    dm.ok([
        "--concurrency",
        "64",
        "bundle",
        "download",
        "--repo",
        "r",
        "--bundle",
        &id,
        "--destination",
        s(&out),
    ]);
    assert_same_tree(&src, &out, Compare::ALL);
}

#[test]
fn relative_paths_are_resolved_against_the_working_directory() {
    let dm = Dm::new();
    dm.create_repo("r");
    let work = dm.dir("w");
    write(&work.join("data/a.txt"), "a");
    write(&work.join("data/sub/b.txt"), "b");
    let out = dm
        .cmd()
        .current_dir(&work)
        .args([
            "bundle",
            "upload",
            "--repo",
            "r",
            "--path",
            "data/",
            "--message",
            "rel",
        ])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = dm.bundle_ids("r").pop().expect("one bundle");
    assert_eq!(
        crate::util::listed_paths(&dm.list_files("r", &id)),
        ["a.txt", "sub/b.txt"]
    );
    let out = dm
        .cmd()
        .current_dir(&work)
        .args([
            "bundle",
            "download",
            "--repo",
            "r",
            "--bundle",
            &id,
            "--destination",
            "./restored",
        ])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_same_tree(&work.join("data"), &work.join("restored"), Compare::ALL);
    // A relative --home works too.
    let out = dm
        .cmd()
        .current_dir(&work)
        .args(["--home", "relhome", "repo", "create", "--repo", "x"])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(work.join("relhome/store/repos/x").is_dir());
}

#[test]
fn force_download_never_writes_through_a_symlink_in_the_destination() {
    // The destination has `sub -> <outside dir>` where the bundle has a directory `sub`. The
    // unfiltered download replaces the link with a real directory; filtered and single-file
    // downloads must not write the bundle's files into the outside directory either.
    let dm = Dm::new();
    dm.create_repo("r");
    let src = dm.dir("src");
    write(&src.join("sub/x.csv"), "x");
    let id = dm.upload("r", &src, "m", &[]);
    let outside = dm.dir("outside");
    fs::create_dir_all(&outside).expect("mkdir");

    let variants: [(&str, Vec<&str>); 3] = [
        ("plain", vec!["bundle", "download", "--force"]),
        (
            "filtered",
            vec!["bundle", "download", "--force", "--name-filter", "csv"],
        ),
        (
            "file",
            vec!["bundle", "download", "file", "--file", "sub/x.csv"],
        ),
    ];
    let mut wrote_outside = Vec::new();
    for (name, args) in variants {
        let dest = dm.dir(&format!("dest-{name}"));
        fs::create_dir_all(&dest).expect("mkdir");
        crate::util::symlink(s(&outside), &dest.join("sub"));
        let mut a: Vec<&str> = args.clone();
        a.extend(["--repo", "r", "--bundle", &id, "--destination", s(&dest)]);
        let out = dm.run(&a);
        if outside.join("x.csv").exists() {
            wrote_outside.push(format!("{name}: {out:?}"));
            fs::remove_file(outside.join("x.csv")).expect("rm");
        }
    }
    assert!(
        wrote_outside.is_empty(),
        "downloads wrote outside --destination through a symlink:\n{}",
        wrote_outside.join("\n")
    );
}
