//! `version`, `completions`, `config`, `--json` listings, closed pipes.

use std::io::{BufRead, BufReader};

use predicates::prelude::*;

use crate::util::{write, Dm};

#[test]
fn version_and_help() {
    let dm = Dm::new();
    dm.cmd().arg("version").assert().success().stdout(
        predicate::str::starts_with("datamon ").and(predicate::str::contains("store format")),
    );
    let j = dm.ok(["--json", "version"]).json();
    assert!(j["version"].is_string());
    assert!(j["format"].is_number());
    dm.cmd()
        .arg("--version")
        .assert()
        .success()
        .stdout(predicate::str::contains(env!("CARGO_PKG_VERSION")));
    dm.cmd()
        .arg("--help")
        .assert()
        .success()
        .stdout(predicate::str::contains("bundle").and(predicate::str::contains("label")));
    for noun in ["repo", "bundle", "label", "branch", "context", "fsck"] {
        dm.cmd().args([noun, "--help"]).assert().success();
    }
    // No home is ever needed for these: nothing was written.
    assert!(!dm.home().join("store").exists());
}

#[test]
fn completions() {
    let dm = Dm::new();
    dm.cmd()
        .args(["completions", "bash"])
        .assert()
        .success()
        .stdout(
            predicate::str::contains("_datamon()")
                .and(predicate::str::contains("complete"))
                .and(predicate::str::contains("upload")),
        );
    for shell in ["zsh", "fish"] {
        dm.cmd()
            .args(["completions", shell])
            .assert()
            .success()
            .stdout(predicate::str::is_empty().not());
    }
    dm.cmd()
        .args(["completions", "tcsh-not-a-shell"])
        .assert()
        .failure();
}

#[test]
fn config_author_is_recorded() {
    let dm = Dm::new();
    dm.ok([
        "config",
        "set",
        "--author",
        "Ada Lovelace <ada@example.com>",
    ]);
    let j = dm.ok(["--json", "config", "get"]).json();
    assert_eq!(j["author"], "Ada Lovelace <ada@example.com>");
    dm.create_repo("r");
    let src = dm.dir("src");
    write(&src.join("a"), "a");
    let id = dm.upload("r", &src, "m", &["--label", "l"]);
    assert_eq!(
        dm.bundle_json("r", &id)["author"],
        "Ada Lovelace <ada@example.com>"
    );
    let l = dm
        .ok(["--json", "label", "get", "--repo", "r", "--label", "l"])
        .json();
    assert_eq!(l["author"], "Ada Lovelace <ada@example.com>");
    let r = dm.ok(["--json", "repo", "get", "--repo", "r"]).json();
    assert_eq!(r["created_by"], "Ada Lovelace <ada@example.com>");
}

#[test]
fn json_listings_are_ndjson() {
    let dm = Dm::new();
    for r in ["alpha", "beta", "gamma"] {
        dm.create_repo(r);
    }
    let repos = dm.ok(["--json", "repo", "list"]).json_lines();
    let names: Vec<&str> = repos
        .iter()
        .map(|r| r["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["alpha", "beta", "gamma"]);
    for r in &repos {
        assert_eq!(r["description"], "test repo");
        assert!(r["created_at"].is_string());
    }

    let src = dm.dir("src");
    let mut ids = Vec::new();
    for i in 0..3 {
        write(&src.join("f"), format!("{i}"));
        ids.push(dm.upload(
            "alpha",
            &src,
            &format!("m{i}"),
            &["--label", &format!("l{i}")],
        ));
    }
    let bundles = dm
        .ok(["--json", "bundle", "list", "--repo", "alpha"])
        .json_lines();
    assert_eq!(bundles.len(), 3);
    for (b, id) in bundles.iter().zip(&ids) {
        assert_eq!(b["id"], id.as_str());
        assert_eq!(b["repo"], "alpha");
        for key in [
            "message",
            "author",
            "created_at",
            "parents",
            "root",
            "files",
            "bytes",
            "new_bytes",
        ] {
            assert!(!b[key].is_null(), "bundle JSON lacks {key}: {b}");
        }
    }
    assert_eq!(bundles[2]["message"], "m2");

    let labels = dm
        .ok(["--json", "label", "list", "--repo", "alpha"])
        .json_lines();
    let names: Vec<&str> = labels
        .iter()
        .map(|l| l["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["l0", "l1", "l2"]);
    assert_eq!(labels[1]["bundle"], ids[1].as_str());

    // Empty listings print nothing at all in JSON mode.
    assert_eq!(
        dm.ok(["--json", "bundle", "list", "--repo", "beta"]).stdout,
        ""
    );
    assert_eq!(
        dm.ok(["--json", "label", "list", "--repo", "beta"]).stdout,
        ""
    );
}

#[test]
fn closed_stdout_pipe_is_not_an_error() {
    let dm = Dm::new();
    dm.create_repo("r");
    let src = dm.dir("src");
    for i in 0..3000 {
        write(
            &src.join(format!(
                "d{:02}/file-with-a-longish-name-{i:05}.txt",
                i % 50
            )),
            "x",
        );
    }
    let id = dm.upload("r", &src, "many", &[]);
    let mut child = dm
        .command()
        .args(["bundle", "list", "files", "--repo", "r", "--bundle", &id])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let mut first = String::new();
    BufReader::new(stdout)
        .read_line(&mut first)
        .expect("read a line");
    // The reader is gone now (dropped): the next writes hit a closed pipe.
    assert!(first.starts_with("d00/"), "{first}");
    let o = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(o.status.code(), Some(0), "{stderr}");
}

#[test]
fn logs_written_to_a_pipe_have_no_color_codes() {
    // stderr is a pipe here, not a terminal: no ANSI escape sequences, even without NO_COLOR.
    let dm = Dm::new();
    dm.create_repo("r");
    let src = dm.dir("src");
    write(&src.join("a"), "a");
    let st = std::process::Command::new("mkfifo")
        .arg(src.join("fifo"))
        .status()
        .expect("mkfifo");
    assert!(st.success());
    let o = dm
        .command()
        .env_remove("NO_COLOR")
        .args([
            "bundle",
            "upload",
            "--repo",
            "r",
            "--message",
            "m",
            "--path",
        ])
        .arg(&src)
        .output()
        .expect("run");
    assert!(o.status.success());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("fifo"),
        "the skipped FIFO is logged: {stderr}"
    );
    assert!(
        !stderr.contains('\x1b'),
        "escape codes in logs written to a pipe: {stderr:?}"
    );
}
