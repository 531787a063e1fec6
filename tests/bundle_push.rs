//! End to end: the bundle push channel (`writ-bundle/1`) — the bundle at once and on every
//! change, counted by transport, a client that talks on it dropped; and behind an HTTP/2
//! proxy that knows nothing of it, the watch falling back to gRPC.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{Server, assert_success, metric, scrape};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use writ_agent::client::{ServerTrust, client_config};
use writ_agent::files::Identity;
use writ_agent::watch::{BundleWatch, Transport};
use writ_ca::TrustDomain;
use writ_proto::push;

const TD: &str = "cluster.local";

fn mint(server: &Server, tmp: &Path, id: &str, name: &str) -> Identity {
    common::mint_identity(server, &tmp.join(name), id)
}

/// A server with metrics on, and an identity minted by it.
fn start(tmp: &Path) -> (Server, Identity) {
    let server = Server::start(&tmp.join("data"), &["--metrics-listen", "127.0.0.1:0"]);
    let me = mint(
        &server,
        tmp,
        &format!("spiffe://{TD}/ns/default/sa/web"),
        "web",
    );
    (server, me)
}

fn trust(me: &Identity) -> ServerTrust {
    ServerTrust::Bundle {
        trust_domain: TrustDomain::parse(TD).unwrap(),
        roots: me.bundle.clone(),
    }
}

fn push_watchers(server: &Server) -> Option<f64> {
    metric(
        &scrape(server),
        "writ_server_bundle_watchers",
        "transport=\"push\"",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_watchers_get_the_bundle_at_once_and_every_change() {
    let tmp = tempfile::tempdir().unwrap();
    let (server, me) = start(tmp.path());

    let mut watch = BundleWatch::open(&server.addr, trust(&me), None, Transport::Push)
        .await
        .unwrap();
    assert_eq!(watch.transport(), Transport::Push);
    let first = watch.next().await.unwrap().expect("the current bundle");
    assert_eq!(first.trust_domain, TD);
    assert_eq!(first.roots, me.bundle);
    assert_eq!(push_watchers(&server), Some(1.0));

    assert_success(&server.admin(&["root", "prepare"]), &["root", "prepare"]);
    let next = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("the change arrives")
        .unwrap()
        .expect("a bundle");
    assert!(next.sequence > first.sequence, "{next:?}");
    assert_eq!(next.roots.len(), 2);
    assert!(next.roots.contains(&me.bundle[0]));

    // The same server still serves the gRPC watch to clients that ask for it.
    let mut grpc = BundleWatch::open(&server.addr, trust(&me), Some(&me), Transport::Grpc)
        .await
        .unwrap();
    assert_eq!(grpc.transport(), Transport::Grpc);
    assert_eq!(grpc.next().await.unwrap().unwrap().roots, next.roots);
    let page = scrape(&server);
    assert_eq!(
        metric(&page, "writ_server_bundle_watchers", "transport=\"grpc\""),
        Some(1.0),
        "{page}"
    );

    drop(watch);
    assert!(common::wait_until(Duration::from_secs(10), || {
        push_watchers(&server) == Some(0.0)
    }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_talks_on_the_push_channel_is_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    let (server, me) = start(tmp.path());
    let mut config = client_config(trust(&me), None).unwrap();
    config.alpn_protocols = vec![push::ALPN.to_vec()];
    let tcp = tokio::net::TcpStream::connect(&server.addr).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("writ.invalid").unwrap(), tcp)
        .await
        .unwrap();
    let mut buf = Vec::new();
    let first = push::read(&mut tls, &mut buf).await.unwrap().unwrap();
    assert_eq!(first.roots, me.bundle);
    assert_eq!(push_watchers(&server), Some(1.0));

    tls.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    tls.flush().await.unwrap();
    let mut rest = Vec::new();
    let end = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut rest))
        .await
        .expect("the server closes the connection");
    assert!(
        rest.is_empty(),
        "nothing more after data from the client: {end:?}"
    );
    assert!(common::wait_until(Duration::from_secs(10), || {
        push_watchers(&server) == Some(0.0)
    }));
}

/// A TLS-terminating HTTP/2 proxy with a certificate for the server's SPIFFE ID (as an
/// operator's would have), forwarding to the real server over a new TLS connection.
async fn h2_proxy(server: &Server, tmp: &Path, me: &Identity) -> String {
    let front = mint(server, tmp, &format!("spiffe://{TD}/writ/server"), "proxy");
    let chain = front
        .chain
        .iter()
        .cloned()
        .map(CertificateDer::from)
        .collect();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(front.key.pkcs8_der().to_vec()));
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let backend =
        tokio_rustls::TlsConnector::from(Arc::new(client_config(trust(me), None).unwrap()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let upstream = server.addr.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let (acceptor, backend, upstream) =
                (acceptor.clone(), backend.clone(), upstream.clone());
            tokio::spawn(async move {
                let mut client = acceptor.accept(tcp).await.unwrap();
                let tcp = tokio::net::TcpStream::connect(&upstream).await.unwrap();
                let name = ServerName::try_from("writ.invalid").unwrap();
                let mut server = backend.connect(name, tcp).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_an_http2_proxy_the_watch_falls_back_to_grpc() {
    let tmp = tempfile::tempdir().unwrap();
    let (server, me) = start(tmp.path());
    let proxy = h2_proxy(&server, tmp.path(), &me).await;

    let mut watch = BundleWatch::open(&proxy, trust(&me), None, Transport::Auto)
        .await
        .unwrap();
    assert_eq!(watch.transport(), Transport::Grpc);
    assert_eq!(watch.next().await.unwrap().unwrap().roots, me.bundle);

    let refused = BundleWatch::open(&proxy, trust(&me), None, Transport::Push)
        .await
        .err()
        .expect("push cannot work through the proxy");
    assert!(
        refused
            .to_string()
            .contains("does not offer the bundle push channel"),
        "{refused}"
    );

    // Directly, the same call gets the push channel.
    let direct = BundleWatch::open(&server.addr, trust(&me), None, Transport::Auto)
        .await
        .unwrap();
    assert_eq!(direct.transport(), Transport::Push);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_server_ends_push_watches_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut server, me) = start(tmp.path());
    let mut watch = BundleWatch::open(&server.addr, trust(&me), None, Transport::Push)
        .await
        .unwrap();
    watch.next().await.unwrap().expect("the current bundle");
    let stopping = tokio::task::spawn_blocking(move || {
        server.stop();
        server
    });
    // close_notify, not a reset or a hang: the agent reconnects without logging an error.
    let end = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("the watch ends when the server stops");
    assert!(
        matches!(end, Ok(None)),
        "{:?}",
        end.map(|b| b.map(|b| b.sequence))
    );
    let _ = tokio::time::timeout(Duration::from_secs(20), stopping)
        .await
        .expect("the server exits with a push watcher connected");
}
