//! writ's CA server: the `writ.v1` gRPC service over rustls (TLS 1.3), the admin API on a
//! local Unix socket, and the background tasks that keep the CA's own certificates fresh.
#![forbid(unsafe_code)]

mod admin;
mod audit;
mod caller;
pub mod check;
mod commit;
mod config;
mod convert;
pub mod custody;
mod error;
mod health;
mod identity;
mod inflight;
mod issue;
mod istio;
pub mod limits;
mod metrics;
mod peers;
mod platform;
mod push;
mod renewal;
mod rotation;
mod service;
mod state;
mod tls;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use writ_bootstrap::{Bootstrap, BootstrapSettings};
use writ_ca::Authority;
use writ_proto::admin::admin_server::AdminServer;
use writ_proto::coalesce::Coalesced;
use writ_proto::istio::v1::auth::istio_certificate_service_server::IstioCertificateServiceServer;
use writ_proto::v1::ca_server::CaServer;
use writ_store::SledStore;

pub use config::{JwtIssuerConfig, MappingKind, ServerConfig, Settings, default_data_dir};
pub use error::Error;
pub use health::CA_SERVICE;
pub use platform::JwtIssuerSettings;

use state::Shared;

/// How long a client has to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A started server.
pub struct Running {
    /// The bound gRPC address (resolves port 0).
    pub addr: SocketAddr,
    /// The bound metrics endpoint (`--metrics-listen`), if enabled.
    pub metrics_addr: Option<SocketAddr>,
    /// The admin socket.
    pub admin_socket: PathBuf,
    /// The data directory.
    pub data_dir: PathBuf,
    /// SHA-256 fingerprint of the active root.
    pub root_fingerprint: String,
    /// Whether this start created the CA.
    pub created: bool,
    /// Completes when the server has stopped.
    pub done: tokio::task::JoinHandle<Result<(), Error>>,
    /// Completes, once shutdown began, when every bundle push connection has been closed
    /// (with close_notify, so agents see a clean end).
    pub push_closed: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Once `shutdown` is cancelled: waits until the requests in flight are answered and
    /// every connection has closed (bundle watches end at once), at most `grace`. Returns
    /// whether everything closed in time; what is still open after it is cut.
    pub async fn drained(self, grace: Duration) -> Result<bool, Error> {
        let closed = async {
            let served = self.done.await;
            let _ = self.push_closed.await;
            served
        };
        match tokio::time::timeout(grace, closed).await {
            Err(_) => Ok(false),
            Ok(Ok(served)) => served.map(|()| true),
            Ok(Err(e)) => Err(Error::Task(format!("serving: {e}"))),
        }
    }
}

