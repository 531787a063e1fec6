//! End to end: `writ agent` against a real server, with short-lived certificates.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::agent::Agent;
use common::{Server, serial, wait_until, writ, writ_bin};
use writ_agent::files::read_identity;
use writ_agent::status::AgentStatus;

const ID: &str = "spiffe://cluster.local/ns/prod/sa/api";

fn mint(server: &Server, dir: &Path, ttl: &str) {
    common::assert_success(&server.mint_ttl(ID, dir, ttl, &[]), &["x509", "mint"]);
}

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotates_repeatedly_with_matching_files_hook_and_workload_api() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(
        &tmp.path().join("data"),
        &["--min-ttl", "1s", "--default-ttl", "4s"],
    );
    let out = tmp.path().join("id");
    mint(&server, &out, "4s");
    let first = read_identity(&out).unwrap().unwrap();
    let hook_log = tmp.path().join("hook.log");
    let socket = tmp.path().join("workload.sock");
    let hook = format!("echo rotated >> {}", hook_log.display());
    let _agent = Agent::start(
        &server,
        &out,
        &[
            "--on-rotate",
            &hook,
            "--workload-api-socket",
            socket.to_str().unwrap(),
        ],
    );

    // A reader that reloads constantly must never see a mismatched or broken set.
    let stop = Arc::new(AtomicBool::new(false));
    let bad = Arc::new(AtomicUsize::new(0));
    let reader = {
        let (stop, bad, out) = (stop.clone(), bad.clone(), out.clone());
        std::thread::spawn(move || {
            let mut seen = BTreeSet::new();
            while !stop.load(Ordering::Relaxed) {
                match read_identity(&out) {
                    Ok(Some(id)) => {
                        id.validate().unwrap();
                        seen.insert((id.leaf_info().unwrap().serial, id.key.pkcs8_der().to_vec()));
                    }
                    _ => {
                        bad.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            seen
        })
    };

    // The Workload API, through an independent client (the rust-spiffe crate).
    assert!(wait_until(Duration::from_secs(10), || socket.exists()));
    let client = spiffe::WorkloadApiClient::connect_to(format!("unix:{}", socket.display()))
        .await
        .unwrap();
    let svid = client.fetch_x509_svid().await.unwrap();
    assert_eq!(svid.spiffe_id().to_string(), ID);
    let bundles = client.fetch_x509_bundles().await.unwrap();
    assert!(
        bundles
            .get(&spiffe::TrustDomain::new("cluster.local").unwrap())
            .is_some()
    );
    let mut updates = client.stream_x509_svids().await.unwrap();
    use futures_util::StreamExt;
    let initial = updates.next().await.unwrap().unwrap();
    let pushed = tokio::time::timeout(Duration::from_secs(20), updates.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_ne!(
        pushed.leaf().as_bytes(),
        initial.leaf().as_bytes(),
        "no update pushed after rotation"
    );

    assert!(
        wait_until(Duration::from_secs(40), || lines(&hook_log) >= 3),
        "the agent did not rotate three times: hook ran {} times",
        lines(&hook_log)
    );
    stop.store(true, Ordering::Relaxed);
    let seen = reader.join().unwrap();
    assert_eq!(
        bad.load(Ordering::Relaxed),
        0,
        "reader saw a missing or broken identity"
    );
    let serials: BTreeSet<_> = seen.iter().map(|(s, _)| s.clone()).collect();
    let keys: BTreeSet<_> = seen.iter().map(|(_, k)| k.clone()).collect();
    assert!(serials.len() >= 4, "serials seen: {serials:?}");
    assert_eq!(keys.len(), serials.len(), "a rotation reused a key");
    assert!(!serials.contains(&String::new()));
    assert_ne!(serial(&out), first.leaf_info().unwrap().serial);

    let status = AgentStatus::read(&out).unwrap();
    assert!(status.rotations >= 3);
    assert!(status.next_renewal.is_some());
}

/// `--ttl` above the server's max_ttl: the agent renews for max_ttl and says so in its
/// log once, not at every renewal.
#[test]
fn warns_once_when_granted_a_shorter_lifetime_than_asked() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(
        &tmp.path().join("data"),
        &["--min-ttl", "1s", "--default-ttl", "4s", "--max-ttl", "4s"],
    );
    let out = tmp.path().join("id");
    mint(&server, &out, "4s");
    let log = tmp.path().join("agent.log");
    let mut agent = Agent::start_logged(&server, &out, &["--ttl", "1h"], &log);
    assert!(
        wait_until(Duration::from_secs(30), || AgentStatus::read(&out)
            .is_some_and(|s| s.rotations >= 3)),
        "the agent did not renew three times"
    );
    assert!(agent.alive());
    let text = std::fs::read_to_string(&log).unwrap();
    let warned = text
        .lines()
        .filter(|l| l.contains("asked for 1h, got 4s: the server's max_ttl is 4s"))
        .count();
    assert_eq!(warned, 1, "{text}");
}

#[test]
fn keeps_its_certificate_through_a_ca_outage_and_renews_when_it_returns() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut server = Server::start(&data, &["--min-ttl", "1s", "--default-ttl", "20s"]);
    let addr = server.addr.clone();
    let out = tmp.path().join("id");
    mint(&server, &out, "20s");
    let before = serial(&out);
    let mut agent = Agent::start(&server, &out, &[]);
    assert!(wait_until(Duration::from_secs(10), || AgentStatus::read(
        &out
    )
    .is_some_and(|s| s.pid == agent.pid())));
    server.kill();

    // The renewal window passes while the CA is down: the agent reports it and retries.
    assert!(
        wait_until(Duration::from_secs(20), || AgentStatus::read(&out)
            .is_some_and(|s| s.last_error.is_some())),
        "the agent never reported the outage"
    );
    assert!(agent.alive(), "the agent died during the outage");
    assert_eq!(serial(&out), before, "the certificate changed without a CA");
    let cpu_before = agent.cpu_seconds();
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        agent.cpu_seconds() - cpu_before < 0.2,
        "the agent is busy-looping while the CA is down"
    );

    let _server = Server::start_on(&data, &addr, &["--min-ttl", "1s", "--default-ttl", "20s"]);
    assert!(
        wait_until(Duration::from_secs(10), || serial(&out) != before),
        "the agent did not renew once the CA came back"
    );
    assert!(agent.alive());
}

