//! One HTTP/2 connection as a gRPC transport, without the layers of tonic's `Channel`
//! (a buffer task between caller and connection, reconnection, load balancing) that a
//! load generator holding or opening its own connections does not use.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tonic::body::Body;
use writ_proto::coalesce::Coalesced;
use writ_proto::v1::ca_client::CaClient;

/// A client's end of one HTTP/2 connection.
#[derive(Clone)]
pub(crate) struct Direct(http2::SendRequest<Body>);

type Answer = Pin<
    Box<
        dyn Future<
                Output = Result<
                    tonic::codegen::http::Response<hyper::body::Incoming>,
                    hyper::Error,
                >,
            > + Send,
    >,
>;

impl tower::Service<tonic::codegen::http::Request<Body>> for Direct {
    type Response = tonic::codegen::http::Response<hyper::body::Incoming>;
    type Error = hyper::Error;
    type Future = Answer;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), hyper::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: tonic::codegen::http::Request<Body>) -> Answer {
        Box::pin(self.0.send_request(req))
    }
}

/// A CA client on a new TLS connection to `addr`; the connection closes when the last
/// clone of the client is dropped.
pub(crate) async fn connect(
    addr: &str,
    tls: Arc<rustls::ClientConfig>,
) -> std::io::Result<CaClient<Direct>> {
    let connector = tokio_rustls::TlsConnector::from(tls);
    let stream = writ_agent::client::tls_connect(&connector, addr).await?;
    let (send, connection) = http2::Builder::new(TokioExecutor::new())
        .handshake(TokioIo::new(Coalesced::new(stream)))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(connection);
    let origin = tonic::codegen::http::Uri::from_static("https://writ.invalid");
    Ok(CaClient::with_origin(Direct(send), origin))
}
