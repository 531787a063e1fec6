//! The one way into issuance. Every API that hands out a certificate (writ's `Sign`,
//! Istio's `CreateCertificate`) authenticates its caller ([`crate::caller`]), builds an
//! [`IssueRequest`] and calls [`Shared::issue`]:
//!
//! 1. the credential picks the route: a proven caller (client certificate, platform JWT)
//!    is signed for on the async worker; a bootstrap token is verified, the CSR evaluated,
//!    the token consumed and the leaf signed on a blocking thread (store reads, fsyncs);
//! 2. either way the CA hands back the leaf as [`Unsynced`]: its issuance record is
//!    written, not yet durable;
//! 3. [`Shared::durable`] waits for the committer's flush that covers the record and
//!    releases the leaf with that flush's receipt ([`writ_ca::Flushed`]): an
//!    [`Unsynced`] opens only with one, so no answer can leave before its record is
//!    durable, and every issuance shares the same group commit.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use tonic::Status;
use writ_bootstrap::{Jti, SecretToken};
use writ_ca::{AuthMethod, Caller, Csr, Issuance, LeafRequest, Rules, Unsynced};

use crate::caller::Credential;
use crate::error::{bootstrap_status, ca_status};
use crate::peers::Origin;
use crate::state::Shared;

/// What an API asks to be issued, past authentication.
pub(crate) struct IssueRequest {
    /// The PKCS#10 CSR, PEM or DER.
    pub(crate) csr: Vec<u8>,
    /// The lifetime asked for; `None`: the CA's default.
    pub(crate) ttl: Option<Duration>,
    /// The rules of the API it came through.
    pub(crate) rules: Rules,
    /// The client's address, for the failed-authentication limiter.
    pub(crate) peer: Option<IpAddr>,
}

impl Shared {
    /// Issues for `credential`: signs, waits until the issuance record is durable, and only
    /// then returns the certificate.
    pub(crate) async fn issue(
        self: &Arc<Self>,
        credential: Credential,
        request: IssueRequest,
    ) -> Result<Issuance, Status> {
        let method = credential.method();
        // A token's id comes back with its certificate, to log once that is durable.
        let (pending, redeemed) = match credential {
            // A P-256 signature is tens of microseconds: cheaper on this async worker than
            // a hand-off to a blocking thread.
            Credential::Proven(caller) => {
                let ask = LeafRequest::new(&caller, request.ttl, request.rules);
                let pending = self
                    .authority
                    .issue_unsynced(&request.csr, &ask, SystemTime::now())
                    .map_err(|e| {
                        tracing::warn!(spiffe_id = %caller.id, error = %e, "signing refused");
                        ca_status(e)
                    })?;
                (pending, None)
            }
            Credential::Token(token) => {
                let (pending, jti) = self.clone().redeem_limited(token, request).await?;
                (pending, Some(jti))
            }
        };
        let issuance = self.durable(pending).await?;
        if let Some(jti) = redeemed {
            tracing::info!(jti = %jti, spiffe_id = %issuance.id, serial = %issuance.leaf.serial, "issued for a bootstrap token");
        }
        self.remember_issued(&issuance, method);
        Ok(issuance)
    }

    /// Releases `pending` once the committer reports its record durable, sharing one flush
    /// with every request that arrived meanwhile.
    async fn durable(&self, pending: Unsynced<Issuance>) -> Result<Issuance, Status> {
        // The ticket is taken after the record was written, so the flush it waits for
        // covers it.
        let ticket = self.committer.written();
        let flushed = self.committer.wait(ticket).await.map_err(|e| {
            tracing::error!(error = %e, "recording an issuance durably failed; certificate withheld");
            Status::internal("the CA could not record the certificate durably; see the server log")
        })?;
        Ok(pending.synced(&flushed))
    }

    /// Redeems a bootstrap token on a blocking thread (verifying reads the store and
    /// consuming waits for an fsync), counting a refusal against the peer and the token's
    /// `jti` (read unverified, without crypto) in the failed-authentication limiter.
    async fn redeem_limited(
        self: Arc<Self>,
        token: SecretToken,
        request: IssueRequest,
    ) -> Result<(Unsynced<Issuance>, Jti), Status> {
        tokio::task::spawn_blocking(move || {
            let jti = writ_bootstrap::peek_claims(token.expose())
                .ok()
                .map(|c| c.jti.to_string());
            self.auth_limit.guard(request.peer, jti.as_deref(), || {
                self.redeem(&token, &request)
            })
        })
        .await
        .map_err(|_| Status::internal("signing task failed"))?
    }

    /// Redeems `token` for a certificate for the request's CSR: verify → evaluate the CSR
    /// → consume → sign → record the serial. Blocking (store reads, fsyncs). Returns the
    /// token's id with the pending certificate.
    ///
    /// Only `consume` changes the token's state, and it runs after the CSR passed the
    /// policy, so a refused CSR leaves the token redeemable. If issuing fails after the
    /// token was consumed, the token stays spent: exactly-once wins over a retry.
    fn redeem(
        &self,
        token: &SecretToken,
        request: &IssueRequest,
    ) -> Result<(Unsynced<Issuance>, Jti), Status> {
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
        let ask = LeafRequest::new(&caller, request.ttl, request.rules);
        let template = Csr::parse(&request.csr)
            // Refuses a denied identity before the token is spent.
            .and_then(|csr| self.authority.evaluate(&csr, &ask))
            .map_err(|e| {
                self.token_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(jti = %jti, spiffe_id = %caller.id, error = %e, "bootstrap CSR refused; token left pending");
                ca_status(e)
            })?;
        bootstrap
            .consume(&verified, SystemTime::now())
            .map_err(|e| self.token_refused(e))?;
        let pending = self
            .authority
            .issue_template_unsynced(&template, SystemTime::now())
            .map_err(|e| {
                tracing::error!(jti = %jti, error = %e, "issuing after consuming a bootstrap token failed; the token is spent");
                ca_status(e)
            })?;
        let serial = pending.peek().leaf.serial.clone();
        // The certificate exists and its record is written; failing to note which one the
        // token bought only loses an audit detail, so the caller still gets it.
        if let Err(e) = bootstrap.record_serial(&jti, &serial) {
            tracing::error!(jti = %jti, serial = %serial, error = %e, "recording the bootstrap token's certificate serial failed");
        }
        Ok((pending, jti))
    }

    /// Notes a leaf this server just handed out, so the agent's next connection with it
    /// (its next rotation) is not verified again (see [`crate::peers`]). Leaves minted on
    /// the admin socket are left out: they are often for something that never connects
    /// here, and a bulk mint would push agents' entries out of the bounded cache.
    fn remember_issued(&self, issuance: &Issuance, method: AuthMethod) {
        if issuance.own_root && method != AuthMethod::Admin {
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
    pub(crate) fn token_refused(&self, e: writ_bootstrap::Error) -> Status {
        self.token_failures.fetch_add(1, Ordering::Relaxed);
        bootstrap_status(e)
    }
}
