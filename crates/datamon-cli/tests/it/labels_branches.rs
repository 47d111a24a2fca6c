//! `datamon label ...` and `datamon branch ...`.

use crate::util::{write, Dm};

/// Uploads `n` small bundles to `repo` on the default branch; returns their ids.
fn bundles(dm: &Dm, repo: &str, n: usize) -> Vec<String> {
    let src = dm.dir(&format!("src-{repo}"));
    (0..n)
        .map(|i| {
            write(&src.join("f.txt"), format!("content {i}"));
            dm.upload(repo, &src, &format!("b{i}"), &[])
        })
        .collect()
}

#[test]
fn labels_set_get_history_list() {
    let dm = Dm::new();
    dm.create_repo("r");
    let ids = bundles(&dm, "r", 3);

    dm.ok([
        "label", "set", "--repo", "r", "--label", "prod", "--bundle", &ids[0],
    ])
    .stdout_has(&ids[0]);
    dm.ok([
        "label", "set", "--repo", "r", "--label", "prod", "--bundle", &ids[1],
    ]);
    dm.ok([
        "label", "set", "--repo", "r", "--label", "prod", "--bundle", &ids[2],
    ]);
    dm.ok([
        "label", "set", "--repo", "r", "--label", "staging", "--bundle", &ids[0],
    ]);

    let get = dm
        .ok(["label", "get", "--repo", "r", "--label", "prod"])
        .lines();
    assert_eq!(get.len(), 1);
    assert!(
        get[0].starts_with(&format!("prod , {} , ", ids[2])),
        "{get:?}"
    );

    let hist = dm
        .ok([
            "--json",
            "label",
            "get",
            "--repo",
            "r",
            "--label",
            "prod",
            "--history",
        ])
        .json_lines();
    let bundles: Vec<&str> = hist
        .iter()
        .map(|h| h["bundle"].as_str().expect("bundle"))
        .collect();
    assert_eq!(
        bundles,
        [&ids[0], &ids[1], &ids[2]],
        "history is oldest first"
    );
    assert!(hist[0]["previous"].is_null());
    assert_eq!(hist[1]["previous"], ids[0].as_str());
    assert_eq!(hist[2]["previous"], ids[1].as_str());
    let human = dm
        .ok([
            "label",
            "get",
            "--repo",
            "r",
            "--label",
            "prod",
            "--history",
        ])
        .lines();
    assert_eq!(human.len(), 3);

    let list = dm.ok(["label", "list", "--repo", "r"]).lines();
    assert_eq!(list.len(), 2, "{list:?}");
    assert!(
        list[0].starts_with(&format!("prod , {} , ", ids[2])),
        "{list:?}"
    );
    assert!(
        list[1].starts_with(&format!("staging , {} , ", ids[0])),
        "{list:?}"
    );
    let list = dm
        .ok(["--json", "label", "list", "--repo", "r"])
        .json_lines();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["name"], "prod");
    assert_eq!(list[0]["bundle"], ids[2].as_str());

    // The label selects the bundle everywhere.
    let j = dm
        .ok([
            "--json", "bundle", "get", "--repo", "r", "--label", "staging",
        ])
        .json();
    assert_eq!(j["id"], ids[0].as_str());

    // A repo without labels lists nothing.
    dm.create_repo("bare");
    assert_eq!(dm.ok(["label", "list", "--repo", "bare"]).stdout, "");
}

