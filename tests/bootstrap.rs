//! End to end: one-time bootstrap tokens, from `writ token create` through `writ bootstrap`
//! to renewal, and every way a token must be refused without changing its state.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use common::{Server, assert_success, openssl_verify, read_certs, writ, writ_json};
use tonic::Code;
use writ_agent::client::{ServerTrust, connect};
use writ_ca::{KeyType, PrivateKey, SpiffeId, TrustDomain, Usage, build_csr, verify_chain};
use writ_proto::v1::{SignRequest, SignResponse};

const ID: &str = "spiffe://cluster.local/vm/build-01";
const OTHER_ID: &str = "spiffe://cluster.local/vm/db-01";

/// `writ token create ... -o json`.
fn create_token(server: &Server, id: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["token", "create", "--spiffe-id", id];
    args.extend_from_slice(extra);
    server.admin_json(&args)
}

/// The `token list` entry for `jti`.
fn token_entry(server: &Server, jti: &str) -> serde_json::Value {
    let list = server.admin_json(&["token", "list"]);
    list["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["jti"] == jti)
        .unwrap_or_else(|| panic!("token {jti} not listed: {list}"))
        .clone()
}

fn token_state(server: &Server, jti: &str) -> String {
    token_entry(server, jti)["state"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn write_token(dir: &Path, name: &str, token: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("{token}\n")).unwrap();
    p
}

/// `writ bootstrap --server ADDR --token-file FILE --out-dir DIR ARGS...`.
fn bootstrap(addr: &str, token_file: &Path, out_dir: &Path, extra: &[&str]) -> Output {
    let (t, o) = (
        token_file.display().to_string(),
        out_dir.display().to_string(),
    );
    let mut args = vec![
        "bootstrap",
        "--server",
        addr,
        "--token-file",
        &t,
        "--out-dir",
        &o,
    ];
    args.extend_from_slice(extra);
    writ(&args)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts a CLI run failed and its error says `needle` without echoing `token`.
fn assert_failed(out: &Output, needle: &str, token: &str) {
    let err = stderr(out);
    assert!(!out.status.success(), "expected failure, got success");
    assert!(err.contains(needle), "expected {needle:?} in: {err}");
    assert!(
        !err.contains(token),
        "the token leaked into the error: {err}"
    );
}

/// A CSR for a fresh key, as the raw gRPC tests send it.
fn csr_for(id: &str, dns: &[&str]) -> Vec<u8> {
    let key = PrivateKey::generate(KeyType::EcP256).unwrap();
    let dns: Vec<String> = dns.iter().map(|s| s.to_string()).collect();
    build_csr(&key, &SpiffeId::parse(id).unwrap(), &dns).unwrap()
}

/// One `Sign` call presenting `token` as a bearer credential, trusting the server by the
/// root fingerprint, with no client certificate: exactly what `writ bootstrap` sends.
async fn sign_with_token(
    server: &Server,
    token: &str,
    csr: Vec<u8>,
) -> Result<SignResponse, tonic::Status> {
    let trust = ServerTrust::PinnedRoot {
        trust_domain: TrustDomain::parse("cluster.local").unwrap(),
        fingerprint: server.root_fingerprint.clone(),
    };
    let mut client = connect(&server.addr, trust, None).await.expect("connect");
    let mut req = tonic::Request::new(SignRequest {
        csr,
        ttl_seconds: 0,
    });
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ASCII metadata"),
    );
    client.sign(req).await.map(|r| r.into_inner())
}

/// The token's payload as JSON (the middle segment).
fn payload(token: &str) -> serde_json::Value {
    let seg = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&B64.decode(seg).unwrap()).unwrap()
}

fn encode_json(v: &serde_json::Value) -> String {
    B64.encode(serde_json::to_vec(v).unwrap())
}

#[test]
fn create_bootstrap_list_then_renew() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &[]);

    // Text mode prints the token alone on stdout, so `> vm.token` works.
    let out = server.admin(&[
        "token",
        "create",
        "--spiffe-id",
        ID,
        "--dns",
        "build-01.example",
    ]);
    assert_success(&out, &["token", "create"]);
    let stdout = String::from_utf8(out.stdout.clone()).unwrap();
    assert_eq!(stdout.lines().count(), 1, "stdout: {stdout}");
    let token = stdout.trim().to_owned();
    assert_eq!(token.split('.').count(), 3);
    assert!(!stderr(&out).contains(&token));
    let claims = payload(&token);
    let jti = claims["jti"].as_str().unwrap().to_owned();
    assert_eq!(claims["sub"], ID);
    assert_eq!(claims["ca_fingerprint"], server.root_fingerprint.as_str());
    assert_eq!(token_state(&server, &jti), "pending");

    let file = write_token(tmp.path(), "vm.token", &token);
    let spare = write_token(tmp.path(), "copy.token", &token);
    let dir = tmp.path().join("id");
    let out = bootstrap(&server.addr, &file, &dir, &["-o", "json"]);
    assert_success(&out, &["bootstrap"]);
    let done: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(done["spiffe_id"], ID);
    assert_eq!(done["redeemed"], true);
    assert!(!file.exists(), "the spent token file must be deleted");

    // The certificate verifies under the bundle written beside it, whose root is the one
    // the token pinned.
    let chain = read_certs(&dir.join("cert.pem"));
    let bundle = read_certs(&dir.join("bundle.pem"));
    let peer = verify_chain(&chain, &bundle, SystemTime::now(), Usage::Client).unwrap();
    assert_eq!(peer.id.as_str(), ID);
    assert_eq!(peer.leaf.dns_names, vec!["build-01.example".to_string()]);
    assert_eq!(
        writ_ca::x509::sha256_hex(&bundle[0]),
        server.root_fingerprint
    );
    assert!(openssl_verify(
        &dir.join("bundle.pem"),
        &dir.join("cert.pem")
    ));

    // The token is used and names the certificate it bought; the log says how.
    let entry = token_entry(&server, &jti);
    assert_eq!(entry["state"], "used");
    assert_eq!(entry["serial"], done["serial"]);
    assert!(entry["used_at"].is_string());
    let log = server.admin_json(&["certs", "list"]);
    assert_eq!(log["certificates"][0]["auth"], "token");
    assert_eq!(log["certificates"][0]["serial"], done["serial"]);

    // Replaying a copy into a fresh out dir is refused and changes nothing.
    let replay = bootstrap(&server.addr, &spare, &tmp.path().join("id2"), &[]);
    assert_failed(&replay, "token already used", &token);
    assert!(stderr(&replay).contains(&format!("writ token create --spiffe-id {ID}")));
    assert!(!tmp.path().join("id2").join("cert.pem").exists());
    assert_eq!(token_entry(&server, &jti)["serial"], done["serial"]);

    // Text list shows it too.
    let text = server.admin(&["token", "list"]);
    assert_success(&text, &["token", "list"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains(&jti) && text.contains("used"), "{text}");

    // The bootstrapped identity renews over mTLS like any other.
    let dirs = dir.display().to_string();
    let renewed = writ_json(&["renew", "--server", &server.addr, "--dir", &dirs]);
    assert_eq!(renewed["spiffe_id"], ID);
    assert_ne!(renewed["serial"], done["serial"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_redemptions_exactly_one_wins() {
    let tmp = tempfile::tempdir().unwrap();
    let server = std::sync::Arc::new(Server::start(&tmp.path().join("data"), &[]));
    let minted = create_token(&server, ID, &[]);
    let token = minted["token"].as_str().unwrap().to_owned();
    let jti = minted["jti"].as_str().unwrap().to_owned();

    // Connect first, then fire all 50 at once, so the requests really race.
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(50));
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (server, token, barrier) = (server.clone(), token.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            let trust = ServerTrust::PinnedRoot {
                trust_domain: TrustDomain::parse("cluster.local").unwrap(),
                fingerprint: server.root_fingerprint.clone(),
            };
            let mut client = connect(&server.addr, trust, None).await.expect("connect");
            let mut req = tonic::Request::new(SignRequest {
                csr: csr_for(ID, &[]),
                ttl_seconds: 0,
            });
            req.metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
            barrier.wait().await;
            client.sign(req).await.map(|r| r.into_inner())
        }));
    }
    let mut won = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(resp) => won.push(resp),
            Err(s) => {
                assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
                assert!(s.message().contains("token already used"), "{s:?}");
            }
        }
    }
    assert_eq!(won.len(), 1, "exactly one redemption must succeed");
    let entry = token_entry(&server, &jti);
    assert_eq!(entry["state"], "used");
    assert_eq!(entry["serial"], won[0].serial.as_str());
    // Exactly one certificate was issued for the token.
    let log = server.admin_json(&["certs", "list"]);
    let by_token = log["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["auth"] == "token")
        .count();
    assert_eq!(by_token, 1);
}

