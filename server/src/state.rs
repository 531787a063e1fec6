//! What the server's tasks share.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::watch;
use writ_ca::{Authority, TrustBundle};

use crate::Settings;
use crate::tls::ServingCert;

/// State shared by the gRPC services, the admin socket and the background tasks.
pub(crate) struct Shared {
    pub authority: Arc<Authority>,
    /// The current bundle; every watcher holds a receiver.
    pub bundle_tx: watch::Sender<TrustBundle>,
    pub settings: Settings,
    pub serving: Arc<ServingCert>,
    pub listen: SocketAddr,
}
