//! The fixture: a local store with repos, bundles, labels, a hostile-names bundle and runs,
//! served on a loopback port.

use datamon_testing::backends::Backend;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use datamon::{
    BundleId, BundleSelector, Datamon, NoProgress, OpenOptions, RepoName, Run, RunId, RunInput,
    RunOutput, RunStatus, UploadContext, UploadOptions,
};

/// Whether `DATAMON_TEST_REQUIRE` (comma-separated; `all` names everything) names `what`:
/// then a missing tool is a failure, not a skip (as in the CLI's test harness).
pub fn required(what: &str) -> bool {
    std::env::var("DATAMON_TEST_REQUIRE")
        .is_ok_and(|r| r.split(',').any(|x| x.trim() == what || x.trim() == "all"))
}

/// A file name that would run script if a page inserted it as HTML.
pub const HOSTILE_NAME: &str = "<img src=x onerror=\"window.__pwned=1\">.txt";
/// A bundle message that would run script if inserted as HTML.
pub const HOSTILE_MESSAGE: &str = "<script>window.__pwned=2</script>";

/// 3 MB of pseudo-random bytes (many chunks).
pub fn big() -> Vec<u8> {
    (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

/// The smallest valid PNG: one transparent pixel.
pub const PNG: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1f, 0x15, 0xc4,
    0x89, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0x00, 0x01, 0x00, 0x00,
    0x05, 0x00, 0x01, 0x0d, 0x0a, 0x2d, 0xb4, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae,
    0x42, 0x60, 0x82,
];

/// What the fixture made.
pub struct Fixture {
    pub _dir: tempfile::TempDir,
    /// The local store's directory, when the fixture made it.
    pub _backend: Option<Backend>,
    pub dm: Datamon,
    pub url: String,
    pub addr: SocketAddr,
    /// images: v1, v2.
    pub b1: BundleId,
    pub b2: BundleId,
    /// models: the runs' outputs (m2 also holds `metrics.parquet`, 250 rows, and
    /// `broken.parquet`).
    pub m1: BundleId,
    pub m2: BundleId,
    /// hostile: one bundle with hostile names.
    pub h1: BundleId,
    pub run: RunId,
    pub run2: RunId,
    pub shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(());
        }
    }
}

/// A Parquet file as pandas would write it (snappy): `id` INT64, `name` UTF8, `score` DOUBLE,
/// `rows` rows in two row groups.
pub fn parquet_table(rows: i64) -> Vec<u8> {
    use parquet::data_type::{ByteArray, ByteArrayType, DoubleType, Int64Type};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    let schema = std::sync::Arc::new(
        parquet::schema::parser::parse_message_type(
            "message m { REQUIRED INT64 id; REQUIRED BYTE_ARRAY name (UTF8); REQUIRED DOUBLE score; }",
        )
        .unwrap(),
    );
    let props = std::sync::Arc::new(
        WriterProperties::builder()
            .set_compression(parquet::basic::Compression::SNAPPY)
            .build(),
    );
    let mut buf = Vec::new();
    let mut w = SerializedFileWriter::new(&mut buf, schema, props).unwrap();
    let half = rows / 2;
    for part in [0..half, half..rows] {
        let mut rg = w.next_row_group().unwrap();
        let ids: Vec<i64> = part.clone().collect();
        let mut c = rg.next_column().unwrap().unwrap();
        c.typed::<Int64Type>()
            .write_batch(&ids, None, None)
            .unwrap();
        c.close().unwrap();
        let names: Vec<ByteArray> = part
            .clone()
            .map(|i| ByteArray::from(format!("row-{i}").as_str()))
            .collect();
        let mut c = rg.next_column().unwrap().unwrap();
        c.typed::<ByteArrayType>()
            .write_batch(&names, None, None)
            .unwrap();
        c.close().unwrap();
        let scores: Vec<f64> = part.map(|i| i as f64 / 2.0).collect();
        let mut c = rg.next_column().unwrap().unwrap();
        c.typed::<DoubleType>()
            .write_batch(&scores, None, None)
            .unwrap();
        c.close().unwrap();
        rg.close().unwrap();
    }
    w.close().unwrap();
    buf
}

fn write(root: &Path, rel: &str, data: &[u8]) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
}

async fn upload(dm: &Datamon, repo: &RepoName, dir: &Path, message: &str) -> BundleId {
    let ctx = UploadContext {
        repo: repo.clone(),
        path: dir.to_owned(),
        message: message.into(),
    };
    dm.upload(ctx, UploadOptions::default(), &NoProgress)
        .await
        .unwrap()
        .bundle
        .id
}

