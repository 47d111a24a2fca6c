//! Transfers through the fault-injecting proxy, against the real S3 server (and Azurite).

use std::time::{Duration, Instant};

use datamon::{
    BundleSelector, Datamon, DownloadOptions, NoProgress, OpenOptions, UploadContext, UploadOptions,
};
use datamon_testing::backends::Backend;
use datamon_testing::fixtures::{assert_same_tree, write_random_tree};
use datamon_testing::proxy::{FaultProxy, Faults};

/// Client settings for tests through the proxy: short timeouts (stalls are noticed in 2 s) and
/// no connection reuse (so faults hit requests, not just the first request of a connection).
fn through(b: &Backend, proxy: &FaultProxy) -> Vec<(String, String)> {
    let p = b.option_prefix();
    b.clone()
        .with_endpoint(&proxy.endpoint())
        .with_option(&format!("{p}read_timeout"), "2s")
        .with_option(&format!("{p}connect_timeout"), "2s")
        .with_option(&format!("{p}timeout"), "30s")
        .with_option(&format!("{p}pool_max_idle_per_host"), "0")
        .options
}

async fn open(url: &str, options: Vec<(String, String)>) -> Datamon {
    Datamon::open(
        url,
        OpenOptions {
            author: Some("fault-test".into()),
            cache_dir: None,
            store_options: options,
            concurrency: Some(4),
            unlock: None,
        },
    )
    .await
    .unwrap_or_else(|e| panic!("open {url}: {e}"))
}

async fn upload_download_with_faults(b: Backend) {
    let url = b.fresh_store_with_pack_size("faults", 1 << 20).await;
    let proxy = FaultProxy::start(b.endpoint.as_deref().expect("a network backend")).await;
    let dm = open(&url, through(&b, &proxy)).await;
    let repo = "data".parse().expect("a repo name");
    dm.create_repo(&repo, "faults").await.expect("create repo");

    let src = tempfile::tempdir().expect("tempdir");
    let total = write_random_tree(src.path(), 7, 60, 200_000);
    proxy.set_faults(Faults {
        fail: 0.05,
        stall: 0.05,
        stall_for: Duration::from_secs(5),
    });
    let t = Instant::now();
    let ctx = UploadContext {
        repo: repo.clone(),
        path: src.path().to_path_buf(),
        message: "through faults".into(),
    };
    let label = Some("latest".parse().expect("a label"));
    let report = dm
        .upload(
            ctx,
            UploadOptions {
                label,
                ..Default::default()
            },
            &NoProgress,
        )
        .await
        .expect("upload through 10% faults");
    assert_eq!(report.bundle.stats.bytes, total);

    let dst = tempfile::tempdir().expect("tempdir");
    let id = dm
        .resolve(&repo, &BundleSelector::Latest)
        .await
        .expect("resolve");
    assert_eq!(id, report.bundle.id);
    dm.download(
        &repo,
        &id,
        dst.path(),
        &DownloadOptions::default(),
        &NoProgress,
    )
    .await
    .expect("download through 10% faults");
    assert_same_tree(src.path(), dst.path());
    let stats = proxy.stats();
    eprintln!(
        "{}: {} bytes up and down through faults in {:.1?}: {stats:?}",
        b.name,
        total,
        t.elapsed()
    );
    assert!(
        stats.failed + stats.stalled > 0,
        "the proxy injected no fault: {stats:?}"
    );
}

