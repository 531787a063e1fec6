//! End to end: a server killed with SIGKILL in the middle of a burst of renewals loses no
//! certificate it handed out — every serial a client received is in the issuance log after
//! the restart, the audit chain verifies, and issuance carries on — also when the journal
//! is being sealed into segments during the burst. After the restart, the certificates
//! issued before it are recognised from the log.
#![allow(clippy::unwrap_used)]

#[path = "common/burst.rs"]
mod burst;
mod common;

use std::sync::Arc;

use burst::Burst;
use common::Server;
use writ_agent::files::read_identity;

const ID: &str = "spiffe://cluster.local/ns/default/sa/web";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_mid_burst_loses_no_certificate_handed_out() {
    crash_mid_burst(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_machine_crash_that_loses_the_journal_tail_loses_no_certificate() {
    // What a power cut leaves: the journal's newest writes, never synced to it, are gone
    // (cut here mid-line); the records are in the write-ahead file and come back at start.
    crash_mid_burst_losing(&[], |data| {
        let journal = data.join(writ_store::JOURNAL_FILE);
        let len = std::fs::metadata(&journal).unwrap().len();
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&journal)
            .unwrap();
        f.set_len(len / 3).unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_while_sealing_segments_loses_nothing() {
    // ~130 records per segment: the burst seals a few.
    let tmp = crash_mid_burst(&["--audit-segment-bytes", "65536"]).await;
    let sealed = std::fs::read_dir(tmp.path().join("data"))
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            let name = name.to_string_lossy();
            name.starts_with("audit-") && name.ends_with(".jsonl")
        })
        .count();
    assert!(sealed >= 2, "{sealed} segments sealed");
}

/// Kills a server started with `args` mid-burst and checks what it handed out survived;
/// returns the directory holding its data dir (`data`).
async fn crash_mid_burst(args: &[&str]) -> tempfile::TempDir {
    crash_mid_burst_losing(args, |_| {}).await
}

/// [`crash_mid_burst`], with `lose` applied to the data dir between the kill and the
/// restart.
async fn crash_mid_burst_losing(
    args: &[&str],
    lose: impl FnOnce(&std::path::Path),
) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut server = Server::start(&data, args);
    let dir = tmp.path().join("id");
    server.mint_json(ID, &dir, &[]);
    let me = Arc::new(read_identity(&dir).unwrap().unwrap());

    // Renew until the server dies under us; every answer is a certificate the CA has
    // handed out.
    let mut burst = Burst::start(&server.addr, me, ID, 300);
    burst.enough().await;
    // Requests are in flight on all eight connections at this moment.
    server.kill();
    let received = burst.ended().await.received;
    assert!(received.len() >= 300);
    lose(&data);

    let server = Server::start(&data, args);
    let logged = common::logged_serials(&server, ID);
    let lost: Vec<&String> = received.iter().filter(|s| !logged.contains(*s)).collect();
    assert!(
        lost.is_empty(),
        "{} of {} certificates handed out are missing from the log after the crash",
        lost.len(),
        received.len()
    );
    let verified = server.admin_json(&["audit", "verify"]);
    assert_eq!(verified["ok"], true, "{verified}");
    assert_eq!(verified["first_seq"], 1, "{verified}");
    // Issuance carries on, chained after the records written before the crash.
    server.mint_json(ID, &dir, &[]);
    let after = server.admin_json(&["audit", "verify"]);
    assert_eq!(after["ok"], true, "{after}");
    assert!(after["head_seq"].as_u64().unwrap() > verified["head_seq"].as_u64().unwrap());
    drop(server);
    tmp
}

/// After a crash the server recognises the certificates it issued before it, from its
/// issuance log: an agent reconnecting with one (as a whole fleet does after an outage) is
/// not verified again, and keeps the DNS names its certificate carries.
#[test]
fn after_a_crash_the_leaves_issued_before_it_are_recognised() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let metrics = ["--metrics-listen", "127.0.0.1:0"];
    let mut server = Server::start(&data, &metrics);
    let dir = tmp.path().join("id");
    let dir_s = dir.display().to_string();
    server.admin_json(&[
        "x509",
        "mint",
        "--spiffe-id",
        ID,
        "--dns",
        "web.internal",
        "--out-dir",
        &dir_s,
    ]);
    server.kill();

    let server = Server::start(&data, &metrics);
    common::writ_json(&["renew", "--server", &server.addr, "--dir", &dir_s]);
    let (_, page) = common::http_get(server.metrics_addr.as_ref().unwrap(), "/metrics").unwrap();
    let checks = |result: &str| {
        common::metric(
            &page,
            "writ_server_client_cert_checks_total",
            &format!("result=\"{result}\""),
        )
        .unwrap_or(0.0)
    };
    assert_eq!(
        (checks("issued"), checks("verified")),
        (1.0, 0.0),
        "the minted leaf is known from the log: {page}"
    );
    let renewed = common::read_certs(&dir.join("cert.pem"));
    let leaf = writ_ca::CertInfo::parse(&renewed[0]).unwrap();
    assert_eq!(leaf.dns_names, ["web.internal"]);
}
