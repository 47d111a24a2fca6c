//! Errors of the storage layer, classified by [`ErrorKind`].

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub use datamon_types::ErrorKind;

/// One of the checks of [`crate::Store::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreCheck {
    /// The store answers a list and a read.
    Reachable,
    /// An object can be written, read back and deleted.
    Writable,
    /// A second create-if-absent of one key fails.
    CreateIfAbsent,
}

impl std::fmt::Display for StoreCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StoreCheck::Reachable => "the store is not reachable",
            StoreCheck::Writable => "the store is not writable",
            StoreCheck::CreateIfAbsent => "the store does not honour create-if-absent",
        })
    }
}

/// An error of the storage layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The store URL cannot be used.
    #[error("invalid store URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong and what is accepted.
        reason: String,
    },
    /// An object that should exist does not.
    #[error("object {key} not found in the store")]
    NotFound {
        /// Its key.
        key: String,
    },
    /// A create-if-absent write found an object already there.
    #[error("object {key} already exists")]
    AlreadyExists {
        /// Its key.
        key: String,
    },
    /// A sequence append lost its race too many times.
    #[error("could not append to {key}: too many concurrent writers, try again")]
    Precondition {
        /// The sequence's key prefix.
        key: String,
    },
    /// Stored bytes are damaged.
    #[error("corrupt {what}: {detail}")]
    Corrupt {
        /// Which object or blob.
        what: String,
        /// What is wrong with it.
        detail: String,
    },
    /// The store was written by a newer datamon.
    #[error("the store uses format version {found}, this datamon reads version {supported}: upgrade datamon")]
    UnsupportedVersion {
        /// The store's version.
        found: u32,
        /// This build's version.
        supported: u32,
    },
    /// An encrypted store cannot be opened, or a key cannot be changed, with what was given.
    #[error("{detail}")]
    Locked {
        /// What is missing or wrong, and what to give.
        detail: String,
    },
    /// A change of an encrypted store's keys that is refused (the last key, an ambiguous name,
    /// a plain store).
    #[error("{detail}")]
    KeyChange {
        /// Why, and what to do instead.
        detail: String,
    },
    /// The object store failed. The message condenses the backend's error chain (whose
    /// messages repeat each other) into one line ending with its root cause, so it is not
    /// exposed again as `source()`; the typed error stays in `error`. Its kind comes from its
    /// cause (the HTTP status, the transport failure, the io error found in its chain; see
    /// [`Error::kind`]), so that only failures that may pass are retried or served by a
    /// replica.
    #[error("store {op} of {key} failed: {}", condense(error))]
    Backend {
        /// The operation (get, put, list...).
        op: &'static str,
        /// The key or prefix.
        key: String,
        /// The underlying error.
        error: object_store::Error,
    },
    /// A JSON record could not be decoded.
    #[error("cannot decode {key}: {source}")]
    Json {
        /// The record's key.
        key: String,
        /// The decoding error.
        #[source]
        source: serde_json::Error,
    },
    /// A check of [`crate::Store::check`] failed.
    #[error("{check}")]
    Check {
        /// Which check.
        check: StoreCheck,
        /// Why.
        #[source]
        source: Box<Error>,
    },
    /// A local file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Classifies the error. A backend error ([`Error::Backend`]) is classified by its cause: a
    /// timeout, a refused, reset or cut connection, an HTTP 5xx, 408 or
    /// 429 is [`ErrorKind::Transient`]; an HTTP 401 or 403 is [`ErrorKind::PermissionDenied`];
    /// any other HTTP status, an operation the backend does not support, and a failure whose
    /// cause is not known are [`ErrorKind::Permanent`].
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidUrl { .. } => ErrorKind::InvalidInput,
            Error::NotFound { .. } => ErrorKind::NotFound,
            Error::AlreadyExists { .. } => ErrorKind::AlreadyExists,
            Error::Precondition { .. } => ErrorKind::Conflict,
            Error::Corrupt { .. } | Error::Json { .. } => ErrorKind::Corrupt,
            Error::UnsupportedVersion { .. } => ErrorKind::Permanent,
            Error::Locked { .. } => ErrorKind::PermissionDenied,
            Error::KeyChange { .. } => ErrorKind::InvalidInput,
            Error::Backend { error, .. } => backend_kind(error),
            Error::Io { source, .. } => ErrorKind::of_io(source),
            Error::Check { source, .. } => source.kind(),
        }
    }

    /// Whether retrying may help (the kind is [`ErrorKind::Transient`]).
    pub fn is_transient(&self) -> bool {
        self.kind() == ErrorKind::Transient
    }

    pub(crate) fn backend(op: &'static str, key: &str, source: object_store::Error) -> Self {
        match source {
            object_store::Error::NotFound { .. } => Error::NotFound {
                key: key.to_owned(),
            },
            object_store::Error::AlreadyExists { .. } => Error::AlreadyExists {
                key: key.to_owned(),
            },
            error => Error::Backend {
                op,
                key: key.to_owned(),
                error,
            },
        }
    }
}

