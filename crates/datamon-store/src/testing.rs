//! Test helpers of this crate's unit tests: a loopback HTTP server with canned answers (real
//! backend errors from real clients), and a backend that fails or counts on demand.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An answer of [`FakeHttp`].
#[derive(Debug, Clone, Copy)]
pub(crate) enum Answer {
    /// This status, with this body.
    Status(u16, &'static str),
    /// Accepts the request and never answers.
    Silence,
}

/// A loopback HTTP/1.1 server that answers the n-th request with the n-th of its answers (the
/// last one repeating), one connection per request.
pub(crate) struct FakeHttp {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeHttp {
    pub(crate) async fn start(answers: Vec<Answer>) -> FakeHttp {
        assert!(!answers.is_empty());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("a bound address");
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = requests.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut conn, _)) = listener.accept().await else {
                    return;
                };
                let n = counter.fetch_add(1, Ordering::SeqCst);
                let answer = answers[n.min(answers.len() - 1)];
                tokio::spawn(async move {
                    read_request(&mut conn).await;
                    match answer {
                        Answer::Silence => tokio::time::sleep(Duration::from_secs(600)).await,
                        Answer::Status(status, body) => {
                            let head = format!(
                                "HTTP/1.1 {status} Canned\r\nContent-Length: {}\r\nContent-Type: application/xml\r\nConnection: close\r\n\r\n",
                                body.len()
                            );
                            conn.write_all(head.as_bytes()).await.ok();
                            conn.write_all(body.as_bytes()).await.ok();
                            conn.shutdown().await.ok();
                        }
                    }
                });
            }
        });
        FakeHttp {
            addr,
            requests,
            task,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub(crate) fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// How many requests came.
    pub(crate) fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for FakeHttp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads one request, its body included (so that closing the connection does not reset it).
async fn read_request(conn: &mut tokio::net::TcpStream) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let header_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match conn.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < header_end + len {
        match conn.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A loopback address where nothing listens (connections are refused).
pub(crate) fn refusing_endpoint() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let addr = l.local_addr().expect("a bound address");
    drop(l);
    format!("http://{addr}")
}

/// Makes the error a failing read of [`Faulty`] returns.
pub(crate) type MakeError = fn() -> object_store::Error;

/// An in-memory backend whose reads (get, head, list) are counted and fail with
/// `fail_reads`' error while it is set.
#[derive(Debug, Default)]
pub(crate) struct Faulty {
    inner: InMemory,
    reads: AtomicUsize,
    fail_reads: Mutex<Option<MakeError>>,
}

impl Faulty {
    pub(crate) fn new() -> Arc<Faulty> {
        Arc::new(Faulty::default())
    }

    /// Reads so far.
    pub(crate) fn reads(&self) -> usize {
        self.reads.load(Ordering::SeqCst)
    }

    /// From now on, reads fail with `make()` (or succeed again with `None`).
    pub(crate) fn fail_reads(&self, make: Option<MakeError>) {
        *self.fail_reads.lock().expect("not poisoned") = make;
    }

    fn read(&self) -> object_store::Result<()> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        match *self.fail_reads.lock().expect("not poisoned") {
            Some(make) => Err(make()),
            None => Ok(()),
        }
    }
}

impl std::fmt::Display for Faulty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Faulty")
    }
}

#[async_trait]
impl ObjectStore for Faulty {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.read()?;
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        match self.read() {
            Ok(()) => self.inner.list(prefix),
            Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
        }
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.read()?;
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

/// A transient backend failure (a refused connection, as object_store reports it).
pub(crate) fn transient_error() -> object_store::Error {
    object_store::Error::Generic {
        store: "Faulty",
        source: Box::new(object_store::client::HttpError::new(
            object_store::client::HttpErrorKind::Connect,
            std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        )),
    }
}

/// A permanent backend failure (access denied).
pub(crate) fn denied_error() -> object_store::Error {
    object_store::Error::PermissionDenied {
        path: "any".into(),
        source: "403 Forbidden".into(),
    }
}