/// Opens (or creates) the CA in the data directory and starts serving until `shutdown`.
pub async fn start(settings: Settings, shutdown: CancellationToken) -> Result<Running, Error> {
    // Everything the server creates (database files, sockets) is private to its user.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    raise_fd_limit();
    // jsonwebtoken needs a process-wide crypto provider before any token is touched.
    writ_bootstrap::install_crypto_provider();
    // Decided before the data directory is created, so a start refused for want of a
    // passphrase leaves nothing behind.
    let protection =
        custody::key_protection(&settings, std::env::var(custody::PASSPHRASE_ENV).ok())?;
    let unencrypted = matches!(protection, writ_ca::seal::KeyProtection::Unencrypted);
    prepare_data_dir(&settings.data_dir)?;
    custody::check_paths(&settings)?;

    let db_path = settings.data_dir.join("db");
    let data_dir = settings.data_dir.clone();
    let store_options = writ_store::StoreOptions {
        journal_segment_bytes: settings.audit_segment_bytes,
    };
    let ca_settings = settings.ca.clone();
    let token_settings = BootstrapSettings {
        default_ttl: settings.token_ttl,
        max_ttl: settings.token_max_ttl,
        previous_trust_domains: settings.ca.trust_domain_aliases.clone(),
        ..BootstrapSettings::default()
    };
    let (authority, bootstrap, created, recent) = tokio::task::spawn_blocking(move || {
        // Before the database: a start refused for its passphrase changes no file.
        let checked = writ_store::kek_file::precheck(&db_path, &protection)?;
        let store = Arc::new(SledStore::open_with(&db_path, store_options)?);
        let td = ca_settings.trust_domain.clone();
        let (sealer, new_kek) =
            writ_store::kek_file::unlock_checked(store.as_ref(), protection, checked)?;
        if new_kek {
            tracing::info!("private keys are now encrypted under the given passphrase");
        }
        // Only once the keys opened unencrypted: a CA whose keys are sealed refuses --dev
        // without a passphrase, and warning first would contradict that refusal.
        if unencrypted {
            tracing::warn!(
                "WARNING: development mode: the CA's private keys are stored UNENCRYPTED in {}; \
                 never use --dev for a CA that matters (give --passphrase-file instead)",
                data_dir.display()
            );
        }
        let (authority, created) =
            Authority::open_sealed(ca_settings, store, sealer.clone(), SystemTime::now())?;
        // Same store as the CA: token state lives (and is backed up) with the CA state.
        let bootstrap =
            Bootstrap::open_sealed(authority.store().clone(), td, token_settings, &sealer)?;
        let recent = authority.recent_leaves(peers::CAPACITY, std::time::SystemTime::now());
        Ok::<_, Error>((authority, bootstrap, created, recent))
    })
    .await
    .map_err(|e| Error::Task(format!("opening the CA: {e}")))??;
    let peers = peers::PeerCache::default();
    match recent {
        Ok(recent) => {
            let restored = peers.restore(recent);
            tracing::info!(
                leaves = restored,
                "leaves issued before this start recognised"
            );
        }
        // Only a cost: those agents' chains are verified in full when they reconnect.
        Err(e) => tracing::warn!(error = %e, "cannot read recent issuance back from the log"),
    }
    let authority = Arc::new(authority);
    let platform =
        platform::PlatformAuth::load(&settings.jwt_issuers, settings.ca.trust_domain.clone())?;

    let serving = Arc::new(renewal::issue_serving_cert(&authority, &settings)?);
    let tls = TlsAcceptor::from(Arc::new(tls::server_config(serving.clone())?));
    let listener = TcpListener::bind(settings.listen)
        .await
        .map_err(|e| Error::io(format!("binding {}", settings.listen), e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::io("reading the bound address", e))?;

    let (bundle_tx, _) = watch::channel(authority.bundle());
    let (health, health_service) = health::Health::new()?;
    let metrics = Arc::new(metrics::ServerMetrics::new());
    let committer = commit::Committer::start(authority.store().clone(), metrics.clone());
    let shared = Arc::new(Shared {
        authority: authority.clone(),
        bootstrap: Arc::new(bootstrap),
        token_failures: AtomicU64::new(0),
        bundle_tx,
        settings: settings.clone(),
        serving: serving.clone(),
        listen: addr,
        rotation_wake: tokio::sync::Notify::new(),
        peers,
        platform,
        committer: committer.clone(),
        auth_limit: limits::AuthLimiter::new(&settings.limits),
        metrics,
        health,
        stopping: shutdown.clone(),
    });
    // Serve a verdict from the first request on, not "unknown" for the first interval.
    health::Health::check(&shared).await;
    let metrics_addr = metrics::start(&shared, shutdown.clone()).await?;

    let admin_incoming = admin::listen(&settings.admin_socket)?;
    let max_request = settings.limits.max_request_bytes;
    let admin_server = settings
        .limits
        .server()
        .add_service(
            AdminServer::new(admin::AdminService::new(shared.clone()))
                .max_decoding_message_size(max_request),
        )
        .serve_with_incoming_shutdown(admin_incoming, shutdown.clone().cancelled_owned());

    let pusher = push::Pusher::new(
        shared.bundle_tx.subscribe(),
        shared.metrics.clone(),
        shutdown.clone(),
    );
    let incoming = accept_tls(
        listener,
        tls,
        pusher.clone(),
        committer.clone(),
        shutdown.clone(),
    );
    let grpc_server = settings
        .limits
        .server()
        .layer(inflight::CountSigningLayer::new(committer))
        .add_service(
            CaServer::new(service::CaService::new(shared.clone()))
                .max_decoding_message_size(max_request),
        )
        .add_service(
            IstioCertificateServiceServer::new(istio::IstioService::new(shared.clone()))
                .max_decoding_message_size(max_request),
        )
        .add_service(health_service)
        .serve_with_incoming_shutdown(incoming, shutdown.clone().cancelled_owned());

    tokio::spawn(renewal::run(shared.clone(), shutdown.clone()));
    tokio::spawn(rotation::drive(shared.clone(), shutdown.clone()));
    tokio::spawn(renewal::prune_tokens(shared.clone(), shutdown.clone()));
    tokio::spawn(health::run(shared.clone(), shutdown.clone()));

    let push_closed = {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            shutdown.cancelled().await;
            pusher.closed().await;
        })
    };
    let admin_socket = settings.admin_socket.clone();
    let done = tokio::spawn(async move {
        let (a, b) = tokio::join!(grpc_server, admin_server);
        let _ = std::fs::remove_file(&admin_socket);
        a?;
        b?;
        Ok(())
    });

    Ok(Running {
        addr,
        metrics_addr,
        admin_socket: settings.admin_socket.clone(),
        data_dir: settings.data_dir.clone(),
        root_fingerprint: authority.root_fingerprint()?,
        created,
        done,
        push_closed,
    })
}

/// Every agent holds a connection (and a bundle watch): lift the soft open-files limit to
/// the hard one, as Go servers do by default, so the default 1024 does not cap the fleet.
fn raise_fd_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            tracing::warn!(error = %e, "could not raise the open-files limit");
        }
    }
}

fn prepare_data_dir(dir: &Path) -> Result<(), Error> {
    if !dir.exists() {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("creating data dir {}", dir.display()), e))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::io(format!("chmod 0700 {}", dir.display()), e))?;
    }
    Ok(())
}

/// Accepts TCP connections and completes TLS handshakes concurrently, so one slow client
/// cannot hold up the others; connections that chose the bundle push channel stay here,
/// the rest go to the gRPC server.
fn accept_tls(
    listener: TcpListener,
    tls: TlsAcceptor,
    pusher: push::Pusher,
    committer: Arc<commit::Committer>,
    shutdown: CancellationToken,
) -> ReceiverStream<Result<Coalesced<TlsStream<TcpStream>>, std::io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel(128);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of file descriptors and similar: back off briefly, keep serving.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            let tls = tls.clone();
            let tx = tx.clone();
            let pusher = pusher.clone();
            let handshake = committer.handshake();
            tokio::spawn(async move {
                let accepted = tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(tcp)).await;
                drop(handshake);
                match accepted {
                    Ok(Ok(stream)) if push::Pusher::chosen(&stream) => pusher.spawn(stream),
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(Coalesced::new(stream))).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}
