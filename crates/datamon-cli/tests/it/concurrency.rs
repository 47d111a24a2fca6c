//! Several datamon processes on one store at once.

use std::collections::{HashMap, HashSet};

use crate::util::{assert_same_tree, parse_uploaded, random_bytes, write, Compare, Dm, Out};

#[test]
fn eight_concurrent_uploads_to_one_branch_and_label() {
    let dm = Dm::new();
    dm.create_repo("r");
    // One earlier bundle on main.
    let seed = dm.dir("seed");
    write(&seed.join("seed.txt"), "seed");
    let first = dm.upload("r", &seed, "seed", &[]);

    // Eight folders: some content of their own, some shared by all (dedup races).
    let shared = random_bytes(5, 700 * 1024);
    let folders: Vec<_> = (0..8u64)
        .map(|i| {
            let d = dm.dir(&format!("src{i}"));
            write(&d.join("shared.bin"), &shared);
            write(
                &d.join("own.bin"),
                random_bytes(100 + i, 200 * 1024 + i as usize),
            );
            write(&d.join(format!("dir{i}/note.txt")), format!("folder {i}\n"));
            d
        })
        .collect();

    let children: Vec<_> = folders
        .iter()
        .enumerate()
        .map(|(i, d)| {
            dm.command()
                .args(["bundle", "upload", "--repo", "r", "--branch", "main"])
                .args([
                    "--label",
                    "latest",
                    "--message",
                    &format!("upload {i}"),
                    "--path",
                ])
                .arg(d)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn")
        })
        .collect();
    let mut id_of: HashMap<String, usize> = HashMap::new();
    for (i, c) in children.into_iter().enumerate() {
        let o = c.wait_with_output().expect("wait");
        let out = Out {
            args: vec![format!("bundle upload #{i}")],
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        };
        let out = out.success();
        id_of.insert(parse_uploaded(&out), i);
    }
    assert_eq!(id_of.len(), 8, "eight distinct bundle ids");

    let ids = dm.bundle_ids("r");
    assert_eq!(ids.len(), 9, "{ids:?}");
    assert_eq!(ids[0], first);
    let all: HashSet<&String> = ids.iter().collect();
    for id in id_of.keys() {
        assert!(all.contains(id), "{id} not listed");
    }

    // The label saw all eight, as a chain.
    let hist = dm
        .ok([
            "--json",
            "label",
            "get",
            "--repo",
            "r",
            "--label",
            "latest",
            "--history",
        ])
        .json_lines();
    assert_eq!(hist.len(), 8, "{hist:?}");
    let labelled: HashSet<&str> = hist
        .iter()
        .map(|h| h["bundle"].as_str().expect("b"))
        .collect();
    assert_eq!(labelled.len(), 8);
    assert!(hist[0]["previous"].is_null());
    for w in hist.windows(2) {
        assert_eq!(
            w[1]["previous"], w[0]["bundle"],
            "label history is not a chain"
        );
    }

    // The branch too, after the earlier bundle.
    let hist = dm
        .ok([
            "--json",
            "branch",
            "get",
            "--repo",
            "r",
            "--branch",
            "main",
            "--history",
        ])
        .json_lines();
    assert_eq!(hist.len(), 9, "{hist:?}");
    assert_eq!(hist[0]["head"], first.as_str());
    for w in hist.windows(2) {
        assert_eq!(
            w[1]["previous"], w[0]["head"],
            "branch history is not a chain"
        );
    }
    let heads: HashSet<&str> = hist
        .iter()
        .map(|h| h["head"].as_str().expect("h"))
        .collect();
    assert_eq!(heads.len(), 9);

    // Parents: none, or a bundle that existed before (never itself, never a later one).
    let created: HashMap<String, String> = ids
        .iter()
        .map(|id| {
            let j = dm.bundle_json("r", id);
            (id.clone(), j["created_at"].as_str().expect("t").to_owned())
        })
        .collect();
    for id in id_of.keys() {
        let j = dm.bundle_json("r", id);
        let parents = j["parents"].as_array().expect("parents");
        assert!(parents.len() <= 1, "{j}");
        for p in parents {
            let p = p.as_str().expect("parent id");
            assert_ne!(p, id, "a bundle is its own parent");
            assert!(
                all.contains(&p.to_owned()),
                "parent {p} of {id} does not exist"
            );
            assert!(p < id.as_str(), "parent {p} of {id} is newer than it");
            assert!(created[p] <= created[id]);
        }
    }

    // Every bundle downloads intact.
    for (id, i) in &id_of {
        let out = dm.dir(&format!("out{i}"));
        dm.download("r", id, &out);
        assert_same_tree(&folders[*i], &out, Compare::ALL);
    }
    dm.ok(["fsck", "--read-data"]).stdout_has("no problems");
}

