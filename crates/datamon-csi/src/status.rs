//! Library errors as gRPC statuses, by [`datamon::ErrorKind`] (never by message text).

use datamon::ErrorKind;
use tonic::{Code, Status};

/// The gRPC code the CSI spec asks for a failure of this kind.
pub fn code_of(kind: ErrorKind) -> Code {
    match kind {
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::AlreadyExists => Code::AlreadyExists,
        ErrorKind::InvalidInput => Code::InvalidArgument,
        // The store may come back: the CO retries.
        ErrorKind::Transient => Code::Unavailable,
        ErrorKind::Io => Code::Unavailable,
        // Another operation on the same volume is in progress.
        ErrorKind::Busy | ErrorKind::Conflict => Code::Aborted,
        ErrorKind::PermissionDenied => Code::PermissionDenied,
        ErrorKind::Permanent => Code::FailedPrecondition,
        ErrorKind::Cancelled => Code::Cancelled,
        ErrorKind::Corrupt => Code::DataLoss,
        _ => Code::Internal,
    }
}

/// `err` as a status whose message says what was being done (`what`: "repo r, label l").
pub fn from_error(what: &str, err: &datamon::Error) -> Status {
    Status::new(code_of(err.kind()), format!("{what}: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_to_the_codes_the_spec_names() {
        assert_eq!(code_of(ErrorKind::NotFound), Code::NotFound);
        assert_eq!(code_of(ErrorKind::AlreadyExists), Code::AlreadyExists);
        assert_eq!(code_of(ErrorKind::InvalidInput), Code::InvalidArgument);
        assert_eq!(code_of(ErrorKind::Transient), Code::Unavailable);
        assert_eq!(code_of(ErrorKind::Busy), Code::Aborted);
        assert_eq!(code_of(ErrorKind::Internal), Code::Internal);
    }
}
