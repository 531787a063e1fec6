//! `writ agent --jwt-file`: the first certificate and every renewal authenticated by a
//! Kubernetes-style projected token, re-read each time.
#![allow(clippy::unwrap_used)]

mod common;
#[path = "common/jwt.rs"]
mod jwt;

use std::path::Path;
use std::time::Duration;

use common::agent::Agent;
use common::{wait_until, writ};
use jwt::{HOUR, K8S_ISSUER, TestIssuer, start_server};
use writ_agent::files::read_identity;
use writ_agent::status::AgentStatus;

fn id_in(out: &Path) -> Option<String> {
    let id = read_identity(out).ok()??;
    Some(id.leaf_info().ok()?.spiffe_id().ok()?.to_string())
}

fn rotations(out: &Path) -> u64 {
    AgentStatus::read(out).map_or(0, |s| s.rotations)
}

/// Replaces the token file atomically, as the kubelet does.
fn write_token(path: &Path, token: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, token).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn the_agent_gets_and_rotates_its_certificate_with_a_projected_token() {
    let tmp = tempfile::tempdir().unwrap();
    let issuer = TestIssuer::rsa(K8S_ISSUER, "k1");
    let (server, _) = start_server(
        tmp.path(),
        &issuer,
        "min_ttl = \"1s\"\ndefault_ttl = \"4s\"",
    );
    let bundle = tmp.path().join("root-cert.pem");
    std::fs::write(&bundle, server.admin(&["bundle", "show"]).stdout).unwrap();
    let token = tmp.path().join("token");
    write_token(&token, &issuer.k8s_token("prod", "api", "istio-ca", HOUR));

    let out = tmp.path().join("id");
    let _agent = Agent::start(
        &server,
        &out,
        &[
            "--jwt-file",
            token.to_str().unwrap(),
            "--ca-bundle",
            bundle.to_str().unwrap(),
        ],
    );
    assert!(wait_until(Duration::from_secs(15), || id_in(&out).is_some()));
    assert_eq!(
        id_in(&out).unwrap(),
        "spiffe://cluster.local/ns/prod/sa/api"
    );
    assert!(
        wait_until(Duration::from_secs(30), || rotations(&out) >= 2),
        "no rotations: {:?}",
        AgentStatus::read(&out).and_then(|s| s.last_error)
    );

    // The kubelet rotates the projected token: the agent reads the new one.
    write_token(&token, &issuer.k8s_token("prod", "api", "istio-ca", HOUR));
    let seen = rotations(&out);
    assert!(wait_until(Duration::from_secs(30), || rotations(&out) > seen));

    // A token that no longer verifies (expired) stops renewals: proof that every
    // renewal is authenticated by the file's current token, not by the certificate.
    write_token(&token, &issuer.k8s_token("prod", "api", "istio-ca", -600));
    assert!(
        wait_until(Duration::from_secs(30), || AgentStatus::read(&out)
            .and_then(|s| s.last_error)
            .is_some_and(|e| e.contains("expired"))),
        "the agent kept renewing with an expired token"
    );
}

#[test]
fn a_fingerprint_is_enough_for_first_contact_and_nothing_is_a_usage_error() {
    let tmp = tempfile::tempdir().unwrap();
    let issuer = TestIssuer::ec(K8S_ISSUER, "e1");
    let (server, _) = start_server(tmp.path(), &issuer, "");
    let token = tmp.path().join("token");
    write_token(&token, &issuer.k8s_token("dev", "db", "istio-ca", HOUR));
    let out = tmp.path().join("id");
    let _agent = Agent::start(
        &server,
        &out,
        &[
            "--jwt-file",
            token.to_str().unwrap(),
            "--ca-fingerprint",
            &server.root_fingerprint,
        ],
    );
    assert!(wait_until(Duration::from_secs(15), || id_in(&out).is_some()));
    assert_eq!(id_in(&out).unwrap(), "spiffe://cluster.local/ns/dev/sa/db");

    // A wrong pin: the agent refuses the server before sending the token.
    let other = tmp.path().join("other");
    let bad = writ(&[
        "agent",
        "--server",
        &server.addr,
        "--out-dir",
        other.to_str().unwrap(),
        "--jwt-file",
        token.to_str().unwrap(),
        "--ca-fingerprint",
        &"0".repeat(64),
    ]);
    assert!(!bad.status.success());
    assert!(id_in(&other).is_none());

    // Without any way to recognise the CA, the agent says what to add.
    let out = writ(&[
        "agent",
        "--server",
        &server.addr,
        "--out-dir",
        other.to_str().unwrap(),
        "--jwt-file",
        token.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--ca-bundle") && err.contains("--ca-fingerprint"),
        "{err}"
    );
}
