//! `writ.v1.Ca`: signing for proven callers (a client certificate, or a one-time bootstrap
//! token), the trust bundle and its watch stream.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use tokio_stream::wrappers::WatchStream;
use tokio_stream::{Stream, StreamExt};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::{Request, Response, Status};
use writ_bootstrap::SecretToken;
use writ_ca::{AuthMethod, Caller, Csr, Issuance, OverMax, SanMode};
use writ_proto::v1::{self, ca_server::Ca};

use crate::convert;
use crate::error::{bootstrap_status, ca_status};
use crate::state::Shared;

/// The public CA service.
pub struct CaService {
    shared: Arc<Shared>,
}

impl CaService {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

/// What a caller presented to prove who it is.
pub(crate) enum Credential {
    /// A client certificate from this CA, verified: the caller it proves.
    Certificate(Caller),
    /// A bootstrap token, not yet verified: verification reads the store, so it runs on
    /// a blocking thread with the rest of the redemption.
    Token(SecretToken),
}

impl Shared {
    /// Establishes who is calling: a bootstrap token in `authorization: Bearer <token>`,
    /// else a client certificate.
    ///
    /// A bearer token wins over a certificate: the token names the identity it grants
    /// explicitly, and judging only one credential keeps the outcome unambiguous.
    pub(crate) fn authenticate<T>(&self, req: &Request<T>) -> Result<Credential, Status> {
        if let Some(value) = req.metadata().get("authorization") {
            return bearer(value).map(Credential::Token);
        }
        let certs = req.peer_certs().filter(|c| !c.is_empty()).ok_or_else(|| {
            Status::unauthenticated(
                "no credential: present a client certificate from this CA (renewal) or a bootstrap token",
            )
        })?;
        let now = SystemTime::now();
        let sequence = self.authority.bundle_sequence();
        if let Some(known) = self.peers.get(&certs[0], sequence, now) {
            return Ok(Credential::Certificate(Caller {
                id: known.id,
                dns_allowed: known.dns_names,
                method: AuthMethod::Mtls,
            }));
        }
        let chain: Vec<Vec<u8>> = certs.iter().map(|c| c.to_vec()).collect();
        let peer = self
            .authority
            .verify_client(&chain, now)
            .map_err(ca_status)?;
        self.peers.put(
            &chain[0],
            peer.id.clone(),
            peer.leaf.dns_names.clone(),
            peer.leaf.not_after,
            sequence,
        );
        Ok(Credential::Certificate(Caller {
            id: peer.id,
            dns_allowed: peer.leaf.dns_names,
            method: AuthMethod::Mtls,
        }))
    }

    /// Redeems `token` for a certificate for `csr`: verify → evaluate the CSR → consume →
    /// issue → record the serial. Blocking (store reads, fsyncs).
    ///
    /// Only `consume` changes the token's state, and it runs after the CSR passed the
    /// policy, so a refused CSR leaves the token redeemable. If issuing fails after the
    /// token was consumed, the token stays spent: exactly-once wins over a retry.
    fn redeem(
        &self,
        token: &SecretToken,
        csr: &[u8],
        ttl: Option<Duration>,
    ) -> Result<Issuance, Status> {
        let bootstrap = &self.bootstrap;
        let verified = bootstrap
            .verify(token.expose(), SystemTime::now())
            .map_err(|e| self.token_refused(e))?;
        let jti = verified.jti().clone();
        let caller = Caller {
            id: verified.spiffe_id().clone(),
            dns_allowed: verified.dns().to_vec(),
            method: AuthMethod::Token,
        };
        let template = Csr::parse(csr)
            .and_then(|csr| {
                // Refuses a denied identity before the token is spent.
                self.authority.evaluate(
                    &csr,
                    &caller,
                    ttl,
                    OverMax::Clamp,
                    SanMode::Exact,
                )
            })
            .map_err(|e| {
                self.token_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(jti = %jti, spiffe_id = %caller.id, error = %e, "bootstrap CSR refused; token left pending");
                ca_status(e)
            })?;
        bootstrap
            .consume(&verified, SystemTime::now())
            .map_err(|e| self.token_refused(e))?;
        let issuance = self.authority.issue_template(&template).map_err(|e| {
            tracing::error!(jti = %jti, error = %e, "issuing after consuming a bootstrap token failed; the token is spent");
            ca_status(e)
        })?;
        // The certificate exists and is in the issuance log; failing to note which one the
        // token bought only loses an audit detail, so the caller still gets it.
        if let Err(e) = bootstrap.record_serial(&jti, &issuance.leaf.serial) {
            tracing::error!(jti = %jti, serial = %issuance.leaf.serial, error = %e, "recording the bootstrap token's certificate serial failed");
        }
        tracing::info!(jti = %jti, spiffe_id = %caller.id, serial = %issuance.leaf.serial, "issued for a bootstrap token");
        Ok(issuance)
    }

