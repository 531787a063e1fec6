//! A trust-domain move as writ's own clients live it: the CA restarts in a new trust domain
//! with the old one as an alias, and `writ renew` (the agent's renewal) carries a
//! certificate of the old trust domain into the new one.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Server, assert_success, mint_identity, writ};

#[test]
fn renew_follows_the_ca_into_its_new_trust_domain() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let dir = tmp.path().join("web");
    let mut server = Server::start(&data, &["--trust-domain", "old.example"]);
    let old = mint_identity(&server, &dir, "spiffe://old.example/ns/a/sa/web");
    server.stop();

    let server = Server::start(
        &data,
        &[
            "--trust-domain",
            "new.example",
            "--trust-domain-alias",
            "old.example",
        ],
    );
    let d = dir.display().to_string();
    let renew = ["renew", "--server", &server.addr, "--dir", &d];
    assert_success(&writ(&renew), &renew);
    let moved = writ_agent::files::read_identity(&dir).unwrap().unwrap();
    assert_eq!(
        moved.spiffe_id().unwrap().to_string(),
        "spiffe://new.example/ns/a/sa/web"
    );
    assert_eq!(moved.bundle, old.bundle, "same CA, same roots");
    // From now on it is a workload of the new trust domain like any other.
    assert_success(&writ(&renew), &renew);
    let again = writ_agent::files::read_identity(&dir).unwrap().unwrap();
    assert_eq!(again.spiffe_id().unwrap(), moved.spiffe_id().unwrap());
    assert_ne!(again.chain, moved.chain);
}

#[test]
fn a_server_under_another_root_cannot_move_it() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let dir = tmp.path().join("web");
    let mut server = Server::start(&data, &["--trust-domain", "old.example"]);
    mint_identity(&server, &dir, "spiffe://old.example/ns/a/sa/web");
    server.stop();

    let other = tmp.path().join("other");
    let server = Server::start(&other, &["--trust-domain", "new.example"]);
    let d = dir.display().to_string();
    let out = writ(&["renew", "--server", &server.addr, "--dir", &d]);
    assert!(!out.status.success(), "a server under another root");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("server certificate"), "{stderr}");
    let kept = writ_agent::files::read_identity(&dir).unwrap().unwrap();
    assert_eq!(
        kept.spiffe_id().unwrap().to_string(),
        "spiffe://old.example/ns/a/sa/web",
        "nothing written"
    );
}

#[test]
fn a_data_dir_of_another_trust_domain_says_how_to_move_it() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut server = Server::start(&data, &["--trust-domain", "old.example"]);
    server.stop();
    let d = data.display().to_string();
    let out = writ(&[
        "server",
        "--dev",
        "--allow-root",
        "--data-dir",
        &d,
        "--listen",
        "127.0.0.1:0",
        "--trust-domain",
        "new.example",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("holds the CA of trust domain old.example, not new.example")
            && stderr.contains("--trust-domain-alias old.example")
            && !stderr.contains("corrupt"),
        "{stderr}"
    );
}
