//! End to end: SIGTERM drains the server. Requests in flight are answered — every
//! certificate the log records was handed out — and gRPC bundle watches end with
//! UNAVAILABLE so their connections close, and the server exits 0 without waiting out its
//! grace period.
#![allow(clippy::unwrap_used)]

#[path = "common/burst.rs"]
mod burst;
mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use burst::Burst;
use common::Server;
use writ_agent::client::ServerTrust;
use writ_agent::files::read_identity;
use writ_agent::watch::{BundleWatch, Transport};
use writ_ca::TrustDomain;

const ID: &str = "spiffe://cluster.local/ns/default/sa/web";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_answers_the_requests_in_flight() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut server = Server::start(&data, &["--shutdown-grace", "30s"]);
    let dir = tmp.path().join("id");
    let minted = server.mint_json(ID, &dir, &[]);
    let me = Arc::new(read_identity(&dir).unwrap().unwrap());

    let mut burst = Burst::start(&server.addr, me, ID, 300);
    burst.enough().await;
    // Requests are in flight on all eight connections at this moment.
    let stopping = tokio::task::spawn_blocking(move || server.stop());
    let ended = burst.ended().await;
    let status = stopping.await.unwrap().unwrap();
    assert!(status.success(), "writ server exited with {status}");

    let server = Server::start(&data, &[]);
    let mut logged = common::logged_serials(&server, ID);
    logged.remove(minted["serial"].as_str().unwrap());
    let received: HashSet<String> = ended.received.iter().cloned().collect();
    // Signed and logged, but the answer cut before it left: the agent never got it.
    let unanswered = logged.difference(&received).count();
    let lost = received.difference(&logged).count();
    assert_eq!(
        (unanswered, lost),
        (0, 0),
        "{} certificates received, {} logged; connections ended with {:?}",
        received.len(),
        logged.len(),
        ended.errors
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_grpc_bundle_watches_and_exits_without_waiting_out_the_grace() {
    let tmp = tempfile::tempdir().unwrap();
    let mut server = Server::start(&tmp.path().join("data"), &["--shutdown-grace", "60s"]);
    let me = common::mint_identity(&server, &tmp.path().join("id"), ID);
    let trust = ServerTrust::Bundle {
        trust_domain: TrustDomain::parse("cluster.local").unwrap(),
        roots: me.bundle.clone(),
    };
    let mut watch = BundleWatch::open(&server.addr, trust, None, Transport::Grpc)
        .await
        .unwrap();
    watch.next().await.unwrap().expect("the current bundle");

    let stopping = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        (server.stop(), started.elapsed())
    });
    let end = tokio::time::timeout(Duration::from_secs(20), watch.next())
        .await
        .expect("the watch ends when the server stops");
    let err = end.map(|b| b.map(|b| b.sequence)).unwrap_err();
    assert!(err.to_string().contains("shutting down"), "{err}");
    let (status, took) = stopping.await.unwrap();
    assert!(status.unwrap().success());
    // An open watch would hold the drain for the whole 60 s.
    assert!(
        took < Duration::from_secs(30),
        "the server took {took:?} to stop"
    );
}
