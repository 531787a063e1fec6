//! `writ.v1.Ca`: signing for proven callers (a client certificate, or a one-time bootstrap
//! token), the trust bundle and its watch stream.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio_stream::wrappers::WatchStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};
use writ_ca::{AuthMethod, KeyType, Rules};
use writ_proto::v1::{self, ca_server::Ca};

use crate::convert;
use crate::issue::IssueRequest;
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
        let request = IssueRequest {
            csr: r.csr,
            ttl: (r.ttl_seconds > 0).then(|| Duration::from_secs(r.ttl_seconds)),
            rules: Rules::WRIT,
            peer,
        };
        let issuance = self.shared.issue(credential, request).await?;
        // The audit log records every issuance; a log line each would cost more than the
        // rest of the request's bookkeeping (a write(2) per certificate).
        tracing::debug!(spiffe_id = %issuance.id, serial = %issuance.leaf.serial, "issued");
        *key_type = Some(issuance.key_type);
        Ok(Response::new(convert::sign_response(issuance)))
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
