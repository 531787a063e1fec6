//! End to end: the `[limits]` of the server config — oversized requests, failed
//! authentication floods (refused without crypto, allowed again after the window),
//! streams per connection, and the request timeout (which must not cut bundle watches).
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Server, assert_success};
use tonic::Code;
use writ_agent::client::{ServerTrust, channel, client_config, connect};
use writ_agent::files::Identity;
use writ_ca::{KeyType, PrivateKey, SpiffeId, TrustDomain, build_csr};
use writ_proto::v1::ca_client::CaClient;
use writ_proto::v1::{GetBundleRequest, SignRequest};

const ID: &str = "spiffe://cluster.local/ns/default/sa/web";

const LIMITS: &str = r#"
[limits]
max_request_bytes = 70000
max_concurrent_streams = 2
request_timeout = "2s"
auth_failures = 3
auth_failure_window = "3s"
"#;

fn start(tmp: &Path) -> Server {
    let config = tmp.join("writ.toml");
    std::fs::write(&config, LIMITS).unwrap();
    Server::start(&tmp.join("data"), &["--config", config.to_str().unwrap()])
}

fn identity(server: &Server, tmp: &Path) -> Identity {
    common::mint_identity(server, &tmp.join("web"), ID)
}

fn trust(me: &Identity) -> ServerTrust {
    ServerTrust::Bundle {
        trust_domain: TrustDomain::parse("cluster.local").unwrap(),
        roots: me.bundle.clone(),
    }
}

fn csr() -> Vec<u8> {
    let key = PrivateKey::generate(KeyType::EcP256).unwrap();
    build_csr(&key, &SpiffeId::parse(ID).unwrap(), &[]).unwrap()
}

fn with_token(token: &str) -> tonic::Request<SignRequest> {
    let mut req = tonic::Request::new(SignRequest {
        csr: csr(),
        ttl_seconds: 0,
    });
    req.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    req
}

/// The seconds in "retry in 3s".
fn retry_after(msg: &str) -> Duration {
    let secs = msg
        .rsplit("retry in ")
        .next()
        .and_then(|s| s.trim_end_matches('s').parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no retry time in {msg:?}"));
    Duration::from_secs(secs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_requests_are_refused_before_parsing() {
    let tmp = tempfile::tempdir().unwrap();
    let server = start(tmp.path());
    let me = identity(&server, tmp.path());
    let mut client = connect(&server.addr, trust(&me), Some(&me)).await.unwrap();
    let err = client
        .sign(SignRequest {
            csr: vec![0x30; 100_000],
            ttl_seconds: 0,
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{err:?}"
    );
    assert!(err.message().contains("70000"), "{}", err.message());
    // Just under the limit reaches the CSR parser, which has its own 64 KiB bound.
    let err = client
        .sign(SignRequest {
            csr: vec![0x30; 66_000],
            ttl_seconds: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    client
        .sign(SignRequest {
            csr: csr(),
            ttl_seconds: 0,
        })
        .await
        .expect("the connection still serves normal requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_authentication_floods_are_cut_off_until_the_window_ends() {
    let tmp = tempfile::tempdir().unwrap();
    let server = start(tmp.path());
    let minted = server.admin_json(&["token", "create", "--spiffe-id", ID]);
    let token = minted["token"].as_str().unwrap().to_owned();
    let pinned = ServerTrust::PinnedRoot {
        trust_domain: TrustDomain::parse("cluster.local").unwrap(),
        fingerprint: server.root_fingerprint.clone(),
    };
    let mut client = connect(&server.addr, pinned, None).await.unwrap();
    // The real token with a broken signature: same jti, not genuine.
    let (signed, _) = token.rsplit_once('.').unwrap();
    let forged = format!("{signed}.{}", "A".repeat(86));
    for _ in 0..3 {
        let err = client.sign(with_token(&forged)).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    }
    let err = client.sign(with_token(&forged)).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("127.0.0.1"), "{}", err.message());
    // Even the genuine token is not looked at (no signature check) until the window ends.
    let err = client.sign(with_token(&token)).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    let wait = retry_after(err.message());
    assert!(wait <= Duration::from_secs(3), "{wait:?}");
    let list = server.admin_json(&["token", "list"]);
    assert_eq!(list["tokens"][0]["state"], "pending");

    // Told when to retry; retrying then works.
    tokio::time::sleep(wait).await;
    client
        .sign(with_token(&token))
        .await
        .expect("allowed again after the window");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_per_connection_are_capped_and_timeouts_spare_watches() {
    let tmp = tempfile::tempdir().unwrap();
    let server = start(tmp.path());
    let me = identity(&server, tmp.path());
    let ch = channel(&server.addr, client_config(trust(&me), Some(&me)).unwrap())
        .await
        .unwrap();
    let mut client = CaClient::new(ch.clone());
    // One round trip so the client has the server's SETTINGS.
    client.get_bundle(GetBundleRequest {}).await.unwrap();
    let mut w1 = client
        .watch_bundle(GetBundleRequest {})
        .await
        .unwrap()
        .into_inner();
    let w2 = client
        .watch_bundle(GetBundleRequest {})
        .await
        .unwrap()
        .into_inner();
    w1.message().await.unwrap().expect("current bundle");
    // Two streams open on this connection: a third waits for one to close.
    let third = tokio::time::timeout(
        Duration::from_millis(500),
        client.get_bundle(GetBundleRequest {}),
    )
    .await;
    assert!(third.is_err(), "a third concurrent stream was served");
    drop(w2);
    tokio::time::timeout(
        Duration::from_secs(5),
        client.get_bundle(GetBundleRequest {}),
    )
    .await
    .expect("served once a stream closed")
    .unwrap();

    // A request whose body never arrives is cut at the request timeout (2s).
    let mut grpc = tonic::client::Grpc::new(ch.clone());
    grpc.ready().await.unwrap();
    let started = std::time::Instant::now();
    let stalled = grpc
        .client_streaming::<_, SignRequest, writ_proto::v1::SignResponse, _>(
            tonic::Request::new(futures_util::stream::pending::<SignRequest>()),
            "/writ.v1.Ca/Sign".parse().unwrap(),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(stalled.code(), Code::Cancelled | Code::DeadlineExceeded),
        "{stalled:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));

    // The watch opened before the timeout still delivers, long after it.
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert_success(&server.admin(&["root", "prepare"]), &["root", "prepare"]);
    let next = tokio::time::timeout(Duration::from_secs(10), w1.message())
        .await
        .expect("watch still open")
        .unwrap()
        .expect("a bundle");
    assert_eq!(next.roots.len(), 2);
}