fn run(step: &str, input: (&RepoName, BundleId), output: (&RepoName, BundleId), lr: &str) -> Run {
    let now = chrono::Utc::now();
    Run {
        id: RunId::generate(),
        step: step.into(),
        status: RunStatus::Succeeded,
        exit_code: Some(0),
        command: vec!["python".into(), "train.py".into()],
        code: datamon::CodeVersion {
            git_commit: Some("0123456789abcdef".into()),
            git_dirty: Some(false),
            image: None,
        },
        host: "host1".into(),
        user: "tester".into(),
        started_at: now,
        finished_at: now,
        params: BTreeMap::from([("lr".to_owned(), lr.to_owned())]),
        inputs: vec![RunInput {
            repo: input.0.clone(),
            bundle: input.1,
            selector: None,
            path: None,
        }],
        outputs: vec![RunOutput {
            repo: output.0.clone(),
            bundle: output.1,
        }],
        metrics: BTreeMap::from([("accuracy".to_owned(), serde_json::json!(0.9))]),
        meta: BTreeMap::new(),
    }
}

/// Builds the store and starts the server on a free loopback port.
pub async fn fixture() -> Fixture {
    fixture_with(None).await
}

/// The stores the API tests run against: local, and the loopback S3 server when the
/// environment names it (CI requires it: `DATAMON_TEST_REQUIRE`).
pub fn backends() -> Vec<Backend> {
    let mut out = vec![Backend::local()];
    out.extend(Backend::s3());
    out
}

/// As [`fixture`], with a token.
pub async fn fixture_with(token: Option<&str>) -> Fixture {
    let b = Backend::local();
    let mut f = fixture_on(&b, token).await;
    f._backend = Some(b);
    f
}

/// As [`fixture_with`], on a fresh store of `backend`.
pub async fn fixture_on(backend: &Backend, token: Option<&str>) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let url = backend.fresh_url("web");
    let dm = Datamon::open(
        &url,
        OpenOptions {
            author: Some("tester".into()),
            cache_dir: Some(dir.path().join("cache")),
            store_options: backend.options.clone(),
            ..OpenOptions::default()
        },
    )
    .await
    .unwrap();
    let images: RepoName = "images".parse().unwrap();
    let models: RepoName = "models".parse().unwrap();
    let hostile: RepoName = "hostile".parse().unwrap();
    dm.create_repo(&images, "training images").await.unwrap();
    dm.create_repo(&models, "trained models").await.unwrap();
    dm.create_repo(&hostile, "<b>bold</b> description")
        .await
        .unwrap();

    let src = dir.path().join("src");
    write(&src, "a.txt", b"hello\nworld\n");
    write(&src, "data.csv", b"name,count\n\"x, y\",1\nz,2\n");
    write(&src, "cfg.json", br#"{"b":[1,2],"a":"x"}"#);
    write(&src, "pixel.png", PNG);
    write(&src, "big.bin", &big());
    write(&src, "dir/sub/deep.txt", b"deep\n");
    let b1 = upload(&dm, &images, &src, "first version").await;
    write(&src, "a.txt", b"hello\nthere\nworld\n");
    std::fs::remove_file(src.join("cfg.json")).unwrap();
    write(&src, "new.txt", b"new\n");
    let b2 = upload(&dm, &images, &src, "second version").await;
    let prod = "prod".parse().unwrap();
    dm.set_label(&images, &prod, &b1, None).await.unwrap();
    dm.set_label(&images, &prod, &b2, None).await.unwrap();

    let msrc = dir.path().join("msrc");
    write(&msrc, "model.bin", b"weights");
    let m1 = upload(&dm, &models, &msrc, "model").await;
    write(&msrc, "model.bin", b"weights v2");
    write(&msrc, "metrics.parquet", &parquet_table(250));
    write(
        &msrc,
        "broken.parquet",
        b"PAR1 this is not really parquet PAR1",
    );
    let m2 = upload(&dm, &models, &msrc, "model v2").await;

    let hsrc = dir.path().join("hsrc");
    write(&hsrc, HOSTILE_NAME, b"<script>window.__pwned=3</script>\n");
    write(
        &hsrc,
        "x.svg",
        b"<svg xmlns=\"http://www.w3.org/2000/svg\"><script>alert(1)</script></svg>",
    );
    let h1 = upload(&dm, &hostile, &hsrc, HOSTILE_MESSAGE).await;

    let r1 = run("train", (&images, b1), (&models, m1), "0.1");
    dm.record_run(&r1).await.unwrap();
    let r2 = run("train", (&images, b2), (&models, m2), "0.2");
    dm.record_run(&r2).await.unwrap();
    assert_eq!(
        dm.resolve(&images, &BundleSelector::Latest).await.unwrap(),
        b2
    );

    let opts = datamon_web::WebOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        token: token.map(str::to_owned),
    };
    let server = datamon_web::Server::bind(dm.clone(), opts).await.unwrap();
    let addr = server.local_addr();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.serve(async {
        let _ = rx.await;
    }));
    Fixture {
        _dir: dir,
        _backend: None,
        dm,
        url,
        addr,
        b1,
        b2,
        m1,
        m2,
        h1,
        run: r1.id,
        run2: r2.id,
        shutdown: Some(tx),
    }
}

impl Fixture {
    /// `http://ADDR` + `path`.
    pub fn at(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}