#[test]
fn label_expect_is_a_compare_and_set() {
    let dm = Dm::new();
    dm.create_repo("r");
    let ids = bundles(&dm, "r", 3);

    // "none": only if the label does not exist.
    dm.ok([
        "label", "set", "--repo", "r", "--label", "l", "--bundle", &ids[0], "--expect", "none",
    ]);
    dm.run([
        "label", "set", "--repo", "r", "--label", "l", "--bundle", &ids[1], "--expect", "none",
    ])
    .failure()
    .stderr_has("expected");

    // The right current value: moves.
    dm.ok([
        "label", "set", "--repo", "r", "--label", "l", "--bundle", &ids[1], "--expect", &ids[0],
    ]);
    // A stale value: refused, names what was expected and what is there, label unchanged.
    let out = dm
        .run([
            "label", "set", "--repo", "r", "--label", "l", "--bundle", &ids[2], "--expect", &ids[0],
        ])
        .failure()
        .stderr_has("expected")
        .stderr_has(&ids[0])
        .stderr_has(&ids[1]);
    assert_ne!(out.code, 2, "a conflict is not 'not found'");
    let cur = dm
        .ok(["--json", "label", "get", "--repo", "r", "--label", "l"])
        .json();
    assert_eq!(cur["bundle"], ids[1].as_str());
    let hist = dm
        .ok(["label", "get", "--repo", "r", "--label", "l", "--history"])
        .lines();
    assert_eq!(
        hist.len(),
        2,
        "a refused set must not be recorded: {hist:?}"
    );

    // A malformed --expect is refused.
    dm.run([
        "label", "set", "--repo", "r", "--label", "l", "--bundle", &ids[2], "--expect", "garbage",
    ])
    .failure()
    .stderr_has("invalid bundle id");
}

#[test]
fn label_errors() {
    let dm = Dm::new();
    dm.create_repo("r");
    let ids = bundles(&dm, "r", 1);
    dm.run(["label", "get", "--repo", "r", "--label", "nope"])
        .code(2)
        .stderr_has("\"nope\" not found");
    dm.run([
        "label",
        "get",
        "--repo",
        "r",
        "--label",
        "nope",
        "--history",
    ])
    .code(2)
    .stderr_has("\"nope\" not found");
    dm.run(["bundle", "get", "--repo", "r", "--label", "nope"])
        .code(2)
        .stderr_has("\"nope\" not found");
    // Pointing a label at a bundle that does not exist.
    let missing = "1INzQ5TV4vAAfU2PbRFgPfnzEwR";
    dm.run([
        "label", "set", "--repo", "r", "--label", "x", "--bundle", missing,
    ])
    .code(2)
    .stderr_has(missing);
    dm.run(["label", "get", "--repo", "r", "--label", "x"])
        .code(2);
    // Invalid label names.
    for bad in ["a/b", "", "-x"] {
        dm.run([
            "label",
            "set",
            "--repo",
            "r",
            &format!("--label={bad}"),
            "--bundle",
            &ids[0],
        ])
        .failure();
    }
    assert_eq!(dm.ok(["label", "list", "--repo", "r"]).stdout, "");
}