/// Classifies an `object_store` error: by its variant, and a generic one by its cause.
pub(crate) fn backend_kind(e: &object_store::Error) -> ErrorKind {
    use object_store::Error as E;
    match e {
        E::NotFound { .. } => ErrorKind::NotFound,
        E::AlreadyExists { .. } => ErrorKind::AlreadyExists,
        E::Precondition { .. } => ErrorKind::Conflict,
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => ErrorKind::PermissionDenied,
        E::InvalidPath { .. } | E::UnknownConfigurationKey { .. } => ErrorKind::InvalidInput,
        E::JoinError { .. } => ErrorKind::Internal,
        E::Generic { source, .. } => cause_kind(source.as_ref()).unwrap_or(ErrorKind::Permanent),
        // NotSupported, NotImplemented, NotModified (datamon sends no conditional reads).
        _ => ErrorKind::Permanent,
    }
}

/// The kind told by the first error in the chain from `e` (itself included) whose type or
/// status says what happened, if any does.
fn cause_kind(e: &(dyn std::error::Error + 'static)) -> Option<ErrorKind> {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if let Some(kind) = one_cause_kind(c) {
            return Some(kind);
        }
        cause = c.source();
    }
    None
}

/// What `c` alone tells, or `None` when its own causes have to tell.
fn one_cause_kind(c: &(dyn std::error::Error + 'static)) -> Option<ErrorKind> {
    use object_store::client::{HttpError, HttpErrorKind};
    if let Some(e) = c.downcast_ref::<object_store::Error>() {
        return Some(backend_kind(e));
    }
    if let Some(e) = c.downcast_ref::<crate::gcs::HttpStatus>() {
        return Some(status_kind(e.status));
    }
    if let Some(e) = c.downcast_ref::<HttpError>() {
        return match e.kind() {
            HttpErrorKind::Connect
            | HttpErrorKind::Request
            | HttpErrorKind::Timeout
            | HttpErrorKind::Interrupted => Some(ErrorKind::Transient),
            // Decode, Unknown: the causes below may tell more.
            _ => None,
        };
    }
    if let Some(e) = c.downcast_ref::<reqwest::Error>() {
        if let Some(status) = e.status() {
            return Some(status_kind(status.as_u16()));
        }
        if e.is_timeout() || e.is_connect() || e.is_request() || e.is_body() {
            return Some(ErrorKind::Transient);
        }
        return None;
    }
    if let Some(e) = c.downcast_ref::<std::io::Error>() {
        return Some(io_kind(e));
    }
    request_error_kind(&c.to_string())
}

/// The kind of an HTTP status that is not one of the statuses `object_store` maps to its own
/// variants (404, 409, 412...).
fn status_kind(status: u16) -> ErrorKind {
    match status {
        401 | 403 => ErrorKind::PermissionDenied,
        408 | 429 | 500..=599 => ErrorKind::Transient,
        _ => ErrorKind::Permanent,
    }
}

/// An I/O error met by a backend: by [`ErrorKind::of_io`], except that the failures of a
/// network connection are transient; an error that only wraps another is classified by it.
fn io_kind(e: &std::io::Error) -> ErrorKind {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::ConnectionRefused
        | K::ConnectionReset
        | K::ConnectionAborted
        | K::NotConnected
        | K::BrokenPipe
        | K::TimedOut
        | K::AddrNotAvailable
        | K::HostUnreachable
        | K::NetworkUnreachable
        | K::NetworkDown => ErrorKind::Transient,
        K::Other => match e.get_ref() {
            Some(inner) => {
                let inner: &(dyn std::error::Error + 'static) = inner;
                cause_kind(inner).unwrap_or(ErrorKind::Io)
            }
            None => ErrorKind::Io,
        },
        _ => ErrorKind::of_io(e),
    }
}

/// The kind of one of `object_store`'s HTTP request errors, from its message: that type (its
/// `client::retry::RequestError`, inside a `RetryError`) is not public in object_store 0.14,
/// so its status can only be read from the text it formats. The unit tests pin that text
/// against real answers of a loopback server, so an upgrade that changes it fails them.
fn request_error_kind(message: &str) -> Option<ErrorKind> {
    if let Some(rest) = message.strip_prefix("Server returned non-2xx status code: ") {
        let status: u16 = rest.get(..3)?.parse().ok()?;
        return Some(status_kind(status));
    }
    if message.starts_with("Server returned error response: ") {
        // A success status whose body holds an error (S3's InternalError, SlowDown), which
        // object_store retries as a 5xx.
        return Some(ErrorKind::Transient);
    }
    if message.starts_with("Received redirect without LOCATION") {
        // A bucket in another region than the one configured.
        return Some(ErrorKind::Permanent);
    }
    None
}

/// The message of `e`, followed by each cause in its chain that the message does not already
/// contain.
fn condense(e: &object_store::Error) -> String {
    let mut msg = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        let text = c.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        cause = c.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use object_store::client::{HttpError, HttpErrorKind};
    use object_store::path::Path;
    use object_store::{ObjectStore, ObjectStoreExt};

    use super::*;
    use crate::testing::{refusing_endpoint, Answer, FakeHttp};

    fn generic(source: impl std::error::Error + Send + Sync + 'static) -> Error {
        Error::backend(
            "get",
            "k",
            object_store::Error::Generic {
                store: "S3",
                source: Box::new(source),
            },
        )
    }

    fn io(kind: std::io::ErrorKind) -> std::io::Error {
        std::io::Error::from(kind)
    }

    #[test]
    fn backend_errors_are_one_line_and_classified() {
        let e = generic(HttpError::new(
            HttpErrorKind::Interrupted,
            io(std::io::ErrorKind::ConnectionReset),
        ));
        assert_eq!(e.kind(), ErrorKind::Transient);
        assert_eq!(
            e.to_string(),
            "store get of k failed: Generic S3 error: HTTP error: connection reset"
        );
        let check = Error::Check {
            check: StoreCheck::CreateIfAbsent,
            source: Box::new(e),
        };
        assert_eq!(check.kind(), ErrorKind::Transient);
        assert_eq!(
            check.to_string(),
            "the store does not honour create-if-absent"
        );
    }

    #[test]
    fn object_store_variants_are_classified() {
        let denied = |e| Error::backend("put", "k", e).kind();
        assert_eq!(
            denied(object_store::Error::PermissionDenied {
                path: "k".into(),
                source: "403".into(),
            }),
            ErrorKind::PermissionDenied
        );
        assert_eq!(
            denied(object_store::Error::Unauthenticated {
                path: "k".into(),
                source: "401".into(),
            }),
            ErrorKind::PermissionDenied
        );
        assert_eq!(
            denied(object_store::Error::NotImplemented {
                operation: "copy".into(),
                implementer: "GCS".into(),
            }),
            ErrorKind::Permanent
        );
        assert_eq!(
            denied(object_store::Error::NotSupported {
                source: "no versions".into(),
            }),
            ErrorKind::Permanent
        );
        assert_eq!(
            denied(object_store::Error::UnknownConfigurationKey {
                store: "S3",
                key: "aws_nonsense".into(),
            }),
            ErrorKind::InvalidInput
        );
        assert_eq!(
            denied(object_store::Error::Precondition {
                path: "k".into(),
                source: "412".into(),
            }),
            ErrorKind::Conflict
        );
    }

    #[test]
    fn generic_errors_are_classified_by_their_cause() {
        use std::io::ErrorKind as K;
        // Transport failures, as object_store's HTTP client reports them.
        for kind in [
            HttpErrorKind::Connect,
            HttpErrorKind::Request,
            HttpErrorKind::Timeout,
            HttpErrorKind::Interrupted,
        ] {
            let e = generic(HttpError::new(kind, io(K::Other)));
            assert_eq!(e.kind(), ErrorKind::Transient, "{kind:?}");
        }
        // Io errors: a broken connection is transient, the rest as local io errors.
        for kind in [
            K::ConnectionRefused,
            K::ConnectionReset,
            K::TimedOut,
            K::BrokenPipe,
        ] {
            assert_eq!(generic(io(kind)).kind(), ErrorKind::Transient, "{kind:?}");
        }
        assert_eq!(
            generic(io(K::PermissionDenied)).kind(),
            ErrorKind::PermissionDenied
        );
        assert_eq!(generic(io(K::StorageFull)).kind(), ErrorKind::Io);
        // An undecided transport error is classified by what it wraps.
        let e = generic(HttpError::new(
            HttpErrorKind::Unknown,
            io(K::ConnectionReset),
        ));
        assert_eq!(e.kind(), ErrorKind::Transient);
        // A cause that tells nothing is not retried: permanent failures must not be.
        assert_eq!(
            generic(io(K::Other)).kind(),
            ErrorKind::Io,
            "an io error of no known kind"
        );
        let opaque = Error::backend(
            "get",
            "k",
            object_store::Error::Generic {
                store: "S3",
                source: "something failed".into(),
            },
        );
        assert_eq!(opaque.kind(), ErrorKind::Permanent);
        assert!(!opaque.is_transient());
    }

    #[test]
    fn statuses_are_classified() {
        for (status, kind) in [
            (500, ErrorKind::Transient),
            (503, ErrorKind::Transient),
            (429, ErrorKind::Transient),
            (408, ErrorKind::Transient),
            (401, ErrorKind::PermissionDenied),
            (403, ErrorKind::PermissionDenied),
            (400, ErrorKind::Permanent),
            (404, ErrorKind::Permanent),
            (405, ErrorKind::Permanent),
            (416, ErrorKind::Permanent),
        ] {
            assert_eq!(status_kind(status), kind, "{status}");
        }
        assert_eq!(
            request_error_kind("Server returned non-2xx status code: 503 Service Unavailable: "),
            Some(ErrorKind::Transient)
        );
        assert_eq!(request_error_kind("Generic S3 error"), None);
    }

    /// An S3 client of object_store against `endpoint`, without retries and with a short
    /// timeout, so that each error is the one of a single request.
    fn s3(endpoint: &str) -> object_store::aws::AmazonS3 {
        object_store::aws::AmazonS3Builder::new()
            .with_bucket_name("bucket")
            .with_region("us-east-1")
            .with_endpoint(endpoint)
            .with_skip_signature(true)
            .with_retry(object_store::RetryConfig {
                max_retries: 0,
                ..Default::default()
            })
            .with_client_options(
                object_store::ClientOptions::new()
                    .with_allow_http(true)
                    .with_timeout(Duration::from_millis(500)),
            )
            .build()
            .expect("an S3 client")
    }

    /// The kind of the error of a get of `k` (or a list) from an S3 server answering `answer`.
    async fn s3_kind(answer: Answer, list: bool) -> (ErrorKind, String) {
        let server = FakeHttp::start(vec![answer]).await;
        let os = s3(&server.endpoint());
        let e = if list {
            use futures::TryStreamExt;
            let r: object_store::Result<Vec<_>> =
                os.list(Some(&Path::from("p"))).try_collect().await;
            Error::backend("list", "p", r.expect_err("a failing list"))
        } else {
            let r = os.get(&Path::from("k")).await;
            Error::backend("get", "k", r.expect_err("a failing get"))
        };
        (e.kind(), e.to_string())
    }

    /// Real errors of object_store's S3 client, answered by a loopback server: this pins how
    /// object_store 0.14 reports statuses (see `request_error_kind`).
    #[tokio::test]
    async fn s3_errors_are_classified_by_status_and_transport() {
        let cases = [
            (
                Answer::Status(500, "<Error><Code>InternalError</Code></Error>"),
                false,
                ErrorKind::Transient,
            ),
            (
                Answer::Status(503, "<Error><Code>SlowDown</Code></Error>"),
                true,
                ErrorKind::Transient,
            ),
            (Answer::Status(429, ""), false, ErrorKind::Transient),
            (
                Answer::Status(403, "<Error><Code>AccessDenied</Code></Error>"),
                false,
                ErrorKind::PermissionDenied,
            ),
            (
                Answer::Status(403, "<Error><Code>AccessDenied</Code></Error>"),
                true,
                ErrorKind::PermissionDenied,
            ),
            (Answer::Status(401, ""), true, ErrorKind::PermissionDenied),
            (
                Answer::Status(400, "<Error><Code>InvalidRequest</Code></Error>"),
                false,
                ErrorKind::Permanent,
            ),
            // A missing bucket: a 404 that is not a missing object.
            (
                Answer::Status(404, "<Error><Code>NoSuchBucket</Code></Error>"),
                true,
                ErrorKind::Permanent,
            ),
            (
                Answer::Status(404, "<Error><Code>NoSuchKey</Code></Error>"),
                false,
                ErrorKind::NotFound,
            ),
            (Answer::Silence, false, ErrorKind::Transient),
        ];
        for (answer, list, want) in cases {
            let (kind, msg) = s3_kind(answer, list).await;
            assert_eq!(kind, want, "{answer:?} (list: {list}): {msg}");
        }
        let os = s3(&refusing_endpoint());
        let e = Error::backend(
            "get",
            "k",
            os.get(&Path::from("k")).await.expect_err("refused"),
        );
        assert_eq!(e.kind(), ErrorKind::Transient, "{e}");
    }
}
