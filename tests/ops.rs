//! End to end: the operator surface of a real `writ server` — the metrics endpoint scraped
//! over HTTP, readiness, and the gRPC health service through `writ healthcheck`.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::{Server, assert_success, http_get, metric, writ, writ_json};

const ID: &str = "spiffe://cluster.local/ns/prod/sa/api";

fn scrape(server: &Server) -> String {
    let (code, page) = http_get(server.metrics_addr.as_ref().unwrap(), "/metrics").unwrap();
    assert_eq!(code, 200, "{page}");
    page
}

#[test]
fn metrics_count_signing_by_method_and_result() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(
        &tmp.path().join("data"),
        &["--metrics-listen", "127.0.0.1:0"],
    );
    let maddr = server
        .metrics_addr
        .clone()
        .expect("metrics_listen in the start-up JSON");
    assert!(
        maddr.starts_with("127.0.0.1:") && !maddr.ends_with(":0"),
        "{maddr}"
    );

    let (code, body) = http_get(&maddr, "/healthz").unwrap();
    assert_eq!((code, body.as_str()), (200, "ok\n"));
    assert_eq!(http_get(&maddr, "/readyz").unwrap().0, 200);
    assert_eq!(http_get(&maddr, "/nope").unwrap().0, 404);

    let page = scrape(&server);
    assert_eq!(metric(&page, "writ_server_ready", ""), Some(1.0));
    assert_eq!(metric(&page, "writ_server_bundle_watchers", ""), Some(0.0));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as f64;
    let root = metric(
        &page,
        "writ_server_root_cert_expiry_timestamp_seconds",
        "cert=\"G1 root (active)\"",
    )
    .unwrap_or_else(|| panic!("no root expiry in\n{page}"));
    assert!(root > now + 9.0 * 365.0 * 86400.0, "root expires {root}");
    let inter = metric(
        &page,
        "writ_server_intermediate_cert_expiry_timestamp_seconds",
        "cert=\"G1 intermediate (active)\"",
    )
    .unwrap();
    assert!(inter > now + 29.0 * 86400.0 && inter < root);

    // mTLS renewal: one request, ok, one ec-p256 certificate.
    let dir = tmp.path().join("id");
    let d = dir.display().to_string();
    server.admin_json(&["x509", "mint", "--spiffe-id", ID, "--out-dir", &d]);
    writ_json(&["renew", "--server", &server.addr, "--dir", &d]);
    // A bootstrap token: redeemed once, refused when replayed.
    let token = server.admin(&["token", "create", "--spiffe-id", ID]);
    assert_success(&token, &["token", "create"]);
    let token = String::from_utf8(token.stdout).unwrap();
    let tfile = tmp.path().join("t");
    std::fs::write(&tfile, &token).unwrap();
    let copy = tmp.path().join("t2");
    std::fs::write(&copy, &token).unwrap();
    let tf = tfile.display().to_string();
    let out = writ(&[
        "bootstrap",
        "--server",
        &server.addr,
        "--token-file",
        &tf,
        "--out-dir",
        &format!("{d}2"),
    ]);
    assert_success(&out, &["bootstrap"]);
    let cf = copy.display().to_string();
    let out = writ(&[
        "bootstrap",
        "--server",
        &server.addr,
        "--token-file",
        &cf,
        "--out-dir",
        &format!("{d}3"),
    ]);
    assert!(!out.status.success());
    // A forged token (same claims, broken signature): UNAUTHENTICATED.
    let forged = format!("{}x", token.trim());
    std::fs::write(&copy, forged).unwrap();
    let out = writ(&[
        "bootstrap",
        "--server",
        &server.addr,
        "--token-file",
        &cf,
        "--out-dir",
        &format!("{d}4"),
    ]);
    assert!(!out.status.success());

    let page = scrape(&server);
    let get = |name: &str, labels: &str| metric(&page, name, labels).unwrap_or(0.0);
    assert_eq!(
        get(
            "writ_server_sign_requests_total",
            "method=\"mtls\",result=\"ok\""
        ),
        1.0,
        "{page}"
    );
    assert_eq!(
        get(
            "writ_server_sign_requests_total",
            "method=\"token\",result=\"ok\""
        ),
        1.0
    );
    assert_eq!(
        get(
            "writ_server_sign_requests_total",
            "method=\"token\",result=\"permission_denied\""
        ),
        1.0
    );
    assert_eq!(
        get(
            "writ_server_sign_requests_total",
            "method=\"token\",result=\"unauthenticated\""
        ),
        1.0
    );
    assert_eq!(
        get("writ_server_certs_issued_total", "key_type=\"ec-p256\""),
        2.0
    );
    assert_eq!(
        get(
            "writ_server_token_exchanges_total",
            "method=\"token\",result=\"ok\""
        ),
        1.0
    );
    assert_eq!(
        get(
            "writ_server_authentication_failures_total",
            "method=\"token\""
        ),
        1.0
    );
    assert_eq!(
        get("writ_server_sign_duration_seconds_count", "method=\"mtls\""),
        1.0
    );
    assert!(get("writ_server_sign_duration_seconds_sum", "method=\"token\"") > 0.0);
}

#[test]
fn metrics_are_off_by_default() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &[]);
    assert_eq!(server.metrics_addr, None);
}
