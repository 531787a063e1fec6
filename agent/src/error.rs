//! The agent crate's error type.

use tonic::Code;

/// What can go wrong obtaining, renewing or serving an identity.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server could not be reached or the TLS handshake failed.
    #[error("{0}")]
    Connect(String),
    /// The server answered with an error status.
    #[error("the CA refused: {message} ({code:?})")]
    Rejected {
        /// The gRPC status code.
        code: Code,
        /// The server's message.
        message: String,
    },
    /// The current certificate expired: it cannot be used to renew.
    #[error(
        "the certificate for {id} expired at {at}; an expired certificate cannot renew: ask an admin for a new bootstrap token for {id} (writ token create --spiffe-id {id})"
    )]
    Expired {
        /// The identity.
        id: String,
        /// When it expired.
        at: String,
    },
    /// The metrics endpoint (`--metrics-listen`) could not start.
    #[error("{0}; pick a free address for --metrics-listen, or leave it unset")]
    Metrics(String),
    /// A setting is malformed (e.g. `--server`); nothing was attempted.
    #[error("{0}")]
    Config(String),
    /// There is no identity to start from.
    #[error("{0}")]
    NoIdentity(String),
    /// The server's response did not check out; nothing was written.
    #[error("refusing the CA's response: {0}")]
    InvalidResponse(String),
    /// Reading or writing identity files failed.
    #[error(transparent)]
    Files(#[from] crate::files::Error),
    /// The out dir cannot be held (another agent runs on it) or cleaned up.
    #[error("{0}")]
    OutDir(String),
    /// A CA-core operation (key generation, parsing) failed.
    #[error(transparent)]
    Ca(#[from] writ_ca::Error),
}

impl Error {
    /// Maps a gRPC status from the server.
    pub fn from_status(s: tonic::Status) -> Self {
        if s.code() == Code::Unavailable
            || s.code() == Code::Unknown && s.message().contains("transport")
        {
            return Error::Connect(format!("the writ server is unavailable: {}", s.message()));
        }
        Error::Rejected {
            code: s.code(),
            message: s.message().to_owned(),
        }
    }

    /// True when retrying cannot help (the request itself is refused); such errors are
    /// reported, not hammered.
    pub fn is_permanent(&self) -> bool {
        match self {
            Error::Rejected { code, .. } => matches!(
                code,
                Code::PermissionDenied | Code::InvalidArgument | Code::Unauthenticated
            ),
            Error::Expired { .. } | Error::NoIdentity(_) | Error::Config(_) => true,
            _ => false,
        }
    }
}
