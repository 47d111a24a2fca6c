//! `datamon diamond`: 16 split writers as concurrent processes, concurrent commits, a killed
//! split writer, cancel.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::util::{write, write_random, Dm, Out};

fn init(dm: &Dm) -> String {
    let out = dm.ok(["--json", "diamond", "initialize", "--repo", "r"]);
    let id = out.json()["id"].as_str().expect("an id").to_owned();
    crate::util::assert_valid_id(&id);
    id
}

fn spawn_split(dm: &Dm, diamond: &str, dir: &std::path::Path) -> Child {
    dm.command()
        .args([
            "--json",
            "diamond",
            "split",
            "add",
            "--repo",
            "r",
            "--diamond",
            diamond,
            "--path",
        ])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn split add")
}

fn spawn_commit(dm: &Dm, diamond: &str, policy: &str) -> Child {
    dm.command()
        .args([
            "--json",
            "diamond",
            "commit",
            "--repo",
            "r",
            "--diamond",
            diamond,
            "--message",
            "merged",
            "--conflicts",
            policy,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn commit")
}

#[test]
fn diamond_sixteen_split_processes_then_concurrent_commits() {
    let dm = Dm::new();
    dm.create_repo("r");
    let d = init(&dm);
    let children: Vec<_> = (0..16)
        .map(|i| {
            let dir = dm.dir(&format!("s{i}"));
            for j in 0..10 {
                write(&dir.join(format!("part{i}/f{j}")), format!("{i}/{j}"));
            }
            write(&dir.join("shared.txt"), format!("from split {i}"));
            spawn_split(&dm, &d, &dir)
        })
        .collect();
    let mut split_ids = Vec::new();
    for c in children {
        let out = Out::wait(c, "split add").success();
        split_ids.push(out.json()["id"].as_str().expect("split id").to_owned());
    }
    let info = dm
        .ok(["--json", "diamond", "get", "--repo", "r", "--diamond", &d])
        .json();
    assert_eq!(info["state"], "open");
    assert_eq!(info["splits"].as_array().expect("splits").len(), 16);

    // Fail (the default): nothing committed, the conflict named, advice given.
    dm.run([
        "diamond",
        "commit",
        "--repo",
        "r",
        "--diamond",
        &d,
        "-m",
        "x",
    ])
    .failure()
    .stderr_has("shared.txt")
    .stderr_has("--conflicts latest");
    assert!(dm.bundle_ids("r").is_empty());

    // Four committers at once: one bundle, the others told its id.
    let commits: Vec<_> = (0..4).map(|_| spawn_commit(&dm, &d, "keep-all")).collect();
    let outs: Vec<Out> = commits
        .into_iter()
        .map(|c| Out::wait(c, "diamond commit"))
        .collect();
    let winners: Vec<&Out> = outs.iter().filter(|o| o.code == 0).collect();
    assert_eq!(winners.len(), 1, "exactly one commit wins");
    let v = winners[0].json();
    let bundle = v["bundle"]["id"].as_str().expect("bundle id").to_owned();
    assert_eq!(v["splits"], 16);
    assert_eq!(v["conflicts"].as_array().expect("conflicts").len(), 1);
    for o in outs.iter().filter(|o| o.code != 0) {
        assert!(
            o.stderr
                .contains(&format!("already committed as bundle {bundle}")),
            "{}",
            o.stderr
        );
    }
    assert_eq!(dm.bundle_ids("r"), std::slice::from_ref(&bundle));
    let files = dm.list_files("r", &bundle);
    let conflicts: Vec<_> = files
        .iter()
        .filter(|l| l.starts_with(".conflicts/"))
        .collect();
    assert_eq!(conflicts.len(), 16, "{files:?}");
    for s in &split_ids {
        assert!(
            files
                .iter()
                .any(|l| l.starts_with(&format!(".conflicts/{s}/shared.txt"))),
            "{s}: {files:?}"
        );
    }
    assert_eq!(files.len(), 16 * 10 + 1 + 16);
    let out = dm.path("out");
    dm.download("r", &bundle, &out);
    assert_eq!(
        std::fs::read_to_string(out.join("part3/f7")).expect("read"),
        "3/7"
    );

    let info = dm
        .ok(["--json", "diamond", "get", "--repo", "r", "--diamond", &d])
        .json();
    assert_eq!(info["state"], "committed");
    assert_eq!(info["bundle"], bundle.as_str());
    let listed = dm
        .ok(["--json", "diamond", "list", "--repo", "r"])
        .json_lines();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], d.as_str());

    // A committed diamond accepts no more splits.
    let late = dm.dir("late");
    write(&late.join("late.txt"), "late");
    dm.run([
        "diamond",
        "split",
        "add",
        "--repo",
        "r",
        "--diamond",
        &d,
        "--path",
        late.to_str().expect("utf-8"),
    ])
    .failure()
    .stderr_has("committed as bundle");
}

#[test]
fn diamond_killed_split_writer_never_appears() {
    let dm = Dm::new();
    dm.create_repo("r");
    let d = init(&dm);
    let small = dm.dir("small");
    write(&small.join("kept.txt"), "kept");
    Out::wait(spawn_split(&dm, &d, &small), "split add").success();

    // A large split, killed while it uploads (once it has stored some packs).
    let big = dm.dir("big");
    for i in 0..64 {
        write_random(&big.join(format!("f{i:03}")), i, 2 << 20);
    }
    let packs_before = dm.pack_files().len();
    let mut child = spawn_split(&dm, &d, &big);
    let started = Instant::now();
    loop {
        assert!(
            child.try_wait().expect("try_wait").is_none(),
            "the split finished before it could be killed"
        );
        if dm.pack_files().len() > packs_before + 1 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no packs stored"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().expect("kill");
    child.wait().expect("wait");

    let info = dm
        .ok(["--json", "diamond", "get", "--repo", "r", "--diamond", &d])
        .json();
    assert_eq!(
        info["splits"].as_array().expect("splits").len(),
        1,
        "{info}"
    );
    let out = dm
        .ok([
            "--json",
            "diamond",
            "commit",
            "--repo",
            "r",
            "--diamond",
            &d,
            "-m",
            "m",
        ])
        .json();
    let bundle = out["bundle"]["id"].as_str().expect("id").to_owned();
    assert_eq!(out["splits"], 1);
    let files = dm.list_files("r", &bundle);
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].starts_with("kept.txt"), "{files:?}");
}

#[test]
fn diamond_cancel_and_not_found() {
    let dm = Dm::new();
    dm.create_repo("r");
    let d = init(&dm);
    dm.ok(["diamond", "cancel", "--repo", "r", "--diamond", &d])
        .stdout_has("Cancelled");
    let dir = dm.dir("a");
    write(&dir.join("a"), "a");
    Out::wait(spawn_split(&dm, &d, &dir), "split add")
        .failure()
        .stderr_has("cancelled");
    dm.run([
        "diamond",
        "commit",
        "--repo",
        "r",
        "--diamond",
        &d,
        "-m",
        "m",
    ])
    .failure()
    .stderr_has("cancelled");
    let info = dm
        .ok(["--json", "diamond", "get", "--repo", "r", "--diamond", &d])
        .json();
    assert_eq!(info["state"], "cancelled");
    assert!(info["splits"].as_array().expect("splits").is_empty());
    // Unknown diamond: exit 2, as other get commands.
    dm.run([
        "diamond",
        "get",
        "--repo",
        "r",
        "--diamond",
        "2B3zPDO1Cb6XpN8Q1j5p7jfuBtQ",
    ])
    .code(2)
    .stderr_has("not found");
}
