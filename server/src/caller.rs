//! Who is calling: the one credential a request to the CA's port presents (a bearer token
//! or a client certificate), established before anything is signed.

use std::sync::Arc;
use std::time::SystemTime;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::{Request, Status};
use writ_bootstrap::SecretToken;
use writ_ca::{AuthMethod, Caller, CertInfo};

use crate::error::{bootstrap_status, ca_status};
use crate::metrics::CertCheck;
use crate::peers::{Origin, Verified};
use crate::state::Shared;

/// What a caller presented to prove who it is.
pub(crate) enum Credential {
    /// A verified client certificate from this CA, or a verified platform JWT: the caller
    /// it proves.
    Proven(Caller),
    /// A bootstrap token, not yet verified: verification reads the store, so it runs on
    /// a blocking thread with the rest of the redemption.
    Token(SecretToken),
}

impl Shared {
    /// Establishes who is calling: a bearer token in `authorization: Bearer <token>` (a
    /// platform JWT from a trusted issuer, or a bootstrap token), else a client
    /// certificate.
    ///
    /// A bearer token wins over a certificate: the token names the identity it grants
    /// explicitly, and judging only one credential keeps the outcome unambiguous.
    pub(crate) fn authenticate<T>(&self, req: &Request<T>) -> Result<Credential, Status> {
        if let Some(value) = req.metadata().get("authorization") {
            return self.bearer_credential(bearer(value)?);
        }
        let certs = req.peer_certs().filter(|c| !c.is_empty()).ok_or_else(|| {
            Status::unauthenticated(
                "no credential: present a client certificate from this CA (renewal) or a bootstrap token",
            )
        })?;
        let now = SystemTime::now();
        let sequence = self.authority.bundle_sequence();
        let known = self
            .peers
            .get(&certs[0], sequence, now)
            .and_then(|known| match known.origin {
                Origin::Restored => self.complete_restored(&certs[0], &known),
                _ => Some(known),
            });
        if let Some(known) = known {
            self.metrics.client_cert(match known.origin {
                Origin::Verified => CertCheck::Cached,
                Origin::Issued | Origin::Restored => CertCheck::Issued,
            });
            return Ok(Credential::Proven(Caller {
                id: known.id.clone(),
                dns_allowed: known.dns_names.clone(),
                method: AuthMethod::Mtls,
            }));
        }
        let chain: Vec<Vec<u8>> = certs.iter().map(|c| c.to_vec()).collect();
        let peer = self.authority.verify_client(&chain, now).map_err(|e| {
            self.metrics.client_cert(CertCheck::Refused);
            ca_status(e)
        })?;
        self.metrics.client_cert(CertCheck::Verified);
        self.peers.put(
            &chain[0],
            peer.id.clone(),
            peer.leaf.dns_names.clone(),
            peer.leaf.not_after,
            sequence,
            Origin::Verified,
        );
        Ok(Credential::Proven(Caller {
            id: peer.id,
            dns_allowed: peer.leaf.dns_names,
            method: AuthMethod::Mtls,
        }))
    }

    /// A leaf the issuance log says this server issued, presented for the first time
    /// since the restart: its bytes hash to what was signed, so reading its DNS names from
    /// it (no signature to check) completes the entry. `None` (verify it in full) if it
    /// does not parse or names another identity than the log.
    fn complete_restored(&self, leaf: &[u8], known: &Verified) -> Option<Arc<Verified>> {
        let info = CertInfo::parse(leaf).ok()?;
        if info.spiffe_id().ok()? != known.id {
            return None;
        }
        let completed = Arc::new(known.completed(info.dns_names));
        self.peers.put_verified(leaf, completed.clone());
        Some(completed)
    }

    /// Sorts a bearer token by the issuer it claims: a configured platform issuer's JWT is
    /// verified here (no store access: a signature check against cached keys); writ's own
    /// bootstrap tokens go on to redemption; any other issuer is refused by name.
    fn bearer_credential(&self, token: SecretToken) -> Result<Credential, Status> {
        match writ_bootstrap::peek_issuer(token.expose()) {
            Ok(iss) if self.platform.trusts(&iss) => {
                let verified = self
                    .platform
                    .verify(token.expose(), SystemTime::now())
                    .map_err(|e| {
                        tracing::warn!(issuer = %iss, error = %e, "platform JWT refused");
                        bootstrap_status(e)
                    })?;
                tracing::debug!(issuer = %iss, sub = %verified.subject, spiffe_id = %verified.spiffe_id, "platform JWT verified");
                Ok(Credential::Proven(Caller {
                    id: verified.spiffe_id,
                    dns_allowed: Vec::new(),
                    method: AuthMethod::Jwt,
                }))
            }
            Ok(iss) if !iss.starts_with(writ_bootstrap::BOOTSTRAP_ISSUER_PREFIX) => {
                let issuer: String = iss.chars().take(64).collect();
                tracing::warn!(%issuer, "JWT from an untrusted issuer refused");
                Err(bootstrap_status(writ_bootstrap::Error::UntrustedIssuer {
                    issuer,
                }))
            }
            // writ's own bootstrap tokens, and anything unreadable: redemption judges it
            // and names what is wrong.
            _ => Ok(Credential::Token(token)),
        }
    }
}

impl Credential {
    /// How this credential authenticates its caller, for metrics.
    pub(crate) fn method(&self) -> AuthMethod {
        match self {
            Credential::Proven(caller) => caller.method,
            Credential::Token(_) => AuthMethod::Token,
        }
    }
}

/// The token from an `authorization: Bearer <token>` value. Refusals never echo the value.
fn bearer(value: &MetadataValue<Ascii>) -> Result<SecretToken, Status> {
    let refuse = || {
        Status::unauthenticated(
            "malformed authorization metadata: send `authorization: Bearer <token>` with a bootstrap token or a platform JWT",
        )
    };
    let text = value.to_str().map_err(|_| refuse())?;
    let (scheme, token) = text.split_once(' ').ok_or_else(refuse)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(refuse());
    }
    Ok(SecretToken::new(token.trim().to_owned()))
}
