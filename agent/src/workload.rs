//! The SPIFFE Workload API (github.com/spiffe/spiffe, standards/SPIFFE_Workload_API.md)
//! served on a Unix socket, so go-spiffe, py-spiffe, the Rust `spiffe` crate and Envoy's
//! SDS-over-Workload-API clients get their X509-SVID and bundle from `writ agent`.
//!
//! The agent holds one identity and serves it to whoever can connect: unlike SPIRE, it does
//! not attest callers (SPIRE reads the peer's credentials and picks registration entries,
//! which is why its socket can be world-connectable). Access is therefore decided by file
//! permissions: the socket is made mode 0660 and a parent directory it creates is 0750, so
//! only the agent's user and group reach it. To serve a workload running as another user,
//! put that user in the agent's group or share the directory with the workload (for
//! instance a Kubernetes `emptyDir` with `fsGroup`); never loosen the socket to 0666.

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
use tonic::{Request, Response, Status};
use writ_ca::TrustDomain;
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
            open_streams: Arc::new(AtomicUsize::new(0)),
            stop: CancellationToken::new(),
        }
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
        check_header(&request)?;
        tracing::debug!("workload opened an X509-SVID stream");
        Ok(Response::new(self.stream(|id| Some(svid_response(id)))))
    }

    async fn fetch_x509_bundles(
        &self,
        request: Request<X509BundlesRequest>,
    ) -> Result<Response<Self::FetchX509BundlesStream>, Status> {
        check_header(&request)?;
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
        check_header(&request)?;
        Err(Status::unimplemented(JWT_UNIMPLEMENTED))
    }

    async fn fetch_jwtsvid(
        &self,
        request: Request<JwtsvidRequest>,
    ) -> Result<Response<JwtsvidResponse>, Status> {
        check_header(&request)?;
        Err(Status::unimplemented(JWT_UNIMPLEMENTED))
    }

    async fn validate_jwtsvid(
        &self,
        request: Request<ValidateJwtsvidRequest>,
    ) -> Result<Response<ValidateJwtsvidResponse>, Status> {
        check_header(&request)?;
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
mod tests {
    use std::time::Duration;

    use tokio::time::timeout;
    use tokio_stream::StreamExt;
    use tonic::Code;
    use tonic::transport::{Channel, Endpoint};
    use writ_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;

    use super::*;
    use crate::files::testing::TestCa;

    const WAIT: Duration = Duration::from_secs(10);

    struct Running {
        path: PathBuf,
        tx: watch::Sender<Option<Arc<Identity>>>,
        streams: Arc<AtomicUsize>,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        server: tokio::task::JoinHandle<Result<(), Error>>,
        _dir: tempfile::TempDir,
    }

    async fn start(initial: Option<Identity>) -> Running {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent").join("api.sock");
        let (tx, rx) = watch::channel(initial.map(Arc::new));
        let api = WorkloadApi::new(rx, TrustDomain::parse("example.org").unwrap());
        let streams = api.open_streams();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = {
            let path = path.clone();
            tokio::spawn(async move {
                api.serve(&path, async {
                    let _ = stopped.await;
                })
                .await
            })
        };
        // Wait for the socket to appear.
        for _ in 0..200 {
            if path.exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Running {
            path,
            tx,
            streams,
            stop: Some(stop),
            server,
            _dir: dir,
        }
    }

    async fn client(path: &Path) -> SpiffeWorkloadApiClient<Channel> {
        let path = path.to_path_buf();
        let channel = Endpoint::try_from("http://[::]:50051")
            .unwrap()
            .connect_with_connector(tower::service_fn(move |_| {
                let path = path.clone();
                async move {
                    Ok::<_, io::Error>(hyper_util::rt::TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            }))
            .await
            .unwrap();
        SpiffeWorkloadApiClient::new(channel)
    }

    fn with_header<T>(msg: T) -> Request<T> {
        let mut req = Request::new(msg);
        let (k, v) = WORKLOAD_SECURITY_HEADER;
        req.metadata_mut().insert(k, v.parse().unwrap());
        req
    }

    fn assert_svid(resp: &X509svidResponse, id: &Identity) {
        assert_eq!(resp.svids.len(), 1);
        let svid = &resp.svids[0];
        assert_eq!(svid.spiffe_id, id.spiffe_id().unwrap().to_string());
        assert_eq!(svid.x509_svid, id.chain.concat());
        assert_eq!(svid.x509_svid_key, id.key.pkcs8_der());
        assert_eq!(svid.bundle, id.bundle.concat());
        assert!(svid.hint.is_empty());
        assert!(resp.crl.is_empty() && resp.federated_bundles.is_empty());
    }

    async fn wait_for(count: &AtomicUsize, want: usize) {
        for _ in 0..500 {
            if count.load(Ordering::Relaxed) == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "open streams stayed {} (want {want})",
            count.load(Ordering::Relaxed)
        );
    }

    #[tokio::test]
    async fn svid_stream_sends_current_then_updates() {
        let ca = TestCa::new();
        let first = ca.issue("web");
        let second = ca.issue("web");
        let srv = start(Some(first.try_clone().unwrap())).await;
        let mut c = client(&srv.path).await;
        let mut stream = c
            .fetch_x509svid(with_header(X509svidRequest {}))
            .await
            .unwrap()
            .into_inner();
        let msg = timeout(WAIT, stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_svid(&msg, &first);
        assert_eq!(srv.streams.load(Ordering::Relaxed), 1);

        srv.tx
            .send_replace(Some(Arc::new(second.try_clone().unwrap())));
        let msg = timeout(WAIT, stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_svid(&msg, &second);

        drop(stream);
        wait_for(&srv.streams, 0).await;
    }

    #[tokio::test]
    async fn svid_stream_waits_for_the_first_identity() {
        let ca = TestCa::new();
        let srv = start(None).await;
        let mut c = client(&srv.path).await;
        let mut stream = c
            .fetch_x509svid(with_header(X509svidRequest {}))
            .await
            .unwrap()
            .into_inner();
        assert!(
            timeout(Duration::from_millis(200), stream.next())
                .await
                .is_err(),
            "nothing is sent before there is an identity"
        );
        let id = ca.issue("late");
        srv.tx.send_replace(Some(Arc::new(id.try_clone().unwrap())));
        let msg = timeout(WAIT, stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_svid(&msg, &id);
    }

    #[tokio::test]
    async fn bundle_stream_sends_on_bundle_change_only() {
        let ca = TestCa::new();
        let other = TestCa::new();
        let first = ca.issue("web");
        let srv = start(Some(first.try_clone().unwrap())).await;
        let mut c = client(&srv.path).await;
        let mut stream = c
            .fetch_x509_bundles(with_header(X509BundlesRequest {}))
            .await
            .unwrap()
            .into_inner();
        let msg = timeout(WAIT, stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(msg.crl.is_empty());
        assert_eq!(
            msg.bundles,
            HashMap::from([("spiffe://example.org".to_owned(), first.bundle.concat())])
        );

        // A new leaf with the same roots: no bundle update.
        srv.tx.send_replace(Some(Arc::new(ca.issue("web"))));
        assert!(
            timeout(Duration::from_millis(200), stream.next())
                .await
                .is_err()
        );

        // New roots (a root rotation adds the next root): pushed.
        let mut roots = first.bundle.clone();
        roots.extend(other.authority.bundle().roots);
        srv.tx
            .send_replace(Some(Arc::new(first.with_bundle(roots.clone()).unwrap())));
        let msg = timeout(WAIT, stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(msg.bundles["spiffe://example.org"], roots.concat());
    }

    #[tokio::test]
    async fn security_header_is_required() {
        let ca = TestCa::new();
        let srv = start(Some(ca.issue("web"))).await;
        let mut c = client(&srv.path).await;
        let err = c.fetch_x509svid(X509svidRequest {}).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert_eq!(err.message(), HEADER_MISSING);
        let err = c
            .fetch_x509_bundles(X509BundlesRequest {})
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        let mut wrong = Request::new(X509svidRequest {});
        wrong
            .metadata_mut()
            .insert(WORKLOAD_SECURITY_HEADER.0, "false".parse().unwrap());
        let err = c.fetch_x509svid(wrong).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        let err = c
            .fetch_jwtsvid(JwtsvidRequest::default())
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
    }

    #[tokio::test]
    async fn jwt_methods_are_unimplemented() {
        let srv = start(None).await;
        let mut c = client(&srv.path).await;
        let err = c
            .fetch_jwtsvid(with_header(JwtsvidRequest::default()))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unimplemented);
        assert!(err.message().contains("JWT-SVIDs"));
        let err = c
            .fetch_jwt_bundles(with_header(JwtBundlesRequest {}))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unimplemented);
        let err = c
            .validate_jwtsvid(with_header(ValidateJwtsvidRequest::default()))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unimplemented);
    }

    #[tokio::test]
    async fn shutdown_ends_open_streams_and_removes_the_socket() {
        let ca = TestCa::new();
        let mut srv = start(Some(ca.issue("web"))).await;
        let mode = fs::metadata(&srv.path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, SOCKET_MODE);
        let dir_mode = fs::metadata(srv.path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o777, SOCKET_DIR_MODE);

        let mut c = client(&srv.path).await;
        let mut stream = c
            .fetch_x509svid(with_header(X509svidRequest {}))
            .await
            .unwrap()
            .into_inner();
        timeout(WAIT, stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();

        srv.stop.take().unwrap().send(()).unwrap();
        timeout(WAIT, &mut srv.server)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(!srv.path.exists());
        // The client sees its stream end rather than hang.
        let end = timeout(WAIT, stream.next()).await.unwrap();
        assert!(!matches!(end, Some(Ok(_))), "{end:?}");
    }

    #[tokio::test]
    async fn stopped_publisher_ends_the_stream_with_unavailable() {
        let ca = TestCa::new();
        let srv = start(Some(ca.issue("web"))).await;
        let mut c = client(&srv.path).await;
        let mut stream = c
            .fetch_x509svid(with_header(X509svidRequest {}))
            .await
            .unwrap()
            .into_inner();
        timeout(WAIT, stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let Running { tx, .. } = srv;
        drop(tx);
        let err = timeout(WAIT, stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap_err();
        assert_eq!(err.code(), Code::Unavailable);
    }

    #[tokio::test]
    async fn socket_path_handling() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");

        // A stale socket (nobody accepting) is replaced.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let listener = bind(&path).unwrap();

        // A live one is not.
        assert!(matches!(bind(&path), Err(Error::SocketInUse { .. })));
        drop(listener);

        // Nor is anything that is not a socket.
        let file = dir.path().join("notes.txt");
        fs::write(&file, "mine").unwrap();
        assert!(matches!(bind(&file), Err(Error::NotASocket { .. })));
        assert_eq!(fs::read_to_string(&file).unwrap(), "mine");
    }

    /// A workload that connects the instant the socket file appears must get through:
    /// the file may not exist before the socket listens, nor with a looser mode.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_socket_appears_only_when_it_accepts() {
        let dir = tempfile::tempdir().unwrap();
        for round in 0..200 {
            let path = dir.path().join(format!("api-{round}.sock"));
            let watcher = {
                let path = path.clone();
                std::thread::spawn(move || {
                    loop {
                        if let Ok(meta) = fs::symlink_metadata(&path) {
                            let mode = meta.permissions().mode() & 0o777;
                            let connected = std::os::unix::net::UnixStream::connect(&path);
                            return (mode, connected.map(drop).map_err(|e| e.kind()));
                        }
                        std::hint::spin_loop();
                    }
                })
            };
            let listener = bind(&path).unwrap();
            let (mode, connected) = watcher.join().unwrap();
            assert_eq!(mode, SOCKET_MODE, "round {round}");
            assert_eq!(connected, Ok(()), "round {round}");
            drop(listener);
        }
        let left: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().starts_with('.'))
            .collect();
        assert!(left.is_empty(), "staging names left behind: {left:?}");
    }

    #[test]
    fn a_socket_path_near_the_kernel_limit_is_bound_directly() {
        let dir = tempfile::tempdir().unwrap();
        let room = 107 - dir.path().as_os_str().len() - 1;
        let path = dir.path().join("s".repeat(room));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _guard = rt.enter();
        let _listener = bind(&path).unwrap();
        assert!(std::os::unix::net::UnixStream::connect(&path).is_ok());
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            SOCKET_MODE
        );
    }

    /// Wire compatibility with an independent implementation: the rust-spiffe client.
    #[tokio::test]
    async fn rust_spiffe_client_fetches_and_follows_rotation() {
        let ca = TestCa::new();
        let first = ca.issue("spiffe-client");
        let srv = start(Some(first.try_clone().unwrap())).await;
        let client = spiffe::WorkloadApiClient::connect_to(format!("unix:{}", srv.path.display()))
            .await
            .unwrap();

        let svid = client.fetch_x509_svid().await.unwrap();
        assert_eq!(
            svid.spiffe_id().to_string(),
            "spiffe://example.org/spiffe-client"
        );
        let chain: Vec<&[u8]> = svid.cert_chain().iter().map(|c| c.as_bytes()).collect();
        assert_eq!(
            chain,
            first.chain.iter().map(Vec::as_slice).collect::<Vec<_>>()
        );
        assert_eq!(svid.private_key().as_bytes(), first.key.pkcs8_der());

        let bundles = client.fetch_x509_bundles().await.unwrap();
        let td = spiffe::TrustDomain::new("example.org").unwrap();
        let bundle = bundles.get(&td).expect("bundle for example.org");
        let roots: Vec<&[u8]> = bundle.authorities().iter().map(|c| c.as_bytes()).collect();
        assert_eq!(
            roots,
            first.bundle.iter().map(Vec::as_slice).collect::<Vec<_>>()
        );

        let mut updates = client.stream_x509_svids().await.unwrap();
        let now = timeout(WAIT, updates.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(now.leaf().as_bytes(), first.leaf());
        let second = ca.issue("spiffe-client");
        srv.tx
            .send_replace(Some(Arc::new(second.try_clone().unwrap())));
        let next = timeout(WAIT, updates.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(next.leaf().as_bytes(), second.leaf());
        assert_eq!(next.private_key().as_bytes(), second.key.pkcs8_der());
    }
}
