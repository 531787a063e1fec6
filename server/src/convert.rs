//! Conversions between CA core types and protocol messages.

use std::time::SystemTime;

use writ_bootstrap::{TokenEntry, TokenState};
use writ_ca::store::IssuanceRecord;
use writ_ca::{Issuance, LifetimeLimit, TrustBundle};
use writ_proto::{admin, v1};

/// A bundle as the protocol carries it.
pub(crate) fn bundle(b: &TrustBundle) -> v1::TrustBundle {
    owned_bundle(b.clone())
}

/// [`bundle`] for a bundle the caller owns: its roots move instead of being copied (every
/// signing answer carries one).
fn owned_bundle(b: TrustBundle) -> v1::TrustBundle {
    v1::TrustBundle {
        trust_domain: b.trust_domain.to_string(),
        roots: b.roots,
        sequence: b.sequence,
        refresh_hint_seconds: b.refresh_hint.as_secs(),
    }
}

/// An issuance as the protocol carries it.
pub(crate) fn sign_response(i: Issuance) -> v1::SignResponse {
    v1::SignResponse {
        bundle: Some(owned_bundle(i.bundle)),
        serial: i.leaf.serial,
        spiffe_id: i.id.to_string(),
        not_after: unix(i.leaf.not_after),
        chain: i.chain,
        ttl_seconds: i.lifetime.as_secs(),
        limited_by: lifetime_limit(i.limited_by).into(),
    }
}

/// Why a lifetime differs from the one requested, as the protocol carries it.
fn lifetime_limit(limit: Option<LifetimeLimit>) -> v1::LifetimeLimit {
    match limit {
        None => v1::LifetimeLimit::Unspecified,
        Some(LifetimeLimit::MaxTtl) => v1::LifetimeLimit::MaxTtl,
        Some(LifetimeLimit::MinTtl) => v1::LifetimeLimit::MinTtl,
        Some(LifetimeLimit::IssuerExpiry) => v1::LifetimeLimit::IssuerExpiry,
    }
}

/// An issuance log entry as the admin protocol carries it.
pub(crate) fn issued(r: IssuanceRecord) -> admin::IssuedCertificate {
    admin::IssuedCertificate {
        serial: r.serial,
        spiffe_id: r.spiffe_id,
        not_before: r.not_before as i64,
        not_after: r.not_after as i64,
        fingerprint: r.fingerprint,
        key_type: r.key_type,
        auth: r.auth,
        generation: r.generation,
    }
}

/// A stored bootstrap token as the admin protocol carries it.
pub(crate) fn token(e: TokenEntry) -> admin::TokenInfo {
    let (serial, used_at) = match &e.state {
        TokenState::Used { at, serial } => (serial.clone().unwrap_or_default(), unix(*at)),
        _ => (String::new(), 0),
    };
    admin::TokenInfo {
        jti: e.jti.to_string(),
        spiffe_id: e.spiffe_id.to_string(),
        created: unix(e.created),
        expires: unix(e.expires),
        state: e.state.to_string(),
        serial,
        used_at,
        dns_names: e.dns,
    }
}

/// Unix seconds.
pub(crate) fn unix(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}