    /// Counts and maps a refused token. The bootstrap crate already logged it by `jti`.
    fn token_refused(&self, e: writ_bootstrap::Error) -> Status {
        self.token_failures.fetch_add(1, Ordering::Relaxed);
        bootstrap_status(e)
    }
}

/// The token from an `authorization: Bearer <token>` value. Refusals never echo the value.
fn bearer(value: &MetadataValue<Ascii>) -> Result<SecretToken, Status> {
    let refuse = || {
        Status::unauthenticated(
            "malformed authorization metadata: send `authorization: Bearer <bootstrap token>`",
        )
    };
    let text = value.to_str().map_err(|_| refuse())?;
    let (scheme, token) = text.split_once(' ').ok_or_else(refuse)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(refuse());
    }
    Ok(SecretToken::new(token.trim().to_owned()))
}

type BundleStream = Pin<Box<dyn Stream<Item = Result<v1::TrustBundle, Status>> + Send>>;

#[tonic::async_trait]
impl Ca for CaService {
    async fn sign(
        &self,
        req: Request<v1::SignRequest>,
    ) -> Result<Response<v1::SignResponse>, Status> {
        let peer = crate::limits::peer_ip(&req);
        let credential = self
            .shared
            .auth_limit
            .guard(peer, None, || self.shared.authenticate(&req))?;
        let r = req.into_inner();
        let ttl = (r.ttl_seconds > 0).then(|| Duration::from_secs(r.ttl_seconds));
        let caller = match credential {
            Credential::Certificate(caller) => caller,
            Credential::Token(token) => {
                let shared = self.shared.clone();
                // Verifying reads the store and consuming waits for an fsync: keep both
                // off the async workers.
                // Read without verifying (no crypto) only to count failures per token.
                let jti = writ_bootstrap::peek_claims(token.expose())
                    .ok()
                    .map(|c| c.jti.to_string());
                let issuance = tokio::task::spawn_blocking(move || {
                    shared
                        .auth_limit
                        .guard(peer, jti.as_deref(), || shared.redeem(&token, &r.csr, ttl))
                })
                .await
                .map_err(|_| Status::internal("signing task failed"))??;
                return Ok(Response::new(convert::sign_response(issuance)));
            }
        };
        let authority = self.shared.authority.clone();
        let who = caller.id.clone();
        // Signing is fast, but recording durably waits for an fsync: keep it off the
        // async workers.
        let result = tokio::task::spawn_blocking(move || {
            authority.issue(&r.csr, &caller, ttl, OverMax::Clamp, SanMode::Exact)
        })
        .await
        .map_err(|_| Status::internal("signing task failed"))?;
        match result {
            Ok(issuance) => {
                tracing::info!(spiffe_id = %who, serial = %issuance.leaf.serial, "issued");
                Ok(Response::new(convert::sign_response(issuance)))
            }
            Err(e) => {
                tracing::warn!(spiffe_id = %who, error = %e, "signing refused");
                Err(ca_status(e))
            }
        }
    }

    async fn get_bundle(
        &self,
        _req: Request<v1::GetBundleRequest>,
    ) -> Result<Response<v1::TrustBundle>, Status> {
        Ok(Response::new(convert::bundle(
            &self.shared.bundle_tx.borrow(),
        )))
    }

    type WatchBundleStream = BundleStream;

    async fn watch_bundle(
        &self,
        _req: Request<v1::GetBundleRequest>,
    ) -> Result<Response<Self::WatchBundleStream>, Status> {
        let stream =
            WatchStream::new(self.shared.bundle_tx.subscribe()).map(|b| Ok(convert::bundle(&b)));
        Ok(Response::new(Box::pin(stream)))
    }
}
