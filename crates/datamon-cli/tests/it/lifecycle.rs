//! `bundle delete`, `label delete`, `branch delete`, `repo delete|rename|squash`, `gc`.

use crate::util::{assert_same_tree, write, Compare, Dm};

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

#[test]
fn gc_killed_at_any_point_loses_nothing_and_a_rerun_finishes() {
    use crate::util::random_bytes;
    let dm = Dm::new();
    dm.create_repo("r");
    // 16 bundles of 3 files of 600 kB each; the first 12 are deleted, so gc has many packs
    // to condemn and then delete.
    let mut kept = Vec::new();
    for b in 0..16u64 {
        let src = dm.dir(&format!("src{b}"));
        for f in 0..3u64 {
            write(
                &src.join(format!("f{f}")),
                random_bytes(b * 10 + f, 600_000),
            );
        }
        let id = dm.upload("r", &src, &format!("bundle {b}"), &[]);
        if b < 12 {
            dm.ok([
                "bundle",
                "delete",
                "--repo",
                "r",
                "--bundle",
                &id,
                "--remove-refs",
            ]);
        } else {
            kept.push((id, src));
        }
    }
    // gc started and killed (SIGKILL: no cleanup) at points spread over the time a whole run
    // takes (a dry run's, startup included), so that kills land in every phase of both passes.
    let t = std::time::Instant::now();
    dm.ok(["gc", "--dry-run", "--grace", "0s"]);
    let whole = t.elapsed().as_millis() as u64;
    let delays: Vec<u64> = (0..14).map(|k| whole * k / 10).collect();
    for (i, ms) in delays.iter().enumerate() {
        let mut child = dm
            .command()
            .args(["gc", "--grace", "0s"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start gc");
        std::thread::sleep(std::time::Duration::from_millis(*ms));
        let _ = child.kill();
        let status = child.wait().expect("wait for gc");
        eprintln!("gc killed after {ms} ms: {status}");
        // Every kept bundle is whole after every kill.
        if i % 3 == 2 {
            for (id, src) in &kept {
                let out = dm.dir(&format!("out-{i}-{id}"));
                dm.download("r", id, &out);
                eprintln!("after kill {i} ({status}): bundle {id}");
                assert_same_tree(src, &out, Compare::CONTENT);
            }
        }
    }
    // Right after the kills fsck is clean, or names what a killed gc leaves (the index object
    // of a pack it deleted) and how to finish; a rerun of gc finishes it.
    let f = dm.run(["fsck", "--read-data"]);
    if f.code != 0 {
        for l in f.stdout.lines().filter(|l| l.starts_with("problem:")) {
            assert!(
                l.contains("missing from the store") && l.contains("run `datamon gc`"),
                "{l}"
            );
        }
    }
    dm.ok(["gc", "--grace", "0s"]);
    dm.ok(["fsck", "--read-data"]);
    // Runs to the end: two passes reclaim the deleted bundles' data.
    dm.ok(["gc", "--grace", "0s"]);
    dm.ok(["gc", "--grace", "0s"]);
    dm.ok(["fsck", "--read-data"]);
    for (id, src) in &kept {
        let out = dm.dir(&format!("out-final-{id}"));
        dm.download("r", id, &out);
        assert_same_tree(src, &out, Compare::CONTENT);
    }
    let mut packs = 0u64;
    let mut stack = vec![dm.store_dir().join("packs")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("packs").flatten() {
            let m = e.metadata().expect("stat");
            if m.is_dir() {
                stack.push(e.path());
            } else {
                packs += m.len();
            }
        }
    }
    // 4 kept bundles of 1.8 MB of incompressible data; the stated slack is 2x.
    assert!(
        packs <= 2 * 4 * 1_800_000 + (256 << 10),
        "{packs} bytes of packs left for 7.2 MB of live data"
    );
}

/// Whether any file under `root` holds `needle`.
fn raw_has(root: &std::path::Path, needle: &[u8]) -> bool {
    let mut stack = vec![root.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read the store").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if std::fs::read(&p)
                .expect("read an object")
                .windows(needle.len())
                .any(|w| w == needle)
            {
                return true;
            }
        }
    }
    false
}

#[test]
fn repo_remove_path_rewrites_history_and_gc_leaves_no_byte() {
    use crate::util::random_bytes;
    let dm = Dm::new();
    dm.create_repo("r");
    let src = dm.dir("src");
    let secret = random_bytes(77, 50_000);
    write(&src.join("customers/emails.csv"), &secret);
    write(&src.join("data/keep.txt"), "kept");
    let b1 = dm.upload("r", &src, "one", &["--label", "prod"]);
    write(&src.join("data/more.txt"), "more");
    let b2 = dm.upload("r", &src, "two", &[]);

    dm.run(["repo", "remove-path", "--repo", "r", "customers/emails.csv"])
        .code(1)
        .stderr_has("--yes");
    dm.run(["repo", "remove-path", "--repo", "r", "--yes"])
        .code(2);
    dm.run(["repo", "remove-path", "--repo", "r", "--yes", "a/[b"])
        .code(1)
        .stderr_has("not a valid glob");
    dm.run(["gc", "--repack-below", "2"])
        .code(2)
        .stderr_has("fraction");

    let dry = dm
        .ok([
            "--json",
            "repo",
            "remove-path",
            "--repo",
            "r",
            "customers/*.csv",
            "--dry-run",
        ])
        .json();
    assert_eq!(dry["dry_run"], true, "{dry}");
    assert_eq!(dry["bundles"].as_array().unwrap().len(), 2, "{dry}");
    assert_eq!(dm.bundle_ids("r"), vec![b1.clone(), b2.clone()]);

    let done = dm
        .ok([
            "--json",
            "repo",
            "remove-path",
            "--repo",
            "r",
            "customers/*.csv",
            "--yes",
        ])
        .json();
    let bundles = done["bundles"].as_array().unwrap();
    assert_eq!(bundles[0]["old"], b1.as_str(), "{done}");
    assert_eq!(bundles[0]["removed"][0], "customers/emails.csv", "{done}");
    let n1 = bundles[0]["new"].as_str().unwrap().to_owned();
    let n2 = bundles[1]["new"].as_str().unwrap().to_owned();
    assert_eq!(dm.bundle_ids("r"), vec![n1.clone(), n2.clone()]);
    // An old id resolves to its rewrite, with a warning.
    dm.ok(["bundle", "get", "--repo", "r", "--bundle", &b1])
        .stdout_has(&n1)
        .stderr_has(&format!("as bundle {n1}"));
    dm.ok(["label", "get", "--repo", "r", "--label", "prod"])
        .stdout_has(&n1);
    let got = dm.bundle_json("r", &n2);
    assert_eq!(got["message"], "two", "{got}");
    let out = dm.dir("out");
    dm.ok([
        "bundle",
        "download",
        "--repo",
        "r",
        "--label",
        "prod",
        "--destination",
        out.to_str().unwrap(),
    ]);
    assert!(!out.join("customers/emails.csv").exists());
    assert_eq!(std::fs::read(out.join("data/keep.txt")).unwrap(), b"kept");
    // A rerun has nothing left to do.
    dm.ok([
        "repo",
        "remove-path",
        "--repo",
        "r",
        "customers/*.csv",
        "--yes",
    ])
    .stderr_has("No live bundle");

    assert!(raw_has(&dm.store_dir(), &secret[9000..9064]));
    dm.ok(["gc", "--grace", "0s"]);
    dm.ok(["gc", "--grace", "0s"]).stdout_has("repacked");
    assert!(
        !raw_has(&dm.store_dir(), &secret[9000..9064]),
        "no byte of the removed file is left in the store"
    );
    assert!(!raw_has(&dm.store_dir(), b"emails.csv"), "nor its name");
    dm.ok(["fsck", "--read-data"]);
}

#[test]
fn remove_path_killed_at_any_point_is_finished_by_a_rerun() {
    use crate::util::random_bytes;
    let dm = Dm::new();
    // Two repos of the same shape: 12 bundles on two branches, each holding the secret and
    // data of its own. The twin is rewritten whole first, to time a real run.
    let secret = random_bytes(901, 40_000);
    for repo in ["twin", "r"] {
        dm.create_repo(repo);
        for b in 0..12u64 {
            let src = dm.dir(&format!("src-{repo}-{b}"));
            write(&src.join("secrets/token.bin"), &secret);
            write(&src.join(format!("data/{b}.bin")), random_bytes(b, 30_000));
            let branch = if b % 2 == 0 { "main" } else { "dev" };
            if b == 1 {
                dm.ok(["branch", "create", "--repo", repo, "--branch", "dev"]);
            }
            dm.upload(repo, &src, &format!("bundle {b}"), &["--branch", branch]);
        }
    }
    let ids = dm.bundle_ids("r");
    dm.ok([
        "label", "set", "--repo", "r", "--label", "prod", "--bundle", &ids[3],
    ]);
    let args = ["repo", "remove-path", "--repo", "r", "secrets", "--yes"];
    let t = std::time::Instant::now();
    dm.ok(["repo", "remove-path", "--repo", "twin", "secrets", "--yes"]);
    let whole = t.elapsed().as_millis() as u64;
    // Kills spread over the run, most of them in its second half, where it writes.
    let mut states = std::collections::BTreeSet::new();
    for k in 0..12u64 {
        let mut child = dm
            .command()
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start remove-path");
        let ms = if k < 4 {
            whole * k / 8
        } else {
            whole / 2 + whole * (k - 4) / 14
        };
        std::thread::sleep(std::time::Duration::from_millis(ms));
        let _ = child.kill();
        let status = child.wait().expect("wait");
        let listed = dm.bundle_ids("r").len();
        eprintln!("remove-path killed after {ms} ms: {status}; {listed} bundles listed");
        states.insert(listed);
        // Whatever is listed downloads whole at every point.
        for id in dm.bundle_ids("r") {
            let out = dm.dir(&format!("o-{k}-{id}"));
            dm.download("r", &id, &out);
        }
    }
    eprintln!("bundles listed after the kills: {states:?}");
    dm.ok(args);
    // Done: 12 bundles, none with the secret, refs on rewritten bundles, old ids resolving.
    let ids_after = dm.bundle_ids("r");
    assert_eq!(ids_after.len(), 12, "{ids_after:?}");
    for (i, id) in ids_after.iter().enumerate() {
        assert!(!ids.contains(id), "bundle {i} was not rewritten");
        let files = dm.list_files("r", id);
        assert!(
            files.iter().all(|f| !f.starts_with("secrets/")),
            "{files:?}"
        );
        assert!(
            files
                .iter()
                .any(|f| f.starts_with(&format!("data/{i}.bin"))),
            "{files:?}"
        );
    }
    dm.ok(["label", "get", "--repo", "r", "--label", "prod"])
        .stdout_has(&ids_after[3]);
    for (branch, last) in [("main", 10), ("dev", 11)] {
        dm.ok(["bundle", "get", "--repo", "r", "--branch", branch])
            .stdout_has(&ids_after[last]);
    }
    dm.ok(["bundle", "get", "--repo", "r", "--bundle", &ids[5]])
        .stdout_has(&ids_after[5]);
    dm.ok(["gc", "--grace", "0s"]);
    dm.ok(["gc", "--grace", "0s"]);
    assert!(
        !raw_has(&dm.store_dir(), &secret[20_000..20_064]),
        "no byte of the removed file is left after the kills and gc"
    );
    assert!(!raw_has(&dm.store_dir(), b"token.bin"));
    dm.ok(["fsck", "--read-data"]);
}
