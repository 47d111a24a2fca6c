//! End-to-end tests of the `datamon` binary on an S3 server on loopback (and, for comparison,
//! on a local store). The S3 server comes from `DATAMON_TEST_S3_ENDPOINT` (with
//! `DATAMON_TEST_S3_BUCKET`, `DATAMON_TEST_S3_ACCESS_KEY`, `DATAMON_TEST_S3_SECRET_KEY`); see
//! `scripts/servers/up.sh`. Without it the S3 tests are skipped with a message, unless
//! `DATAMON_TEST_REQUIRE` names `s3`.

use std::path::{Path, PathBuf};

use crate::util::{
    assert_same_tree, fuse_available, run_command, Compare, Daemon, Dm, Out, Target,
};

fn write_files(dir: &Path, seed: u32, n: u32) {
    std::fs::create_dir_all(dir.join("sub")).expect("mkdir");
    for i in 0..n {
        let body: Vec<u8> = (0..(1000 + i * 997))
            .map(|j| (j.wrapping_mul(31).wrapping_add(seed * 7 + i) % 251) as u8)
            .collect();
        let p = if i % 2 == 0 {
            dir.join(format!("f{i}.bin"))
        } else {
            dir.join("sub").join(format!("g{i}.bin"))
        };
        std::fs::write(p, body).expect("write");
    }
}

/// The same paths with the same bytes.
#[track_caller]
fn same_files(a: &Path, b: &Path) {
    assert_same_tree(a, b, Compare::CONTENT);
}

#[test]
fn s3_context_create_checks_the_store_and_commands_round_trip() {
    let Some(t) = Target::s3() else { return };
    let dm = t.dm();
    let url = t.fresh_url("ctx");

    // A good store passes the three checks and becomes the current context.
    dm.ok([
        "context",
        "create",
        "--name",
        "s3",
        "--store-url",
        &url,
        "--use",
    ]);

    // Each failing check is named.
    let started = std::time::Instant::now();
    let e = run_command(
        dm.command()
            .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
            .args(["context", "create", "--name", "x1", "--store-url", &url]),
    )
    .failure()
    .stderr;
    assert!(e.contains("the store is not reachable"), "{e}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "an unreachable store took {:?} to fail",
        started.elapsed()
    );
    let e = run_command(dm.command().env("AWS_CONDITIONAL_PUT", "disabled").args([
        "context",
        "create",
        "--name",
        "x2",
        "--store-url",
        &url,
    ]))
    .failure()
    .stderr;
    assert!(e.contains("does not honour create-if-absent"), "{e}");

    // The foundation's commands work the same on S3.
    let src = dm.path("src");
    write_files(&src, 1, 12);
    dm.ok(["repo", "create", "--repo", "r", "--description", "d"]);
    let src_s = src.display().to_string();
    dm.ok([
        "bundle",
        "upload",
        "--repo",
        "r",
        "--path",
        &src_s,
        "--message",
        "v1",
        "--label",
        "prod",
    ]);
    let list = dm.ok(["bundle", "list", "--repo", "r"]).stdout;
    assert_eq!(list.lines().count(), 1, "{list}");
    let dst = dm.path("dst");
    let dst_s = dst.display().to_string();
    dm.ok([
        "bundle",
        "download",
        "--repo",
        "r",
        "--label",
        "prod",
        "--destination",
        &dst_s,
    ]);
    same_files(&src, &dst);

    // The read-only mount reads from S3 too (when FUSE can be used here).
    if fuse_available() {
        let mnt = dm.path("mnt");
        std::fs::create_dir_all(&mnt).expect("mount point");
        let mnt_s = mnt.display().to_string();
        let out = run_command(dm.command().args([
            "bundle", "mount", "--repo", "r", "--label", "prod", "--mount", &mnt_s, "--daemon",
        ]))
        .success();
        // Stops the server and unmounts, however the comparison ends.
        let daemon = Daemon::from_stderr(&mnt, &out.stderr);
        same_files(&src, &mnt);
        drop(daemon);
    }
    dm.ok(["fsck", "--read-data"]);
    dm.run(["label", "get", "--repo", "r", "--label", "nope"])
        .code(2);
}

