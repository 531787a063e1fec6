//! The SPIFFE Workload API (github.com/spiffe/spiffe, standards/SPIFFE_Workload_API.md)
//! served on a Unix socket, so go-spiffe, py-spiffe, the Rust `spiffe` crate and Envoy's
//! SDS-over-Workload-API clients get their X509-SVID and bundle from `writ agent`. The JWT
//! methods answer `Unimplemented`.
//!
//! The agent holds one identity, private key included, and serves it only to callers its
//! allow list names ([`Callers`]: by the uid or gid the kernel reports for the connecting
//! process, default the agent's own user and root); anyone else gets `PermissionDenied`
//! naming their uid, counted in `writ_agent_workload_api_refused_total`. File permissions
//! are a second gate: the socket is made mode 0660 and a parent directory it creates is
//! 0750. To serve a workload running as another user, allow its uid (`--workload-uid`) and
//! let it reach the socket (the agent's group, or a directory shared with the workload such
//! as a Kubernetes `emptyDir` with `fsGroup`); never loosen the socket to 0666.

use std::collections::HashMap;
use std::fs::{self, DirBuilder};
use std::future::Future;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::net::UnixListener;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::{ReceiverStream, UnixListenerStream};
use tokio_util::sync::CancellationToken;
use tonic::transport::server::UdsConnectInfo;
use tonic::{Request, Response, Status};
use writ_ca::TrustDomain;
use writ_metrics::prometheus_client::metrics::counter::Counter;
use writ_proto::WORKLOAD_SECURITY_HEADER;
use writ_proto::workload::spiffe_workload_api_server::{
    SpiffeWorkloadApi, SpiffeWorkloadApiServer,
};
use writ_proto::workload::{
    JwtBundlesRequest, JwtBundlesResponse, JwtsvidRequest, JwtsvidResponse, ValidateJwtsvidRequest,
    ValidateJwtsvidResponse, X509BundlesRequest, X509BundlesResponse, X509svid, X509svidRequest,
    X509svidResponse,
};

use crate::files::Identity;

mod callers;

pub use callers::{Callers, MAX_ALLOWED};

/// Mode of the socket file: read/write (connect) for the agent's user and group only.
pub const SOCKET_MODE: u32 = 0o660;
/// Mode of a socket directory the server has to create.
const SOCKET_DIR_MODE: u32 = 0o750;
const HEADER_MISSING: &str = "security header missing from request";
const JWT_UNIMPLEMENTED: &str =
    "writ agent does not serve JWT-SVIDs yet; use X509-SVIDs (FetchX509SVID)";

/// Why the Workload API server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file-system operation on the socket or its directory failed.
    #[error("could not {action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// Another server is accepting connections on the socket.
    #[error(
        "{path} is in use by a running Workload API server; stop that agent or choose another socket path"
    )]
    SocketInUse {
        /// The socket path.
        path: PathBuf,
    },
    /// The socket path holds something other than a socket, which is never deleted.
    #[error(
        "{path} exists and is not a socket; refusing to replace it, remove it or choose another path"
    )]
    NotASocket {
        /// The path.
        path: PathBuf,
    },
    /// The gRPC server failed while serving.
    #[error("the Workload API server on {path} failed: {reason}")]
    Serve {
        /// The socket path.
        path: PathBuf,
        /// The transport's error.
        reason: String,
    },
}

/// Serves the Workload API on `socket` until `shutdown` completes, streaming whatever
/// `identity` holds (nothing until its first `Some`).
pub async fn serve(
    socket: &Path,
    identity: watch::Receiver<Option<Arc<Identity>>>,
    trust_domain: TrustDomain,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    WorkloadApi::new(identity, trust_domain)
        .serve(socket, shutdown)
        .await
}

/// The Workload API service over the agent's current identity.
#[derive(Clone)]
pub struct WorkloadApi {
    identity: watch::Receiver<Option<Arc<Identity>>>,
    trust_domain: TrustDomain,
    callers: Arc<Callers>,
    refused: Counter,
    open_streams: Arc<AtomicUsize>,
    stop: CancellationToken,
}

impl WorkloadApi {
    /// A service streaming `identity`, with bundles keyed by `trust_domain`.
    pub fn new(
        identity: watch::Receiver<Option<Arc<Identity>>>,
        trust_domain: TrustDomain,
    ) -> Self {
        Self {
            identity,
            trust_domain,
            callers: Arc::new(Callers::default()),
            refused: Counter::default(),
            open_streams: Arc::new(AtomicUsize::new(0)),
            stop: CancellationToken::new(),
        }
    }

    /// Serves only `callers` instead of the default (the agent's own user and root).
    pub fn with_callers(mut self, callers: Callers) -> Self {
        self.callers = Arc::new(callers);
        self
    }

    /// Counts refused callers in `counter` (a metric).
    pub fn counting_refusals(mut self, counter: Counter) -> Self {
        self.refused = counter;
        self
    }

