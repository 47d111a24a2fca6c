//! The node plugin's Prometheus endpoint, scraped over HTTP while volumes are published, read,
//! written, committed and unpublished.

use std::collections::HashMap;

use datamon_csi::csi::volume_capability::access_mode::Mode as AccessMode;
use datamon_fuse::metrics::MetricsServer;
use tonic::Code;

use crate::harness::{
    attrs, fuse_available, publish, unpublish, Fixture, InProcess, UnmountOnDrop,
};

/// The samples of one scrape (`name{labels}` -> value), checked to be OpenMetrics text.
async fn scrape(server: &MetricsServer) -> HashMap<String, f64> {
    let r = reqwest::get(format!("http://{}/metrics", server.addr()))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    let text = r.text().await.unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap();
            (k.to_owned(), v.parse().unwrap())
        })
        .collect()
}

fn get(m: &HashMap<String, f64>, k: &str) -> f64 {
    *m.get(k).unwrap_or_else(|| panic!("no sample {k} in {m:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_node_counts_volumes_reads_cache_hits_fetch_errors_and_commits() {
    if !fuse_available() {
        return;
    }
    let fx = Fixture::new().await;
    let opts = fx.options("state");
    let server = MetricsServer::start("127.0.0.1:0".parse().unwrap(), opts.metrics.clone())
        .await
        .unwrap();
    let (d, mut c) = InProcess::start(opts).await;
    let m = scrape(&server).await;
    assert_eq!(get(&m, "datamon_mounts{mode=\"read-only\"}"), 0.0);
    assert_eq!(get(&m, "datamon_read_bytes_total"), 0.0);

    // A read-only volume, read twice: the first read misses, the second hits.
    let ro = fx.path("ro");
    let _g1 = UnmountOnDrop(ro.clone());
    let ctx = attrs(&[("repo", "data"), ("label", "prod")]);
    let req = publish("ro-1", &ro, ctx, true, AccessMode::MultiNodeReaderOnly);
    c.node.node_publish_volume(req).await.unwrap();
    let big = crate::harness::data(3_000_000, 7);
    assert!(std::fs::read(ro.join("sub/big.bin")).unwrap() == big);
    let m = scrape(&server).await;
    assert_eq!(get(&m, "datamon_mounts{mode=\"read-only\"}"), 1.0);
    let cold_read = get(&m, "datamon_read_bytes_total");
    assert!(cold_read >= big.len() as f64, "{m:?}");
    assert!(get(&m, "datamon_cache_misses_total") > 0.0, "{m:?}");
    // (The file repeats itself: its chunks dedup, so fewer bytes are fetched than read.)
    assert!(get(&m, "datamon_store_read_bytes_total") > 0.0);
    assert!(get(&m, "datamon_store_reads_total") > 0.0);
    // The kernel keeps the pages it read from the mount: drop them, so that the next read
    // reaches the mount (and its caches) again.
    let f = std::fs::File::open(ro.join("sub/big.bin")).unwrap();
    rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed).unwrap();
    assert!(std::fs::read(ro.join("sub/big.bin")).unwrap() == big);
    let m2 = scrape(&server).await;
    let hits = get(&m2, "datamon_cache_hits_total{cache=\"memory\"}")
        + get(&m2, "datamon_cache_hits_total{cache=\"disk\"}");
    assert!(hits > 0.0, "the second read hits a cache: {m2:?}");
    // The second read reached the mount (the kernel may still serve a few pages itself:
    // DONTNEED drops only the pages it can).
    assert!(
        get(&m2, "datamon_read_bytes_total") > cold_read,
        "the second read reaches the mount: {m2:?}"
    );
    assert_eq!(
        get(&m2, "datamon_store_read_bytes_total"),
        get(&m, "datamon_store_read_bytes_total"),
        "nothing fetched again"
    );
    assert_eq!(get(&m2, "datamon_fetch_errors_total"), 0.0);

    // The store goes away: a file not read yet fails, and the failure is counted.
    fx.store_down();
    let e = std::fs::read(ro.join("sub/deeper/c.csv"));
    fx.store_up();
    assert!(e.is_err(), "read while the store was down: {e:?}");
    let m = scrape(&server).await;
    assert!(get(&m, "datamon_fetch_errors_total") >= 1.0, "{m:?}");

    // A versioned volume: one commit on unpublish; a failed commit while the store is down.
    let nb = fx.path("nb");
    let _g2 = UnmountOnDrop(nb.clone());
    let vctx = attrs(&[
        ("repo", "data"),
        ("mode", "versioned"),
        ("commitBranch", "notebook"),
        ("autosave", "0"),
    ]);
    let req = publish("nb-1", &nb, vctx, false, AccessMode::SingleNodeWriter);
    c.node.node_publish_volume(req).await.unwrap();
    let m = scrape(&server).await;
    assert_eq!(get(&m, "datamon_mounts{mode=\"versioned\"}"), 1.0);
    std::fs::write(nb.join("notes.md"), b"thoughts").unwrap();
    fx.store_down();
    let e = c
        .node
        .node_unpublish_volume(unpublish("nb-1", &nb))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    fx.store_up();
    let m = scrape(&server).await;
    assert_eq!(get(&m, "datamon_mounts{mode=\"versioned\"}"), 0.0);
    assert!(
        get(&m, "datamon_commits_total{result=\"failed\"}") >= 1.0,
        "{m:?}"
    );
    assert_eq!(get(&m, "datamon_commits_total{result=\"committed\"}"), 0.0);
    c.node
        .node_unpublish_volume(unpublish("nb-1", &nb))
        .await
        .unwrap();
    let m = scrape(&server).await;
    assert_eq!(get(&m, "datamon_commits_total{result=\"committed\"}"), 1.0);

    c.node
        .node_unpublish_volume(unpublish("ro-1", &ro))
        .await
        .unwrap();
    let m = scrape(&server).await;
    assert_eq!(get(&m, "datamon_mounts{mode=\"read-only\"}"), 0.0);
    assert_eq!(get(&m, "datamon_build_info{version=\"0.1.0\"}"), 1.0);
    d.stop().await;
}