fn eight_concurrent_uploads(t: &Target) {
    let dm = t.dm();
    let url = t.fresh_url("race");
    dm.ok([
        "--store",
        &url,
        "repo",
        "create",
        "--repo",
        "r",
        "--description",
        "d",
    ]);
    let dirs: Vec<PathBuf> = (0..8)
        .map(|i| {
            let d = dm.path(format!("src{i}"));
            write_files(&d, i, 6);
            d
        })
        .collect();
    let children: Vec<_> = dirs
        .iter()
        .enumerate()
        .map(|(i, d)| {
            dm.command()
                .args([
                    "--store", &url, "--quiet", "bundle", "upload", "--repo", "r", "--path",
                ])
                .arg(d)
                .args([
                    "--message",
                    &format!("writer {i}"),
                    "--label",
                    "shared",
                    "--branch",
                    "main",
                ])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn datamon")
        })
        .collect();
    for (i, c) in children.into_iter().enumerate() {
        Out::wait(c, format!("bundle upload (writer {i})")).success();
    }
    let history = dm
        .ok([
            "--store",
            &url,
            "label",
            "get",
            "--repo",
            "r",
            "--label",
            "shared",
            "--history",
        ])
        .stdout;
    assert_eq!(
        history.lines().count(),
        8,
        "label history lost an update:\n{history}"
    );
    let bundles = dm
        .ok(["--store", &url, "bundle", "list", "--repo", "r"])
        .stdout;
    assert_eq!(bundles.lines().count(), 8, "{bundles}");
    let branch = dm
        .ok(["--store", &url, "--json", "branch", "list", "--repo", "r"])
        .stdout;
    assert!(branch.contains("main"), "{branch}");
}

#[test]
fn s3_eight_concurrent_uploads_to_one_label_lose_nothing() {
    let Some(t) = Target::s3() else { return };
    eight_concurrent_uploads(&t);
}

#[test]
fn local_eight_concurrent_uploads_to_one_label_lose_nothing() {
    eight_concurrent_uploads(&Target::local());
}

#[test]
fn store_sync_copies_a_local_store_to_s3_and_resumes() {
    let Some(t) = Target::s3() else { return };
    let dm = t.dm();
    let local = format!("file://{}", dm.path("local").display());
    let remote = t.fresh_url("sync");
    let src = dm.path("src");
    write_files(&src, 3, 10);
    let src_s = src.display().to_string();
    dm.ok([
        "--store",
        &local,
        "repo",
        "create",
        "--repo",
        "r",
        "--description",
        "d",
    ]);
    dm.ok([
        "--store",
        &local,
        "bundle",
        "upload",
        "--repo",
        "r",
        "--path",
        &src_s,
        "--message",
        "one",
        "--label",
        "l",
    ]);

    let first = dm
        .ok(["--json", "store", "sync", "--from", &local, "--to", &remote])
        .stdout;
    let v: serde_json::Value = serde_json::from_str(first.trim()).expect("json");
    let first_copied = v["copied"].as_u64().expect("copied");
    assert!(first_copied > 3, "{first}");

    // The copy is a working store: same bundles, same label, same files.
    let a = dm
        .ok(["--store", &local, "bundle", "list", "--repo", "r"])
        .stdout;
    let b = dm
        .ok(["--store", &remote, "bundle", "list", "--repo", "r"])
        .stdout;
    assert_eq!(a, b);
    let dst = dm.path("dst");
    let dst_s = dst.display().to_string();
    dm.ok([
        "--store",
        &remote,
        "bundle",
        "download",
        "--repo",
        "r",
        "--label",
        "l",
        "--destination",
        &dst_s,
    ]);
    same_files(&src, &dst);

    // A rerun copies nothing; after a new bundle, only what is new.
    let again = dm
        .ok(["--json", "store", "sync", "--from", &local, "--to", &remote])
        .stdout;
    let v: serde_json::Value = serde_json::from_str(again.trim()).expect("json");
    assert_eq!(v["copied"], 0, "{again}");
    write_files(&src.join("more"), 4, 3);
    dm.ok([
        "--store",
        &local,
        "bundle",
        "upload",
        "--repo",
        "r",
        "--path",
        &src_s,
        "--message",
        "two",
        "--label",
        "l",
    ]);
    let third = dm
        .ok(["--json", "store", "sync", "--from", &local, "--to", &remote])
        .stdout;
    let v: serde_json::Value = serde_json::from_str(third.trim()).expect("json");
    // Only the new bundle's objects are copied: everything the first sync copied is present
    // (how many objects each upload makes depends on how its packs were cut).
    let copied = v["copied"].as_u64().expect("copied");
    assert!(
        copied > 0 && v["present"].as_u64().expect("present") >= first_copied,
        "{third}"
    );
    let h = dm
        .ok([
            "--store",
            &remote,
            "label",
            "get",
            "--repo",
            "r",
            "--label",
            "l",
            "--history",
        ])
        .stdout;
    assert_eq!(h.lines().count(), 2, "{h}");
}

