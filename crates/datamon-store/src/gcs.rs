//! Google Cloud Storage over its JSON API, behind the `ObjectStore` trait.
//!
//! `object_store`'s own GCS client speaks the XML API, which no GCS emulator serves; this
//! backend speaks the JSON API (uploads with `uploadType=multipart`, media downloads with
//! `alt=media` and `Range`, paged listings), which both GCS and fake-gcs-server serve, so the
//! same code is tested on loopback and used in production. Create-if-absent is
//! `ifGenerationMatch=0`. Credentials come from `object_store`'s GCS credential chain
//! (`GOOGLE_APPLICATION_CREDENTIALS`, service account options, the metadata server), unless
//! `google_skip_signature` is true (emulators). `google_storage_endpoint` overrides the
//! endpoint (default `https://storage.googleapis.com`).
//!
//! Requests are retried by the store's one request policy (`RetryPolicy::REQUEST` in
//! `retry.rs`, which object_store's S3 and Azure clients also get), and failures are reported
//! as object_store's own clients report them (an `HttpError` for a failed transport, an HTTP
//! status otherwise), so that `Error::kind` classifies them the same way.
//!
//! Not supported: copy and rename (datamon never copies objects). Multipart writes are
//! buffered and sent as one upload on completion.

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::client::{HttpError, HttpErrorKind};
use object_store::gcp::GcpCredentialProvider;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetRange, GetResult, GetResultPayload, ListResult, MultipartUpload,
    ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutMultipartOptions, PutOptions, PutPayload,
    PutResult, UploadPart,
};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::Deserialize;

use crate::error::backend_kind;
use crate::retry::RetryPolicy;

const STORE: &str = "GCS";
const DEFAULT_ENDPOINT: &str = "https://storage.googleapis.com";

/// A GCS bucket reached through the JSON API.
#[derive(Clone)]
pub(crate) struct GcsJson {
    inner: Arc<Inner>,
}

struct Inner {
    client: reqwest::Client,
    endpoint: String,
    bucket: String,
    auth: Option<GcpCredentialProvider>,
    /// How one request is retried.
    retry: RetryPolicy,
}

impl std::fmt::Debug for GcsJson {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GcsJson")
            .field("endpoint", &self.inner.endpoint)
            .field("bucket", &self.inner.bucket)
            .finish()
    }
}

impl std::fmt::Display for GcsJson {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GCS({}, {})", self.inner.endpoint, self.inner.bucket)
    }
}

fn generic(e: impl std::error::Error + Send + Sync + 'static) -> object_store::Error {
    object_store::Error::Generic {
        store: STORE,
        source: Box::new(e),
    }
}

/// A request that failed before an answer came, or whose answer was cut: as object_store's
/// own clients report it (an [`HttpError`] of the same kinds), so that it is classified and
/// retried the same way.
fn transport(e: reqwest::Error) -> object_store::Error {
    generic(HttpError::new(transport_kind(&e), e))
}

/// What kind of transport failure `e` is, as object_store tells them apart.
fn transport_kind(e: &reqwest::Error) -> HttpErrorKind {
    if e.is_timeout() {
        return HttpErrorKind::Timeout;
    }
    if e.is_connect() {
        return HttpErrorKind::Connect;
    }
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind as K;
            match io.kind() {
                K::TimedOut => return HttpErrorKind::Timeout,
                K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::UnexpectedEof => {
                    return HttpErrorKind::Interrupted
                }
                _ => {}
            }
        }
        if c.downcast_ref::<reqwest::Error>()
            .is_some_and(reqwest::Error::is_body)
        {
            return HttpErrorKind::Interrupted;
        }
        cause = c.source();
    }
    if e.is_body() {
        HttpErrorKind::Interrupted
    } else if e.is_request() {
        HttpErrorKind::Request
    } else if e.is_decode() {
        HttpErrorKind::Decode
    } else {
        HttpErrorKind::Unknown
    }
}

