//! `bundle delete`, `label delete`, `branch delete`, `repo delete|rename|squash`, `gc`.

use crate::util::{write, Dm};

#[test]
fn delete_refusals_messages_exit_codes_squash_and_gc() {
    let dm = Dm::new();
    dm.create_repo("r");
    let src = dm.dir("src");
    write(&src.join("f.txt"), "one");
    let b1 = dm.upload("r", &src, "one", &[]);
    write(&src.join("f.txt"), "two");
    let b2 = dm.upload("r", &src, "two", &[]);
    dm.ok([
        "label", "set", "--repo", "r", "--label", "prod", "--bundle", &b1,
    ]);

    // Refused while a label names it: exit 1, names the label and the way out.
    dm.run(["bundle", "delete", "--repo", "r", "--bundle", &b1])
        .code(1)
        .stderr_has("label prod")
        .stderr_has("--remove-refs");
    dm.ok(["bundle", "get", "--repo", "r", "--bundle", &b1]);
    dm.ok([
        "bundle",
        "delete",
        "--repo",
        "r",
        "--bundle",
        &b1,
        "--remove-refs",
    ])
    .stdout_has("Deleted bundle")
    .stdout_has("prod");
    // Asked for by id: "was deleted", exit 2, everywhere.
    dm.run(["bundle", "get", "--repo", "r", "--bundle", &b1])
        .code(2)
        .stderr_has("was deleted");
    let out = dm.dir("out");
    dm.run([
        "bundle",
        "download",
        "--repo",
        "r",
        "--bundle",
        &b1,
        "--destination",
    ])
    .failure();
    dm.run([
        "bundle",
        "download",
        "--repo",
        "r",
        "--bundle",
        &b1,
        "--destination",
        out.to_str().unwrap(),
    ])
    .code(2)
    .stderr_has("was deleted");
    let listed = dm.ok(["bundle", "list", "--repo", "r"]).lines();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert!(listed[0].starts_with(&b2), "{listed:?}");
    dm.run(["label", "get", "--repo", "r", "--label", "prod"])
        .code(2);

    // Squash: the dry run lists exactly what would go, and deletes nothing.
    for i in 3..6 {
        write(&src.join("f.txt"), format!("v{i}"));
        dm.upload("r", &src, &format!("v{i}"), &[]);
    }
    let dry = dm
        .ok([
            "repo",
            "squash",
            "--repo",
            "r",
            "--keep-newest",
            "2",
            "--dry-run",
        ])
        .lines();
    assert_eq!(dry.len(), 2, "{dry:?}");
    assert!(dry[0].starts_with(&format!("would delete {b2}")), "{dry:?}");
    assert_eq!(dm.ok(["bundle", "list", "--repo", "r"]).lines().len(), 4);
    dm.run(["repo", "squash", "--repo", "r"])
        .code(1)
        .stderr_has("at least one rule");
    dm.ok(["repo", "squash", "--repo", "r", "--keep-newest", "2"]);
    assert_eq!(dm.ok(["bundle", "list", "--repo", "r"]).lines().len(), 2);

    // gc: two passes, JSON report.
    let first = dm.ok(["--json", "gc", "--grace", "0s"]).json();
    assert!(first["packs_condemned"].as_u64().unwrap() > 0, "{first}");
    let second = dm.ok(["--json", "gc", "--grace", "0s"]).json();
    assert_eq!(
        second["packs_deleted"], first["packs_condemned"],
        "{second}"
    );
    dm.ok(["fsck", "--read-data"]);
    dm.run(["gc", "--grace", "soon"])
        .code(1)
        .stderr_has("--grace");

    // Branch and repo.
    dm.ok(["branch", "create", "--repo", "r", "--branch", "dev"]);
    dm.ok(["branch", "delete", "--repo", "r", "--branch", "dev"]);
    dm.run(["branch", "delete", "--repo", "r", "--branch", "dev"])
        .code(2);
    dm.ok(["repo", "rename", "--repo", "r", "--to", "r2"]);
    dm.run(["repo", "get", "--repo", "r"])
        .code(2)
        .stderr_has("renamed to \"r2\"")
        .stderr_has("--repo r2");
    assert_eq!(dm.ok(["bundle", "list", "--repo", "r2"]).lines().len(), 2);
    dm.run(["repo", "delete", "--repo", "r2"])
        .code(1)
        .stderr_has("--yes");
    dm.ok(["repo", "delete", "--repo", "r2", "--yes"]);
    dm.run(["bundle", "list", "--repo", "r2"])
        .code(2)
        .stderr_has("was deleted");
}
