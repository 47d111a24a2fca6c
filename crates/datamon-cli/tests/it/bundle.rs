//! `datamon bundle upload | list | get | list files`, dedup and `--files`.

use std::fs;

use crate::util::{
    assert_same_tree, assert_valid_id, build_tricky_tree, copy_tree, listed_paths, parse_uploaded,
    write, write_random, Compare, Dm,
};

fn is_rfc3339_utc(s: &str) -> bool {
    // 2026-01-02T03:04:05Z
    let b = s.as_bytes();
    s.len() == 20
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b'Z'
        && [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18]
            .iter()
            .all(|&i| b[i].is_ascii_digit())
}

#[test]
fn upload_prints_id_and_list_is_oldest_first() {
    let dm = Dm::new();
    dm.create_repo("r");
    let src = dm.dir("src");
    let mut ids = Vec::new();
    for i in 0..4 {
        write(&src.join("f.txt"), format!("version {i}\n"));
        let out = dm.ok([
            "bundle",
            "upload",
            "--repo",
            "r",
            "--path",
            src.to_str().expect("utf-8"),
            "--message",
            &format!("message number {i}, with a comma"),
        ]);
        ids.push(parse_uploaded(&out));
    }
    let lines = dm.ok(["bundle", "list", "--repo", "r"]).lines();
    assert_eq!(lines.len(), 4, "{lines:?}");
    for (i, line) in lines.iter().enumerate() {
        let parts: Vec<&str> = line.splitn(3, " , ").collect();
        assert_eq!(parts.len(), 3, "{line}");
        assert_eq!(
            parts[0], ids[i],
            "bundle list is not oldest first: {lines:?}"
        );
        assert!(is_rfc3339_utc(parts[1]), "bad time in {line}");
        assert_eq!(parts[2], format!("message number {i}, with a comma"));
    }

    // No selector: the latest committed bundle.
    let latest = dm.ok(["bundle", "get", "--repo", "r"]).lines();
    assert_eq!(latest.len(), 1);
    assert!(
        latest[0].starts_with(&format!("{} , ", ids[3])),
        "{latest:?}"
    );
    let first = dm.bundle_json("r", &ids[0]);
    assert_eq!(first["id"], ids[0].as_str());
    assert_eq!(first["message"], "message number 0, with a comma");
    assert_eq!(first["repo"], "r");
    assert_eq!(first["files"], 1);
    assert_eq!(first["bytes"], "version 0\n".len());
    assert_eq!(first["branch"], "main");
    assert_eq!(first["parents"], serde_json::json!([]));
    // Each upload on main has the previous one as parent.
    for i in 1..4 {
        let j = dm.bundle_json("r", &ids[i]);
        assert_eq!(j["parents"], serde_json::json!([ids[i - 1]]), "{j}");
    }
}

#[test]
fn upload_with_label_branch_and_meta() {
    let dm = Dm::new();
    dm.create_repo("r");
    let src = dm.dir("src");
    write(&src.join("a"), "a");
    let id = dm.upload(
        "r",
        &src,
        "m",
        &[
            "--label",
            "prod",
            "--branch",
            "dev",
            "--meta",
            "k=v",
            "--meta",
            "owner=ada=lovelace",
        ],
    );
    let j = dm.bundle_json("r", &id);
    assert_eq!(j["branch"], "dev");
    assert_eq!(j["meta"]["k"], "v");
    assert_eq!(j["meta"]["owner"], "ada=lovelace");
    let by_label = dm
        .ok(["--json", "bundle", "get", "--repo", "r", "--label", "prod"])
        .json();
    assert_eq!(by_label["id"], id.as_str());
    let by_branch = dm
        .ok(["--json", "bundle", "get", "--repo", "r", "--branch", "dev"])
        .json();
    assert_eq!(by_branch["id"], id.as_str());
    // main was not advanced.
    dm.run(["bundle", "get", "--repo", "r", "--branch", "main"])
        .code(2);

    // A malformed --meta is refused before anything is stored.
    dm.run([
        "bundle",
        "upload",
        "--repo",
        "r",
        "--path",
        src.to_str().expect("utf-8"),
        "--message",
        "bad",
        "--meta",
        "novalue",
    ])
    .failure()
    .stderr_has("KEY=VALUE");
    assert_eq!(dm.bundle_ids("r").len(), 1);
}

