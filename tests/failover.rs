//! Clients of several writ servers: `--server a,b` (or the flag repeated) on `writ renew`,
//! `writ bootstrap` and `writ agent` goes on to the next replica when one is down.
//!
//! The two replicas here are two servers of one CA: the second runs on a copy of the
//! first's data directory made while it was stopped, so both hold the same roots,
//! intermediate and tokens.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::agent::Agent;
use common::{Server, assert_success, serial, wait_until, writ};
use writ_agent::files::read_identity;
use writ_agent::status::AgentStatus;

const ID: &str = "spiffe://cluster.local/ns/prod/sa/web";
const VM: &str = "spiffe://cluster.local/vm/build-01";
const TTL: &[&str] = &["--min-ttl", "1s", "--default-ttl", "4s"];

/// Two running replicas of one CA, an identity in `id` and a bootstrap token in `token`
/// (both made before the copy, so both replicas know them).
fn replicas(root: &Path) -> (Server, Server) {
    let (a_dir, b_dir) = (root.join("a"), root.join("b"));
    let mut a = Server::start(&a_dir, TTL);
    common::assert_success(&a.mint_ttl(ID, &root.join("id"), "4s", &[]), &["mint"]);
    let token = a.admin(&["token", "create", "--spiffe-id", VM]);
    assert_success(&token, &["token", "create"]);
    std::fs::write(root.join("token"), &token.stdout).unwrap();
    a.stop();
    let copied = Command::new("cp")
        .arg("-a")
        .arg(&a_dir)
        .arg(&b_dir)
        .status()
        .unwrap();
    assert!(copied.success());
    (Server::start(&a_dir, TTL), Server::start(&b_dir, TTL))
}

#[test]
fn renew_and_bootstrap_skip_a_replica_that_is_down() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut a, mut b) = replicas(tmp.path());
    let id = tmp.path().join("id");
    let d = id.display().to_string();
    let (dead, live) = (a.addr.clone(), b.addr.clone());
    a.kill();

    // The flag repeated, the dead replica first (replicas are tried in order), then
    // second: it is skipped, or never needed.
    for server in [
        vec!["--server", &dead, "--server", &live],
        vec!["--server", &live, "--server", &dead],
    ] {
        let before = serial(&id);
        let mut args = vec!["renew", "--dir", &d];
        args.extend(&server);
        assert_success(&writ(&args), &args);
        assert_ne!(serial(&id), before);
    }
    let list = format!("{dead},{live}");
    let before = serial(&id);
    let args = ["renew", "--server", &list, "--dir", &d];
    assert_success(&writ(&args), &args);
    assert_ne!(serial(&id), before);

    // A token minted before the copy is redeemed at the live replica, once.
    let token = tmp.path().join("token").display().to_string();
    let vm = tmp.path().join("vm");
    let args = [
        "bootstrap",
        "--server",
        &list,
        "--token-file",
        &token,
        "--out-dir",
        &vm.display().to_string(),
    ];
    assert_success(&writ(&args), &args);
    let got = read_identity(&vm).unwrap().unwrap();
    assert_eq!(got.spiffe_id().unwrap().to_string(), VM);

    // Every replica down: one error naming both.
    b.kill();
    let out = writ(&["renew", "--server", &list, "--dir", &d]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("none of the 2 writ servers"), "{err}");
    assert!(err.contains(&dead) && err.contains(&live), "{err}");
}

#[test]
fn a_malformed_server_list_is_refused_before_anything_is_sent() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &[]);
    let id = tmp.path().join("id");
    server.mint_json(ID, &id, &[]);
    let before = serial(&id);
    let d = id.display().to_string();
    for bad in [
        format!("{},no-port", server.addr),
        format!("{},", server.addr),
    ] {
        let out = writ(&["renew", "--server", &bad, "--dir", &d]);
        assert!(!out.status.success(), "{bad}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("host:port"), "{bad}: {err}");
        assert_eq!(serial(&id), before);
    }
}

#[test]
fn the_agent_rotates_and_watches_through_the_replica_that_is_up() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut a, b) = replicas(tmp.path());
    let out = tmp.path().join("id");
    let list = format!("{},{}", a.addr, b.addr);
    a.kill();
    let _agent = Agent::start_at(&list, &out, &[]);
    assert!(
        wait_until(Duration::from_secs(30), || AgentStatus::read(&out)
            .is_some_and(|s| s.rotations >= 2 && s.bundle_transport.is_some())),
        "{:?}",
        AgentStatus::read(&out)
    );
}
