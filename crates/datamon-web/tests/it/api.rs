//! Every API endpoint over HTTP, against the real server on loopback.

use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::StatusCode;
use serde_json::Value;

use crate::util::{backends, big, fixture_on, fixture_with, Fixture, HOSTILE_NAME, PNG};

async fn get(f: &Fixture, path: &str) -> (StatusCode, HeaderMap, bytes::Bytes) {
    get_with(f, path, &[]).await
}

async fn get_with(
    f: &Fixture,
    path: &str,
    headers: &[(&'static str, &str)],
) -> (StatusCode, HeaderMap, bytes::Bytes) {
    let mut req = reqwest::Client::new().get(f.at(path));
    for (k, v) in headers {
        req = req.header(*k, HeaderValue::from_str(v).unwrap());
    }
    let r = req.send().await.unwrap();
    let (status, h) = (r.status(), r.headers().clone());
    (status, h, r.bytes().await.unwrap())
}

async fn json(f: &Fixture, path: &str) -> Value {
    let (status, h, body) = get(f, path).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "{path}: {}",
        String::from_utf8_lossy(&body)
    );
    assert_eq!(h["x-content-type-options"], "nosniff");
    serde_json::from_slice(&body).unwrap()
}

async fn status(f: &Fixture, path: &str) -> (StatusCode, Value) {
    let (status, _, body) = get(f, path).await;
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repos_bundles_labels_and_branches() {
    for b in backends() {
        eprintln!("repos_bundles_labels_and_branches on {}", b.name);
        repos_bundles_labels_and_branches_on(fixture_on(&b, None).await).await;
    }
}

async fn repos_bundles_labels_and_branches_on(f: Fixture) {
    let v = json(&f, "/api/v1/repos").await;
    let names: Vec<&str> = v["repos"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["hostile", "images", "models"]);
    let images = &v["repos"][1];
    assert_eq!(images["description"], "training images");
    assert_eq!(images["bundles"], 2);
    assert_eq!(images["latest"]["id"], f.b2.to_string());
    assert!(images["latest"]["bytes"].as_u64().unwrap() > 3_000_000);

    let v = json(&f, "/api/v1/repos/images").await;
    assert_eq!(v["repo"]["bundles"], 2);
    assert_eq!(v["branches"][0]["name"], "main");
    assert_eq!(v["labels"][0]["name"], "prod");

    // Newest first, paginated by `before`.
    let v = json(&f, "/api/v1/repos/images/bundles?limit=1").await;
    assert_eq!(v["total"], 2);
    assert_eq!(v["bundles"][0]["id"], f.b2.to_string());
    assert_eq!(v["bundles"][0]["message"], "second version");
    assert_eq!(v["bundles"][0]["author"], "tester");
    assert_eq!(v["bundles"][0]["labels"][0], "prod");
    assert_eq!(v["bundles"][0]["heads"][0], "main");
    assert_eq!(v["bundles"][0]["branch"], "main");
    assert_eq!(v["next"], f.b2.to_string());
    let v = json(
        &f,
        &format!("/api/v1/repos/images/bundles?limit=1&before={}", f.b2),
    )
    .await;
    assert_eq!(v["bundles"][0]["id"], f.b1.to_string());
    assert_eq!(v["bundles"][0]["labels"].as_array().unwrap().len(), 0);
    assert!(v["next"].is_null());
    // Filters: time and metadata.
    let v = json(&f, "/api/v1/repos/images/bundles?until=2000-01-01").await;
    assert_eq!(
        (v["total"].as_u64(), v["bundles"].as_array().unwrap().len()),
        (Some(0), 0)
    );
    let v = json(
        &f,
        "/api/v1/repos/images/bundles?since=2000-01-01T00:00:00Z",
    )
    .await;
    assert_eq!(v["total"], 2);
    let v = json(&f, "/api/v1/repos/images/bundles?meta=nope%3Dx").await;
    assert_eq!(v["total"], 0);
    let v = json(&f, "/api/v1/repos/models/bundles?meta=datamon.step%3Dnone").await;
    assert_eq!(v["total"], 0);

    // One bundle, by id or by selector.
    let v = json(&f, &format!("/api/v1/repos/images/bundles/{}", f.b1)).await;
    assert_eq!(v["bundle"]["message"], "first version");
    let v = json(&f, "/api/v1/repos/images/bundles/label:prod").await;
    assert_eq!(v["bundle"]["id"], f.b2.to_string());

    let v = json(&f, "/api/v1/repos/images/labels").await;
    assert_eq!(v["labels"][0]["bundle"], f.b2.to_string());
    let v = json(&f, "/api/v1/repos/images/labels/prod").await;
    let h = v["history"].as_array().unwrap();
    assert_eq!(h.len(), 2, "newest first");
    assert_eq!(h[0]["bundle"], f.b2.to_string());
    assert_eq!(h[0]["previous"], f.b1.to_string());
    let v = json(&f, "/api/v1/repos/images/branches").await;
    assert_eq!(v["branches"][0]["head"], f.b2.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_previews_and_downloads() {
    for b in backends() {
        eprintln!("files_previews_and_downloads on {}", b.name);
        files_previews_and_downloads_on(fixture_on(&b, None).await).await;
    }
}

async fn files_previews_and_downloads_on(f: Fixture) {
    let base = format!("/api/v1/repos/images/bundles/{}", f.b1);
    let v = json(&f, &format!("{base}/tree")).await;
    assert_eq!(v["kind"], "dir");
    let names: Vec<&str> = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "a.txt",
            "big.bin",
            "cfg.json",
            "data.csv",
            "dir",
            "pixel.png"
        ]
    );
    assert_eq!(v["total"], 6);
    assert_eq!(v["entries"][0]["size"], 12);
    assert_eq!(v["entries"][0]["mode"].as_u64().unwrap() & 0o777, 0o644);
    assert_eq!(v["entries"][4]["kind"], "dir");
    // Pages.
    let v = json(&f, &format!("{base}/tree?offset=2&limit=3")).await;
    assert_eq!(v["entries"].as_array().unwrap().len(), 3);
    assert_eq!(v["entries"][0]["name"], "cfg.json");
    assert_eq!(v["next_offset"], 5);
    let v = json(&f, &format!("{base}/tree?path=dir/sub")).await;
    assert_eq!(v["entries"][0]["name"], "deep.txt");
    let v = json(&f, &format!("{base}/tree?path=dir/sub/deep.txt")).await;
    assert_eq!(
        (v["kind"].as_str(), v["size"].as_u64()),
        (Some("file"), Some(5))
    );

    // Previews.
    let v = json(&f, &format!("{base}/preview?path=a.txt")).await;
    assert_eq!(
        (v["preview"].as_str(), v["text"].as_str()),
        (Some("text"), Some("hello\nworld\n"))
    );
    let v = json(&f, &format!("{base}/preview?path=data.csv")).await;
    assert_eq!(v["preview"], "table");
    assert_eq!(
        v["rows"],
        serde_json::json!([["name", "count"], ["x, y", "1"], ["z", "2"]])
    );
    let v = json(&f, &format!("{base}/preview?path=cfg.json")).await;
    assert_eq!(v["preview"], "json");
    assert!(
        v["text"].as_str().unwrap().contains("\n  \"b\": [\n"),
        "{}",
        v["text"]
    );
    let v = json(&f, &format!("{base}/preview?path=pixel.png")).await;
    assert_eq!(
        (v["preview"].as_str(), v["mime"].as_str()),
        (Some("image"), Some("image/png"))
    );
    let v = json(&f, &format!("{base}/preview?path=big.bin")).await;
    assert_eq!(v["preview"], "binary");

    // Parquet: the schema and the first rows, through range reads; a damaged file says so.
    let models = format!("/api/v1/repos/models/bundles/{}", f.m2);
    let v = json(&f, &format!("{models}/preview?path=metrics.parquet")).await;
    assert_eq!(v["preview"], "parquet", "{v}");
    assert_eq!(
        v["schema"],
        serde_json::json!([
            {"name": "id", "type": "INT64"},
            {"name": "name", "type": "BYTE_ARRAY (utf8)"},
            {"name": "score", "type": "DOUBLE"}
        ])
    );
    assert_eq!(
        (v["num_rows"].as_i64(), v["row_groups"].as_u64()),
        (Some(250), Some(2))
    );
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 101, "the header and the first 100 rows");
    assert_eq!(rows[0], serde_json::json!(["id", "name", "score"]));
    assert_eq!(
        (rows[1][0].as_str(), rows[1][1].as_str()),
        (Some("0"), Some("row-0"))
    );
    assert_eq!(rows[100][1], "row-99");
    assert_eq!(
        (rows[1][2].as_str(), rows[2][2].as_str()),
        (Some("0"), Some("0.5"))
    );
    assert_eq!(v["truncated"], true);
    let v = json(&f, &format!("{models}/preview?path=broken.parquet")).await;
    assert_eq!(v["preview"], "unsupported", "{v}");
    assert!(
        v["reason"].as_str().unwrap().contains("not a Parquet file"),
        "{v}"
    );

    // Whole downloads, verified bytes.
    let (s, h, body) = get(&f, &format!("{base}/raw?path=big.bin")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h["accept-ranges"], "bytes");
    assert_eq!(h["content-type"], "application/octet-stream");
    assert!(h["content-disposition"]
        .to_str()
        .unwrap()
        .starts_with("attachment"));
    assert!(body[..] == big()[..], "the whole file");
    // Ranges: middle, suffix, open-ended, past the end.
    let want = big();
    for (range, from, to) in [
        ("bytes=1000000-2000009", 1_000_000usize, 2_000_010usize),
        ("bytes=-10", want.len() - 10, want.len()),
        ("bytes=2999990-", 2_999_990, want.len()),
    ] {
        let (s, h, body) =
            get_with(&f, &format!("{base}/raw?path=big.bin"), &[("range", range)]).await;
        assert_eq!(s, StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(
            h["content-range"],
            format!("bytes {from}-{}/{}", to - 1, want.len()).as_str()
        );
        assert!(body[..] == want[from..to], "{range}");
    }
    let (s, h, _) = get_with(
        &f,
        &format!("{base}/raw?path=big.bin"),
        &[("range", "bytes=5000000-")],
    )
    .await;
    assert_eq!(s, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(h["content-range"], "bytes */3000000");
    // Images inline only when asked, with their type.
    let (s, h, body) = get(&f, &format!("{base}/raw?path=pixel.png&inline=1")).await;
    assert_eq!((s, &body[..]), (StatusCode::OK, PNG));
    assert_eq!(h["content-type"], "image/png");
    assert!(h["content-disposition"]
        .to_str()
        .unwrap()
        .starts_with("inline"));
    // HEAD: headers only.
    let r = reqwest::Client::new()
        .head(f.at(&format!("{base}/raw?path=a.txt")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-length"], "12");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diffs_between_bundles() {
    for b in backends() {
        eprintln!("diffs_between_bundles on {}", b.name);
        diffs_between_bundles_on(fixture_on(&b, None).await).await;
    }
}

async fn diffs_between_bundles_on(f: Fixture) {
    let v = json(
        &f,
        &format!("/api/v1/repos/images/diff?a={}&b={}", f.b1, f.b2),
    )
    .await;
    assert_eq!(v["total"], 3);
    let rows: Vec<(String, String)> = v["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["change"].as_str().unwrap().into(),
                c["path"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("M".into(), "a.txt".into()),
            ("D".into(), "cfg.json".into()),
            ("A".into(), "new.txt".into())
        ]
    );
    assert_eq!(
        (
            v["changes"][0]["a"]["size"].as_u64(),
            v["changes"][0]["b"]["size"].as_u64()
        ),
        (Some(12), Some(18))
    );
    assert!(v["changes"][1]["b"].is_null());
    assert!(v["changes"][2]["a"].is_null());
    let v = json(
        &f,
        &format!(
            "/api/v1/repos/images/diff/text?a={}&b={}&path=a.txt",
            f.b1, f.b2
        ),
    )
    .await;
    let lines: Vec<String> = v["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            format!(
                "{}{}",
                l["op"].as_str().unwrap(),
                l["text"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(lines, [" hello", "+there", " world"]);
    let v = json(
        &f,
        &format!(
            "/api/v1/repos/images/diff/text?a={}&b={}&path=new.txt",
            f.b1, f.b2
        ),
    )
    .await;
    assert_eq!(v["lines"][0]["op"], "+");
    let v = json(
        &f,
        &format!(
            "/api/v1/repos/images/diff/text?a={}&b={}&path=big.bin",
            f.b1, f.b2
        ),
    )
    .await;
    assert_eq!(v["text"], false);
    // Same bundle: nothing.
    let v = json(
        &f,
        &format!("/api/v1/repos/images/diff?a={}&b=label:prod", f.b2),
    )
    .await;
    assert_eq!(v["total"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_and_lineage() {
    for b in backends() {
        eprintln!("runs_and_lineage on {}", b.name);
        runs_and_lineage_on(fixture_on(&b, None).await).await;
    }
}

async fn runs_and_lineage_on(f: Fixture) {
    let v = json(&f, "/api/v1/runs").await;
    assert_eq!(v["total"], 2);
    assert_eq!(v["runs"][0]["id"], f.run2.to_string(), "newest first");
    let v = json(&f, "/api/v1/runs?step=train&limit=1").await;
    assert_eq!(
        (v["total"].as_u64(), v["next_offset"].as_u64()),
        (Some(2), Some(1))
    );
    let v = json(&f, "/api/v1/runs?step=other").await;
    assert_eq!(v["total"], 0);
    let v = json(&f, "/api/v1/runs?until=2000-01-01").await;
    assert_eq!(v["total"], 0);
    let v = json(&f, &format!("/api/v1/runs/{}", f.run)).await;
    assert_eq!(v["run"]["code"]["git_commit"], "0123456789abcdef");
    assert_eq!(v["run"]["params"]["lr"], "0.1");
    assert_eq!(v["run"]["metrics"]["accuracy"], 0.9);
    assert_eq!(v["run"]["inputs"][0]["bundle"], f.b1.to_string());
    let v = json(&f, &format!("/api/v1/runs/{}/diff/{}", f.run, f.run2)).await;
    assert_eq!(v["causes_changed"], true);
    assert_eq!(v["diff"]["params"][0]["a"], "0.1");
    assert_eq!(v["diff"]["params"][0]["b"], "0.2");
    assert_eq!(
        v["diff"]["inputs"][0]["changes"].as_array().unwrap().len(),
        3
    );

    let v = json(
        &f,
        &format!("/api/v1/repos/models/bundles/{}/lineage", f.m1),
    )
    .await;
    let l = &v["lineage"];
    assert_eq!(l["runs"][0]["id"], f.run.to_string());
    let bundles: Vec<&str> = l["bundles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["repo"].as_str().unwrap())
        .collect();
    assert!(
        bundles.contains(&"images") && bundles.contains(&"models"),
        "{bundles:?}"
    );
    let kinds: Vec<&str> = l["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"input") && kinds.contains(&"output"),
        "{kinds:?}"
    );
    let v = json(
        &f,
        &format!(
            "/api/v1/repos/images/bundles/{}/lineage?direction=upstream",
            f.b1
        ),
    )
    .await;
    assert_eq!(
        v["lineage"]["runs"].as_array().unwrap().len(),
        0,
        "nothing made images"
    );
    let v = json(&f, &format!("/api/v1/runs/{}/lineage", f.run)).await;
    assert_eq!(v["lineage"]["bundle"], f.m1.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_map_to_statuses() {
    for b in backends() {
        eprintln!("errors_map_to_statuses on {}", b.name);
        errors_map_to_statuses_on(fixture_on(&b, None).await).await;
    }
}

async fn errors_map_to_statuses_on(f: Fixture) {
    let b1 = f.b1;
    for (path, want, kind) in [
        ("/api/v1/repos/nope", 404, "NotFound"),
        ("/api/v1/repos/nope/bundles", 404, "NotFound"),
        ("/api/v1/repos/images/bundles/label:nope", 404, "NotFound"),
        ("/api/v1/repos/images/labels/nope", 404, "NotFound"),
        (
            "/api/v1/runs/0000000000000000000000000000",
            400,
            "InvalidInput",
        ),
        ("/api/v1/repos/Not%20A%20Name", 400, "InvalidInput"),
        ("/api/v1/repos/images/bundles?limit=x", 400, "InvalidInput"),
        (
            "/api/v1/repos/images/bundles?since=yesterday",
            400,
            "InvalidInput",
        ),
        ("/api/v1/repos/images/diff?a=latest", 400, "InvalidInput"),
        (
            "/api/v1/repos/images/bundles/latest/lineage?direction=sideways",
            400,
            "InvalidInput",
        ),
        ("/api/v1/nothing/here", 404, "NotFound"),
    ] {
        let (s, v) = status(&f, path).await;
        assert_eq!(
            (s.as_u16(), v["error"].as_str()),
            (want, Some(kind)),
            "{path}: {v}"
        );
    }
    let (s, v) = status(
        &f,
        &format!("/api/v1/repos/images/bundles/{b1}/tree?path=nope/x"),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    assert!(v["message"].as_str().unwrap().contains("nope/x"), "{v}");
    let (s, _) = status(
        &f,
        &format!("/api/v1/repos/images/bundles/{b1}/raw?path=dir"),
    )
    .await;
    assert_eq!(
        s,
        StatusCode::BAD_REQUEST,
        "a directory is not downloadable"
    );
    // No way out of the bundle.
    for p in [
        "../../etc/passwd",
        "%2e%2e/%2e%2e/etc/passwd",
        "dir/../a.txt",
        "./a.txt",
        "a%00b",
    ] {
        for ep in ["tree", "preview", "raw"] {
            let (s, _) = status(
                &f,
                &format!("/api/v1/repos/images/bundles/{b1}/{ep}?path={p}"),
            )
            .await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "{ep} {p}");
        }
    }
    let (s, _, _) = get(&f, "/repos/images/bundles/..%2f..%2fetc/files/passwd").await;
    assert_eq!(s, StatusCode::OK, "UI URLs only ever serve the page");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_loopback_and_headers() {
    for b in backends() {
        eprintln!("read_only_loopback_and_headers on {}", b.name);
        read_only_loopback_and_headers_on(fixture_on(&b, None).await).await;
    }
}

async fn read_only_loopback_and_headers_on(f: Fixture) {
    let c = reqwest::Client::new();
    for m in [
        reqwest::Method::POST,
        reqwest::Method::PUT,
        reqwest::Method::DELETE,
    ] {
        let r = c
            .request(m.clone(), f.at("/api/v1/repos"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED, "{m}");
        assert_eq!(r.headers()["allow"], "GET, HEAD");
    }
    // A page reached through another name (DNS rebinding) is refused on loopback.
    let r = c
        .get(f.at("/api/v1/repos"))
        .header("host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = c
        .get(f.at("/api/v1/repos"))
        .header("host", "localhost:1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // The page and its assets, with a strict policy.
    let (s, h, body) = get(&f, "/repos/images").await;
    assert_eq!(s, StatusCode::OK);
    assert!(h["content-type"].to_str().unwrap().starts_with("text/html"));
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert!(String::from_utf8_lossy(&body).contains("/assets/app.js"));
    let (s, h, _) = get(&f, "/assets/app.js").await;
    assert_eq!(s, StatusCode::OK);
    assert!(h["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/javascript"));
    let (s, _, _) = get(&f, "/assets/nope.js").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // Hostile names come back as data, and downloads never render.
    let v = json(&f, &format!("/api/v1/repos/hostile/bundles/{}/tree", f.h1)).await;
    assert_eq!(v["entries"][0]["name"], HOSTILE_NAME);
    let (s, h, _) = get(
        &f,
        &format!(
            "/api/v1/repos/hostile/bundles/{}/raw?path=x.svg&inline=1",
            f.h1
        ),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        h["content-type"], "application/octet-stream",
        "SVG is never served as an image"
    );
    assert!(h["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("sandbox"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_guards_every_request() {
    let f = fixture_with(Some("s3cret")).await;
    let c = reqwest::Client::new();
    for path in [
        "/api/v1/repos",
        "/",
        &format!("/api/v1/repos/images/bundles/{}/raw?path=a.txt", f.b1),
    ] {
        let r = c.get(f.at(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path}");
        let r = c.get(f.at(path)).bearer_auth("wrong").send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path}");
        let r = c
            .get(f.at(path))
            .bearer_auth("s3cret")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
    }
    let r = c.get(f.at("/?token=s3cret")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let r = c
        .get(f.at("/api/v1/repos"))
        .header("cookie", cookie.split(';').next().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // Off loopback, a token is required.
    let opts = datamon_web::WebOptions {
        listen: "0.0.0.0:0".parse().unwrap(),
        token: None,
    };
    let e = datamon_web::Server::bind(f.dm.clone(), opts)
        .await
        .unwrap_err();
    assert!(matches!(e, datamon_web::Error::TokenRequired { .. }), "{e}");
    let _ = &f.url;
    let _ = f.m1;
}
