//! The bundle push channel (`writ-bundle/1`, framing in [`writ_proto::push`]): a connection
//! whose TLS handshake chose it gets the trust bundle at once and again on every change,
//! until the client goes, stops reading, or the server stops.
//!
//! The bundle is public, as over gRPC's `GetBundle`: no client certificate is needed. The
//! server never reads application data here, so the only input it parses is the TLS
//! handshake every connection goes through anyway.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use writ_ca::TrustBundle;
use writ_proto::push;

use crate::convert;
use crate::metrics::{ServerMetrics, WatchTransport};

/// How long one message may take to leave: a client that stops reading is dropped rather
/// than kept with its frame.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a stopping server gives a push client to take its close_notify.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// What every push connection needs from the server.
#[derive(Clone)]
pub(crate) struct Pusher {
    bundles: watch::Receiver<TrustBundle>,
    metrics: Arc<ServerMetrics>,
    shutdown: CancellationToken,
    /// The connections' tasks, so a stopping server can close them before it exits.
    tasks: TaskTracker,
}

impl Pusher {
    /// Pushes what `bundles` holds, counting connections in `metrics`, until `shutdown`.
    pub(crate) fn new(
        bundles: watch::Receiver<TrustBundle>,
        metrics: Arc<ServerMetrics>,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            bundles,
            metrics,
            shutdown,
            tasks: TaskTracker::new(),
        }
    }

    /// Serves `stream` on a task of its own, so the handshake's state is freed now rather
    /// than kept for the connection's life.
    pub(crate) fn spawn(&self, stream: TlsStream<TcpStream>) {
        self.tasks.spawn(self.clone().serve(Box::new(stream)));
    }

    /// Waits, after shutdown, until every push connection was closed (each gets
    /// [`CLOSE_TIMEOUT`]).
    pub(crate) async fn closed(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }

    /// Whether the handshake on `stream` chose the push channel.
    pub(crate) fn chosen(stream: &TlsStream<TcpStream>) -> bool {
        stream.get_ref().1.alpn_protocol() == Some(push::ALPN)
    }

    /// Serves one push connection to its end. The stream comes boxed: held inline, the
    /// task's future would carry its 1.2 KiB twice (argument and local).
    async fn serve(self, mut stream: Box<TlsStream<TcpStream>>) {
        let _watching = self.metrics.watcher(WatchTransport::Push);
        if let Err(e) = push::keepalive(stream.get_ref().0) {
            tracing::debug!(error = %e, "cannot set TCP keepalive on a push connection");
        }
        let mut bundles = self.bundles;
        let mut probe = [0u8; 1];
        loop {
            // Scoped so an idle connection does not keep its last frame.
            {
                let frame = push::encode(&convert::bundle(&bundles.borrow_and_update()));
                let sent = tokio::time::timeout(WRITE_TIMEOUT, async {
                    stream.write_all(&frame).await?;
                    stream.flush().await
                })
                .await;
                match sent {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "push connection closed while writing");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!("push client stopped reading; dropping it");
                        return;
                    }
                }
            }
            // Shutdown first: the bundle's sender goes away while the server stops, and
            // either way the client should get a close_notify, not a truncation.
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => break,
                changed = bundles.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
                // The client sends nothing on this channel: its close_notify, an EOF, an
                // error or any data at all ends the connection.
                _ = stream.read(&mut probe) => return,
            }
        }
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, stream.shutdown()).await;
    }
}
