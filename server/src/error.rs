//! The server's error type and the one place CA errors become gRPC statuses.

use tonic::Status;

/// Why the server could not start or keep running.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is invalid; the message names the setting.
    #[error("configuration: {0}")]
    Config(String),
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
    /// The gRPC transport failed.
    #[error("gRPC transport: {0}")]
    Transport(#[from] tonic::transport::Error),
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
        E::IdentityMismatch { .. } | E::DnsNotAllowed(_) => {
            Status::permission_denied(e.to_string())
        }
        E::BadCertificate(_) => Status::unauthenticated(e.to_string()),
        other => {
            tracing::error!(error = %other, "CA failure");
            Status::internal("the CA failed to complete the request; see the server log")
        }
    }
}
