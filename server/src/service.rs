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
use writ_ca::{AuthMethod, Caller, CertInfo, Csr, Issuance, KeyType, OverMax, SanMode};
use writ_proto::v1::{self, ca_server::Ca};

use crate::convert;
use crate::error::{bootstrap_status, ca_status};
use crate::metrics::CertCheck;
use crate::peers::{Origin, Verified};
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

    /// Redeems `token` for a certificate for `csr`: verify → evaluate the CSR → consume →
    /// issue → record the serial. Blocking (store reads, fsyncs).
    ///
    /// Only `consume` changes the token's state, and it runs after the CSR passed the
    /// policy, so a refused CSR leaves the token redeemable. If issuing fails after the
    /// token was consumed, the token stays spent: exactly-once wins over a retry.
    pub(crate) fn redeem(
        &self,
        token: &SecretToken,
        csr: &[u8],
        ttl: Option<Duration>,
        over_max: OverMax,
        mode: SanMode,
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
                self.authority
                    .evaluate(&csr, &caller, ttl, over_max, mode)
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
        self.remember_issued(&issuance);
        Ok(issuance)
    }

    /// Redeems a bootstrap token on a blocking thread (verifying reads the store and
    /// consuming waits for an fsync), counting a refusal against the peer and the token's
    /// `jti` (read unverified, without crypto) in the failed-authentication limiter.
    pub(crate) async fn redeem_limited(
        self: Arc<Self>,
        token: SecretToken,
        csr: Vec<u8>,
        ttl: Option<Duration>,
        over_max: OverMax,
        mode: SanMode,
        peer: Option<std::net::IpAddr>,
    ) -> Result<Issuance, Status> {
        tokio::task::spawn_blocking(move || {
            let jti = writ_bootstrap::peek_claims(token.expose())
                .ok()
                .map(|c| c.jti.to_string());
            self.auth_limit.guard(peer, jti.as_deref(), || {
                self.redeem(&token, &csr, ttl, over_max, mode)
            })
        })
        .await
        .map_err(|_| Status::internal("signing task failed"))?
    }

    /// Signs for a proven caller on this async worker (a P-256 signature is tens of
    /// microseconds: cheaper than a hand-off to a blocking thread) and returns the
    /// certificate once its issuance record is durable, sharing one flush with every
    /// request that arrived meanwhile.
    pub(crate) async fn issue_durably(
        &self,
        csr: &[u8],
        caller: &Caller,
        ttl: Option<Duration>,
        over_max: OverMax,
        mode: SanMode,
    ) -> Result<Issuance, Status> {
        let pending = self
            .authority
            .issue_unsynced(csr, caller, ttl, over_max, mode)
            .map_err(ca_status)?;
        let ticket = self.committer.written();
        self.committer.wait(ticket).await.map_err(|e| {
            tracing::error!(error = %e, "recording an issuance durably failed; certificate withheld");
            Status::internal("the CA could not record the certificate durably; see the server log")
        })?;
        let issuance = pending.synced();
        self.remember_issued(&issuance);
        Ok(issuance)
    }

    /// Notes a leaf this server just handed out, so the agent's next connection with it
    /// (its next rotation) is not verified again (see [`crate::peers`]).
    fn remember_issued(&self, issuance: &Issuance) {
        if issuance.own_root {
            self.peers.put(
                &issuance.leaf.der,
                issuance.id.clone(),
                issuance.dns_names.clone(),
                issuance.leaf.not_after,
                issuance.bundle.sequence,
                Origin::Issued,
            );
        }
    }

    /// Counts and maps a refused token. The bootstrap crate already logged it by `jti`.
    fn token_refused(&self, e: writ_bootstrap::Error) -> Status {
        self.token_failures.fetch_add(1, Ordering::Relaxed);
        bootstrap_status(e)
    }
}

impl Credential {
    /// How this credential authenticates its caller, for metrics.
    fn method(&self) -> AuthMethod {
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

type BundleStream = Pin<Box<dyn Stream<Item = Result<v1::TrustBundle, Status>> + Send>>;

impl CaService {
    /// Sign's work; notes in `method` how the caller authenticated, once it is known, and
    /// in `key_type` what it certified.
    async fn sign_as(
        &self,
        req: Request<v1::SignRequest>,
        method: &mut Option<AuthMethod>,
        key_type: &mut Option<KeyType>,
    ) -> Result<Response<v1::SignResponse>, Status> {
        let peer = crate::limits::peer_ip(&req);
        let credential = self
            .shared
            .auth_limit
            .guard(peer, None, || self.shared.authenticate(&req))?;
        *method = Some(credential.method());
        let r = req.into_inner();
        let ttl = (r.ttl_seconds > 0).then(|| Duration::from_secs(r.ttl_seconds));
        let caller = match credential {
            Credential::Proven(caller) => caller,
            Credential::Token(token) => {
                let issuance = self
                    .shared
                    .clone()
                    .redeem_limited(token, r.csr, ttl, OverMax::Clamp, SanMode::Exact, peer)
                    .await?;
                *key_type = Some(issuance.key_type);
                return Ok(Response::new(convert::sign_response(issuance)));
            }
        };
        let who = caller.id.clone();
        let result = self
            .shared
            .issue_durably(&r.csr, &caller, ttl, OverMax::Clamp, SanMode::Exact)
            .await;
        match result {
            Ok(issuance) => {
                // The audit log records every issuance; a log line each would cost more
                // than the rest of the request's bookkeeping (a write(2) per certificate).
                tracing::debug!(spiffe_id = %who, serial = %issuance.leaf.serial, "issued");
                *key_type = Some(issuance.key_type);
                Ok(Response::new(convert::sign_response(issuance)))
            }
            Err(e) => {
                tracing::warn!(spiffe_id = %who, error = %e.message(), "signing refused");
                Err(e)
            }
        }
    }
}

#[tonic::async_trait]
impl Ca for CaService {
    async fn sign(
        &self,
        req: Request<v1::SignRequest>,
    ) -> Result<Response<v1::SignResponse>, Status> {
        let started = self.shared.metrics.sign_started();
        let presented = crate::metrics::presented(&req);
        let (mut method, mut key_type) = (None, None);
        let result = self.sign_as(req, &mut method, &mut key_type).await;
        let metrics = &self.shared.metrics;
        metrics.sign_finished(started, method, key_type, presented, &result);
        result
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
        let watching = self
            .shared
            .metrics
            .watcher(crate::metrics::WatchTransport::Grpc);
        let bundles = WatchStream::new(self.shared.bundle_tx.subscribe()).map(move |b| {
            // The guard lives as long as the stream: the gauge drops when the client goes.
            let _ = &watching;
            Ok(convert::bundle(&b))
        });
        // A watch never ends by itself; at shutdown it ends with UNAVAILABLE, which gRPC
        // clients retry (elsewhere), so the connection drains instead of being cut.
        let stopped = futures_util::stream::iter([Err(Status::unavailable(
            "the writ server is shutting down; reconnect to watch the bundle",
        ))]);
        let stream = futures_util::StreamExt::chain(
            futures_util::StreamExt::take_until(
                bundles,
                self.shared.stopping.clone().cancelled_owned(),
            ),
            stopped,
        );
        Ok(Response::new(Box::pin(stream)))
    }
}
