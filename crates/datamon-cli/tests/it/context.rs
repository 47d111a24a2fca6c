//! `datamon context ...`, `--context`, `--store` and `--home`.

use crate::util::{write, Dm};

fn url(p: &std::path::Path) -> String {
    format!("file://{}", p.display())
}

#[test]
fn contexts_create_list_get_use() {
    let dm = Dm::new();
    let dev_store = dm.dir("dev-store");
    let prod_store = dm.dir("prod-store");

    // Only the implicit default context at first, current, on the embedded store.
    let list = dm.ok(["context", "list"]).lines();
    assert_eq!(list.len(), 1, "{list:?}");
    assert!(list[0].starts_with("* default , "), "{list:?}");
    assert!(
        list[0].contains(&dm.store_dir().display().to_string()),
        "{list:?}"
    );

    dm.ok([
        "context",
        "create",
        "--name",
        "dev",
        "--store-url",
        &url(&dev_store),
    ])
    .stdout_has("dev");
    dm.ok([
        "context",
        "create",
        "--name",
        "prod",
        "--store-url",
        &url(&prod_store),
        "--description",
        "production",
        "--use",
    ]);
    let list = dm.ok(["context", "list"]).lines();
    assert!(
        list.contains(&format!("  dev , {}", url(&dev_store))),
        "{list:?}"
    );
    assert!(
        list.contains(&format!("* prod , {}", url(&prod_store))),
        "{list:?}"
    );
    let list = dm.ok(["--json", "context", "list"]).json_lines();
    let prod = list
        .iter()
        .find(|c| c["name"] == "prod")
        .expect("prod listed");
    assert_eq!(prod["current"], true);
    assert_eq!(prod["description"], "production");

    let get = dm.ok(["context", "get"]).lines();
    assert_eq!(get, [format!("* prod , {}", url(&prod_store))]);
    let get = dm.ok(["context", "get", "--name", "dev"]).lines();
    assert_eq!(get, [format!("  dev , {}", url(&dev_store))]);
    dm.run(["context", "get", "--name", "nope"])
        .code(2)
        .stderr_has("nope");

    // Creating it again is refused.
    dm.run([
        "context",
        "create",
        "--name",
        "dev",
        "--store-url",
        &url(&prod_store),
    ])
    .failure()
    .stderr_has("already exists");

    // The current context (prod) is used by default; --context picks another.
    dm.create_repo("in-prod");
    dm.ok(["--context", "dev", "repo", "create", "--repo", "in-dev"]);
    assert!(prod_store.join("repos/in-prod").is_dir());
    assert!(dev_store.join("repos/in-dev").is_dir());
    assert!(!dev_store.join("repos/in-prod").exists());
    let names = |args: &[&str]| -> Vec<String> {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["repo", "list"]);
        dm.ok(a)
            .json_lines()
            .iter()
            .map(|r| r["name"].as_str().expect("name").to_owned())
            .collect()
    };
    assert_eq!(names(&[]), ["in-prod"]);
    assert_eq!(names(&["--context", "dev"]), ["in-dev"]);
    // --store wins over everything.
    assert_eq!(
        names(&["--context", "dev", "--store", &url(&prod_store)]),
        ["in-prod"]
    );

    // context use switches.
    dm.ok(["context", "use", "--name", "dev"]).stdout_has("dev");
    assert_eq!(names(&[]), ["in-dev"]);
    dm.ok(["context", "use", "--name", "default"]);
    assert_eq!(names(&[]), Vec::<String>::new());
    dm.run(["context", "use", "--name", "nope"])
        .failure()
        .stderr_has("nope");
    assert_eq!(
        names(&[]),
        Vec::<String>::new(),
        "a failed `use` changed the context"
    );

    // An unknown --context is an error that names the known ones.
    dm.run(["--context", "nope", "repo", "list"])
        .failure()
        .stderr_has("nope")
        .stderr_has("dev");
}

#[test]
fn context_create_checks_the_store() {
    let dm = Dm::new();
    for bad in ["ftp://x", "file://relative/x", "relative/path", "s3://"] {
        dm.run(["context", "create", "--name", "bad", "--store-url", bad])
            .failure()
            .stderr_has("file:///");
    }
    for bad_name in ["a/b", "", "a b"] {
        dm.run([
            "context",
            "create",
            &format!("--name={bad_name}"),
            "--store-url",
            &url(&dm.dir("s")),
        ])
        .failure()
        .stderr_has("invalid context name");
    }
    let list = dm.ok(["context", "list"]).lines();
    assert_eq!(list.len(), 1, "a refused context was saved: {list:?}");
}

#[test]
fn store_and_home_flags_and_env() {
    let dm = Dm::new();
    let other = dm.dir("other-store");
    dm.ok(["--store", &url(&other), "repo", "create", "--repo", "x"]);
    assert!(other.join("repos/x").is_dir());
    // A plain absolute path is accepted too.
    dm.ok([
        "--store",
        other.to_str().expect("utf-8"),
        "repo",
        "get",
        "--repo",
        "x",
    ]);
    // The embedded store does not have it.
    dm.run(["repo", "get", "--repo", "x"]).code(2);

    // DATAMON_STORE in the environment.
    let out = dm
        .cmd()
        .env("DATAMON_STORE", url(&other))
        .args(["repo", "get", "--repo", "x"])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // --home overrides DATAMON_HOME.
    let home2 = dm.dir("home2");
    dm.ok([
        "--home",
        home2.to_str().expect("utf-8"),
        "repo",
        "create",
        "--repo",
        "h",
    ]);
    assert!(home2.join("store/repos/h").is_dir());
    dm.run(["repo", "get", "--repo", "h"]).code(2);

    // A damaged config file is reported with its path.
    write(&dm.home().join("config.toml"), "this is [not toml");
    dm.run(["repo", "list"]).failure().stderr_has("config.toml");
}
