//! Counts signing requests from the moment the server reads them until they are answered,
//! so the commit thread knows whether anyone else could still join a flush.
//!
//! Counted in a layer rather than in the handlers: hyper calls the service as soon as a
//! request's headers arrive, while a handler first runs when a worker gets to it, which
//! under load can be long after.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::codegen::http;
use tower::{Layer, Service};

use crate::commit::Committer;

/// The gRPC paths that issue a certificate through the commit thread.
const SIGNING_PATHS: [&str; 2] = [
    "/writ.v1.Ca/Sign",
    "/istio.v1.auth.IstioCertificateService/CreateCertificate",
];

/// Wraps a server's routes in [`CountSigning`].
#[derive(Clone)]
pub(crate) struct CountSigningLayer {
    committer: Arc<Committer>,
}

impl CountSigningLayer {
    /// A layer that reports signing requests to `committer`.
    pub(crate) fn new(committer: Arc<Committer>) -> Self {
        Self { committer }
    }
}

impl<S> Layer<S> for CountSigningLayer {
    type Service = CountSigning<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CountSigning {
            inner,
            committer: self.committer.clone(),
        }
    }
}

/// A service that counts its signing requests as in flight until they are answered.
#[derive(Clone)]
pub(crate) struct CountSigning<S> {
    inner: S,
    committer: Arc<Committer>,
}

impl<S, B> Service<http::Request<B>> for CountSigning<S>
where
    S: Service<http::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if !SIGNING_PATHS.contains(&req.uri().path()) {
            return Box::pin(self.inner.call(req));
        }
        let counted = self.committer.received();
        let answer = self.inner.call(req);
        Box::pin(async move {
            let result = answer.await;
            drop(counted);
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use writ_proto::istio::v1::auth::istio_certificate_service_server::IstioCertificateServiceServer;
    use writ_proto::v1::ca_server::CaServer;

    use super::*;

    #[test]
    fn signing_paths_name_the_generated_services() {
        let ca = <CaServer<crate::service::CaService> as tonic::server::NamedService>::NAME;
        let istio = <IstioCertificateServiceServer<crate::istio::IstioService> as tonic::server::NamedService>::NAME;
        assert_eq!(SIGNING_PATHS[0], format!("/{ca}/Sign"));
        assert_eq!(SIGNING_PATHS[1], format!("/{istio}/CreateCertificate"));
    }
}