#[test]
fn revoked_token_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &[]);
    let minted = create_token(&server, ID, &[]);
    let token = minted["token"].as_str().unwrap();
    let jti = minted["jti"].as_str().unwrap();
    let out = server.admin(&["token", "revoke", jti]);
    assert_success(&out, &["token", "revoke"]);
    assert_eq!(token_state(&server, jti), "revoked");

    let file = write_token(tmp.path(), "vm.token", token);
    let out = bootstrap(&server.addr, &file, &tmp.path().join("id"), &[]);
    assert_failed(&out, "token revoked", token);
    assert!(file.exists(), "a refused token file is left in place");
    assert_eq!(token_state(&server, jti), "revoked");

    // Revoking an unknown id says so.
    let out = server.admin(&["token", "revoke", &"0".repeat(32)]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("NotFound"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_malformed_tokens_are_unauthenticated_and_change_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &[]);
    // Another CA of the same trust domain: its tokens are well-formed but not ours.
    let other = Server::start(&tmp.path().join("other"), &[]);
    let minted = create_token(&server, ID, &[]);
    let token = minted["token"].as_str().unwrap().to_owned();
    let jti = minted["jti"].as_str().unwrap().to_owned();
    let foreign = create_token(&other, ID, &[])["token"]
        .as_str()
        .unwrap()
        .to_owned();

    let parts: Vec<&str> = token.split('.').collect();
    let (header, body, sig) = (parts[0], parts[1], parts[2]);
    let claims = payload(&token);
    let with_claim = |k: &str, v: &str| {
        let mut c = claims.clone();
        c[k] = serde_json::Value::String(v.into());
        format!("{header}.{}.{sig}", encode_json(&c))
    };
    let alg = |a: &str| encode_json(&serde_json::json!({"alg": a, "typ": "JWT"}));
    // HS256 keyed with public material an attacker has (the CA root certificate): the
    // classic algorithm-confusion forgery.
    let root = read_certs_from_bundle(&server);
    let hs_input = format!("{}.{body}", alg("HS256"));
    let hs_sig = ring::hmac::sign(
        &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &root),
        hs_input.as_bytes(),
    );
    let hs256 = format!("{hs_input}.{}", B64.encode(hs_sig.as_ref()));

    let cases: Vec<(&str, String, &str)> = vec![
        (
            "wrong audience",
            with_claim("aud", "writ-bootstrap:other.example"),
            "signature does not verify",
        ),
        (
            "wrong issuer",
            with_claim("iss", "writ://other.example"),
            "signature does not verify",
        ),
        (
            "payload tampered (other identity)",
            with_claim("sub", OTHER_ID),
            "signature does not verify",
        ),
        (
            "header tampered",
            format!(
                "{}.{body}.{sig}",
                encode_json(&serde_json::json!({"alg": "ES256", "typ": "JWT", "kid": "x"}))
            ),
            "",
        ),
        (
            "signed by another CA's key",
            foreign,
            "signature does not verify",
        ),
        ("alg none", format!("{}.{body}.", alg("none")), "algorithm"),
        ("HS256 with public material", hs256, "algorithm"),
        (
            "signature of another token",
            format!("{header}.{body}.{}", B64.encode([7u8; 64])),
            "signature does not verify",
        ),
        ("garbage", "not-a-token".into(), "malformed"),
        ("empty", String::new(), ""),
        ("oversized", format!("{token}{}", "A".repeat(9000)), "bytes"),
    ];
    for (name, forged, needle) in &cases {
        let err = sign_with_token(&server, forged, csr_for(ID, &[]))
            .await
            .expect_err(name);
        assert_eq!(err.code(), Code::Unauthenticated, "{name}: {err:?}");
        assert!(
            err.message().contains(needle),
            "{name}: expected {needle:?} in {:?}",
            err.message()
        );
        assert!(!err.message().contains(&token), "{name}: token echoed");
    }
    // A non-bearer scheme is refused the same way.
    let trust = ServerTrust::PinnedRoot {
        trust_domain: TrustDomain::parse("cluster.local").unwrap(),
        fingerprint: server.root_fingerprint.clone(),
    };
    let mut client = connect(&server.addr, trust, None).await.unwrap();
    let mut req = tonic::Request::new(SignRequest {
        csr: csr_for(ID, &[]),
        ttl_seconds: 0,
    });
    req.metadata_mut()
        .insert("authorization", format!("Basic {token}").parse().unwrap());
    let err = client.sign(req).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);

    // None of it touched the real token, which still works.
    assert_eq!(token_state(&server, &jti), "pending");
    let ok = sign_with_token(&server, &token, csr_for(ID, &[])).await;
    assert!(ok.is_ok(), "{ok:?}");
    assert_eq!(token_state(&server, &jti), "used");
    assert_eq!(token_state(&other, &jti_of(&cases[4].1)), "pending");
}

