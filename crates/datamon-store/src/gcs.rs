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
//! Not supported: copy and rename (datamon never copies objects). Multipart writes are
//! buffered and sent as one upload on completion.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::gcp::GcpCredentialProvider;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetRange, GetResult, GetResultPayload, ListResult, MultipartUpload,
    ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutMultipartOptions, PutOptions, PutPayload,
    PutResult, UploadPart,
};
use serde::Deserialize;

const STORE: &str = "GCS";
const DEFAULT_ENDPOINT: &str = "https://storage.googleapis.com";
/// Retries of one request.
const RETRIES: u32 = 4;

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

/// An HTTP answer that was not a success.
#[derive(Debug, thiserror::Error)]
#[error("{method} {url}: HTTP {status}: {body}")]
struct HttpStatus {
    method: &'static str,
    url: String,
    status: u16,
    body: String,
}

/// `%`-encodes everything but unreserved characters (so `/` in object names is encoded).
fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
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
            .map_err(generic)?;
        Ok(GcsJson {
            inner: Arc::new(Inner {
                client,
                endpoint,
                bucket: bucket.to_owned(),
                auth,
            }),
        })
    }
}

impl Inner {
    /// Sends a request, retrying (exponential backoff with jitter, at most [`RETRIES`] times)
    /// when it was never sent (connect errors), on 5xx and 429, and on other transport errors
    /// when `idempotent`. The body is in memory, so every retry sends it whole.
    async fn send(
        &self,
        method: &'static str,
        url: String,
        req: reqwest::RequestBuilder,
        path: &str,
        idempotent: bool,
    ) -> object_store::Result<reqwest::Response> {
        let mut attempt = 0u32;
        let resp = loop {
            let this = req.try_clone().ok_or_else(|| {
                generic(HttpStatus {
                    method,
                    url: url.clone(),
                    status: 0,
                    body: "a request body that cannot be re-sent".into(),
                })
            })?;
            let this = match &self.auth {
                Some(a) => this.bearer_auth(&a.get_credential().await?.bearer),
                None => this,
            };
            let retry = match this.send().await {
                Ok(r) if r.status().is_server_error() || r.status().as_u16() == 429 => {
                    if attempt >= RETRIES {
                        break r;
                    }
                    true
                }
                Ok(r) => break r,
                Err(e) => {
                    if attempt >= RETRIES || !(e.is_connect() || idempotent) {
                        return Err(generic(e));
                    }
                    true
                }
            };
            if retry {
                let base = 100u64 << attempt.min(6);
                let jitter = crate::store::random_u64() % base;
                tokio::time::sleep(Duration::from_millis(base + jitter)).await;
                attempt += 1;
            }
        };
        let status = resp.status().as_u16();
        if resp.status().is_success() {
            return Ok(resp);
        }
        let body = resp.text().await.unwrap_or_default();
        let source = Box::new(HttpStatus {
            method,
            url,
            status,
            body,
        });
        let path = path.to_owned();
        Err(match status {
            404 => object_store::Error::NotFound { path, source },
            412 => object_store::Error::Precondition { path, source },
            304 => object_store::Error::NotModified { path, source },
            401 => object_store::Error::Unauthenticated { path, source },
            403 => object_store::Error::PermissionDenied { path, source },
            _ => object_store::Error::Generic {
                store: STORE,
                source,
            },
        })
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
        let boundary = format!("datamon-{:016x}", crate::store::random_u64());
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
        let resp = match self.send("POST", url, req, path, !create).await {
            Err(object_store::Error::Precondition { path, source }) if create => {
                return Err(object_store::Error::AlreadyExists { path, source })
            }
            r => r?,
        };
        let o: Object = resp.json().await.map_err(generic)?;
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
                .send("GET", url, req, &prefix, true)
                .await?
                .json()
                .await
                .map_err(generic)?;
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
                .send("GET", base, req, path, true)
                .await?
                .json()
                .await
                .map_err(generic)?;
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
        let resp = self.inner.send("GET", url, req, path, true).await?;
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
        let body = resp.bytes().await.map_err(generic)?;
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
                    inner.send("DELETE", url, req, p.as_ref(), true).await?;
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

    #[test]
    fn encodes_names_and_parses_content_ranges() {
        assert_eq!(enc("a/b c+d~e.f-g_h"), "a%2Fb%20c%2Bd~e.f-g_h");
        assert_eq!(content_range("bytes 1-3/5"), Some((1..4, 5)));
        assert_eq!(content_range("bytes */5"), None);
        assert_eq!(content_range("nonsense"), None);
    }
}
