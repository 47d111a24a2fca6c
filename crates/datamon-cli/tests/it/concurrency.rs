//! Several datamon processes on one store at once.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::{Child, Stdio};

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
        let out = Out::wait(c, format!("bundle upload #{i}")).success();
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

    // Parents: each upload's one parent is the head the branch had when it committed, the
    // previous entry of the branch history (an existing bundle, never itself). Not necessarily
    // an older id: an upload draws its id when it starts and takes its parent when it commits.
    for w in hist.windows(2) {
        let before = w[0]["head"].as_str().expect("head");
        let id = w[1]["head"].as_str().expect("head");
        let j = dm.bundle_json("r", id);
        assert_eq!(
            j["parents"],
            serde_json::json!([before]),
            "the parent of {id} is not the head before it: {j}"
        );
        assert!(all.contains(&before.to_owned()), "{before} does not exist");
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

/// Starts `datamon bundle upload --repo r --path DIR --message M EXTRA` (stdout and stderr
/// piped, for [`Out::wait`]).
fn spawn_upload(dm: &Dm, dir: &Path, message: &str, extra: &[&str]) -> Child {
    dm.command()
        .args(["bundle", "upload", "--repo", "r", "--message", message])
        .args(extra)
        .arg("--path")
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn bundle upload")
}

/// `--json NOUN get --repo r --NOUN NAME --history`: one JSON object per update, oldest first.
#[track_caller]
fn history(dm: &Dm, noun: &str, name: &str) -> Vec<serde_json::Value> {
    dm.ok([
        "--json",
        noun,
        "get",
        "--repo",
        "r",
        &format!("--{noun}"),
        name,
        "--history",
    ])
    .json_lines()
}

#[test]
fn concurrent_label_and_branch_updates_are_all_kept() {
    // Updates of one branch (eight uploads to it) and of one label (eight `label set`s), all
    // started at once: every update is kept in the history, as a chain.
    let dm = Dm::new();
    dm.create_repo("r");
    let src = dm.dir("base");
    let targets: Vec<String> = (0..8)
        .map(|i| {
            write(&src.join("f"), format!("{i}"));
            dm.upload("r", &src, &format!("b{i}"), &["--branch", "base"])
        })
        .collect();
    let folders: Vec<_> = (0..8u64)
        .map(|i| {
            let d = dm.dir(&format!("src{i}"));
            write(&d.join("own.bin"), random_bytes(200 + i, 64 * 1024));
            d
        })
        .collect();
    let mut children: Vec<(String, Child)> = Vec::new();
    for (i, (d, target)) in folders.iter().zip(&targets).enumerate() {
        children.push((
            format!("bundle upload #{i} --branch b"),
            spawn_upload(&dm, d, &format!("upload {i}"), &["--branch", "b"]),
        ));
        let set = dm
            .command()
            .args([
                "label", "set", "--repo", "r", "--label", "l", "--bundle", target,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn label set");
        children.push((format!("label set #{i}"), set));
    }
    let mut uploaded = HashSet::new();
    for (what, c) in children {
        let out = Out::wait(c, what.clone()).success();
        if what.starts_with("bundle upload") {
            uploaded.insert(parse_uploaded(&out));
        }
    }
    assert_eq!(uploaded.len(), 8);

    let branch = history(&dm, "branch", "b");
    let heads: HashSet<String> = branch
        .iter()
        .map(|h| h["head"].as_str().expect("head").to_owned())
        .collect();
    assert_eq!(branch.len(), 8, "branch history lost an update: {branch:?}");
    assert_eq!(heads, uploaded, "the branch history names every upload");
    assert!(branch[0]["previous"].is_null(), "{branch:?}");
    for w in branch.windows(2) {
        assert_eq!(w[1]["previous"], w[0]["head"], "not a chain: {branch:?}");
    }

    let label = history(&dm, "label", "l");
    let set: HashSet<String> = label
        .iter()
        .map(|h| h["bundle"].as_str().expect("bundle").to_owned())
        .collect();
    assert_eq!(label.len(), 8, "label history lost an update: {label:?}");
    assert_eq!(
        set,
        targets.iter().cloned().collect::<HashSet<_>>(),
        "the label history names every bundle set"
    );
    assert!(label[0]["previous"].is_null(), "{label:?}");
    for w in label.windows(2) {
        assert_eq!(w[1]["previous"], w[0]["bundle"], "not a chain: {label:?}");
    }
}

#[test]
fn concurrent_uploads_to_one_branch_are_all_in_the_log() {
    // Sixteen uploads to one new branch, started at once. The branch's log (first parents from
    // its head) must list all sixteen, each with the one committed before it as its parent:
    // the order of the branch history.
    let dm = Dm::new();
    dm.create_repo("r");
    let folders: Vec<_> = (0..16u64)
        .map(|i| {
            let d = dm.dir(&format!("src{i}"));
            write(&d.join("own.bin"), random_bytes(300 + i, 32 * 1024));
            write(&d.join("name.txt"), format!("upload {i}\n"));
            d
        })
        .collect();
    let children: Vec<Child> = folders
        .iter()
        .enumerate()
        .map(|(i, d)| spawn_upload(&dm, d, &format!("upload {i}"), &["--branch", "conc"]))
        .collect();
    let uploaded: HashSet<String> = children
        .into_iter()
        .enumerate()
        .map(|(i, c)| parse_uploaded(&Out::wait(c, format!("bundle upload #{i}")).success()))
        .collect();
    assert_eq!(uploaded.len(), 16);

    let log: Vec<String> = dm
        .ok(["--json", "log", "--repo", "r", "--branch", "conc"])
        .json_lines()
        .iter()
        .map(|e| e["id"].as_str().expect("id").to_owned())
        .collect();
    let listed: HashSet<String> = log.iter().cloned().collect();
    let missing: Vec<&String> = uploaded.difference(&listed).collect();
    assert!(
        log.len() == 16 && missing.is_empty(),
        "`log --branch conc` lists {} bundles of 16; missing: {missing:?}",
        log.len()
    );
    // Newest first: each bundle's parent is the next one listed; the oldest has none.
    for (i, id) in log.iter().enumerate() {
        let parents = dm.bundle_json("r", id)["parents"].clone();
        let want = match log.get(i + 1) {
            Some(older) => serde_json::json!([older]),
            None => serde_json::json!([]),
        };
        assert_eq!(
            parents, want,
            "parents of {id}, number {i} in the log {log:?}"
        );
    }
    // The same order as the branch's own history (oldest first there).
    let mut heads: Vec<String> = history(&dm, "branch", "conc")
        .iter()
        .map(|h| h["head"].as_str().expect("head").to_owned())
        .collect();
    heads.reverse();
    assert_eq!(log, heads, "the log follows the branch history");
}
