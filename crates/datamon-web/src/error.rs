//! Errors of the server itself, and API errors: a library error's `ErrorKind` as an HTTP status
//! with a JSON body `{"error": KIND, "message": TEXT}`.

use std::net::SocketAddr;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use datamon::ErrorKind;

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A non-loopback address was asked without a token.
    #[error("listening on {addr}, which is not a loopback address, requires a token")]
    TokenRequired {
        /// The address asked.
        addr: SocketAddr,
    },
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Serving failed.
    #[error("serving failed: {0}")]
    Serve(#[source] std::io::Error),
}

impl Error {
    /// Classifies the error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::TokenRequired { .. } => ErrorKind::InvalidInput,
            Error::Bind { source, .. } | Error::Serve(source) => ErrorKind::of_io(source),
        }
    }
}

/// An API error: a status, a kind name and a message.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) kind: &'static str,
    pub(crate) message: String,
}

impl ApiError {
    /// A request the client got wrong (400).
    pub(crate) fn bad(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            kind: "InvalidInput",
            message: message.into(),
        }
    }

    /// Something that does not exist (404).
    pub(crate) fn not_found(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            kind: "NotFound",
            message: message.into(),
        }
    }
}

/// The HTTP status of an error kind.
pub(crate) fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::InvalidInput => StatusCode::BAD_REQUEST,
        ErrorKind::AlreadyExists | ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::PermissionDenied => StatusCode::FORBIDDEN,
        ErrorKind::Transient | ErrorKind::Busy => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Permanent => StatusCode::BAD_GATEWAY,
        // A request cut short: the client is gone, the status hardly matters.
        ErrorKind::Cancelled => StatusCode::SERVICE_UNAVAILABLE,
        // Corrupt data, local I/O, bugs, and kinds added later.
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<datamon::Error> for ApiError {
    fn from(e: datamon::Error) -> Self {
        let kind = e.kind();
        let status = status_of(kind);
        if status.is_server_error() {
            tracing::warn!("web request failed: {e}");
        }
        ApiError {
            status,
            kind: kind_name(kind),
            message: e.to_string(),
        }
    }
}

fn kind_name(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::NotFound => "NotFound",
        ErrorKind::AlreadyExists => "AlreadyExists",
        ErrorKind::Conflict => "Conflict",
        ErrorKind::InvalidInput => "InvalidInput",
        ErrorKind::Corrupt => "Corrupt",
        ErrorKind::Transient => "Transient",
        ErrorKind::Permanent => "Permanent",
        ErrorKind::PermissionDenied => "PermissionDenied",
        ErrorKind::Busy => "Busy",
        ErrorKind::Cancelled => "Cancelled",
        ErrorKind::Io => "Io",
        _ => "Internal",
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.kind, "message": self.message });
        (self.status, axum::Json(body)).into_response()
    }
}

/// What handlers return.
pub(crate) type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_to_statuses() {
        assert_eq!(status_of(ErrorKind::NotFound), StatusCode::NOT_FOUND);
        assert_eq!(status_of(ErrorKind::InvalidInput), StatusCode::BAD_REQUEST);
        assert_eq!(status_of(ErrorKind::Conflict), StatusCode::CONFLICT);
        assert_eq!(
            status_of(ErrorKind::PermissionDenied),
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            status_of(ErrorKind::Transient),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            status_of(ErrorKind::Corrupt),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        let e = datamon::Error::RepoNotFound { repo: "x".into() };
        let api = ApiError::from(e);
        assert_eq!((api.status, api.kind), (StatusCode::NOT_FOUND, "NotFound"));
    }
}