/// An HTTP answer that was not a success (classified by its status, see
/// [`crate::Error::kind`]).
#[derive(Debug, thiserror::Error)]
#[error("{method} {url}: HTTP {status}: {body}")]
pub(crate) struct HttpStatus {
    method: &'static str,
    url: String,
    /// The status code.
    pub(crate) status: u16,
    body: String,
}

/// What a 404 answer means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum On404 {
    /// The object named in the URL does not exist.
    NoObject,
    /// The bucket does not exist (a listing, an upload): a misconfiguration, not a missing key.
    NoBucket,
}

/// The error of a request answered with a status that is not a success.
fn status_error(path: &str, on_404: On404, answer: HttpStatus) -> object_store::Error {
    let path = path.to_owned();
    let source = Box::new(answer);
    match source.status {
        404 if on_404 == On404::NoObject => object_store::Error::NotFound { path, source },
        412 => object_store::Error::Precondition { path, source },
        304 => object_store::Error::NotModified { path, source },
        401 => object_store::Error::Unauthenticated { path, source },
        403 => object_store::Error::PermissionDenied { path, source },
        _ => object_store::Error::Generic {
            store: STORE,
            source,
        },
    }
}

/// Whether a request that failed with `e` may be sent again: the failure is transient, and the
/// request is idempotent or cannot have been carried out (it was never sent, or the server
/// answered with an error status).
fn may_resend(e: &object_store::Error, idempotent: bool) -> bool {
    if !RetryPolicy::retries(backend_kind(e)) {
        return false;
    }
    let maybe_done = match e {
        object_store::Error::Generic { source, .. } => {
            source.downcast_ref::<HttpError>().is_some_and(|h| {
                matches!(
                    h.kind(),
                    HttpErrorKind::Timeout | HttpErrorKind::Interrupted
                )
            })
        }
        _ => false,
    };
    idempotent || !maybe_done
}

/// What `%`-encoding leaves as it is in a path segment or a query value: the unreserved
/// characters of RFC 3986 (so `/` in object names is encoded).
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `%`-encodes everything but unreserved characters.
fn enc(s: &str) -> String {
    utf8_percent_encode(s, COMPONENT).to_string()
}

#[derive(Deserialize)]
struct Object {
    name: String,
    #[serde(default)]
    size: Option<String>,
    #[serde(default)]
    updated: Option<DateTime<Utc>>,
    #[serde(default)]
    etag: Option<String>,
    #[serde(default)]
    generation: Option<String>,
}

impl Object {
    fn meta(self) -> ObjectMeta {
        ObjectMeta {
            location: Path::from(self.name),
            last_modified: self.updated.unwrap_or_default(),
            size: self.size.and_then(|s| s.parse().ok()).unwrap_or_default(),
            e_tag: self.etag,
            version: self.generation,
        }
    }
}

#[derive(Deserialize)]
struct Listing {
    #[serde(default)]
    items: Vec<Object>,
    #[serde(default)]
    prefixes: Vec<String>,
    #[serde(default, rename = "nextPageToken")]
    next_page_token: Option<String>,
}

impl GcsJson {
    /// A client for `bucket`; `options` as for the other backends (`google_*`).
    pub(crate) fn new(
        url: &url::Url,
        bucket: &str,
        options: &[(String, String)],
    ) -> object_store::Result<GcsJson> {
        GcsJson::with_retry(url, bucket, options, RetryPolicy::REQUEST)
    }

