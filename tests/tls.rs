//! The server's TLS as an independent client (the `openssl` CLI) sees it: TLS 1.3 only,
//! the AES-128-GCM-SHA256 suite chosen even when the client prefers another, and the
//! key-exchange group the client prefers.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Stdio};

use common::Server;

/// `openssl s_client` against `addr` with `args`; its stdout and whether it connected.
fn s_client(addr: &str, args: &[&str]) -> (String, bool) {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", addr, "-alpn", "h2", "-brief"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("openssl is required (apt-get install openssl)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let connected = text.contains("CONNECTION ESTABLISHED");
    (text, connected)
}

#[test]
fn tls_1_3_only_with_the_server_choosing_aes_128_gcm() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &[]);

    // OpenSSL's own order puts AES-256-GCM-SHA384 first; the server's choice wins.
    let (text, connected) = s_client(&server.addr, &["-tls1_3"]);
    assert!(connected, "{text}");
    assert!(text.contains("TLS_AES_128_GCM_SHA256"), "{text}");
    // A client that offers only another suite still gets one.
    let (text, connected) = s_client(
        &server.addr,
        &["-tls1_3", "-ciphersuites", "TLS_AES_256_GCM_SHA384"],
    );
    assert!(
        connected && text.contains("TLS_AES_256_GCM_SHA384"),
        "{text}"
    );

    // The key-exchange group is the client's choice: OpenSSL prefers X25519 and gets it
    // at once (no retry), a client preferring P-256 gets P-256.
    let (text, connected) = s_client(&server.addr, &["-tls1_3"]);
    assert!(
        connected && text.contains("Server Temp Key: X25519"),
        "{text}"
    );
    let (text, connected) = s_client(&server.addr, &["-tls1_3", "-groups", "P-256:X25519"]);
    assert!(connected && text.contains("prime256v1"), "{text}");

    let (text, connected) = s_client(&server.addr, &["-tls1_2"]);
    assert!(!connected, "TLS 1.2 accepted:\n{text}");
}
