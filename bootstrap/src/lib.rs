//! writ's one-time bootstrap tokens.
//!
//! A machine outside any orchestrator gets its first certificate by redeeming a token an
//! admin minted for one SPIFFE ID. The token is a compact JWT (RFC 7519) signed ES256 by a
//! dedicated key the CA keeps in its store; the CA keeps each token's claims and state by
//! `jti` (never the token) and moves pending → used exactly once with a compare-and-swap.
//!
//! Synchronous and pure over [`writ_ca::store::Store`]: time is passed in, so every path
//! is tested without a runtime or a clock.
#![forbid(unsafe_code)]

mod bootstrap;
mod claims;
mod error;
mod peek;
mod platform;
mod provider;
mod registry;
mod secret;
mod signer;

pub use bootstrap::{Bootstrap, BootstrapSettings, MintedToken, VerifiedToken};
pub use claims::Jti;
pub use error::{Error, Result};
pub use jsonwebtoken::Algorithm;
pub use jsonwebtoken::jwk::JwkSet;
pub use peek::{UnverifiedClaims, peek_claims};
pub use platform::{
    DEFAULT_ALGORITHMS, DEFAULT_AUDIENCE, IdentityMapping, PLATFORM_LEEWAY, PlatformIdentity,
    PlatformIssuer, peek_issuer, verify_platform_token,
};
pub use provider::install_crypto_provider;
pub use registry::{TokenEntry, TokenState};
pub use secret::SecretToken;

/// How every bootstrap token's `iss` begins (`writ://<trust-domain>`): a bearer token
/// with another issuer is not a bootstrap token.
pub const BOOTSTRAP_ISSUER_PREFIX: &str = "writ://";

/// The longest token accepted, in bytes; longer input is refused before any parsing.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;