fn read_certs_from_bundle(server: &Server) -> Vec<u8> {
    let out = server.admin(&["bundle", "show"]);
    assert_success(&out, &["bundle", "show"]);
    writ_ca::x509::certs_from_pem(&out.stdout)
        .unwrap()
        .remove(0)
}

fn jti_of(token: &str) -> String {
    payload(token)["jti"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_csrs_leave_the_token_pending() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &[]);
    let minted = create_token(&server, ID, &["--dns", "build-01.example"]);
    let token = minted["token"].as_str().unwrap().to_owned();
    let jti = minted["jti"].as_str().unwrap().to_owned();

    let cases: Vec<(&str, Vec<u8>, Code)> = vec![
        (
            "CSR for another identity",
            csr_for(OTHER_ID, &[]),
            Code::PermissionDenied,
        ),
        (
            "DNS name not granted",
            csr_for(ID, &["evil.example"]),
            Code::PermissionDenied,
        ),
        ("not a CSR", b"garbage".to_vec(), Code::InvalidArgument),
    ];
    for (name, csr, code) in cases {
        let err = sign_with_token(&server, &token, csr).await.expect_err(name);
        assert_eq!(err.code(), code, "{name}: {err:?}");
        assert_eq!(token_state(&server, &jti), "pending", "{name}");
    }

    // The CLI path for the right identity and granted name still works afterwards.
    let file = write_token(tmp.path(), "vm.token", &token);
    let dir = tmp.path().join("id");
    let out = bootstrap(&server.addr, &file, &dir, &[]);
    assert_success(&out, &["bootstrap"]);
    let peer = verify_chain(
        &read_certs(&dir.join("cert.pem")),
        &read_certs(&dir.join("bundle.pem")),
        SystemTime::now(),
        Usage::Client,
    )
    .unwrap();
    assert_eq!(peer.leaf.dns_names, vec!["build-01.example".to_string()]);
    assert_eq!(token_state(&server, &jti), "used");
    let status = server.admin_json(&["token", "list"]);
    assert_eq!(status["tokens"].as_array().unwrap().len(), 1);
}