    /// As [`GcsJson::new`], with requests retried by `retry`.
    fn with_retry(
        url: &url::Url,
        bucket: &str,
        options: &[(String, String)],
        retry: RetryPolicy,
    ) -> object_store::Result<GcsJson> {
        let get = |k: &str| {
            options
                .iter()
                .rev()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        let endpoint = get("google_storage_endpoint")
            .unwrap_or(DEFAULT_ENDPOINT)
            .trim_end_matches('/')
            .to_owned();
        let anonymous = get("google_skip_signature").is_some_and(|v| v == "true" || v == "1");
        let auth = if anonymous {
            None
        } else {
            use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
            let mut b = GoogleCloudStorageBuilder::new().with_url(url.as_str());
            for (k, v) in options {
                if let Ok(key) = k.parse::<GoogleConfigKey>() {
                    b = b.with_config(key, v);
                }
            }
            Some(b.build()?.credentials().clone())
        };
        let secs = |k: &str, d: u64| {
            get(k)
                .and_then(|v| v.trim_end_matches('s').parse().ok())
                .map_or(Duration::from_secs(d), Duration::from_secs)
        };
        let mut client = reqwest::Client::builder();
        if let Some(n) = get("google_pool_max_idle_per_host").and_then(|v| v.parse().ok()) {
            client = client.pool_max_idle_per_host(n);
        }
        let client = client
            .connect_timeout(secs("google_connect_timeout", 5))
            .read_timeout(secs("google_read_timeout", 15))
            .timeout(secs("google_timeout", 300))
            .build()
            .map_err(transport)?;
        Ok(GcsJson {
            inner: Arc::new(Inner {
                client,
                endpoint,
                bucket: bucket.to_owned(),
                auth,
                retry,
            }),
        })
    }
}

impl Inner {
    /// Sends a request, retrying it by the store's request policy ([`RetryPolicy::REQUEST`])
    /// while it fails transiently: always when it was never sent (a failed connect) or was
    /// answered with a 5xx, 408 or 429; after a timeout or a cut connection only when
    /// `idempotent`. The body is in memory, so every retry sends it whole.
    async fn send(
        &self,
        method: &'static str,
        url: String,
        req: reqwest::RequestBuilder,
        path: &str,
        on_404: On404,
        idempotent: bool,
    ) -> object_store::Result<reqwest::Response> {
        let started = Instant::now();
        let mut retry = 0;
        loop {
            let this = req
                .try_clone()
                .expect("request bodies are in memory, so a request can be sent again");
            let this = match &self.auth {
                Some(a) => this.bearer_auth(&a.get_credential().await?.bearer),
                None => this,
            };
            let e = match this.send().await {
                Ok(r) if r.status().is_success() => return Ok(r),
                Ok(r) => {
                    let status = r.status().as_u16();
                    let body = r.text().await.unwrap_or_default();
                    let answer = HttpStatus {
                        method,
                        url: url.clone(),
                        status,
                        body,
                    };
                    status_error(path, on_404, answer)
                }
                Err(e) => transport(e),
            };
            if !(may_resend(&e, idempotent) && self.retry.may_retry(retry, started)) {
                return Err(e);
            }
            let wait = self.retry.delay(retry);
            tracing::debug!(method, url, retry, ?wait, error = %e, "retrying a GCS request");
            tokio::time::sleep(wait).await;
            retry += 1;
        }
    }

    fn object_url(&self, path: &str) -> String {
        format!(
            "{}/storage/v1/b/{}/o/{}",
            self.endpoint,
            enc(&self.bucket),
            enc(path)
        )
    }

