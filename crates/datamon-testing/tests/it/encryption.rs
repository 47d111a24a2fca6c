#![allow(clippy::unwrap_used, clippy::disallowed_methods)]
//! Encrypted stores on every available backend (memory, local, and the loopback servers the
//! environment names): nothing of a fixture's contents, names or messages reaches the bucket;
//! wrong, missing and removed keys; every kind of tampering; concurrent writers; a crashed
//! upload's pack; sync.

use std::path::Path;

use bytes::Bytes;
use datamon::{
    BundleSelector, Datamon, DownloadOptions, ErrorKind, NoProgress, OpenOptions, Secret, Unlock,
    UploadContext, UploadOptions,
};
use datamon_store::keys;
use datamon_testing::backends::{available, Backend};

const CONTENT: &str = "SECRET-CONTENT-the-patient-is-allergic-to-penicillin";
const FILE_NAME: &str = "patient-records-alpha.csv";
const DIR_NAME: &str = "confidential-cohort";
const MESSAGE: &str = "MESSAGE-xyzzy-quarterly-export";
const DESCRIPTION: &str = "DESCRIPTION-licensed-imagery";

fn pass(p: &str) -> Secret {
    Secret::passphrase(p).expect("a passphrase")
}

fn options(b: &Backend, unlock: Unlock) -> OpenOptions {
    OpenOptions {
        author: Some("enc-test".into()),
        store_options: b.options.clone(),
        unlock: Some(unlock),
        ..Default::default()
    }
}

async fn open(b: &Backend, url: &str, unlock: Unlock) -> datamon::Result<Datamon> {
    Datamon::open(url, options(b, unlock)).await
}

fn fixture(dir: &Path) {
    let sub = dir.join(DIR_NAME);
    std::fs::create_dir_all(&sub).unwrap();
    // Compressible and incompressible content: both are sealed.
    std::fs::write(sub.join(FILE_NAME), CONTENT.repeat(2000)).unwrap();
    let noise: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut with_marker = noise.clone();
    with_marker.extend_from_slice(CONTENT.as_bytes());
    std::fs::write(dir.join("noise.bin"), with_marker).unwrap();
    std::fs::write(dir.join("small.txt"), CONTENT).unwrap();
}

async fn upload(dm: &Datamon, dir: &Path, msg: &str) -> datamon::UploadReport {
    let ctx = UploadContext {
        repo: "private".parse().unwrap(),
        path: dir.to_owned(),
        message: msg.into(),
    };
    let opts = UploadOptions {
        label: Some("production".parse().unwrap()),
        ..Default::default()
    };
    dm.upload(ctx, opts, &NoProgress).await.expect("upload")
}

