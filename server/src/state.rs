//! What the server's tasks share.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use tokio::sync::watch;
use writ_bootstrap::Bootstrap;
use writ_ca::{Authority, TrustBundle};

use crate::Settings;
use crate::tls::ServingCert;

/// State shared by the gRPC services, the admin socket and the background tasks.
pub(crate) struct Shared {
    pub authority: Arc<Authority>,
    /// One-time bootstrap tokens, over the same store as the authority.
    pub bootstrap: Arc<Bootstrap>,
    /// Bootstrap token redemptions refused since start, for the admin status.
    pub token_failures: AtomicU64,
    /// The current bundle; every watcher holds a receiver.
    pub bundle_tx: watch::Sender<TrustBundle>,
    pub settings: Settings,
    pub serving: Arc<ServingCert>,
    pub listen: SocketAddr,
    /// Wakes the root-rotation driver when an admin changes the rotation.
    pub rotation_wake: tokio::sync::Notify,
    /// Client certificates already verified under the current bundle.
    pub peers: crate::peers::PeerCache,
    /// Flushes issuance records for the async signing path.
    pub committer: Arc<crate::commit::Committer>,
    /// Trusted platform-JWT issuers and their keys.
    pub platform: crate::platform::PlatformAuth,
    /// Failed authentications per address and per bootstrap token: every authentication
    /// path runs its check through `auth_limit.guard`.
    pub auth_limit: crate::limits::AuthLimiter,
    /// Prometheus metrics.
    pub metrics: Arc<crate::metrics::ServerMetrics>,
    /// The signing self-test's verdict and the gRPC health service's reporter.
    pub health: crate::health::Health,
    /// Cancelled when the server begins to stop: streams that would never end (bundle
    /// watches) end then, so their connections can drain.
    pub stopping: tokio_util::sync::CancellationToken,
}

impl Shared {
    /// Publishes the authority's bundle to watchers if it changed.
    pub(crate) fn refresh_bundle(&self) {
        let current = self.authority.bundle();
        self.bundle_tx.send_if_modified(|b| {
            if b.sequence != current.sequence || b.roots != current.roots {
                *b = current;
                true
            } else {
                false
            }
        });
    }
}