    async fn upload(
        &self,
        path: &str,
        body: Bytes,
        create: bool,
    ) -> object_store::Result<PutResult> {
        let boundary = format!("datamon-{:016x}", rand::random::<u64>());
        let meta = serde_json::json!({ "name": path }).to_string();
        let mut b = Vec::with_capacity(body.len() + meta.len() + 256);
        b.extend_from_slice(
            format!("--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{meta}\r\n--{boundary}\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes(),
        );
        b.extend_from_slice(&body);
        b.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let mut url = format!(
            "{}/upload/storage/v1/b/{}/o?uploadType=multipart",
            self.endpoint,
            enc(&self.bucket)
        );
        if create {
            url.push_str("&ifGenerationMatch=0");
        }
        let req = self
            .client
            .post(&url)
            .header(
                "Content-Type",
                format!("multipart/related; boundary={boundary}"),
            )
            .body(b);
        let resp = match self
            .send("POST", url, req, path, On404::NoBucket, !create)
            .await
        {
            Err(object_store::Error::Precondition { path, source }) if create => {
                return Err(object_store::Error::AlreadyExists { path, source })
            }
            r => r?,
        };
        let o: Object = resp.json().await.map_err(transport)?;
        Ok(PutResult {
            e_tag: o.etag,
            version: o.generation,
            extensions: Default::default(),
        })
    }

    async fn list_all(
        &self,
        prefix: Option<&Path>,
        delimiter: bool,
    ) -> object_store::Result<(Vec<ObjectMeta>, Vec<Path>)> {
        let prefix = match prefix.map(Path::as_ref) {
            Some(p) if !p.is_empty() => format!("{p}/"),
            _ => String::new(),
        };
        let (mut objects, mut prefixes) = (Vec::new(), Vec::new());
        let mut token: Option<String> = None;
        loop {
            let mut url = format!(
                "{}/storage/v1/b/{}/o?prefix={}",
                self.endpoint,
                enc(&self.bucket),
                enc(&prefix)
            );
            if delimiter {
                url.push_str("&delimiter=%2F");
            }
            if let Some(t) = &token {
                url.push_str(&format!("&pageToken={}", enc(t)));
            }
            let req = self.client.get(&url);
            let page: Listing = self
                .send("GET", url, req, &prefix, On404::NoBucket, true)
                .await?
                .json()
                .await
                .map_err(transport)?;
            objects.extend(page.items.into_iter().map(Object::meta));
            prefixes.extend(
                page.prefixes
                    .into_iter()
                    .map(|p| Path::from(p.trim_end_matches('/'))),
            );
            match page.next_page_token {
                Some(t) if !t.is_empty() => token = Some(t),
                _ => break,
            }
        }
        Ok((objects, prefixes))
    }
}

/// `bytes a-b/total` -> (a..b+1, total).
fn content_range(v: &str) -> Option<(Range<u64>, u64)> {
    let rest = v.strip_prefix("bytes ")?;
    let (r, total) = rest.split_once('/')?;
    let (a, b) = r.split_once('-')?;
    let (a, b): (u64, u64) = (a.parse().ok()?, b.parse().ok()?);
    Some((a..b + 1, total.parse().ok()?))
}

#[async_trait]
impl ObjectStore for GcsJson {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let create = match opts.mode {
            PutMode::Overwrite => false,
            PutMode::Create => true,
            PutMode::Update(_) => {
                return Err(object_store::Error::NotImplemented {
                    operation: "put with PutMode::Update".into(),
                    implementer: self.to_string(),
                })
            }
        };
        let body: Bytes = payload.into();
        self.inner.upload(location.as_ref(), body, create).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        _opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        Ok(Box::new(BufferedUpload {
            store: self.clone(),
            path: location.clone(),
            parts: Vec::new(),
        }))
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let path = location.as_ref();
        let base = self.inner.object_url(path);
        if options.head {
            let req = self.inner.client.get(&base);
            let o: Object = self
                .inner
                .send("GET", base, req, path, On404::NoObject, true)
                .await?
                .json()
                .await
                .map_err(transport)?;
            let meta = o.meta();
            return Ok(GetResult {
                payload: GetResultPayload::Stream(futures::stream::empty().boxed()),
                range: 0..meta.size,
                meta,
                attributes: Default::default(),
                extensions: Default::default(),
            });
        }
        let url = format!("{base}?alt=media");
        let mut req = self.inner.client.get(&url);
        if let Some(r) = &options.range {
            let h = match r {
                GetRange::Bounded(r) if r.end > r.start => {
                    format!("bytes={}-{}", r.start, r.end - 1)
                }
                GetRange::Bounded(r) => {
                    // An empty range: nothing to fetch.
                    let meta = self.head(location).await?;
                    return Ok(GetResult {
                        payload: GetResultPayload::Stream(futures::stream::empty().boxed()),
                        range: r.start..r.start,
                        meta,
                        attributes: Default::default(),
                        extensions: Default::default(),
                    });
                }
                GetRange::Offset(o) => format!("bytes={o}-"),
                GetRange::Suffix(n) => format!("bytes=-{n}"),
            };
            req = req.header("Range", h);
        }
        let resp = self
            .inner
            .send("GET", url, req, path, On404::NoObject, true)
            .await?;
        let header = |n: &str| {
            resp.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let last_modified = header("last-modified")
            .and_then(|v| DateTime::parse_from_rfc2822(&v).ok())
            .map(|d| d.with_timezone(&Utc))
            .unwrap_or_default();
        let e_tag = header("etag");
        let version = header("x-goog-generation");
        let crange = header("content-range").and_then(|v| content_range(&v));
        let body = resp.bytes().await.map_err(transport)?;
        let (range, size) = match crange {
            Some((r, total)) => (r, total),
            None => (0..body.len() as u64, body.len() as u64),
        };
        let meta = ObjectMeta {
            location: location.clone(),
            last_modified,
            size,
            e_tag,
            version,
        };
        Ok(GetResult {
            payload: GetResultPayload::Stream(futures::stream::once(async { Ok(body) }).boxed()),
            meta,
            range,
            attributes: Default::default(),
            extensions: Default::default(),
        })
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let inner = self.inner.clone();
        locations
            .and_then(move |p| {
                let inner = inner.clone();
                async move {
                    let url = inner.object_url(p.as_ref());
                    let req = inner.client.delete(&url);
                    inner
                        .send("DELETE", url, req, p.as_ref(), On404::NoObject, true)
                        .await?;
                    Ok(p)
                }
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let inner = self.inner.clone();
        let prefix = prefix.cloned();
        futures::stream::once(async move { inner.list_all(prefix.as_ref(), false).await })
            .map_ok(|(objects, _)| futures::stream::iter(objects.into_iter().map(Ok)))
            .try_flatten()
            .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let (objects, common_prefixes) = self.inner.list_all(prefix, true).await?;
        Ok(ListResult {
            common_prefixes,
            objects,
            extensions: Default::default(),
        })
    }

    async fn copy_opts(
        &self,
        _from: &Path,
        _to: &Path,
        _options: CopyOptions,
    ) -> object_store::Result<()> {
        Err(object_store::Error::NotImplemented {
            operation: "copy".into(),
            implementer: self.to_string(),
        })
    }
}

/// A multipart write, buffered and sent as one upload when completed.
#[derive(Debug)]
struct BufferedUpload {
    store: GcsJson,
    path: Path,
    parts: Vec<PutPayload>,
}

#[async_trait]
impl MultipartUpload for BufferedUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        self.parts.push(data);
        Box::pin(async { Ok(()) })
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        let mut all = Vec::new();
        for p in std::mem::take(&mut self.parts) {
            for b in &p {
                all.extend_from_slice(b);
            }
        }
        self.store
            .inner
            .upload(self.path.as_ref(), Bytes::from(all), false)
            .await
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.parts.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{refusing_endpoint, Answer, FakeHttp};
    use crate::{Error, ErrorKind};

    #[test]
    fn encodes_names_and_parses_content_ranges() {
        assert_eq!(enc("a/b c+d~e.f-g_h"), "a%2Fb%20c%2Bd~e.f-g_h");
        assert_eq!(enc("é?&=%"), "%C3%A9%3F%26%3D%25");
        assert_eq!(content_range("bytes 1-3/5"), Some((1..4, 5)));
        assert_eq!(content_range("bytes */5"), None);
        assert_eq!(content_range("nonsense"), None);
    }

    /// A fast policy for tests: `attempts` attempts, a few milliseconds apart.
    fn quick(attempts: u32) -> RetryPolicy {
        RetryPolicy {
            attempts,
            base: Duration::from_millis(1),
            cap: Duration::from_millis(4),
            budget: Duration::from_secs(30),
        }
    }

    fn client(endpoint: &str, retry: RetryPolicy) -> GcsJson {
        let url = url::Url::parse("gs://bucket").expect("a URL");
        let options = [
            ("google_storage_endpoint".to_owned(), endpoint.to_owned()),
            ("google_skip_signature".to_owned(), "true".to_owned()),
            ("google_timeout".to_owned(), "1".to_owned()),
        ];
        GcsJson::with_retry(&url, "bucket", &options, retry).expect("a GCS client")
    }

    /// A GCS answer classifies as object_store's clients' answers do (see `crate::error`).
    #[tokio::test]
    async fn errors_are_classified_like_the_other_backends() {
        let cases = [
            (Answer::Status(500, "{}"), false, ErrorKind::Transient),
            (Answer::Status(503, "{}"), true, ErrorKind::Transient),
            (Answer::Status(429, "{}"), false, ErrorKind::Transient),
            (
                Answer::Status(403, "{}"),
                false,
                ErrorKind::PermissionDenied,
            ),
            (Answer::Status(401, "{}"), true, ErrorKind::PermissionDenied),
            (Answer::Status(400, "{}"), false, ErrorKind::Permanent),
            // A missing bucket: a 404 that is not a missing object.
            (Answer::Status(404, "{}"), true, ErrorKind::Permanent),
            (Answer::Status(404, "{}"), false, ErrorKind::NotFound),
            // An answer that is not the JSON asked for.
            (Answer::Status(200, "<html>"), true, ErrorKind::Permanent),
            (Answer::Silence, false, ErrorKind::Transient),
        ];
        for (answer, list, want) in cases {
            let server = FakeHttp::start(vec![answer]).await;
            let gcs = client(&server.endpoint(), quick(1));
            let e = if list {
                let r = gcs.list_with_delimiter(Some(&Path::from("p"))).await;
                Error::backend("list", "p", r.expect_err("a failing list"))
            } else {
                let r = gcs.get(&Path::from("k")).await;
                Error::backend("get", "k", r.expect_err("a failing get"))
            };
            assert_eq!(e.kind(), want, "{answer:?} (list: {list}): {e}");
        }
        let gcs = client(&refusing_endpoint(), quick(1));
        let e = Error::backend(
            "get",
            "k",
            gcs.get(&Path::from("k")).await.expect_err("refused"),
        );
        assert_eq!(e.kind(), ErrorKind::Transient, "{e}");
    }

    /// Requests are retried by the shared policy, on transient failures only.
    #[tokio::test]
    async fn requests_are_retried_by_the_store_policy() {
        let object = r#"{"name": "k", "size": "3"}"#;
        let server = FakeHttp::start(vec![
            Answer::Status(503, "{}"),
            Answer::Status(429, "{}"),
            Answer::Status(200, object),
        ])
        .await;
        let gcs = client(&server.endpoint(), quick(5));
        let meta = gcs.head(&Path::from("k")).await.expect("the third attempt");
        assert_eq!(meta.size, 3);
        assert_eq!(server.requests(), 3);

        // A create is retried on a 5xx (the server answered: it did not take the write).
        let server =
            FakeHttp::start(vec![Answer::Status(500, "{}"), Answer::Status(200, object)]).await;
        let gcs = client(&server.endpoint(), quick(5));
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        gcs.put_opts(&Path::from("k"), PutPayload::from_static(b"abc"), opts)
            .await
            .expect("the second attempt");
        assert_eq!(server.requests(), 2);

        // The policy's attempts bound the retries.
        let server = FakeHttp::start(vec![Answer::Status(500, "{}")]).await;
        let gcs = client(&server.endpoint(), quick(3));
        gcs.head(&Path::from("k")).await.expect_err("always 500");
        assert_eq!(server.requests(), 3);

        // Permanent failures are not retried.
        for status in [400, 403, 404] {
            let server = FakeHttp::start(vec![Answer::Status(status, "{}")]).await;
            let gcs = client(&server.endpoint(), quick(5));
            gcs.head(&Path::from("k")).await.expect_err("refused");
            assert_eq!(server.requests(), 1, "{status}");
        }
    }
}