    /// The peer-credential check and the security header, in that order: a refused caller
    /// learns nothing about the API.
    fn admit<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let peer = request
            .extensions()
            .get::<UdsConnectInfo>()
            .and_then(|i| i.peer_cred.as_ref());
        if let Err(refused) = self.callers.admit(peer) {
            self.refused.inc();
            tracing::warn!(reason = refused.message(), "Workload API caller refused");
            return Err(refused);
        }
        check_header(request)
    }

    /// The number of open `FetchX509SVID`/`FetchX509Bundles` streams (connected workloads),
    /// live, for a metric.
    pub fn open_streams(&self) -> Arc<AtomicUsize> {
        self.open_streams.clone()
    }

    /// Binds `socket` (replacing a stale socket file) and serves until `shutdown`
    /// completes; open streams are then ended and the socket file removed.
    pub async fn serve(
        self,
        socket: &Path,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), Error> {
        let listener = bind(socket)?;
        tracing::info!(socket = %socket.display(), "serving the SPIFFE Workload API");
        let stop = self.stop.clone();
        // Graceful shutdown waits for open calls to finish, and a Workload API stream never
        // finishes by itself: end the streams when shutdown is asked for.
        let shutdown = async move {
            shutdown.await;
            stop.cancel();
        };
        // gRPC C-core (py-spiffe), grpc-java and grpc-swift send this socket's
        // percent-encoded path as `:authority`; the workspace's patched h2 ignores an
        // authority that is not a URI authority instead of resetting the stream, which is
        // what lets them call this server at all (vendor/README.md says why a patch).
        let result = tonic::transport::Server::builder()
            .add_service(SpiffeWorkloadApiServer::new(self))
            .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
            .await;
        // Best effort: a leftover socket is replaced at the next start anyway.
        let _ = fs::remove_file(socket);
        result.map_err(|e| Error::Serve {
            path: socket.to_path_buf(),
            reason: e.to_string(),
        })
    }

    /// Spawns a task pushing `render(current identity)` now and on every change, until the
    /// client goes away or the server stops. `render` returns `None` to skip an update.
    fn stream<T, F>(&self, mut render: F) -> ReceiverStream<Result<T, Status>>
    where
        T: Send + 'static,
        F: FnMut(&Identity) -> Option<Result<T, Status>> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(1);
        let mut identity = self.identity.clone();
        let stop = self.stop.clone();
        let guard = StreamGuard::new(self.open_streams.clone());
        tokio::spawn(async move {
            let _guard = guard;
            loop {
                // Clone the Arc out so no watch lock is held across an await.
                let current = identity.borrow_and_update().clone();
                if let Some(msg) = current.as_deref().and_then(&mut render) {
                    let fatal = msg.is_err();
                    tokio::select! {
                        sent = tx.send(msg) => if sent.is_err() { return },
                        () = stop.cancelled() => return,
                    }
                    if fatal {
                        return;
                    }
                }
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tx.closed() => return,
                    changed = identity.changed() => if changed.is_err() {
                        // The rotation loop is gone; say so rather than hang, so the
                        // client reconnects (to a restarted agent) instead of waiting.
                        let _ = tx
                            .send(Err(Status::unavailable("the agent stopped providing identities")))
                            .await;
                        return;
                    },
                }
            }
        });
        ReceiverStream::new(rx)
    }
}

#[tonic::async_trait]
impl SpiffeWorkloadApi for WorkloadApi {
    type FetchJWTBundlesStream = ReceiverStream<Result<JwtBundlesResponse, Status>>;
    type FetchX509SVIDStream = ReceiverStream<Result<X509svidResponse, Status>>;
    type FetchX509BundlesStream = ReceiverStream<Result<X509BundlesResponse, Status>>;

    async fn fetch_x509svid(
        &self,
        request: Request<X509svidRequest>,
    ) -> Result<Response<Self::FetchX509SVIDStream>, Status> {
        self.admit(&request)?;
        tracing::debug!("workload opened an X509-SVID stream");
        Ok(Response::new(self.stream(|id| Some(svid_response(id)))))
    }

    async fn fetch_x509_bundles(
        &self,
        request: Request<X509BundlesRequest>,
    ) -> Result<Response<Self::FetchX509BundlesStream>, Status> {
        self.admit(&request)?;
        tracing::debug!("workload opened an X.509 bundle stream");
        let td = self.trust_domain.id_string();
        let mut last: Option<Vec<u8>> = None;
        // Bundles change far less often than leaves: push only when the roots changed.
        Ok(Response::new(self.stream(move |id| {
            let roots = id.bundle.concat();
            if last.as_ref() == Some(&roots) {
                return None;
            }
            last = Some(roots.clone());
            Some(Ok(X509BundlesResponse {
                crl: Vec::new(),
                bundles: HashMap::from([(td.clone(), roots)]),
            }))
        })))
    }