#[test]
fn restart_between_mint_and_use_and_crash_after_use() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut server = Server::start(&data, &[]);
    let minted = create_token(&server, ID, &[]);
    let token = minted["token"].as_str().unwrap().to_owned();
    let jti = minted["jti"].as_str().unwrap().to_owned();
    server.stop();

    // A restart (on another port: the token pins the root, not an address) keeps it.
    let mut server = Server::start(&data, &[]);
    assert_eq!(token_state(&server, &jti), "pending");
    let file = write_token(tmp.path(), "vm.token", &token);
    let out = bootstrap(&server.addr, &file, &tmp.path().join("id"), &["-o", "json"]);
    assert_success(&out, &["bootstrap"]);
    let done: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();

    // SIGKILL right after the redemption: it was durable before the reply.
    server.kill();
    let server = Server::start(&data, &[]);
    let entry = token_entry(&server, &jti);
    assert_eq!(entry["state"], "used");
    assert_eq!(entry["serial"], done["serial"]);
    let file = write_token(tmp.path(), "again.token", &token);
    let out = bootstrap(&server.addr, &file, &tmp.path().join("id2"), &[]);
    assert_failed(&out, "token already used", &token);
}

#[test]
fn impostor_server_never_gets_the_token() {
    let tmp = tempfile::tempdir().unwrap();
    let real = Server::start(&tmp.path().join("real"), &[]);
    // Same trust domain, its own root: it would happily accept anything it is sent.
    let impostor = Server::start(&tmp.path().join("impostor"), &[]);
    assert_ne!(real.root_fingerprint, impostor.root_fingerprint);
    let minted = create_token(&real, ID, &[]);
    let token = minted["token"].as_str().unwrap();
    let jti = minted["jti"].as_str().unwrap();
    let before = impostor.admin_json(&["certs", "list"])["total"].clone();

    let file = write_token(tmp.path(), "vm.token", token);
    let dir = tmp.path().join("id");
    let out = bootstrap(&impostor.addr, &file, &dir, &[]);
    assert_failed(&out, &real.root_fingerprint, token);
    assert!(stderr(&out).contains("pins"), "{}", stderr(&out));
    assert!(file.exists(), "the token must survive a refused server");
    assert!(!dir.join("cert.pem").exists());
    // The impostor issued nothing and knows no token; the real one is still pending.
    assert_eq!(impostor.admin_json(&["certs", "list"])["total"], before);
    assert_eq!(
        impostor.admin_json(&["token", "list"])["tokens"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    assert_eq!(token_state(&real, jti), "pending");

    // The same file then works at the real server.
    let out = bootstrap(&real.addr, &file, &dir, &[]);
    assert_success(&out, &["bootstrap"]);
    assert_eq!(token_state(&real, jti), "used");
}

#[test]
fn existing_identity_skips_the_token_and_expired_one_explains() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(
        &tmp.path().join("data"),
        &["--min-ttl", "1s", "--default-ttl", "1h"],
    );
    let dir = tmp.path().join("id");
    server.mint_json(ID, &dir, &[]);

    // A valid certificate is kept; the (nonexistent) token file is never read.
    let missing = tmp.path().join("no-such.token");
    let out = bootstrap(&server.addr, &missing, &dir, &["-o", "json"]);
    assert_success(&out, &["bootstrap"]);
    let done: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(done["redeemed"], false);
    assert_eq!(done["spiffe_id"], ID);

    // An expired certificate without a token: say what to ask the admin for.
    let old = tmp.path().join("old");
    let minted = server.mint_json(OTHER_ID, &old, &["--ttl", "1s"]);
    let not_after = minted["not_after"].as_str().unwrap().to_owned();
    assert!(common::wait_until(Duration::from_secs(10), || {
        let id = writ_agent::files::read_identity(&old).unwrap().unwrap();
        id.leaf_info().unwrap().not_after < SystemTime::now()
    }));
    let out = bootstrap(&server.addr, &missing, &old, &[]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("expired"), "{err}");
    assert!(
        err.contains(&format!("writ token create --spiffe-id {OTHER_ID}")),
        "{err} (not_after {not_after})"
    );
}

#[test]
fn no_log_or_error_carries_the_token() {
    use std::process::Command;

    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = common::LoggedServer::start(&data, &tmp.path().join("server.log"), "debug");
    let addr = server.addr();
    let datas = data.display().to_string();
    let admin = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--data-dir", &datas, "-o", "json"]);
        let out = writ(&all);
        assert_success(&out, args);
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let minted = admin(&["token", "create", "--spiffe-id", ID]);
    let token = minted["token"].as_str().unwrap().to_owned();
    let revoked = admin(&["token", "create", "--spiffe-id", OTHER_ID]);
    let revoked_token = revoked["token"].as_str().unwrap().to_owned();
    admin(&["token", "revoke", revoked["jti"].as_str().unwrap()]);

    // A success, a replay, a revoked token and a tampered one, the CLI logging verbosely.
    let run = |tok: &str, name: &str| {
        let file = write_token(tmp.path(), name, tok);
        let (f, o) = (
            file.display().to_string(),
            tmp.path()
                .join(name)
                .with_extension("d")
                .display()
                .to_string(),
        );
        Command::new(common::writ_bin())
            .args([
                "bootstrap",
                "--server",
                &addr,
                "--token-file",
                &f,
                "--out-dir",
                &o,
            ])
            .env("WRIT_LOG", "debug")
            .output()
            .unwrap()
    };
    let tampered = format!("{}x", &token[..token.len() - 1]);
    let outs = [
        run(&token, "a.token"),
        run(&token, "b.token"),
        run(&revoked_token, "c.token"),
        run(&tampered, "d.token"),
    ];
    assert!(outs[0].status.success());
    assert!(outs[1..].iter().all(|o| !o.status.success()));
    let log = server.stop();
    assert!(log.contains(minted["jti"].as_str().unwrap()), "{log}");
    // The signature segment alone would let nobody redeem anything, but a token is never
    // logged in part either: check each segment.
    let mut texts = vec![("server log".to_owned(), log)];
    for (i, o) in outs.iter().enumerate() {
        texts.push((format!("CLI run {i}"), stderr(o)));
        texts.push((
            format!("CLI run {i} stdout"),
            String::from_utf8_lossy(&o.stdout).into_owned(),
        ));
    }
    for tok in [&token, &revoked_token, &tampered] {
        for seg in tok.split('.').filter(|s| s.len() > 16) {
            for (what, text) in &texts {
                assert!(!text.contains(seg), "{what} contains a token segment");
            }
        }
    }
}

#[test]
fn a_requested_lifetime_is_granted_within_the_servers_bounds_and_a_clamp_is_told() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &["--max-ttl", "2h"]);
    let redeem = |name: &str, ttl: &str| {
        let token = create_token(&server, ID, &[])["token"]
            .as_str()
            .unwrap()
            .to_owned();
        let file = write_token(tmp.path(), &format!("{name}.token"), &token);
        let dir = tmp.path().join(name);
        let out = bootstrap(&server.addr, &file, &dir, &["--ttl", ttl, "-o", "json"]);
        assert_success(&out, &["bootstrap"]);
        let done: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        (done, stderr(&out))
    };

    let (done, err) = redeem("within", "90m");
    assert_eq!(
        (
            done["ttl_seconds"].as_u64(),
            done["requested_ttl_seconds"].as_u64()
        ),
        (Some(5400), Some(5400))
    );
    assert!(!err.contains("note:"), "{err}");

    let (done, err) = redeem("above", "48h");
    assert_eq!(
        (
            done["ttl_seconds"].as_u64(),
            done["requested_ttl_seconds"].as_u64()
        ),
        (Some(7200), Some(172_800))
    );
    assert!(
        err.contains(
            "note: asked for 48h, got 2h: the server's max_ttl is 2h (its --max-ttl flag or max_ttl setting)"
        ),
        "{err}"
    );
}
