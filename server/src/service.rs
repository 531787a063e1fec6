//! `writ.v1.Ca`: signing for proven callers, the trust bundle and its watch stream.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_stream::wrappers::WatchStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};
use writ_ca::{AuthMethod, Caller, OverMax, SanMode};
use writ_proto::v1::{self, ca_server::Ca};

use crate::convert;
use crate::error::ca_status;
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

/// How a request authenticated: the caller, and whether a bootstrap token must be spent.
pub(crate) struct Authenticated {
    pub caller: Caller,
}

impl Shared {
    /// Establishes who is calling, from a client certificate.
    pub(crate) fn authenticate<T>(&self, req: &Request<T>) -> Result<Authenticated, Status> {
        if req.metadata().contains_key("authorization") {
            return Err(Status::unauthenticated(
                "bearer credentials are not accepted by this server; present a client certificate from this CA",
            ));
        }
        let certs = req.peer_certs().filter(|c| !c.is_empty()).ok_or_else(|| {
            Status::unauthenticated(
                "no credential: present a client certificate from this CA (renewal) or a bootstrap token",
            )
        })?;
        let chain: Vec<Vec<u8>> = certs.iter().map(|c| c.to_vec()).collect();
        let peer = self
            .authority
            .verify_client(&chain, SystemTime::now())
            .map_err(ca_status)?;
        Ok(Authenticated {
            caller: Caller {
                id: peer.id,
                dns_allowed: peer.leaf.dns_names,
                method: AuthMethod::Mtls,
            },
        })
    }
}

type BundleStream = Pin<Box<dyn Stream<Item = Result<v1::TrustBundle, Status>> + Send>>;

#[tonic::async_trait]
impl Ca for CaService {
    async fn sign(
        &self,
        req: Request<v1::SignRequest>,
    ) -> Result<Response<v1::SignResponse>, Status> {
        let auth = self.shared.authenticate(&req)?;
        let r = req.into_inner();
        let ttl = (r.ttl_seconds > 0).then(|| Duration::from_secs(r.ttl_seconds));
        let authority = self.shared.authority.clone();
        let caller = auth.caller;
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
