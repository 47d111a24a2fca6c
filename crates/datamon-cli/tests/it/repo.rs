//! `datamon repo ...`

use crate::util::Dm;

#[test]
fn create_list_get() {
    let dm = Dm::new();
    dm.ok([
        "repo",
        "create",
        "--repo",
        "images",
        "--description",
        "training images",
    ])
    .stdout_has("images");
    dm.ok([
        "repo",
        "create",
        "--repo",
        "audio.v2",
        "--description",
        "sounds",
    ]);

    let lines = dm.ok(["repo", "list"]).lines();
    assert_eq!(lines.len(), 2, "{lines:?}");
    let images = lines
        .iter()
        .find(|l| l.starts_with("images , "))
        .unwrap_or_else(|| panic!("images not listed: {lines:?}"));
    assert!(images.contains(" , training images , "), "{images}");
    assert!(
        lines.iter().any(|l| l.starts_with("audio.v2 , sounds , ")),
        "{lines:?}"
    );

    let get = dm.ok(["repo", "get", "--repo", "images"]);
    assert!(
        get.stdout.starts_with("images , training images , "),
        "{get:?}"
    );

    let j = dm.ok(["--json", "repo", "get", "--repo", "images"]).json();
    assert_eq!(j["name"], "images");
    assert_eq!(j["description"], "training images");
    assert!(
        j["created_at"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{j}"
    );
}

#[test]
fn create_twice_fails_and_keeps_the_first() {
    let dm = Dm::new();
    dm.ok(["repo", "create", "--repo", "r", "--description", "first"]);
    dm.run(["repo", "create", "--repo", "r", "--description", "second"])
        .code(1)
        .stderr_has("already exists");
    let j = dm.ok(["--json", "repo", "get", "--repo", "r"]).json();
    assert_eq!(j["description"], "first");
    assert_eq!(dm.ok(["repo", "list"]).lines().len(), 1);
}

#[test]
fn invalid_names_are_rejected() {
    let dm = Dm::new();
    let long = "x".repeat(65);
    for bad in [
        "a/b",
        "-x",
        "",
        ".hidden",
        "..",
        "a b",
        "a\\b",
        long.as_str(),
    ] {
        let out = dm.run([
            "repo",
            "create",
            &format!("--repo={bad}"),
            "--description",
            "d",
        ]);
        assert!(out.code != 0 && out.code != -1, "{bad:?} accepted: {out:?}");
        assert!(
            out.stderr.contains("invalid") || out.stderr.contains("error"),
            "{bad:?}: no explanation: {out:?}"
        );
    }
    assert_eq!(dm.ok(["repo", "list"]).lines(), Vec::<String>::new());
    // Nothing leaked into the store under a bad name.
    let repos = dm.store_dir().join("repos");
    let n = std::fs::read_dir(&repos).map(|rd| rd.count()).unwrap_or(0);
    assert_eq!(n, 0, "repos dir not empty");
}

#[test]
fn get_unknown_repo_is_exit_2() {
    let dm = Dm::new();
    dm.create_repo("known");
    dm.run(["repo", "get", "--repo", "unknown"])
        .code(2)
        .stderr_has("\"unknown\" not found")
        .stderr_has("repo create");
}

#[test]
fn list_empty_store() {
    let dm = Dm::new();
    let out = dm.ok(["repo", "list"]);
    assert_eq!(out.stdout, "");
    let out = dm.ok(["--json", "repo", "list"]);
    assert_eq!(out.stdout, "");
}