/// A rolling restart: the server drains on SIGTERM (the agent's bundle watch ends
/// cleanly), comes back on the same address, and the agent follows the bundle again — a
/// root prepared after the restart reaches its `bundle.pem`.
#[test]
fn follows_the_bundle_again_after_the_server_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut server = Server::start(&data, &[]);
    let addr = server.addr.clone();
    let out = tmp.path().join("id");
    mint(&server, &out, "1h");
    let mut agent = Agent::start(&server, &out, &[]);
    assert!(
        wait_until(Duration::from_secs(20), || AgentStatus::read(&out)
            .is_some_and(|s| s.bundle_transport.as_deref() == Some("push"))),
        "the agent never followed the bundle"
    );
    let stopped = server.stop().unwrap();
    assert!(stopped.success(), "writ server exited with {stopped}");

    let server = Server::start_on(&data, &addr, &[]);
    server.admin_json(&["root", "prepare"]);
    let roots = || read_identity(&out).unwrap().unwrap().bundle.len();
    assert!(
        wait_until(Duration::from_secs(30), || roots() == 2),
        "the agent's bundle has {} roots after a root prepare on the restarted server",
        roots()
    );
    assert!(agent.alive());
}

#[test]
fn restarts_from_the_certificate_on_disk_without_a_token() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &[]);
    let out = tmp.path().join("id");

    // Nothing to start from: a clear refusal.
    let empty = writ(&[
        "agent",
        "--server",
        &server.addr,
        "--out-dir",
        out.to_str().unwrap(),
    ]);
    assert!(!empty.status.success());
    let err = String::from_utf8_lossy(&empty.stderr);
    assert!(
        err.contains("no certificate") && err.contains("bootstrap"),
        "{err}"
    );

    mint(&server, &out, "1h");
    for _ in 0..2 {
        let mut agent = Agent::start(&server, &out, &[]);
        assert!(wait_until(Duration::from_secs(10), || AgentStatus::read(
            &out
        )
        .is_some_and(|s| s.pid == agent.pid())));
        assert!(agent.alive());
    }
    let st = writ(&[
        "agent",
        "status",
        "--out-dir",
        out.to_str().unwrap(),
        "-o",
        "json",
    ]);
    assert!(st.status.success());
    let v: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(v["spiffe_id"], ID);
    assert_eq!(v["valid"], true);
    assert_eq!(v["bundle_roots"][0], server.root_fingerprint);
}