#[test]
fn quiet_upload_prints_only_the_id() {
    let dm = Dm::new();
    dm.create_repo("r");
    let src = dm.dir("src");
    write(&src.join("a"), "a");
    let out = dm.ok([
        "-q",
        "bundle",
        "upload",
        "--repo",
        "r",
        "--path",
        src.to_str().expect("utf-8"),
        "--message",
        "m",
    ]);
    assert_eq!(out.lines().len(), 1, "{out:?}");
    parse_uploaded(&out);
    assert_eq!(out.stderr, "", "-q must keep stderr empty: {out:?}");

    let out = dm.ok([
        "--json",
        "bundle",
        "upload",
        "--repo",
        "r",
        "--path",
        src.to_str().expect("utf-8"),
        "--message",
        "m",
    ]);
    let j = out.json();
    assert_valid_id(j["id"].as_str().expect("id"));
}

#[test]
fn unchanged_tree_uploads_no_new_data() {
    let dm = Dm::new();
    dm.create_repo("r");
    let src = dm.dir("src");
    build_tricky_tree(&src, &dm.dir("outside.txt"));
    let a = dm.upload("r", &src, "first", &[]);
    let b = dm.upload("r", &src, "second", &[]);
    assert_ne!(a, b);
    let files_a = dm.list_files("r", &a);
    let files_b = dm.list_files("r", &b);
    assert!(!files_a.is_empty());
    assert_eq!(files_a, files_b);
    let json_a = dm.ok([
        "--json", "bundle", "list", "files", "--repo", "r", "--bundle", &a,
    ]);
    let json_b = dm.ok([
        "--json", "bundle", "list", "files", "--repo", "r", "--bundle", &b,
    ]);
    assert_eq!(json_a.json_lines(), json_b.json_lines());

    let d = dm.run([
        "bundle",
        "diff",
        "--repo",
        "r",
        "--bundle",
        &a,
        "--with-bundle",
        &b,
    ]);
    let d = d.code(0);
    assert_eq!(d.stdout, "", "{d:?}");

    let ja = dm.bundle_json("r", &a);
    let jb = dm.bundle_json("r", &b);
    assert!(
        ja["new_bytes"].as_u64().expect("new_bytes") > 5 * 1024 * 1024,
        "{ja}"
    );
    assert_eq!(
        jb["new_bytes"], 0,
        "an unchanged re-upload stored new data: {jb}"
    );
    assert_eq!(jb["root"], ja["root"]);
    assert_eq!(jb["bytes"], ja["bytes"]);
    assert_eq!(jb["files"], ja["files"]);

    // The same content from another folder (no stat cache for it) is deduplicated too.
    let copy = dm.dir("copy");
    copy_tree(&src, &copy);
    let c = dm.upload("r", &copy, "copy", &[]);
    let jc = dm.bundle_json("r", &c);
    assert_eq!(
        jc["new_bytes"], 0,
        "a copy of an uploaded tree stored new data: {jc}"
    );
    assert_eq!(jc["root"], ja["root"]);
}

#[test]
fn appending_to_a_big_file_stores_little() {
    let dm = Dm::new();
    dm.create_repo("r");
    let src = dm.dir("src");
    let big = src.join("big.bin");
    let size: u64 = 12 * 1024 * 1024;
    write_random(&big, 42, size);
    let a = dm.upload("r", &src, "v1", &[]);
    let ja = dm.bundle_json("r", &a);
    assert!(ja["new_bytes"].as_u64().expect("new_bytes") >= size, "{ja}");

    // Append 100 KiB.
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(&big)
        .expect("open");
    std::io::Write::write_all(&mut f, &crate::util::random_bytes(7, 100 * 1024)).expect("append");
    drop(f);
    let b = dm.upload("r", &src, "v2", &[]);
    let jb = dm.bundle_json("r", &b);
    let new = jb["new_bytes"].as_u64().expect("new_bytes");
    assert_eq!(jb["bytes"], size + 100 * 1024);
    assert!(
        new < 2 * 1024 * 1024,
        "appending 100 KiB to a 12 MiB file stored {new} new bytes: {jb}"
    );
    assert!(new >= 100 * 1024, "the appended bytes must be new: {jb}");

    // And it downloads to exactly the new content.
    let out = dm.dir("out");
    dm.download("r", &b, &out);
    assert_same_tree(&src, &out, Compare::ALL);
}