#[test]
fn concurrent_label_sets_with_expect_only_one_wins() {
    let dm = Dm::new();
    dm.create_repo("r");
    let src = dm.dir("src");
    let ids: Vec<String> = (0..6)
        .map(|i| {
            write(&src.join("f"), format!("{i}"));
            dm.upload("r", &src, &format!("b{i}"), &[])
        })
        .collect();
    dm.ok([
        "label", "set", "--repo", "r", "--label", "l", "--bundle", &ids[0],
    ]);
    let children: Vec<_> = ids[1..]
        .iter()
        .map(|id| {
            dm.command()
                .args([
                    "label", "set", "--repo", "r", "--label", "l", "--bundle", id,
                ])
                .args(["--expect", &ids[0]])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn")
        })
        .collect();
    let mut winners = 0;
    for c in children {
        let o = c.wait_with_output().expect("wait");
        match o.status.code() {
            Some(0) => winners += 1,
            Some(1) => assert!(
                String::from_utf8_lossy(&o.stderr).contains("expected"),
                "{}",
                String::from_utf8_lossy(&o.stderr)
            ),
            other => panic!(
                "label set exited {other:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            ),
        }
    }
    assert_eq!(winners, 1, "compare-and-set let {winners} writers win");
    let hist = dm
        .ok(["label", "get", "--repo", "r", "--label", "l", "--history"])
        .lines();
    assert_eq!(hist.len(), 2, "{hist:?}");
}

#[test]
fn concurrent_repo_creates_only_one_wins() {
    let dm = Dm::new();
    let children: Vec<_> = (0..6)
        .map(|i| {
            dm.command()
                .args([
                    "repo",
                    "create",
                    "--repo",
                    "same",
                    "--description",
                    &format!("d{i}"),
                ])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn")
        })
        .collect();
    let ok = children
        .into_iter()
        .map(|c| c.wait_with_output().expect("wait"))
        .filter(|o| o.status.success())
        .count();
    assert_eq!(ok, 1, "{ok} concurrent creates of one repo succeeded");
    assert_eq!(dm.ok(["repo", "list"]).lines().len(), 1);
}

#[test]
fn fsck_while_uploads_commit_reports_no_false_problems() {
    // fsck on a live store: uploads commit while it runs. Whatever it sees must be consistent:
    // a bundle committed after fsck started is either checked completely or not at all.
    let dm = Dm::new();
    dm.create_repo("r");
    let folders: Vec<_> = (0..12u64)
        .map(|i| {
            let d = dm.dir(&format!("src{i}"));
            for j in 0..30u64 {
                write(&d.join(format!("f{j}")), format!("folder {i} file {j}\n"));
            }
            d
        })
        .collect();
    dm.upload("r", &folders[0], "first", &["--label", "l"]);

    let uploader = {
        let folders = folders.clone();
        let mut cmds: Vec<std::process::Command> = folders[1..]
            .iter()
            .map(|d| {
                let mut c = dm.command();
                c.args(["-q", "bundle", "upload", "--repo", "r", "--message", "m"])
                    .args(["--label", "l", "--path"])
                    .arg(d);
                c
            })
            .collect();
        std::thread::spawn(move || {
            for c in &mut cmds {
                let o = c.output().expect("run upload");
                assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            }
        })
    };
    let mut runs = 0;
    let mut bad = Vec::new();
    while !uploader.is_finished() && runs < 300 {
        runs += 1;
        let out = dm.run(["fsck"]);
        if out.code != 0 {
            bad.push(format!("{out:?}"));
        }
    }
    uploader.join().expect("uploads succeed");
    assert!(runs > 0);
    assert!(
        bad.is_empty(),
        "{} of {runs} fsck runs during uploads reported problems on a sound store:\n{}",
        bad.len(),
        bad.iter().take(3).cloned().collect::<Vec<_>>().join("\n")
    );
    // And afterwards, of course, it is clean.
    dm.ok(["fsck", "--read-data"]).stdout_has("no problems");
    assert_eq!(dm.bundle_ids("r").len(), 12);
}

#[test]
fn concurrent_branch_creates_only_one_wins() {
    let dm = Dm::new();
    dm.create_repo("r");
    let src = dm.dir("src");
    write(&src.join("f"), "f");
    let id = dm.upload("r", &src, "m", &[]);
    let children: Vec<_> = (0..6)
        .map(|_| {
            dm.command()
                .args([
                    "branch", "create", "--repo", "r", "--branch", "b", "--bundle", &id,
                ])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn")
        })
        .collect();
    let ok = children
        .into_iter()
        .map(|c| c.wait_with_output().expect("wait"))
        .filter(|o| o.status.success())
        .count();
    assert_eq!(ok, 1, "{ok} concurrent creates of one branch succeeded");
    let hist = dm
        .ok(["branch", "get", "--repo", "r", "--branch", "b", "--history"])
        .lines();
    assert_eq!(hist.len(), 1, "{hist:?}");
}
