//! End to end: denying an identity stops every way of obtaining a certificate for it —
//! renewal over mTLS (on a connection whose certificate the server has already verified
//! and cached), bootstrap tokens, admin mints — until it is allowed again.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Server, assert_success, writ};
use tonic::Code;
use writ_agent::client::{ServerTrust, connect};
use writ_agent::files::read_identity;
use writ_ca::{KeyType, PrivateKey, SpiffeId, TrustDomain, build_csr};
use writ_proto::v1::SignRequest;

const ID: &str = "spiffe://cluster.local/ns/default/sa/web";
const OTHER: &str = "spiffe://cluster.local/ns/default/sa/db";

fn csr_for(id: &str) -> Vec<u8> {
    let key = PrivateKey::generate(KeyType::EcP256).unwrap();
    build_csr(&key, &SpiffeId::parse(id).unwrap(), &[]).unwrap()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_stops_every_issuance_path_and_allow_restores_it() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &[]);
    let dir = tmp.path().join("web");
    assert_success(&server.mint(ID, &dir, &[]), &["x509", "mint"]);
    let me = read_identity(&dir).unwrap().unwrap();
    let trust = ServerTrust::Bundle {
        trust_domain: TrustDomain::parse("cluster.local").unwrap(),
        roots: me.bundle.clone(),
    };
    // One connection for the whole test: the server caches the verified client
    // certificate per connection's leaf, so the deny must not be bypassed by that cache.
    let mut client = connect(&server.addr, trust, Some(&me)).await.unwrap();
    let sign = |csr: Vec<u8>| SignRequest {
        csr,
        ttl_seconds: 0,
    };
    client
        .sign(sign(csr_for(ID)))
        .await
        .expect("renewal before the deny");

    // A token minted before the deny, to redeem while denied.
    let before = server.admin_json(&["token", "create", "--spiffe-id", ID]);
    let token_file = tmp.path().join("web.token");
    std::fs::write(&token_file, before["token"].as_str().unwrap()).unwrap();

    let denied = server.admin_json(&["identity", "deny", ID, "--reason", "key copied off host"]);
    assert_eq!(denied["spiffe_id"], ID);
    assert_eq!(denied["reason"], "key copied off host");
    let list = server.admin_json(&["identity", "list"]);
    assert_eq!(list["denied"].as_array().unwrap().len(), 1);
    assert_eq!(list["denied"][0]["spiffe_id"], ID);

    // Renewal on the same connection, the very next request.
    let err = client.sign(sign(csr_for(ID))).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains(ID), "{}", err.message());
    assert!(
        err.message().contains("writ identity allow"),
        "{}",
        err.message()
    );
    assert!(
        !err.message().contains("key copied"),
        "the reason is for admins, not the denied caller: {}",
        err.message()
    );
    // The CLI renewal says the same.
    let d = dir.display().to_string();
    let out = writ(&["renew", "--server", &server.addr, "--dir", &d]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("writ identity allow"),
        "{}",
        stderr(&out)
    );

    // Bootstrap: refused, and the token is left pending (allow makes it usable again;
    // revoke it if the machine is not to be trusted).
    let out_dir = tmp.path().join("vm").display().to_string();
    let t = token_file.display().to_string();
    let redeem = || {
        writ(&[
            "bootstrap",
            "--server",
            &server.addr,
            "--token-file",
            &t,
            "--out-dir",
            &out_dir,
        ])
    };
    let out = redeem();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("denied"), "{}", stderr(&out));
    assert!(
        !stderr(&out).contains("token create"),
        "a new token would be refused too: {}",
        stderr(&out)
    );
    let tokens = server.admin_json(&["token", "list"]);
    assert_eq!(tokens["tokens"][0]["state"], "pending", "{tokens}");

    // No new token, no admin mint.
    let out = server.admin(&["token", "create", "--spiffe-id", ID]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("denied"), "{}", stderr(&out));
    let out = server.mint(ID, &tmp.path().join("minted"), &[]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("PermissionDenied"),
        "{}",
        stderr(&out)
    );

    // Other identities are untouched.
    assert_success(
        &server.mint(OTHER, &tmp.path().join("db"), &[]),
        &["x509", "mint"],
    );
    // The CA's own identity cannot be denied.
    let out = server.admin(&["identity", "deny", "spiffe://cluster.local/writ/server"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("own identity"), "{}", stderr(&out));

    let allowed = server.admin_json(&["identity", "allow", ID]);
    assert_eq!(allowed["was_denied"], true);
    let again = server.admin_json(&["identity", "allow", ID]);
    assert_eq!(again["was_denied"], false);
    assert!(
        server.admin_json(&["identity", "list"])["denied"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    client
        .sign(sign(csr_for(ID)))
        .await
        .expect("renewal after the allow, same connection");
    assert_success(&redeem(), &["bootstrap"]);
}

#[test]
fn a_deny_survives_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut server = Server::start(&data, &[]);
    server.admin_json(&["identity", "deny", ID]);
    server.stop();
    let server = Server::start(&data, &[]);
    let out = server.mint(ID, &tmp.path().join("web"), &[]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("writ identity allow"),
        "{}",
        stderr(&out)
    );
    let out = server.admin(&["identity", "deny", "spiffe://elsewhere.org/x"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("trust domain"), "{}", stderr(&out));
}
