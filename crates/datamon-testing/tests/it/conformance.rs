use datamon_testing::backends::{available, Backend};
use datamon_testing::conformance;

async fn run(b: Option<Backend>) {
    if let Some(b) = b {
        let store = b.fresh_store("conformance").await;
        conformance::run_all(&store).await;
        eprintln!("{}: conformance suite passed at {}", b.name, store.url());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory() {
    run(Some(Backend::memory())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local() {
    run(Some(Backend::local())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3() {
    run(Backend::s3()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gcs() {
    run(Backend::gcs()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn azure() {
    run(Backend::azure()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn all_available_backends_are_listed() {
    let names: Vec<&str> = available().iter().map(|b| b.name).collect();
    assert!(names.starts_with(&["memory", "local"]), "{names:?}");
}