#[test]
fn context_with_a_replica_writes_to_both() {
    let Some(t) = Target::s3() else { return };
    let dm = t.dm();
    let primary = t.fresh_url("primary");
    let replica = format!("file://{}", dm.path("replica").display());
    dm.ok([
        "context",
        "create",
        "--name",
        "geo",
        "--store-url",
        &primary,
        "--replica",
        &replica,
        "--use",
    ]);
    let shown = dm.ok(["context", "get", "--name", "geo"]).stdout;
    assert!(shown.contains(&format!("replica {replica}")), "{shown}");
    let src = dm.path("src");
    write_files(&src, 9, 5);
    let src_s = src.display().to_string();
    dm.ok(["repo", "create", "--repo", "r", "--description", "d"]);
    dm.ok([
        "bundle",
        "upload",
        "--repo",
        "r",
        "--path",
        &src_s,
        "--message",
        "m",
        "--label",
        "l",
    ]);
    let on_primary = dm
        .ok(["--store", &primary, "bundle", "list", "--repo", "r"])
        .stdout;
    let on_replica = dm
        .ok(["--store", &replica, "bundle", "list", "--repo", "r"])
        .stdout;
    assert_eq!(on_primary.lines().count(), 1);
    assert_eq!(on_primary, on_replica);
    let dst = dm.path("dst");
    let dst_s = dst.display().to_string();
    dm.ok([
        "--store",
        &replica,
        "bundle",
        "download",
        "--repo",
        "r",
        "--label",
        "l",
        "--destination",
        &dst_s,
    ]);
    same_files(&src, &dst);
}

#[test]
fn s3_settings_from_an_aws_profile() {
    let Some(t) = Target::s3() else { return };
    let get = |k: &str| {
        t.env
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
            .expect("set")
    };
    // Keys, region and endpoint only in the profile's files; the environment names the profile
    // (none of the target's own variables reach the binary).
    let scratch = Dm::new();
    let creds = scratch.path("credentials");
    let config = scratch.path("config");
    std::fs::write(
        &creds,
        format!(
            "[default]\naws_access_key_id = wrong\naws_secret_access_key = wrong\n\n[ci]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            get("AWS_ACCESS_KEY_ID"),
            get("AWS_SECRET_ACCESS_KEY")
        ),
    )
    .expect("write");
    std::fs::write(
        &config,
        format!(
            "[default]\nregion = us-east-1\nendpoint_url = {0}\n\n[profile ci]\nregion = us-east-1\nendpoint_url = {0}\n",
            get("AWS_ENDPOINT_URL")
        ),
    )
    .expect("write");
    let dm = Dm::new()
        .with_env("AWS_PROFILE", "ci")
        .with_env("AWS_SHARED_CREDENTIALS_FILE", &creds)
        .with_env("AWS_CONFIG_FILE", &config);
    let url = t.fresh_url("profile");
    let src = dm.path("src");
    write_files(&src, 7, 5);
    dm.ok([
        "--store",
        &url,
        "repo",
        "create",
        "--repo",
        "r",
        "--description",
        "d",
    ]);
    let src_s = src.display().to_string();
    dm.ok([
        "--store",
        &url,
        "bundle",
        "upload",
        "--repo",
        "r",
        "--path",
        &src_s,
        "--message",
        "m",
    ]);
    let dst = dm.path("dst");
    let dst_s = dst.display().to_string();
    dm.ok([
        "--store",
        &url,
        "bundle",
        "download",
        "--repo",
        "r",
        "--branch",
        "main",
        "--destination",
        &dst_s,
    ]);
    same_files(&src, &dst);
    // The default profile's wrong keys are refused: the profile is really what is used.
    run_command(
        dm.command()
            .env("AWS_PROFILE", "default")
            .args(["--store", &url, "bundle", "list", "--repo", "r"]),
    )
    .failure();
}