#[test]
fn branches_and_parents() {
    let dm = Dm::new();
    dm.create_repo("r");
    let src = dm.dir("src");
    write(&src.join("f"), "1");
    let m1 = dm.upload("r", &src, "m1", &[]);
    write(&src.join("f"), "2");
    let m2 = dm.upload("r", &src, "m2", &[]);
    write(&src.join("f"), "3");
    let d1 = dm.upload("r", &src, "d1", &["--branch", "dev"]);
    write(&src.join("f"), "4");
    let d2 = dm.upload("r", &src, "d2", &["--branch", "dev"]);

    let parents = |id: &str| dm.bundle_json("r", id)["parents"].clone();
    assert_eq!(parents(&m1), serde_json::json!([]));
    assert_eq!(parents(&m2), serde_json::json!([m1]));
    // A new branch starts with no parent (it did not exist).
    assert_eq!(parents(&d1), serde_json::json!([]));
    assert_eq!(parents(&d2), serde_json::json!([d1]));

    // branch list: name , head , updates (sorted by name).
    let list = dm.ok(["branch", "list", "--repo", "r"]).lines();
    assert_eq!(
        list,
        [format!("dev , {d2} , 2"), format!("main , {m2} , 2")]
    );
    let list = dm
        .ok(["--json", "branch", "list", "--repo", "r"])
        .json_lines();
    assert_eq!(list[1]["name"], "main");
    assert_eq!(list[1]["head"], m2.as_str());
    assert_eq!(list[1]["updates"], 2);

    // branch get, with and without history.
    let get = dm
        .ok(["branch", "get", "--repo", "r", "--branch", "main"])
        .lines();
    assert_eq!(get.len(), 1);
    assert!(get[0].starts_with(&format!("main , {m2} , ")), "{get:?}");
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
    assert_eq!(hist.len(), 2);
    assert_eq!(hist[0]["head"], m1.as_str());
    assert!(hist[0]["previous"].is_null());
    assert_eq!(hist[1]["head"], m2.as_str());
    assert_eq!(hist[1]["previous"], m1.as_str());

    // Create a branch at a bundle; the next upload on it has that bundle as parent.
    let created = dm
        .ok([
            "branch", "create", "--repo", "r", "--branch", "fix", "--bundle", &m1,
        ])
        .lines();
    assert_eq!(created, [format!("fix , {m1} , 1")]);
    write(&src.join("f"), "5");
    let f1 = dm.upload("r", &src, "f1", &["--branch", "fix"]);
    assert_eq!(parents(&f1), serde_json::json!([m1]));
    let j = dm
        .ok(["--json", "bundle", "get", "--repo", "r", "--branch", "fix"])
        .json();
    assert_eq!(j["id"], f1.as_str());
    assert_eq!(j["branch"], "fix");

    // Creating it again fails; the branch is unchanged.
    dm.run([
        "branch", "create", "--repo", "r", "--branch", "fix", "--bundle", &m2,
    ])
    .failure()
    .stderr_has("already exists");
    let j = dm
        .ok(["--json", "bundle", "get", "--repo", "r", "--branch", "fix"])
        .json();
    assert_eq!(j["id"], f1.as_str());

    // An empty branch: listed with no head; selecting it finds no bundle.
    let out = dm
        .ok(["branch", "create", "--repo", "r", "--branch", "empty"])
        .lines();
    assert_eq!(out, ["empty , - , 1"]);
    dm.run(["bundle", "get", "--repo", "r", "--branch", "empty"])
        .code(2)
        .stderr_has("empty");
    // Its first upload has no parent and advances it.
    let e1 = dm.upload("r", &src, "e1", &["--branch", "empty"]);
    assert_eq!(parents(&e1), serde_json::json!([]));
    let get = dm
        .ok(["branch", "get", "--repo", "r", "--branch", "empty"])
        .lines();
    assert!(get[0].starts_with(&format!("empty , {e1} , ")), "{get:?}");

    // Download by branch.
    let out = dm.dir("out");
    dm.ok([
        "bundle",
        "download",
        "--repo",
        "r",
        "--branch",
        "dev",
        "--destination",
        out.to_str().expect("utf-8"),
    ]);
    assert_eq!(std::fs::read(out.join("f")).expect("read"), b"4");
}

#[test]
fn branch_errors() {
    let dm = Dm::new();
    dm.create_repo("r");
    dm.run(["branch", "get", "--repo", "r", "--branch", "nope"])
        .code(2)
        .stderr_has("\"nope\" not found");
    dm.run(["bundle", "get", "--repo", "r", "--branch", "nope"])
        .code(2);
    let missing = "1INzQ5TV4vAAfU2PbRFgPfnzEwR";
    dm.run([
        "branch", "create", "--repo", "r", "--branch", "b", "--bundle", missing,
    ])
    .code(2)
    .stderr_has(missing);
    dm.run(["branch", "get", "--repo", "r", "--branch", "b"])
        .code(2);
    for bad in ["a/b", "", "-x", "a..b/"] {
        dm.run([
            "branch",
            "create",
            "--repo",
            "r",
            &format!("--branch={bad}"),
        ])
        .failure();
    }
    assert_eq!(dm.ok(["branch", "list", "--repo", "r"]).stdout, "");
}