#[test]
fn files_list_uploads_only_listed_paths() {
    let dm = Dm::new();
    dm.create_repo("r");
    let src = dm.dir("src");
    write(&src.join("keep.txt"), "k");
    write(&src.join("skip.txt"), "s");
    write(&src.join("dir/a.txt"), "a");
    write(&src.join("dir/b.txt"), "b");
    write(&src.join("whole/x/y.txt"), "y");
    write(&src.join("whole/z.txt"), "z");
    write(&src.join("other/o.txt"), "o");
    let list = dm.dir("list.txt");
    write(&list, "keep.txt\n./dir/a.txt\n\n  whole/  \n");
    let id = dm.upload(
        "r",
        &src,
        "subset",
        &["--files", list.to_str().expect("utf-8")],
    );
    assert_eq!(
        listed_paths(&dm.list_files("r", &id)),
        ["dir/a.txt", "keep.txt", "whole/x/y.txt", "whole/z.txt"]
    );

    // The list can come from stdin.
    let out = dm
        .cmd()
        .args([
            "bundle",
            "upload",
            "--repo",
            "r",
            "--message",
            "stdin",
            "--files",
            "-",
        ])
        .arg("--path")
        .arg(&src)
        .write_stdin("other/o.txt\n")
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let id2 = stdout
        .lines()
        .last()
        .and_then(|l| l.strip_prefix("Uploaded bundle id:"))
        .unwrap_or_else(|| panic!("no id: {stdout}"))
        .to_owned();
    assert_eq!(listed_paths(&dm.list_files("r", &id2)), ["other/o.txt"]);

    // Paths escaping --path are refused.
    write(&list, "../etc/passwd\n");
    dm.run([
        "bundle",
        "upload",
        "--repo",
        "r",
        "--message",
        "bad",
        "--path",
        src.to_str().expect("utf-8"),
        "--files",
        list.to_str().expect("utf-8"),
    ])
    .failure()
    .stderr_has("..");
    assert_eq!(dm.bundle_ids("r").len(), 2);
}

#[test]
fn empty_folder_is_a_valid_bundle() {
    let dm = Dm::new();
    dm.create_repo("r");
    let src = dm.dir("src");
    fs::create_dir_all(&src).expect("mkdir");
    let id = dm.upload("r", &src, "empty", &[]);
    assert_eq!(dm.list_files("r", &id), Vec::<String>::new());
    let j = dm.bundle_json("r", &id);
    assert_eq!(j["files"], 0);
    assert_eq!(j["bytes"], 0);
    let out = dm.dir("out");
    dm.download("r", &id, &out);
    assert!(out.is_dir());
    assert_eq!(fs::read_dir(&out).expect("read").count(), 0);
}

#[test]
fn list_files_human_and_json() {
    let dm = Dm::new();
    dm.create_repo("r");
    let src = dm.dir("src");
    write(&src.join("b/two.txt"), "22");
    write(&src.join("a.txt"), "1");
    write(&src.join("zero"), "");
    crate::util::chmod(&src.join("a.txt"), 0o640);
    crate::util::symlink("a.txt", &src.join("link"));
    fs::create_dir_all(src.join("emptydir")).expect("mkdir");
    crate::util::set_mtime(&src.join("a.txt"), crate::util::time(1_500_000_000, 5));
    let id = dm.upload("r", &src, "m", &[]);

    let lines = dm.list_files("r", &id);
    assert_eq!(listed_paths(&lines), ["a.txt", "b/two.txt", "link", "zero"]);
    for l in &lines {
        let parts: Vec<&str> = l.split(" , ").collect();
        assert_eq!(parts.len(), 3, "{l}");
        match parts[0] {
            "a.txt" => assert_eq!(parts[1], "1"),
            "b/two.txt" => assert_eq!(parts[1], "2"),
            "link" => assert_eq!(parts[2], "-"),
            "zero" => assert_eq!(parts[1], "0"),
            _ => unreachable!(),
        }
        if parts[0] != "link" {
            assert!(
                parts[2].len() == 64 && parts[2].bytes().all(|c| c.is_ascii_hexdigit()),
                "{l}"
            );
        }
    }

    let json = dm
        .ok([
            "--json", "bundle", "list", "files", "--repo", "r", "--bundle", &id,
        ])
        .json_lines();
    assert_eq!(json.len(), 4);
    let a = &json[0];
    assert_eq!(a["path"], "a.txt");
    assert_eq!(a["type"], "file");
    assert_eq!(a["size"], 1);
    assert_eq!(a["mode"], "0640");
    assert_eq!(a["mtime"], "2017-07-14T02:40:00Z");
    assert!(a["hash"].is_string());
    let link = &json[2];
    assert_eq!(link["path"], "link");
    assert_eq!(link["type"], "symlink");
    assert!(link["hash"].is_null());
    assert_eq!(link["size"], "a.txt".len());
    // The same file content gives the same hash in both forms.
    let human_hash = lines[0].split(" , ").nth(2).expect("hash");
    assert_eq!(a["hash"], human_hash);
}
