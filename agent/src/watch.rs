//! Following the CA's trust bundle: over the push channel (`writ-bundle/1`, see
//! [`writ_proto::push`]) when the server offers it, else over gRPC's `WatchBundle` — a
//! server from before the push channel, or an HTTP/2 proxy in front of it.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tonic::Streaming;
use tonic::transport::Channel;
use writ_proto::push;
use writ_proto::v1::ca_client::CaClient;
use writ_proto::v1::{GetBundleRequest, TrustBundle};

use crate::Error;
use crate::client::{ServerTrust, client_config, connect, source_chain, tls_connect, unreachable};
use crate::files::Identity;

/// How long reaching the server and the handshake may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Which protocol carries the watch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// Push when the server offers it, else gRPC.
    Auto,
    /// The push channel only.
    Push,
    /// gRPC's `WatchBundle` only.
    Grpc,
}

impl Transport {
    /// The name used on the command line and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Auto => "auto",
            Transport::Push => "push",
            Transport::Grpc => "grpc",
        }
    }
}

impl std::str::FromStr for Transport {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Transport::Auto),
            "push" => Ok(Transport::Push),
            "grpc" => Ok(Transport::Grpc),
            other => Err(format!(
                "unknown bundle watch transport {other:?}: use auto, push or grpc"
            )),
        }
    }
}

/// An open bundle watch: the current bundle first, then every change.
pub struct BundleWatch {
    inner: Inner,
}

enum Inner {
    Push {
        stream: Box<TlsStream<TcpStream>>,
        buf: Vec<u8>,
    },
    Grpc {
        // Owns the connection the stream runs on.
        _client: CaClient<Channel>,
        stream: Box<Streaming<TrustBundle>>,
    },
}

impl BundleWatch {
    /// Opens a watch on one of the servers `addr` lists (`host:port`, comma-separated; see
    /// [`crate::servers`]) over `transport`. `identity` is presented on gRPC only: the push
    /// channel serves the public bundle to anyone.
    pub async fn open(
        addr: &str,
        trust: ServerTrust,
        identity: Option<&Identity>,
        transport: Transport,
    ) -> Result<Self, Error> {
        let trust = &trust;
        crate::servers::each(addr, |one| async move {
            Self::open_at(&one, trust.clone(), identity, transport).await
        })
        .await
    }

    /// [`BundleWatch::open`] on the server at `addr`.
    async fn open_at(
        addr: &str,
        trust: ServerTrust,
        identity: Option<&Identity>,
        transport: Transport,
    ) -> Result<Self, Error> {
        if transport == Transport::Grpc {
            return grpc(addr, trust, identity).await;
        }
        match push_stream(addr, trust.clone()).await? {
            Some(stream) => Ok(BundleWatch {
                inner: Inner::Push {
                    stream: Box::new(stream),
                    buf: Vec::new(),
                },
            }),
            None if transport == Transport::Auto => grpc(addr, trust, identity).await,
            None => Err(Error::Connect(format!(
                "the writ server at {addr} does not offer the bundle push channel (an older server, or an HTTP/2 proxy in front of it); watch over gRPC instead"
            ))),
        }
    }

    /// The protocol this watch runs on: [`Transport::Push`] or [`Transport::Grpc`].
    pub fn transport(&self) -> Transport {
        match self.inner {
            Inner::Push { .. } => Transport::Push,
            Inner::Grpc { .. } => Transport::Grpc,
        }
    }

    /// The next bundle; `Ok(None)` when the server ended the watch.
    pub async fn next(&mut self) -> Result<Option<TrustBundle>, Error> {
        match &mut self.inner {
            Inner::Push { stream, buf } => push::read(stream, buf)
                .await
                .map_err(|e| Error::Connect(format!("bundle push channel: {}", source_chain(&e)))),
            Inner::Grpc { stream, .. } => stream.message().await.map_err(Error::from_status),
        }
    }
}

async fn grpc(
    addr: &str,
    trust: ServerTrust,
    identity: Option<&Identity>,
) -> Result<BundleWatch, Error> {
    let mut client = connect(addr, trust, identity).await?;
    let stream = client
        .watch_bundle(GetBundleRequest {})
        .await
        .map_err(Error::from_status)?
        .into_inner();
    Ok(BundleWatch {
        inner: Inner::Grpc {
            _client: client,
            stream: Box::new(stream),
        },
    })
}

/// A TLS connection on which the server chose the push channel; `None` when it chose
/// HTTP/2 instead.
async fn push_stream(
    addr: &str,
    trust: ServerTrust,
) -> Result<Option<TlsStream<TcpStream>>, Error> {
    let mut config = client_config(trust, None)?;
    // Offering h2 too lets a server without the push channel answer instead of failing
    // the handshake, so the fallback costs no error round.
    config.alpn_protocols = vec![push::ALPN.to_vec(), b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, tls_connect(&connector, addr)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return Err(unreachable(addr, &e)),
        Err(e) => return Err(unreachable(addr, &e)),
    };
    push::keepalive(stream.get_ref().0).map_err(|e| unreachable(addr, &e))?;
    Ok((stream.get_ref().1.alpn_protocol() == Some(push::ALPN)).then_some(stream))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transports_parse_by_their_names() {
        for t in [Transport::Auto, Transport::Push, Transport::Grpc] {
            assert_eq!(t.as_str().parse::<Transport>(), Ok(t));
        }
        let e = "http".parse::<Transport>().unwrap_err();
        assert!(e.contains("auto, push or grpc"), "{e}");
    }
}