    async fn fetch_jwt_bundles(
        &self,
        request: Request<JwtBundlesRequest>,
    ) -> Result<Response<Self::FetchJWTBundlesStream>, Status> {
        self.admit(&request)?;
        Err(Status::unimplemented(JWT_UNIMPLEMENTED))
    }

    async fn fetch_jwtsvid(
        &self,
        request: Request<JwtsvidRequest>,
    ) -> Result<Response<JwtsvidResponse>, Status> {
        self.admit(&request)?;
        Err(Status::unimplemented(JWT_UNIMPLEMENTED))
    }

    async fn validate_jwtsvid(
        &self,
        request: Request<ValidateJwtsvidRequest>,
    ) -> Result<Response<ValidateJwtsvidResponse>, Status> {
        self.admit(&request)?;
        Err(Status::unimplemented(JWT_UNIMPLEMENTED))
    }
}

/// The Workload API spec (§5.2) requires `workload.spiffe.io: true` on every call, so a
/// browser or SSRF-style proxied request cannot reach the API by accident.
fn check_header<T>(request: &Request<T>) -> Result<(), Status> {
    let (name, value) = WORKLOAD_SECURITY_HEADER;
    match request.metadata().get(name).map(|v| v.to_str()) {
        Some(Ok(v)) if v == value => Ok(()),
        _ => Err(Status::invalid_argument(HEADER_MISSING)),
    }
}

/// The `X509SVIDResponse` for `id`. It carries the private key: never log or `Debug` it.
fn svid_response(id: &Identity) -> Result<X509svidResponse, Status> {
    let spiffe_id = id.spiffe_id().map_err(|e| {
        Status::internal(format!("the agent's current certificate is unusable: {e}"))
    })?;
    Ok(X509svidResponse {
        svids: vec![X509svid {
            spiffe_id: spiffe_id.to_string(),
            x509_svid: id.chain.concat(),
            x509_svid_key: id.key.pkcs8_der().to_vec(),
            bundle: id.bundle.concat(),
            hint: String::new(),
        }],
        crl: Vec::new(),
        federated_bundles: HashMap::new(),
    })
}

/// Counts a stream as open for as long as its task lives.
struct StreamGuard(Arc<AtomicUsize>);

impl StreamGuard {
    fn new(count: Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count)
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Binds the socket: creates a missing parent directory (0750), removes a stale socket
/// left by a crashed agent, refuses to replace a live socket or a non-socket, and sets
/// [`SOCKET_MODE`].
fn bind(path: &Path) -> Result<UnixListener, Error> {
    let io_err = |action: &'static str| {
        move |source| Error::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
        && !parent.exists()
    {
        DirBuilder::new()
            .recursive(true)
            .mode(SOCKET_DIR_MODE)
            .create(parent)
            .map_err(|source| Error::Io {
                action: "create directory",
                path: parent.to_path_buf(),
                source,
            })?;
    }
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            // A socket someone still accepts on belongs to a running agent: deleting it
            // would silently steal its workloads' future connections.
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(Error::SocketInUse {
                    path: path.to_path_buf(),
                });
            }
            fs::remove_file(path).map_err(io_err("remove stale socket"))?;
        }
        Ok(_) => {
            return Err(Error::NotASocket {
                path: path.to_path_buf(),
            });
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("inspect")(e)),
    }
    // Bind and tighten under a private name, then rename into place: the socket path
    // appears only once it accepts connections and has its final mode, so a workload (or a
    // script) that waits for the file to exist never meets a refused connection or a
    // socket with the umask's mode.
    let staging = staging_path(path);
    let _ = fs::remove_file(&staging);
    let listener = match UnixListener::bind(&staging) {
        Ok(listener) => listener,
        // The staging name is longer than the socket's; a socket path near the kernel's
        // 108-byte limit is bound directly instead.
        Err(e) if e.kind() == io::ErrorKind::InvalidInput => {
            let listener = UnixListener::bind(path).map_err(io_err("bind"))?;
            fs::set_permissions(path, fs::Permissions::from_mode(SOCKET_MODE))
                .map_err(io_err("set permissions of"))?;
            return Ok(listener);
        }
        Err(e) => return Err(io_err("bind")(e)),
    };
    let placed = fs::set_permissions(&staging, fs::Permissions::from_mode(SOCKET_MODE))
        .map_err(io_err("set permissions of"))
        .and_then(|()| fs::rename(&staging, path).map_err(io_err("move the socket to")));
    if let Err(e) = placed {
        let _ = fs::remove_file(&staging);
        return Err(e);
    }
    Ok(listener)
}

/// Where the socket is bound before it is renamed to `path`: beside it, hidden, and
/// distinct per process.
fn staging_path(path: &Path) -> PathBuf {
    let mut name = std::ffi::OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    name.push(format!(".{}", std::process::id()));
    path.with_file_name(name)
}

#[cfg(test)]
mod tests;