#[test]
fn agent_wait_succeeds_once_a_certificate_exists_and_times_out_otherwise() {
    let tmp = tempfile::tempdir().unwrap();
    let out: PathBuf = tmp.path().join("id");
    let o = out.to_str().unwrap();
    let miss = writ(&["agent", "wait", "--out-dir", o, "--timeout", "1s"]);
    assert!(!miss.status.success());
    let err = String::from_utf8_lossy(&miss.stderr);
    assert!(
        err.contains("no valid certificate") && err.contains("after 1s"),
        "{err}"
    );

    let server = Server::start(&tmp.path().join("data"), &[]);
    let waiter = Command::new(writ_bin())
        .args(["agent", "wait", "--out-dir", o, "--timeout", "30s"])
        .spawn()
        .unwrap();
    mint(&server, &out, "1h");
    let status = waiter.wait_with_output().unwrap().status;
    assert!(status.success());
}

#[test]
fn first_identity_from_a_bootstrap_token() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &[]);
    let token = server.admin(&["token", "create", "--spiffe-id", ID]);
    assert!(token.status.success());
    let token_file = tmp.path().join("vm.token");
    std::fs::write(&token_file, &token.stdout).unwrap();
    let out = tmp.path().join("id");
    let log = tmp.path().join("agent.log");
    let asked = std::time::SystemTime::now();
    let mut agent = Agent::start_logged(
        &server,
        &out,
        &[
            "--bootstrap-token-file",
            token_file.to_str().unwrap(),
            "--ttl",
            "30m",
        ],
        &log,
    );
    assert!(wait_until(Duration::from_secs(15), || AgentStatus::read(
        &out
    )
    .is_some_and(|s| s.pid == agent.pid())));
    assert!(agent.alive());
    let identity = read_identity(&out).unwrap().unwrap();
    assert_eq!(identity.spiffe_id().unwrap().as_str(), ID);
    assert!(!token_file.exists(), "the spent token file was kept");
    // The first certificate already has the lifetime asked for, not the server's default.
    let lifetime = identity
        .leaf_info()
        .unwrap()
        .not_after
        .duration_since(asked)
        .unwrap();
    assert!(
        lifetime <= Duration::from_secs(30 * 60 + 1),
        "first certificate lives {lifetime:?}"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("asked for"), "{text}");
}

#[test]
fn an_expired_certificate_names_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &["--min-ttl", "1s"]);
    let out = tmp.path().join("id");
    mint(&server, &out, "1s");
    let not_after = read_identity(&out)
        .unwrap()
        .unwrap()
        .leaf_info()
        .unwrap()
        .not_after;
    if let Ok(left) = not_after.duration_since(std::time::SystemTime::now()) {
        std::thread::sleep(left + Duration::from_millis(1100));
    }
    let res = writ(&[
        "agent",
        "--server",
        &server.addr,
        "--out-dir",
        out.to_str().unwrap(),
    ]);
    assert!(!res.status.success());
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(
        err.contains("expired") && err.contains("writ token create --spiffe-id"),
        "{err}"
    );
}

/// A CA moved into a new trust domain (the old one an alias): the running agent renews
/// into it on its own and then follows the bundle of the moved CA.
#[test]
fn follows_its_ca_into_a_new_trust_domain() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let ttl = ["--min-ttl", "1s", "--default-ttl", "4s"];
    let mut server = Server::start(&data, &ttl);
    let addr = server.addr.clone();
    let out = tmp.path().join("id");
    mint(&server, &out, "4s");
    let mut agent = Agent::start(&server, &out, &[]);
    server.stop();

    let mut args = ttl.to_vec();
    args.extend([
        "--trust-domain",
        "new.example",
        "--trust-domain-alias",
        "cluster.local",
    ]);
    let server = Server::start_on(&data, &addr, &args);
    let id = || {
        read_identity(&out)
            .unwrap()
            .unwrap()
            .spiffe_id()
            .unwrap()
            .to_string()
    };
    assert!(
        wait_until(Duration::from_secs(20), || id()
            == "spiffe://new.example/ns/prod/sa/api"),
        "the agent still holds {}",
        id()
    );
    server.admin_json(&["root", "prepare"]);
    let roots = || read_identity(&out).unwrap().unwrap().bundle.len();
    assert!(
        wait_until(Duration::from_secs(30), || roots() == 2),
        "the moved agent's bundle has {} roots after a root prepare",
        roots()
    );
    assert!(agent.alive());
}
