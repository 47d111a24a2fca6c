#![allow(clippy::unwrap_used)]
//! Encrypted stores through the binary: `context create --encrypt`, passphrases from the
//! environment, key files, `key add|list|remove`, wrong and missing keys, a replaced config; on
//! a local store and on the loopback S3 server.

use std::path::Path;

use crate::util::{assert_same_tree, run_command, Compare, Dm, Target};

const SECRET_TEXT: &str = "SECRET-TEXT-salary-of-every-employee";
const SECRET_NAME: &str = "payroll-confidential.csv";
const MESSAGE: &str = "MESSAGE-board-only-export";

fn fixture(dir: &Path) {
    std::fs::create_dir_all(dir.join("hr")).unwrap();
    std::fs::write(dir.join("hr").join(SECRET_NAME), SECRET_TEXT.repeat(500)).unwrap();
    std::fs::write(dir.join("readme.txt"), SECRET_TEXT).unwrap();
}

fn all_files(root: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(root).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            all_files(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn round_trip(t: &Target) {
    let url = t.fresh_url("enc");
    let store_dir = url.strip_prefix("file://").map(Path::new);
    let dm: Dm = t.dm().with_env("DATAMON_PASSPHRASE", "open sesame 42");
    dm.ok([
        "context",
        "create",
        "--name",
        "sec",
        "--store-url",
        &url,
        "--encrypt",
        "--key-name",
        "alice",
        "--use",
    ]);
    dm.ok(["repo", "create", "--repo", "hr", "--description", "people"]);
    let src = dm.dir("src");
    fixture(&src);
    let id = dm.upload("hr", &src, MESSAGE, &["--label", "production"]);
    dm.ok(["bundle", "list", "--repo", "hr"])
        .stdout_has(MESSAGE);
    let dest = dm.dir("dest");
    dm.download("hr", &id, &dest);
    assert_same_tree(&src, &dest, Compare::CONTENT);

    if let Some(dir) = store_dir {
        let mut files = Vec::new();
        all_files(dir, &mut files);
        assert!(files.len() > 5, "{files:?}");
        for f in files {
            let bytes = std::fs::read(&f).unwrap();
            for s in [SECRET_TEXT, SECRET_NAME, MESSAGE] {
                let found = bytes.windows(s.len()).any(|w| w == s.as_bytes());
                assert!(!found, "{} holds {s:?} in clear", f.display());
                assert!(!f.display().to_string().contains(s));
            }
        }
    }

    // No secret (stdin is not a terminal): a clear refusal, exit 1.
    let locked = t.dm();
    locked.ok([
        "context",
        "create",
        "--name",
        "sec",
        "--store-url",
        &url,
        "--use",
    ]);
    locked
        .run(["bundle", "list", "--repo", "hr"])
        .code(1)
        .stderr_has("is encrypted");
    t.dm()
        .with_env("DATAMON_PASSPHRASE", "not it")
        .run(["--store", &url, "bundle", "list", "--repo", "hr"])
        .code(1)
        .stderr_has("no key of store");

    // A key file opens it too; the context remembers it.
    let key = dm.path("ci.key");
    dm.ok(["key", "generate", "--file", key.to_str().unwrap()]);
    dm.run(["key", "generate", "--file", key.to_str().unwrap()])
        .failure();
    dm.ok([
        "key",
        "add",
        "--name",
        "ci",
        "--key-file",
        key.to_str().unwrap(),
    ])
    .stdout_has("Added key");
    let keys = dm.ok(["--json", "key", "list"]).json_lines();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(keys
        .iter()
        .any(|k| k["name"] == "alice" && k["kind"] == "passphrase"));
    assert!(keys
        .iter()
        .any(|k| k["name"] == "ci" && k["kind"] == "key-file"));
    let ci = t.dm();
    ci.ok([
        "context",
        "create",
        "--name",
        "ci",
        "--store-url",
        &url,
        "--key-file",
        key.to_str().unwrap(),
        "--use",
    ]);
    ci.ok(["bundle", "list", "--repo", "hr"])
        .stdout_has(MESSAGE);

    // A new passphrase key from the environment; then alice's key is removed.
    run_command(
        dm.command()
            .env("DATAMON_NEW_PASSPHRASE", "second pass 7")
            .args(["key", "add", "--name", "bob"]),
    )
    .success();
    ci.ok(["key", "remove", "--key", "alice"])
        .stdout_has("no longer opens");
    dm.run(["bundle", "list", "--repo", "hr"])
        .code(1)
        .stderr_has("no key of store");
    t.dm()
        .with_env("DATAMON_PASSPHRASE", "second pass 7")
        .ok(["--store", &url, "bundle", "list", "--repo", "hr"])
        .stdout_has(MESSAGE);
    ci.run(["key", "remove", "--key", "nope"]).code(2);
}

#[test]
fn encrypted_store_round_trip_and_keys_local() {
    round_trip(&Target::local());
}

#[test]
fn encrypted_store_round_trip_and_keys_s3() {
    let Some(t) = Target::s3() else { return };
    round_trip(&t);
}

#[test]
fn an_encrypted_context_refuses_a_replaced_plain_config() {
    let t = Target::local();
    let url = t.fresh_url("downgrade");
    let dm = t.dm().with_env("DATAMON_PASSPHRASE", "pp");
    dm.ok([
        "context",
        "create",
        "--name",
        "sec",
        "--store-url",
        &url,
        "--encrypt",
        "--use",
    ]);
    dm.ok(["repo", "create", "--repo", "r", "--description", "x"]);
    // Whoever can write the bucket replaces the store by a plain one.
    let dir = url.strip_prefix("file://").unwrap();
    std::fs::remove_dir_all(dir).unwrap();
    dm.run(["repo", "list"])
        .code(1)
        .stderr_has("its context was created encrypted");
    // Encryption is chosen when a store is created.
    let plain = t.fresh_url("plain");
    t.dm().ok(["--store", &plain, "repo", "list"]);
    dm.run([
        "context",
        "create",
        "--name",
        "late",
        "--store-url",
        &plain,
        "--encrypt",
    ])
    .code(1)
    .stderr_has("already there");
}

/// Signed writes through the binary: `identity generate`, a context's signing key,
/// `trust init|add|list`; an untrusted writer's label move is ignored and reported.
#[test]
fn untrusted_label_move_is_ignored_and_reported() {
    let t = Target::local();
    let url = t.fresh_url("signed");
    let alice = t.dm();
    let id_file = alice.path("alice.id");
    let alice_pub = alice
        .ok(["identity", "generate", "--file", id_file.to_str().unwrap()])
        .lines()
        .pop()
        .unwrap();
    assert_eq!(alice_pub.len(), 64, "{alice_pub}");
    alice.ok([
        "context",
        "create",
        "--name",
        "team",
        "--store-url",
        &url,
        "--signing-key",
        id_file.to_str().unwrap(),
        "--use",
    ]);
    alice.ok(["identity", "show"]).stdout_has(&alice_pub);
    alice.ok(["repo", "create", "--repo", "r", "--description", "x"]);
    let src = alice.dir("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), "v1").unwrap();
    let v1 = alice.upload("r", &src, "v1", &["--label", "production"]);
    alice
        .ok(["trust", "init", "--name", "Alice"])
        .stdout_has("Alice");
    std::fs::write(src.join("f"), "v2").unwrap();
    let v2 = alice.upload("r", &src, "v2", &["--label", "production"]);
    let got = alice
        .ok([
            "--json",
            "label",
            "get",
            "--repo",
            "r",
            "--label",
            "production",
        ])
        .json();
    assert_eq!(got["bundle"], v2.as_str());
    assert!(
        got["author"].as_str().unwrap().starts_with("Alice ["),
        "{got}"
    );

    // Mallory writes the bucket with her own identity.
    let mallory = t.dm();
    let m_file = mallory.path("mallory.id");
    let m_pub = mallory
        .ok(["identity", "generate", "--file", m_file.to_str().unwrap()])
        .lines()
        .pop()
        .unwrap();
    run_command(
        mallory
            .command()
            .env("DATAMON_SIGNING_KEY_FILE", &m_file)
            .args([
                "--store",
                &url,
                "label",
                "set",
                "--repo",
                "r",
                "--label",
                "production",
                "--bundle",
                &v1,
            ]),
    )
    .failure()
    .stderr_has("not on the store's trust list");
    // Written by hand into the bucket, her move is ignored and reported.
    let dir = url.strip_prefix("file://").unwrap();
    let record = format!(
        r#"{{"bundle":"{v1}","previous":"{v2}","author":"alice","time":"2026-12-01T00:00:00Z"}}"#
    );
    std::fs::write(
        Path::new(dir).join("repos/r/labels/production/0000000009"),
        record,
    )
    .unwrap();
    let out = alice.ok([
        "--json",
        "label",
        "get",
        "--repo",
        "r",
        "--label",
        "production",
    ]);
    assert_eq!(out.json()["bundle"], v2.as_str(), "the move is ignored");
    assert!(
        out.stderr.contains("not signed"),
        "reported: {}",
        out.stderr
    );

    // Trusted for r, her move counts; the list shows both.
    alice.ok([
        "trust", "add", "--key", &m_pub, "--name", "Mallory", "--repo", "r",
    ]);
    let list = alice.ok(["--json", "trust", "list"]).json_lines();
    assert_eq!(list.len(), 2, "{list:?}");
    run_command(
        mallory
            .command()
            .env("DATAMON_SIGNING_KEY_FILE", &m_file)
            .args([
                "--store",
                &url,
                "label",
                "set",
                "--repo",
                "r",
                "--label",
                "production",
                "--bundle",
                &v1,
            ]),
    )
    .success();
    let got = alice
        .ok([
            "--json",
            "label",
            "get",
            "--repo",
            "r",
            "--label",
            "production",
        ])
        .json();
    assert_eq!(got["bundle"], v1.as_str());
    assert!(
        got["author"].as_str().unwrap().starts_with("Mallory ["),
        "{got}"
    );
    // Mallory is no admin.
    run_command(
        mallory
            .command()
            .env("DATAMON_SIGNING_KEY_FILE", &m_file)
            .args(["--store", &url, "trust", "remove", "--key", "Alice"]),
    )
    .failure()
    .stderr_has("not an admin");
}
