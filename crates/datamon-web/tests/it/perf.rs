//! Timings on a large local store: the first page of a repo with 100,000 bundles and of a
//! directory with 100,000 files must answer in under 300 ms. Building the store takes a minute
//! or two, so this runs only with `DATAMON_WEB_PERF=1` (and prints the timings).

use std::time::{Duration, Instant};

use datamon::{BundleId, Datamon, NoProgress, OpenOptions, RepoName, UploadContext, UploadOptions};
use futures::StreamExt;

const N: usize = 100_000;
const LIMIT: Duration = Duration::from_millis(300);

async fn timed(client: &reqwest::Client, url: &str) -> (Duration, serde_json::Value) {
    let t = Instant::now();
    let r = client.get(url).send().await.unwrap();
    assert!(r.status().is_success(), "{url}: {}", r.status());
    let v: serde_json::Value = r.json().await.unwrap();
    (t.elapsed(), v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_pages_of_large_repos_and_directories() {
    if std::env::var_os("DATAMON_WEB_PERF").is_none() {
        eprintln!("skipping the large-store timings: set DATAMON_WEB_PERF=1 to run them");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().join("store").display());
    let dm = Datamon::open(
        &url,
        OpenOptions {
            cache_dir: Some(dir.path().join("cache")),
            ..OpenOptions::default()
        },
    )
    .await
    .unwrap();
    let (many, wide): (RepoName, RepoName) = ("many".parse().unwrap(), "wide".parse().unwrap());
    dm.create_repo(&many, "100,000 bundles").await.unwrap();
    dm.create_repo(&wide, "one directory of 100,000 files")
        .await
        .unwrap();

    let t = Instant::now();
    let src = dir.path().join("wide");
    std::fs::create_dir_all(src.join("d")).unwrap();
    for i in 0..N {
        std::fs::write(src.join("d").join(format!("f{i:06}.txt")), format!("{i}\n")).unwrap();
    }
    let ctx = UploadContext {
        repo: wide.clone(),
        path: src.clone(),
        message: "wide".into(),
    };
    let wide_id = dm
        .upload(ctx, UploadOptions::default(), &NoProgress)
        .await
        .unwrap()
        .bundle
        .id;
    // 100,000 bundle records of one tree, written as a commit writes them (ids in time order).
    let one = dm.get_bundle(&wide, &wide_id).await.unwrap();
    let store = dm.store().clone();
    let records: Vec<datamon::Bundle> = (0..N)
        .map(|i| {
            let mut b = one.clone();
            b.id = BundleId::generate();
            b.repo = many.clone();
            b.message = format!("bundle {i}");
            b.parents.clear();
            b
        })
        .collect();
    futures::stream::iter(records.iter().map(|b| {
        let store = store.clone();
        async move {
            let key = datamon_store::keys::bundle(b.repo.as_str(), &b.id);
            store.create_json(&key, b).await.unwrap();
        }
    }))
    .buffer_unordered(64)
    .collect::<Vec<()>>()
    .await;
    eprintln!("built the store in {:.1?}", t.elapsed());

    let opts = datamon_web::WebOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        token: None,
    };
    let server = datamon_web::Server::bind(dm.clone(), opts).await.unwrap();
    let addr = server.local_addr();
    tokio::spawn(server.serve(std::future::pending()));
    let client = reqwest::Client::new();

    let bundles = format!("http://{addr}/api/v1/repos/many/bundles?limit=50");
    let (cold, v) = timed(&client, &bundles).await;
    assert_eq!(v["total"], N);
    assert_eq!(v["bundles"].as_array().unwrap().len(), 50);
    assert_eq!(
        v["bundles"][0]["message"],
        format!("bundle {}", N - 1),
        "newest first"
    );
    let (warm, _) = timed(&client, &bundles).await;
    let next = v["next"].as_str().unwrap();
    let (second, v2) = timed(&client, &format!("{bundles}&before={next}")).await;
    assert_eq!(v2["bundles"][0]["message"], format!("bundle {}", N - 51));
    eprintln!(
        "bundles, first page of {N}: cold {cold:.1?}, warm {warm:.1?}, second page {second:.1?}"
    );

    let tree = format!("http://{addr}/api/v1/repos/wide/bundles/{wide_id}/tree?path=d&limit=200");
    let (cold_t, v) = timed(&client, &tree).await;
    assert_eq!(v["total"], N);
    assert_eq!(v["entries"][0]["name"], "f000000.txt");
    let (warm_t, _) = timed(&client, &tree).await;
    let (deep, v) = timed(&client, &format!("{tree}&offset=99800")).await;
    assert_eq!(v["entries"][0]["name"], "f099800.txt");
    eprintln!("directory of {N}, first page: cold {cold_t:.1?}, warm {warm_t:.1?}, page at 99,800 {deep:.1?}");
    let page = format!("http://{addr}/repos/many");
    let t = Instant::now();
    let html = client
        .get(&page)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("app.js"));
    eprintln!("the page itself: {:.1?}", t.elapsed());

    for (what, d) in [("bundles", warm), ("directory", warm_t)] {
        assert!(d < LIMIT, "{what}: {d:?}");
    }
    for (what, d) in [("bundles, cold", cold), ("directory, cold", cold_t)] {
        assert!(d < LIMIT, "{what}: {d:?}");
    }
}
