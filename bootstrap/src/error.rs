//! The bootstrap crate's error type.
//!
//! Every variant documents the gRPC code the server should answer with. No message ever
//! carries the token itself: at most its `jti`, which identifies but does not authorize.

use std::time::SystemTime;

use crate::{Jti, TokenState};

/// Everything minting, verifying or consuming a bootstrap token can refuse or fail at.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The token is longer than [`crate::MAX_TOKEN_LEN`]; refused before parsing.
    /// gRPC: `UNAUTHENTICATED`.
    #[error("bootstrap token is {len} bytes; at most {max} are accepted")]
    TooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The token is not a compact JWT carrying writ's bootstrap claims.
    /// gRPC: `UNAUTHENTICATED`.
    #[error("malformed bootstrap token: {0}; paste the whole token exactly as minted")]
    Malformed(&'static str),
    /// The header names an algorithm other than ES256 (`none`, HS256, RS256, ...).
    /// gRPC: `UNAUTHENTICATED`.
    #[error("bootstrap token uses algorithm {0:?}; only ES256 is accepted")]
    WrongAlgorithm(String),
    /// The ES256 signature does not verify with this CA's token-signing key.
    /// gRPC: `UNAUTHENTICATED`.
    #[error(
        "bootstrap token signature does not verify: it was altered, or minted by another CA or data directory"
    )]
    BadSignature,
    /// Signed by this CA's key but for another issuer. gRPC: `UNAUTHENTICATED`.
    #[error("bootstrap token was issued by {found:?}, not by this CA ({expected:?})")]
    WrongIssuer {
        /// This CA's issuer.
        expected: String,
        /// The token's `iss`.
        found: String,
    },
    /// The token is meant for another audience (trust domain). gRPC: `UNAUTHENTICATED`.
    #[error("bootstrap token is for audience {found:?}, not {expected:?}")]
    WrongAudience {
        /// This CA's audience.
        expected: String,
        /// The token's `aud`.
        found: String,
    },
    /// `exp` (plus leeway) has passed. gRPC: `UNAUTHENTICATED`.
    #[error("bootstrap token {jti} expired at {}; ask an admin to mint a new one", rfc3339(*.expired_at))]
    Expired {
        /// The token.
        jti: Jti,
        /// Its `exp`.
        expired_at: SystemTime,
    },
    /// `nbf` (minus leeway) is still in the future: check this machine's clock.
    /// gRPC: `UNAUTHENTICATED`.
    #[error("bootstrap token {jti} is not valid before {}; check this machine's clock", rfc3339(*.not_before))]
    NotYetValid {
        /// The token.
        jti: Jti,
        /// Its `nbf`.
        not_before: SystemTime,
    },
    /// Correctly signed, but this CA holds no record of the `jti` (never minted here, or
    /// pruned). gRPC: `UNAUTHENTICATED`.
    #[error("bootstrap token {jti} is unknown to this CA (pruned, or minted elsewhere)")]
    UnknownToken {
        /// The token.
        jti: Jti,
    },
    /// Correctly signed, but its claims differ from the record minted under its `jti`.
    /// gRPC: `UNAUTHENTICATED`.
    #[error("bootstrap token {jti} does not match the token minted under that id")]
    ClaimsMismatch {
        /// The token.
        jti: Jti,
    },
    /// The token already bought a certificate; tokens are one-time.
    /// gRPC: `PERMISSION_DENIED`.
    #[error(
        "token already used: bootstrap token {jti} is one-time; ask an admin to mint a new one"
    )]
    AlreadyUsed {
        /// The token.
        jti: Jti,
    },
    /// An admin revoked the token. gRPC: `PERMISSION_DENIED`.
    #[error("token revoked: bootstrap token {jti} was revoked by an admin")]
    Revoked {
        /// The token.
        jti: Jti,
    },
    /// An admin operation named a `jti` with no record. gRPC: `NOT_FOUND`.
    #[error("no bootstrap token {jti} (see `list`; expired tokens may have been pruned)")]
    NotFound {
        /// The `jti` asked for.
        jti: Jti,
    },
    /// The operation does not apply in the token's current state (revoking a used token,
    /// recording a serial before consumption). gRPC: `FAILED_PRECONDITION`.
    #[error("cannot {action} bootstrap token {jti}: it is {state}")]
    WrongState {
        /// The token.
        jti: Jti,
        /// Its current state.
        state: TokenState,
        /// What was attempted.
        action: &'static str,
    },
    /// The requested lifetime exceeds the configured ceiling. gRPC: `INVALID_ARGUMENT`.
    #[error(
        "requested bootstrap token lifetime {requested} exceeds the ceiling of {max}; ask for at most {max} or raise the bootstrap max TTL"
    )]
    TtlTooLong {
        /// What was asked.
        requested: writ_ca::Ttl,
        /// The ceiling.
        max: writ_ca::Ttl,
    },
    /// An argument is unusable: a foreign trust domain, a bad DNS name, fingerprint,
    /// `jti` or serial, or inconsistent settings. gRPC: `INVALID_ARGUMENT`.
    #[error("{0}")]
    InvalidInput(String),
    /// A bearer JWT names an issuer this CA does not trust. gRPC: `UNAUTHENTICATED`.
    #[error(
        "JWT issuer {issuer:?} is not trusted by this CA; an admin adds it under [[jwt_issuers]] in the server config"
    )]
    UntrustedIssuer {
        /// The token's `iss`, shortened.
        issuer: String,
    },
    /// A platform JWT from a trusted issuer failed verification or could not be mapped to
    /// an identity. gRPC: `UNAUTHENTICATED`.
    #[error("JWT from {issuer:?} refused: {reason}")]
    PlatformToken {
        /// The issuer.
        issuer: String,
        /// What was wrong, in words the token's owner can act on.
        reason: String,
    },
    /// The store failed; the operation had no effect. gRPC: `INTERNAL`.
    #[error("bootstrap token storage failed: {0}")]
    Storage(#[source] writ_ca::Error),
    /// A stored record or key is unreadable. gRPC: `INTERNAL`.
    #[error("stored bootstrap state is corrupt: {0}")]
    Corrupt(String),
    /// The token-signing key is sealed and cannot be opened (no or another passphrase).
    /// Only at start-up. gRPC: `INTERNAL`.
    #[error("bootstrap token-signing key: {0}")]
    Sealing(#[source] writ_ca::Error),
    /// Generating the token-signing key or signing failed. gRPC: `INTERNAL`.
    #[error("bootstrap token signing failed: {0}")]
    Signing(String),
}

impl Error {
    /// The token's `jti`, when the error concerns a known token: for logs and audit.
    pub fn jti(&self) -> Option<&Jti> {
        match self {
            Error::Expired { jti, .. }
            | Error::NotYetValid { jti, .. }
            | Error::UnknownToken { jti }
            | Error::ClaimsMismatch { jti }
            | Error::AlreadyUsed { jti }
            | Error::Revoked { jti }
            | Error::NotFound { jti }
            | Error::WrongState { jti, .. } => Some(jti),
            _ => None,
        }
    }
}

fn rfc3339(t: SystemTime) -> humantime::Rfc3339Timestamp {
    humantime::format_rfc3339_seconds(t)
}

impl From<writ_ca::Error> for Error {
    fn from(e: writ_ca::Error) -> Self {
        Error::Storage(e)
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