/// Every object of the store, raw.
async fn raw_objects(dm: &Datamon) -> Vec<(String, Bytes)> {
    let s = dm.store();
    let mut out = Vec::new();
    for (k, _) in s.list("").await.unwrap() {
        out.push((k.clone(), s.get(&k).await.unwrap()));
    }
    out
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

async fn hides_everything_and_reads_back(b: Backend) {
    let url = b.fresh_url("enc-hide");
    let dm = Datamon::create_encrypted(
        &url,
        &pass("correct horse battery"),
        "alice",
        options(&b, Unlock::none()),
    )
    .await
    .expect("create an encrypted store");
    assert!(dm.store().is_encrypted());
    let repo = "private".parse().unwrap();
    dm.create_repo(&repo, DESCRIPTION).await.unwrap();
    let src = tempfile::tempdir().unwrap();
    fixture(src.path());
    let first = upload(&dm, src.path(), MESSAGE).await;

    let objects = raw_objects(&dm).await;
    assert!(objects.iter().any(|(k, _)| k.starts_with("packs/")));
    for (k, bytes) in &objects {
        for secret in [
            CONTENT,
            FILE_NAME,
            DIR_NAME,
            MESSAGE,
            DESCRIPTION,
            "enc-test",
        ] {
            // Key objects name their key and who added it, in clear (docs/security.md).
            if secret == "enc-test" && k.starts_with(keys::KEYS) {
                continue;
            }
            assert!(
                !contains(bytes, secret),
                "{}: {k} holds {secret:?} in clear",
                b.name
            );
            assert!(!k.contains(secret), "{}: key {k} names {secret:?}", b.name);
        }
    }
    // Only the config and the key objects are readable JSON.
    for (k, bytes) in &objects {
        let readable = serde_json::from_slice::<serde_json::Value>(bytes).is_ok();
        assert_eq!(
            readable,
            k == keys::CONFIG || k.starts_with(keys::KEYS),
            "{}: {k}",
            b.name
        );
    }

    // Dedup works inside the encrypted store.
    let again = upload(&dm, src.path(), "second").await;
    assert_eq!(again.bundle.stats.new_chunks, 0, "{}", b.name);
    assert_eq!(again.bundle.root, first.bundle.root);

    // A second opener with the passphrase reads everything back, verified.
    let reader = open(
        &b,
        &url,
        Unlock::with(pass("correct horse battery"), "test"),
    )
    .await
    .expect("open with the passphrase");
    let id = reader
        .resolve(&repo, &BundleSelector::Label("production".parse().unwrap()))
        .await
        .unwrap();
    let bundle = reader.get_bundle(&repo, &id).await.unwrap();
    assert_eq!(bundle.message, "second");
    let dest = tempfile::tempdir().unwrap();
    let out = dest.path().join("out");
    reader
        .download(&repo, &id, &out, &DownloadOptions::default(), &NoProgress)
        .await
        .expect("download");
    assert_eq!(
        std::fs::read(out.join(DIR_NAME).join(FILE_NAME)).unwrap(),
        CONTENT.repeat(2000).as_bytes()
    );
    assert_eq!(
        std::fs::read(out.join("small.txt")).unwrap(),
        CONTENT.as_bytes()
    );
    let report = reader.fsck(true, &NoProgress).await.unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert!(report.blobs_verified > 0);

    // A mount's read path: from the store, then again from the chunk cache (verified with the
    // store's keyed ids).
    let cache = tempfile::tempdir().unwrap();
    let opts = datamon::vfs::VfsOptions {
        cache_dir: Some(cache.path().to_owned()),
        ..Default::default()
    };
    let vfs = reader
        .vfs(&repo, &id, opts, tokio::runtime::Handle::current())
        .await
        .expect("open the bundle as a filesystem");
    let read = tokio::task::spawn_blocking(move || {
        let root = datamon::vfs::ROOT_INODE;
        let dir = vfs.lookup_blocking(root, DIR_NAME).unwrap().unwrap();
        let f = vfs.lookup_blocking(dir.ino, FILE_NAME).unwrap().unwrap();
        let mut reads = Vec::new();
        for _ in 0..2 {
            let fh = vfs.open_blocking(f.ino).unwrap();
            reads.push(vfs.read_blocking(fh, 0, 1 << 20).unwrap());
        }
        reads
    })
    .await
    .unwrap();
    for r in read {
        assert_eq!(&r[..], CONTENT.repeat(2000).as_bytes());
    }
    eprintln!("{}: encrypted store hides names and contents", b.name);
}

async fn keys_open_or_refuse(b: Backend) {
    let url = b.fresh_url("enc-keys");
    let dm = Datamon::create_encrypted(
        &url,
        &pass("first pass"),
        "alice",
        options(&b, Unlock::none()),
    )
    .await
    .unwrap();

    let missing = open(&b, &url, Unlock::none()).await.expect_err("no key");
    assert_eq!(missing.kind(), ErrorKind::PermissionDenied, "{missing}");
    assert!(missing.to_string().contains("is encrypted"), "{missing}");

    let wrong = open(&b, &url, Unlock::with(pass("wrong pass"), "test"))
        .await
        .expect_err("wrong passphrase");
    assert_eq!(wrong.kind(), ErrorKind::PermissionDenied, "{wrong}");
    assert!(wrong.to_string().contains("no key of store"), "{wrong}");

    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("ci.key");
    datamon::generate_key_file(&key_file).unwrap();
    let file_secret = Secret::key_file(&key_file).unwrap();
    let added = dm
        .store()
        .add_key(&file_secret, "ci", "enc-test")
        .await
        .unwrap();
    let keys = dm.store().list_keys().await.unwrap();
    assert_eq!(keys.len(), 2);
    let alice = keys.iter().find(|k| k.name == "alice").unwrap().id.clone();

    let by_file = open(&b, &url, Unlock::with(file_secret.clone(), "file"))
        .await
        .expect("the key file opens it");
    by_file
        .store()
        .remove_key(&alice)
        .await
        .expect("remove alice's key");
    let removed = open(&b, &url, Unlock::with(pass("first pass"), "test"))
        .await
        .expect_err("a removed key");
    assert!(removed.to_string().contains("no key of store"), "{removed}");
    let last = by_file
        .store()
        .remove_key(&added.id)
        .await
        .expect_err("the last key");
    assert!(last.to_string().contains("last key"), "{last}");
    let unknown = by_file
        .store()
        .remove_key("nope")
        .await
        .expect_err("unknown");
    assert_eq!(unknown.kind(), ErrorKind::NotFound);

    // A plain store has no keys to manage.
    let plain = open(&b, &b.fresh_url("enc-plain"), Unlock::none())
        .await
        .unwrap();
    assert!(!plain.store().is_encrypted());
    assert!(plain.store().list_keys().await.is_err());
    eprintln!("{}: keys open or refuse", b.name);
}

async fn tampering_is_detected(b: Backend) {
    let url = b.fresh_url("enc-tamper");
    let secret = pass("tamper pass");
    let dm = Datamon::create_encrypted(&url, &secret, "alice", options(&b, Unlock::none()))
        .await
        .unwrap();
    let repo: datamon::RepoName = "private".parse().unwrap();
    dm.create_repo(&repo, "x").await.unwrap();
    let src = tempfile::tempdir().unwrap();
    fixture(src.path());
    let one = upload(&dm, src.path(), "one").await.bundle;
    std::fs::write(src.path().join("small.txt"), "changed").unwrap();
    let two = upload(&dm, src.path(), "two").await.bundle;
    let s = dm.store();
    let fresh = || open(&b, &url, Unlock::with(secret.clone(), "test"));

    // A replayed label record: production's first record copied as its next one.
    let label = keys::label("private", "production");
    let first = s.get(&keys::seq(&label, 1)).await.unwrap();
    s.create(&keys::seq(&label, 3), first).await.unwrap();
    let e = fresh()
        .await
        .unwrap()
        .resolve(&repo, &BundleSelector::Label("production".parse().unwrap()))
        .await
        .expect_err("a replayed label record");
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert!(e.to_string().contains("replayed"), "{e}");
    s.delete(&keys::seq(&label, 3)).await.unwrap();

    // A swapped bundle record: bundle one's record under bundle two's key.
    let k1 = keys::bundle("private", &one.id);
    let k2 = keys::bundle("private", &two.id);
    let saved = s.get(&k2).await.unwrap();
    s.delete(&k2).await.unwrap();
    s.put(&k2, s.get(&k1).await.unwrap()).await.unwrap();
    let e = fresh()
        .await
        .unwrap()
        .get_bundle(&repo, &two.id)
        .await
        .expect_err("a swapped record");
    assert!(e.to_string().contains(&k2), "names the object: {e}");
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    s.delete(&k2).await.unwrap();
    s.put(&k2, saved).await.unwrap();

    // A record written in clear by someone without the key.
    let forged = keys::seq(&label, 3);
    s.create(
        &forged,
        Bytes::from(format!(
            r#"{{"bundle":"{}","previous":null,"author":"mallory","time":"2026-01-01T00:00:00Z"}}"#,
            one.id
        )),
    )
    .await
    .unwrap();
    let e = fresh()
        .await
        .unwrap()
        .get_label(&repo, &"production".parse().unwrap())
        .await
        .expect_err("a forged plain record");
    assert!(e.to_string().contains("not sealed"), "{e}");
    s.delete(&forged).await.unwrap();

    // One flipped byte in a pack: the download fails naming the damage, fsck reports it.
    let (pack_key, _) = s
        .list(keys::PACKS)
        .await
        .unwrap()
        .into_iter()
        .max_by_key(|(_, size)| *size)
        .unwrap();
    let mut bytes = s.get(&pack_key).await.unwrap().to_vec();
    bytes[100] ^= 0x01;
    s.put(&pack_key, Bytes::from(bytes)).await.unwrap();
    let reader = fresh().await.unwrap();
    let dest = tempfile::tempdir().unwrap();
    let e = reader
        .download(
            &repo,
            &two.id,
            &dest.path().join("o"),
            &DownloadOptions::default(),
            &NoProgress,
        )
        .await
        .expect_err("a flipped byte");
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert!(e.to_string().contains("authenticate"), "{e}");
    let report = reader.fsck(true, &NoProgress).await.unwrap();
    assert!(
        report.problems.iter().any(|p| p.contains(&pack_key)),
        "{:?}",
        report.problems
    );
    eprintln!("{}: tampering detected", b.name);
}

async fn concurrent_writers_and_recovered_packs(b: Backend) {
    let url = b.fresh_url("enc-conc");
    let secret = pass("shared pass");
    let dm = Datamon::create_encrypted(&url, &secret, "team", options(&b, Unlock::none()))
        .await
        .unwrap();
    let repo: datamon::RepoName = "private".parse().unwrap();
    dm.create_repo(&repo, "x").await.unwrap();
    let dirs: Vec<tempfile::TempDir> = (0..6).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut tasks = Vec::new();
    for (i, d) in dirs.iter().enumerate() {
        std::fs::write(d.path().join("f.txt"), format!("writer {i}")).unwrap();
        let dm = open(&b, &url, Unlock::with(secret.clone(), "test"))
            .await
            .unwrap();
        let path = d.path().to_owned();
        tasks.push(tokio::spawn(async move {
            upload(&dm, &path, &format!("w{i}")).await.bundle
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap().id);
    }
    let bundles = dm.list_bundles(&repo).await.unwrap();
    assert_eq!(bundles.len(), 6);
    let roots = bundles.iter().filter(|b| b.parents.is_empty()).count();
    assert_eq!(roots, 1, "one line of bundles: {bundles:?}");

    // A pack stored without its index object (an upload killed between the two writes) is
    // found, authenticated from its sealed footer and indexed by the next upload's recovery.
    let s = dm.store();
    let data = b"a chunk of a killed upload".to_vec();
    let hash = s.hasher().hash(&data);
    let mut w = s.pack_writer(0);
    w.add_raw(hash, datamon_store::BlobKind::Data, &data);
    let p = w.finish();
    s.put(&keys::pack(&p.id), p.bytes.clone()).await.unwrap();
    let mut index = s.load_index().await.unwrap();
    assert_eq!(s.recover_packs(&mut index).await.unwrap(), 1);
    let index = s.load_index().await.unwrap();
    assert_eq!(s.read_blob(&index, &hash).await.unwrap(), data);

    // Sync copies the sealed store as it is; the same passphrase opens the copy.
    let copy = b.fresh_url("enc-copy");
    Datamon::sync_stores(&url, &copy, &options(&b, Unlock::with(secret.clone(), "t")))
        .await
        .expect("sync");
    let c = open(&b, &copy, Unlock::with(secret.clone(), "t"))
        .await
        .expect("open the copy");
    assert!(c.store().is_encrypted());
    assert_eq!(c.list_bundles(&repo).await.unwrap().len(), 6);
    eprintln!("{}: concurrent writers, recovered packs, sync", b.name);
}

async fn each(f: impl AsyncFn(Backend)) {
    for b in available() {
        f(b).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn encrypted_store_hides_contents_names_and_messages() {
    each(hides_everything_and_reads_back).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn encrypted_store_keys_open_or_refuse() {
    each(keys_open_or_refuse).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn encrypted_store_detects_tampering() {
    each(tampering_is_detected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn encrypted_store_concurrent_writers_recovery_and_sync() {
    each(concurrent_writers_and_recovered_packs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_existing_store_cannot_become_encrypted() {
    let b = Backend::local();
    let url = b.fresh_url("enc-existing");
    open(&b, &url, Unlock::none()).await.unwrap();
    let e = Datamon::create_encrypted(&url, &pass("p"), "a", options(&b, Unlock::none()))
        .await
        .expect_err("a store is there");
    assert!(e.to_string().contains("already there"), "{e}");
}

fn identity(dir: &Path, name: &str) -> datamon::Identity {
    datamon::Identity::generate_file(&dir.join(name)).unwrap()
}

fn as_writer(id: &Path, secret: Option<&Secret>) -> Unlock {
    let mut u = match secret {
        Some(s) => Unlock::with(s.clone(), "test"),
        None => Unlock::none(),
    };
    u.set_identity(datamon::Identity::from_file(id).unwrap());
    u
}

async fn untrusted_writers_are_ignored(b: Backend, encrypted: bool) {
    let url = b.fresh_url(if encrypted { "sig-enc" } else { "sig" });
    let ids = tempfile::tempdir().unwrap();
    let alice = identity(ids.path(), "alice");
    let mallory = identity(ids.path(), "mallory");
    let secret = pass("signing pass");
    let secret = encrypted.then_some(&secret);
    let alice_u = as_writer(&ids.path().join("alice"), secret);
    let mallory_u = as_writer(&ids.path().join("mallory"), secret);
    let admin = match secret {
        Some(s) => {
            Datamon::create_encrypted(&url, s, "team", options(&b, alice_u.clone()))
                .await
                .unwrap();
            open(&b, &url, alice_u.clone()).await.unwrap()
        }
        None => open(&b, &url, alice_u.clone()).await.unwrap(),
    };
    let repo: datamon::RepoName = "r".parse().unwrap();
    admin.create_repo(&repo, "x").await.unwrap();
    let mut store = admin.store().clone();
    let trusted =
        |id: &datamon::Identity, name: &str, repos: &[&str], is_admin: bool| datamon::TrustedKey {
            key: id.public_key(),
            name: name.into(),
            repos: repos.iter().map(|r| (*r).to_owned()).collect(),
            admin: is_admin,
        };
    // Mallory, who can write the bucket (and, encrypted, holds the store key), opened it
    // before there was a trust list: her writes are not checked on her side.
    let m = open(&b, &url, mallory_u.clone()).await.unwrap();
    store
        .set_trust(vec![trusted(&alice, "Alice", &["*"], true)], "alice")
        .await
        .expect("start the trust list");
    let root = store.trust_root().unwrap().to_owned();
    assert_eq!(root, alice.public_key());

    // Alice's writes are believed, and shown as hers.
    let admin = open(&b, &url, alice_u.clone()).await.unwrap();
    admin
        .create_repo(&"other".parse().unwrap(), "y")
        .await
        .unwrap();
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("f"), "v1").unwrap();
    let ctx = |msg: &str| UploadContext {
        repo: repo.clone(),
        path: src.path().to_owned(),
        message: msg.into(),
    };
    let labelled = || UploadOptions {
        label: Some("production".parse().unwrap()),
        ..Default::default()
    };
    let v1 = admin
        .upload(ctx("v1"), labelled(), &NoProgress)
        .await
        .unwrap()
        .bundle;
    std::fs::write(src.path().join("f"), "v2").unwrap();
    let v2 = admin
        .upload(ctx("v2"), labelled(), &NoProgress)
        .await
        .unwrap()
        .bundle;
    let production = BundleSelector::Label("production".parse().unwrap());
    let reader = open(&b, &url, Unlock::none_or(secret)).await.unwrap();
    assert_eq!(reader.resolve(&repo, &production).await.unwrap(), v2.id);
    let shown = reader.get_bundle(&repo, &v2.id).await.unwrap();
    assert!(shown.author.starts_with("Alice ["), "{}", shown.author);

    // A datamon opened now refuses her writes before writing anything.
    let refused = open(&b, &url, mallory_u.clone()).await.unwrap();
    let e = refused
        .set_label(&repo, &"production".parse().unwrap(), &v1.id, None)
        .await
        .expect_err("an untrusted identity");
    assert!(
        e.to_string().contains("not on the store's trust list"),
        "{e}"
    );
    // Her move of production back to v1, written anyway, is ignored.
    let label = keys::label("r", "production");
    let forged = datamon::types::LabelRecord {
        bundle: v1.id,
        previous: Some(v2.id),
        author: "alice".into(),
        time: chrono::Utc::now(),
    };
    m.store()
        .append::<_, datamon_store::Error>(&label, |_| Ok(forged.clone()))
        .await
        .unwrap();
    let reader = open(&b, &url, Unlock::none_or(secret)).await.unwrap();
    assert_eq!(
        reader.resolve(&repo, &production).await.unwrap(),
        v2.id,
        "{}",
        b.name
    );
    // Nor can she add herself to the trust list.
    let mut ms = refused.store().clone();
    let e = ms
        .set_trust(
            vec![
                trusted(&mallory, "M", &["*"], true),
                trusted(&alice, "A", &["*"], true),
            ],
            "m",
        )
        .await
        .expect_err("not an admin");
    assert!(e.to_string().contains("not an admin"), "{e}");
    // Appending a trust record by hand does not help either.
    #[derive(serde::Serialize, serde::Deserialize)]
    struct List {
        keys: Vec<datamon::TrustedKey>,
        author: String,
        time: chrono::DateTime<chrono::Utc>,
    }
    ms.append::<_, datamon_store::Error>(datamon_store::TRUST, |_| {
        Ok(List {
            keys: vec![trusted(&mallory, "M", &["*"], true)],
            author: "m".into(),
            time: chrono::Utc::now(),
        })
    })
    .await
    .unwrap();
    let reader = open(&b, &url, Unlock::none_or(secret)).await.unwrap();
    assert_eq!(reader.resolve(&repo, &production).await.unwrap(), v2.id);
    assert_eq!(reader.store().trust_list().unwrap().len(), 1);

    // Trusted for another repo only: still ignored here.
    let mut store = open(&b, &url, alice_u.clone())
        .await
        .unwrap()
        .store()
        .clone();
    store
        .set_trust(
            vec![
                trusted(&alice, "Alice", &["*"], true),
                trusted(&mallory, "Mallory", &["other"], false),
            ],
            "alice",
        )
        .await
        .unwrap();
    let reader = open(&b, &url, Unlock::none_or(secret)).await.unwrap();
    assert_eq!(reader.resolve(&repo, &production).await.unwrap(), v2.id);

    // Trusted for r: her move now counts.
    store
        .set_trust(
            vec![
                trusted(&alice, "Alice", &["*"], true),
                trusted(&mallory, "Mallory", &["r"], false),
            ],
            "alice",
        )
        .await
        .unwrap();
    let reader = open(&b, &url, Unlock::none_or(secret)).await.unwrap();
    assert_eq!(reader.resolve(&repo, &production).await.unwrap(), v1.id);
    let rec = reader
        .get_label(&repo, &"production".parse().unwrap())
        .await
        .unwrap();
    assert!(
        rec.author.starts_with("Mallory ["),
        "the signer, not the claimed author: {}",
        rec.author
    );

    // A pinned trust root that the store's list does not start with: refused.
    let carol = identity(ids.path(), "carol");
    let mut pinned = Unlock::none_or(secret);
    pinned.pin_trust_root(carol.public_key());
    let e = open(&b, &url, pinned).await.expect_err("another root");
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    let mut pinned = Unlock::none_or(secret);
    pinned.pin_trust_root(root);
    open(&b, &url, pinned).await.expect("the right root");
    eprintln!(
        "{}: untrusted writers ignored (encrypted: {encrypted})",
        b.name
    );
}

trait NoneOr {
    fn none_or(secret: Option<&Secret>) -> Unlock;
}

impl NoneOr for Unlock {
    fn none_or(secret: Option<&Secret>) -> Unlock {
        match secret {
            Some(s) => Unlock::with(s.clone(), "test"),
            None => Unlock::none(),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn untrusted_label_moves_are_ignored_on_plain_and_encrypted_stores() {
    for b in available() {
        untrusted_writers_are_ignored(b, false).await;
    }
    for b in available() {
        untrusted_writers_are_ignored(b, true).await;
    }
}

/// A store sealed with the cipher of the stores made before 2026-12-03 (XChaCha20-Poly1305)
/// still opens, takes new bundles in the same cipher and reads them back; one made now says
/// AES-256-GCM in its config; neither opens as the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stores_of_the_earlier_cipher_keep_working() {
    let b = Backend::local();
    let secret = pass("old horse");
    let old_url = b.fresh_url("enc-xchacha");
    datamon_store::Store::create_encrypted_with(
        &old_url,
        &b.options,
        &secret,
        "alice",
        "enc-test",
        "xchacha20poly1305",
    )
    .await
    .unwrap();
    let dm = open(&b, &old_url, Unlock::with(secret.clone(), "test"))
        .await
        .unwrap();
    let enc = dm.store().config().encryption.clone().unwrap();
    assert_eq!(enc.cipher, "xchacha20poly1305");
    let repo = "private".parse().unwrap();
    dm.create_repo(&repo, DESCRIPTION).await.unwrap();
    let src = tempfile::tempdir().unwrap();
    fixture(src.path());
    let up = upload(&dm, src.path(), MESSAGE).await;
    for (k, bytes) in raw_objects(&dm).await {
        assert!(!contains(&bytes, CONTENT), "{k} holds the content in clear");
    }
    let reopened = open(&b, &old_url, Unlock::with(secret.clone(), "test"))
        .await
        .unwrap();
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("d");
    reopened
        .download(
            &repo,
            &up.bundle.id,
            &dest,
            &DownloadOptions::default(),
            &NoProgress,
        )
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(dest.join(DIR_NAME).join(FILE_NAME)).unwrap(),
        CONTENT.repeat(2000).as_bytes()
    );
    assert_eq!(
        std::fs::read(dest.join("noise.bin")).unwrap(),
        std::fs::read(src.path().join("noise.bin")).unwrap()
    );

    let new_url = b.fresh_url("enc-aes");
    let dm = Datamon::create_encrypted(&new_url, &secret, "alice", options(&b, Unlock::none()))
        .await
        .unwrap();
    let enc = dm.store().config().encryption.clone().unwrap();
    assert_eq!(enc.cipher, "aes256gcm-blake3-subkey");
    let e = datamon_store::Store::create_encrypted_with(
        &b.fresh_url("enc-rot13"),
        &b.options,
        &secret,
        "alice",
        "enc-test",
        "rot13",
    )
    .await
    .expect_err("an unknown cipher");
    assert!(
        matches!(e, datamon_store::Error::UnsupportedVersion { .. }),
        "{e}"
    );
}
