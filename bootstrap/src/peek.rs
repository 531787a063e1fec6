//! The machine's side: read a token's claims before anything can be verified.

use std::time::SystemTime;

use serde::Deserialize;
use writ_ca::SpiffeId;

use crate::claims::{from_unix, is_fingerprint};
use crate::signer::check_len;
use crate::{Error, Jti, Result};

/// What a machine reads from its token without verifying it (it holds no key to verify
/// with): enough to pin the CA root and pick its identity before sending the token
/// anywhere. Nothing here is trusted; the CA verifies everything on redemption.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnverifiedClaims {
    /// The identity the token claims to grant (`sub`).
    pub spiffe_id: SpiffeId,
    /// When it claims to expire (`exp`).
    pub expires_at: SystemTime,
    /// The CA root's SHA-256 fingerprint, lowercase hex: refuse a CA presenting another.
    pub ca_fingerprint: String,
    /// The audience (`aud`), `writ-bootstrap:<trust-domain>`.
    pub audience: String,
    /// The token's id, for logs.
    pub jti: Jti,
    /// DNS names the certificate may carry.
    pub dns: Vec<String>,
}

/// Decodes `token`'s claims without verifying its signature. Bounded by
/// [`crate::MAX_TOKEN_LEN`]; never panics on any input.
pub fn peek_claims(token: &str) -> Result<UnverifiedClaims> {
    #[derive(Deserialize)]
    struct Wire {
        sub: String,
        exp: u64,
        ca_fingerprint: String,
        aud: String,
        jti: Jti,
        #[serde(default)]
        dns: Vec<String>,
    }
    check_len(token)?;
    // Deliberately unverified: the client cannot verify, and only uses these to decide
    // whether (and where) to present the token. The CA verifies on redemption.
    let wire: Wire = jsonwebtoken::dangerous::insecure_decode_claims(token)
        .map_err(|_| Error::Malformed("the claims are not writ bootstrap claims"))?;
    let spiffe_id = SpiffeId::parse(&wire.sub)
        .map_err(|_| Error::Malformed("`sub` is not a workload SPIFFE ID"))?;
    if !is_fingerprint(&wire.ca_fingerprint) {
        return Err(Error::Malformed(
            "`ca_fingerprint` is not 64 lowercase hex digits",
        ));
    }
    Ok(UnverifiedClaims {
        spiffe_id,
        expires_at: from_unix(wire.exp),
        ca_fingerprint: wire.ca_fingerprint,
        audience: wire.aud,
        jti: wire.jti,
        dns: wire.dns,
    })
}
