//! The server's error type and the one place CA and bootstrap-token errors become gRPC
//! statuses.

use tonic::Status;

/// Why the server could not start or keep running.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is invalid; the message names the setting.
    #[error("configuration: {0}")]
    Config(String),
    /// Key custody refused to start: running as root, a path others can read, or no
    /// passphrase. The message says what to do.
    #[error("{0}")]
    Custody(String),
    /// A file or socket operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, with the path.
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// TLS set-up failed.
    #[error("TLS: {0}")]
    Tls(String),
    /// The CA core refused or failed.
    #[error(transparent)]
    Ca(#[from] writ_ca::Error),
    /// The bootstrap token store could not be opened.
    #[error(transparent)]
    Bootstrap(#[from] writ_bootstrap::Error),
    /// The gRPC transport failed.
    #[error("gRPC transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// A task the server runs on panicked or was cancelled (a bug: report it).
    #[error("a server task failed: {0}")]
    Task(String),
}

impl Error {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            what: what.into(),
            source,
        }
    }
}

/// Maps a CA error to the status a client can act on. Internal failures are logged here
/// and reported without detail.
pub(crate) fn ca_status(e: writ_ca::Error) -> Status {
    use writ_ca::Error as E;
    match e {
        E::InvalidId(_)
        | E::InvalidDuration(_)
        | E::UnknownKeyType(_)
        | E::CsrTooLarge { .. }
        | E::MalformedCsr(_)
        | E::CsrSignature
        | E::UnsupportedKey(_)
        | E::CsrRejected(_)
        | E::TtlTooLong { .. } => Status::invalid_argument(e.to_string()),
        E::IdentityMismatch { .. }
        | E::DnsNotAllowed(_)
        | E::ForeignTrustDomain { .. }
        | E::IdentityDenied { .. } => Status::permission_denied(e.to_string()),
        E::BadCertificate(_) => Status::unauthenticated(e.to_string()),
        E::Rotation(_) | E::TooEarly { .. } | E::LiveLeaves { .. } | E::NotRenewable { .. } => {
            Status::failed_precondition(e.to_string())
        }
        E::Import(_) => Status::invalid_argument(e.to_string()),
        other => {
            tracing::error!(error = %other, "CA failure");
            Status::internal("the CA failed to complete the request; see the server log")
        }
    }
}

/// Maps a bootstrap-token error to a status, following the code each variant documents.
/// Messages name at most the token's `jti`, never the token. Internal failures are logged
/// here and reported without detail.
pub(crate) fn bootstrap_status(e: writ_bootstrap::Error) -> Status {
    use writ_bootstrap::Error as E;
    match e {
        E::TooLarge { .. }
        | E::Malformed(_)
        | E::WrongAlgorithm(_)
        | E::BadSignature
        | E::WrongIssuer { .. }
        | E::WrongAudience { .. }
        | E::Expired { .. }
        | E::NotYetValid { .. }
        | E::UnknownToken { .. }
        | E::ClaimsMismatch { .. }
        | E::UntrustedIssuer { .. }
        | E::PlatformToken { .. } => Status::unauthenticated(e.to_string()),
        E::AlreadyUsed { .. } | E::Revoked { .. } => Status::permission_denied(e.to_string()),
        E::NotFound { .. } => Status::not_found(e.to_string()),
        E::WrongState { .. } => Status::failed_precondition(e.to_string()),
        E::TtlTooLong { .. } | E::InvalidInput(_) => Status::invalid_argument(e.to_string()),
        other => {
            tracing::error!(error = %other, jti = ?other.jti(), "bootstrap token store failure");
            Status::internal("the CA failed to process the bootstrap token; see the server log")
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use tonic::Code;
    use writ_bootstrap::{Error as E, Jti};

    use super::bootstrap_status;

    #[test]
    fn bootstrap_errors_map_to_their_documented_codes() {
        let jti = || Jti::parse(&"a".repeat(32)).unwrap();
        let cases = [
            (
                E::TooLarge {
                    len: 9000,
                    max: 8192,
                },
                Code::Unauthenticated,
            ),
            (E::Malformed("x"), Code::Unauthenticated),
            (E::WrongAlgorithm("none".into()), Code::Unauthenticated),
            (E::BadSignature, Code::Unauthenticated),
            (
                E::Expired {
                    jti: jti(),
                    expired_at: SystemTime::UNIX_EPOCH,
                },
                Code::Unauthenticated,
            ),
            (E::UnknownToken { jti: jti() }, Code::Unauthenticated),
            (E::ClaimsMismatch { jti: jti() }, Code::Unauthenticated),
            (E::AlreadyUsed { jti: jti() }, Code::PermissionDenied),
            (E::Revoked { jti: jti() }, Code::PermissionDenied),
            (E::NotFound { jti: jti() }, Code::NotFound),
            (E::InvalidInput("x".into()), Code::InvalidArgument),
            (E::Corrupt("x".into()), Code::Internal),
            (E::Signing("x".into()), Code::Internal),
        ];
        for (e, code) in cases {
            let shown = e.to_string();
            let status = bootstrap_status(e);
            assert_eq!(status.code(), code, "{shown}");
            if code == Code::Internal {
                // Internal detail stays in the server log.
                assert!(!status.message().contains(&shown), "{shown}");
            }
        }
    }
}
