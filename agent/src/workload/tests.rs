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

/// The next message on `stream`, within [`WAIT`].
async fn next_message<T, E: std::fmt::Debug>(
    stream: &mut (impl tokio_stream::Stream<Item = Result<T, E>> + Unpin),
) -> T {
    timeout(WAIT, stream.next())
        .await
        .expect("no message in time")
        .expect("the stream ended")
        .expect("an error on the stream")
}

/// Opens an X.509-SVID stream.
async fn svid_stream(
    c: &mut SpiffeWorkloadApiClient<Channel>,
) -> tonic::Streaming<X509svidResponse> {
    c.fetch_x509svid(with_header(X509svidRequest {}))
        .await
        .unwrap()
        .into_inner()
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
    let mut stream = svid_stream(&mut c).await;
    let msg = next_message(&mut stream).await;
    assert_svid(&msg, &first);
    assert_eq!(srv.streams.load(Ordering::Relaxed), 1);

    srv.tx
        .send_replace(Some(Arc::new(second.try_clone().unwrap())));
    let msg = next_message(&mut stream).await;
    assert_svid(&msg, &second);

    drop(stream);
    wait_for(&srv.streams, 0).await;
}

#[tokio::test]
async fn svid_stream_waits_for_the_first_identity() {
    let ca = TestCa::new();
    let srv = start(None).await;
    let mut c = client(&srv.path).await;
    let mut stream = svid_stream(&mut c).await;
    assert!(
        timeout(Duration::from_millis(200), stream.next())
            .await
            .is_err(),
        "nothing is sent before there is an identity"
    );
    let id = ca.issue("late");
    srv.tx.send_replace(Some(Arc::new(id.try_clone().unwrap())));
    let msg = next_message(&mut stream).await;
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
    let msg = next_message(&mut stream).await;
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
    let msg = next_message(&mut stream).await;
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
    let mut stream = svid_stream(&mut c).await;
    next_message(&mut stream).await;

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
    let mut stream = svid_stream(&mut c).await;
    next_message(&mut stream).await;
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
    let now = next_message(&mut updates).await;
    assert_eq!(now.leaf().as_bytes(), first.leaf());
    let second = ca.issue("spiffe-client");
    srv.tx
        .send_replace(Some(Arc::new(second.try_clone().unwrap())));
    let next = next_message(&mut updates).await;
    assert_eq!(next.leaf().as_bytes(), second.leaf());
    assert_eq!(next.private_key().as_bytes(), second.key.pkcs8_der());
}