async fn server_down_mid_upload(b: Backend) {
    let url = b.fresh_store_with_pack_size("down", 1 << 20).await;
    let proxy = FaultProxy::start(b.endpoint.as_deref().expect("a network backend")).await;
    let dm = open(&url, through(&b, &proxy)).await;
    let direct = open(&url, b.options.clone()).await;
    let repo: datamon::RepoName = "data".parse().expect("a repo name");
    dm.create_repo(&repo, "down").await.expect("create repo");

    let src = tempfile::tempdir().expect("tempdir");
    let total = write_random_tree(src.path(), 11, 40, 400_000);
    let ctx = UploadContext {
        repo: repo.clone(),
        path: src.path().to_path_buf(),
        message: "interrupted".into(),
    };
    // The "server" stops after 70% of the data went up: with at most 4 packs of 1 MiB in
    // flight, some packs were sent whole by then (so there is something to reuse).
    proxy.down_after_upload_bytes(total * 7 / 10);
    let t = Instant::now();
    let err = dm
        .upload(ctx.clone(), UploadOptions::default(), &NoProgress)
        .await
        .expect_err("the upload must fail while the server is down");
    let msg = err.to_string();
    eprintln!("{}: failed after {:.1?}: {msg}", b.name, t.elapsed());
    assert!(proxy.is_down());
    assert!(
        t.elapsed() < Duration::from_secs(60),
        "the failure took {:.1?}",
        t.elapsed()
    );
    assert!(msg.contains("failed"), "not a clear error: {msg}");
    assert!(
        direct
            .list_bundles(&repo)
            .await
            .expect("list bundles")
            .is_empty(),
        "no bundle may be listed after a failed upload"
    );
    let stored_before = direct
        .store()
        .list(datamon_store::keys::PACKS)
        .await
        .expect("list packs")
        .len();
    assert!(stored_before > 0, "some packs should have been stored");

    proxy.set_down(false).await;
    let report = dm
        .upload(ctx, UploadOptions::default(), &NoProgress)
        .await
        .expect("the rerun completes once the server is back");
    assert_eq!(report.bundle.stats.bytes, total);
    assert!(
        report.bundle.stats.new_bytes < total,
        "the rerun must reuse the packs already stored: it stored {} new bytes of {total} (packs before: {stored_before}, recovered: {})",
        report.bundle.stats.new_bytes,
        report.recovered_packs
    );
    eprintln!(
        "{}: rerun reused {} of {total} bytes ({} packs were stored before, {} recovered)",
        b.name,
        total - report.bundle.stats.new_bytes,
        stored_before,
        report.recovered_packs
    );
    let dst = tempfile::tempdir().expect("tempdir");
    direct
        .download(
            &repo,
            &report.bundle.id,
            dst.path(),
            &DownloadOptions::default(),
            &NoProgress,
        )
        .await
        .expect("download");
    assert_same_tree(src.path(), dst.path());
    assert_eq!(direct.list_bundles(&repo).await.expect("list").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_upload_and_download_survive_ten_percent_faults() {
    if let Some(b) = Backend::s3() {
        upload_download_with_faults(b).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn azure_upload_and_download_survive_ten_percent_faults() {
    if let Some(b) = Backend::azure() {
        upload_download_with_faults(b).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_server_down_mid_upload_then_rerun_reuses_packs() {
    if let Some(b) = Backend::s3() {
        server_down_mid_upload(b).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn azure_server_down_mid_upload_then_rerun_reuses_packs() {
    if let Some(b) = Backend::azure() {
        server_down_mid_upload(b).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gcs_upload_and_download_survive_ten_percent_faults() {
    if let Some(b) = Backend::gcs() {
        upload_download_with_faults(b).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gcs_server_down_mid_upload_then_rerun_reuses_packs() {
    if let Some(b) = Backend::gcs() {
        server_down_mid_upload(b).await;
    }
}

/// A primary on S3 behind the proxy, a replica on Azure (or a local folder): writes reach
/// both; with the primary down, or with its packs damaged, reads are served by the replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replica_serves_reads_when_the_primary_fails() {
    let Some(b) = Backend::s3() else { return };
    let rep_backend = Backend::azure().unwrap_or_else(Backend::local);
    let url = b.fresh_url("primary");
    let rep_url = rep_backend.fresh_url("replica");
    let proxy = FaultProxy::start(b.endpoint.as_deref().expect("a network backend")).await;
    let mut options = through(&b, &proxy);
    options.extend(rep_backend.options.clone());
    let opts = || OpenOptions {
        author: Some("replica-test".into()),
        cache_dir: None,
        store_options: options.clone(),
        concurrency: Some(4),
        unlock: None,
    };
    let dm = Datamon::open_with_replica(&url, &rep_url, opts())
        .await
        .expect("open with a replica");
    let repo: datamon::RepoName = "data".parse().expect("a repo name");
    dm.create_repo(&repo, "replicated")
        .await
        .expect("create repo");
    let src = tempfile::tempdir().expect("tempdir");
    write_random_tree(src.path(), 5, 20, 100_000);
    let ctx = UploadContext {
        repo: repo.clone(),
        path: src.path().to_path_buf(),
        message: "both".into(),
    };
    let report = dm
        .upload(ctx, UploadOptions::default(), &NoProgress)
        .await
        .expect("upload to both");

    // The replica alone is a complete store.
    let replica_only = open(&rep_url, rep_backend.options.clone()).await;
    let ids: Vec<_> = replica_only
        .list_bundles(&repo)
        .await
        .expect("list on the replica")
        .into_iter()
        .map(|b| b.id)
        .collect();
    assert_eq!(ids, vec![report.bundle.id]);

    // The primary's packs go bad: tree nodes are read from the replica.
    let direct = open(&url, b.options.clone()).await;
    for (key, size) in direct.store().list("packs/").await.expect("list packs") {
        let junk = bytes::Bytes::from(vec![0x5a; size as usize]);
        direct.store().put(&key, junk).await.expect("damage a pack");
    }
    let files = dm
        .list_files(&repo, &report.bundle.id)
        .await
        .expect("tree nodes come from the replica");
    assert_eq!(files.len(), 20);

    // The primary goes down: everything is read from the replica.
    proxy.set_down(true).await;
    let t = Instant::now();
    let dst = tempfile::tempdir().expect("tempdir");
    let dm2 = Datamon::open_with_replica(&url, &rep_url, opts())
        .await
        .expect("opens on the replica while the primary is down");
    dm2.download(
        &repo,
        &report.bundle.id,
        dst.path(),
        &DownloadOptions::default(),
        &NoProgress,
    )
    .await
    .expect("download from the replica while the primary is down");
    assert_same_tree(src.path(), dst.path());
    eprintln!(
        "download from the replica with the primary down: {:.1?}",
        t.elapsed()
    );
}

/// A create whose response is lost (the object was written, the client never heard) is retried
/// and recognised as this writer's own, not reported as a lost race.
async fn lost_create_response(b: Backend) {
    let proxy = FaultProxy::start(b.endpoint.as_deref().expect("a network backend")).await;
    let url = b.fresh_url("lost");
    let store = datamon_store::Store::open(&url, &through(&b, &proxy))
        .await
        .expect("open");
    let body = bytes::Bytes::from_static(b"record written once");
    proxy.cut_next_responses(1);
    store
        .create("refs/x/0000000001", body.clone())
        .await
        .expect("the create succeeded although its first answer was lost");
    assert_eq!(proxy.stats().failed, 1, "{:?}", proxy.stats());
    assert_eq!(store.get("refs/x/0000000001").await.expect("get"), body);
    let again = store
        .create("refs/x/0000000001", bytes::Bytes::from_static(b"other"))
        .await
        .expect_err("a second writer still loses");
    assert_eq!(again.kind(), datamon_store::ErrorKind::AlreadyExists);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_lost_create_response_is_recognised() {
    if let Some(b) = Backend::s3() {
        lost_create_response(b).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn azure_lost_create_response_is_recognised() {
    if let Some(b) = Backend::azure() {
        lost_create_response(b).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gcs_lost_create_response_is_recognised() {
    if let Some(b) = Backend::gcs() {
        lost_create_response(b).await;
    }
}
