//! End to end: the CA server, the admin CLI and renewal over mTLS.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::{Duration, SystemTime};

use common::{Server, assert_success, openssl_verify, read_certs, writ, writ_json};
use rcgen::{CertificateParams, DistinguishedName, IsCa, SanType};
use tonic::Code;
use writ_agent::client::{ServerTrust, connect};
use writ_agent::files::{Identity, read_identity};
use writ_ca::{CertInfo, KeyType, PrivateKey, TrustDomain, Usage, verify_chain};
use writ_proto::v1::SignRequest;

const ID: &str = "spiffe://cluster.local/ns/default/sa/web";

fn issued_total(server: &Server) -> u64 {
    server.admin_json(&["certs", "list"])["total"]
        .as_u64()
        .unwrap()
}

#[test]
fn mint_then_renew_over_mtls() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &[]);
    let dir = tmp.path().join("id");
    let minted = server.mint_json(ID, &dir, &[]);
    assert_eq!(minted["spiffe_id"], ID);

    let key_mode = std::fs::metadata(std::fs::canonicalize(dir.join("key.pem")).unwrap()).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&key_mode.permissions()) & 0o777,
        0o600
    );

    let dirs = dir.display().to_string();
    let renewed = writ_json(&["renew", "--server", &server.addr, "--dir", &dirs]);
    assert_eq!(renewed["spiffe_id"], ID);
    assert_ne!(renewed["serial"], minted["serial"]);

    let chain = read_certs(&dir.join("cert.pem"));
    let bundle = read_certs(&dir.join("bundle.pem"));
    let peer = verify_chain(&chain, &bundle, SystemTime::now(), Usage::Client).unwrap();
    assert_eq!(peer.id.as_str(), ID);
    assert_eq!(peer.leaf.serial, renewed["serial"].as_str().unwrap());
    assert!(openssl_verify(
        &dir.join("bundle.pem"),
        &dir.join("cert.pem")
    ));

    // The bundle's root is the one the server announced.
    assert_eq!(
        writ_ca::x509::sha256_hex(&bundle[0]),
        server.root_fingerprint
    );
    // Both issuances are in the log, the renewal authenticated by mTLS.
    let log = server.admin_json(&["certs", "list"]);
    assert_eq!(log["certificates"][0]["auth"], "mtls");
    assert_eq!(log["certificates"][1]["auth"], "admin");
}

#[test]
fn inspect_and_bundle_formats() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &[]);
    let dir = tmp.path().join("id");
    server.mint_json(ID, &dir, &["--dns", "web.example", "--key-type", "ec-p384"]);
    let cert = dir.join("cert.pem").display().to_string();
    let info = writ_json(&["cert", "inspect", &cert]);
    assert_eq!(info[0]["spiffe_id"], ID);
    assert_eq!(info[0]["dns_names"][0], "web.example");
    assert_eq!(info[0]["key_type"], "ec-p384");
    assert_eq!(info[1]["is_ca"], true);
    let text = writ(&["cert", "inspect", &cert]);
    assert_success(&text, &["cert", "inspect"]);
    assert!(
        String::from_utf8_lossy(&text.stdout)
            .contains("SPIFFE ID:  spiffe://cluster.local/ns/default/sa/web")
    );

    let jwks = server.admin_json(&["bundle", "show", "--format", "spiffe"]);
    let key = &jwks["keys"][0];
    assert_eq!(key["use"], "x509-svid");
    assert_eq!(key["kty"], "EC");
    assert!(key.get("kid").is_none());
    assert_eq!(key["x5c"].as_array().unwrap().len(), 1);
    assert!(jwks["spiffe_sequence"].as_u64().unwrap() >= 1);
    assert!(jwks["spiffe_refresh_hint"].as_u64().unwrap() > 0);
    let pem = server.admin(&["bundle", "show"]);
    assert_success(&pem, &["bundle", "show"]);
    assert!(String::from_utf8_lossy(&pem.stdout).starts_with("-----BEGIN CERTIFICATE-----"));

    let bad = writ(&["cert", "inspect", "/nonexistent/cert.pem"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("/nonexistent/cert.pem"));
}

/// A key rcgen can sign a CSR with although ring would refuse it: RSA-1024.
struct Rsa1024 {
    key: rsa::PrivateKey,
    public: Vec<u8>,
}

impl Rsa1024 {
    fn new() -> Self {
        use rsa::pkcs1::EncodeRsaPublicKey;
        let key = rsa::PrivateKey::new_unchecked(&mut getrandom::SysRng, 1024).unwrap();
        let public = key
            .to_public_key()
            .to_pkcs1_der()
            .unwrap()
            .as_bytes()
            .to_vec();
        Self { key, public }
    }
}

impl rcgen::PublicKeyData for Rsa1024 {
    fn der_bytes(&self) -> &[u8] {
        &self.public
    }
    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_RSA_SHA256
    }
}

impl rcgen::SigningKey for Rsa1024 {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        use rsa::signature::{SignatureEncoding, Signer};
        let sk = rsa::pkcs1v15::SigningKey::<rsa::sha2::Sha256>::new(self.key.clone());
        Ok(sk.sign(msg).to_vec())
    }
}

fn csr(sans: Vec<SanType>, ca: bool, key: &impl rcgen::SigningKey) -> Vec<u8> {
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    p.subject_alt_names = sans;
    if ca {
        p.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    }
    p.serialize_request(key).unwrap().der().to_vec()
}

fn uri(s: &str) -> SanType {
    SanType::URI(s.try_into().unwrap())
}

async fn sign_with(
    server: &Server,
    who: &Identity,
    trust_roots: Vec<Vec<u8>>,
    csr: Vec<u8>,
    ttl: u64,
) -> Result<writ_proto::v1::SignResponse, tonic::Status> {
    let trust = ServerTrust::Bundle {
        trust_domain: TrustDomain::parse("cluster.local").unwrap(),
        roots: trust_roots,
    };
    let mut client = connect(&server.addr, trust, Some(who))
        .await
        .expect("connect");
    client
        .sign(SignRequest {
            csr,
            ttl_seconds: ttl,
        })
        .await
        .map(|r| r.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_with_precise_codes_and_not_recorded() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(
        &tmp.path().join("data"),
        &["--min-ttl", "1s", "--default-ttl", "1h"],
    );
    let dir = tmp.path().join("id");
    server.mint_json(ID, &dir, &[]);
    let me = read_identity(&dir).unwrap().unwrap();
    let roots = me.bundle.clone();
    let before = issued_total(&server);

    let key = PrivateKey::generate(KeyType::EcP256).unwrap();
    let k = key.rcgen_pair();
    let good = csr(vec![uri(ID)], false, k);

    let mut tampered = csr(
        vec![uri("spiffe://cluster.local/ns/default/sa/wex")],
        false,
        k,
    );
    let pos = tampered.windows(3).position(|w| w == b"wex").unwrap();
    tampered[pos + 2] = b'b';

    let cases: Vec<(&str, Vec<u8>, Code)> = vec![
        (
            "another identity",
            csr(
                vec![uri("spiffe://cluster.local/ns/default/sa/db")],
                false,
                k,
            ),
            Code::PermissionDenied,
        ),
        ("tampered signature", tampered, Code::InvalidArgument),
        (
            "RSA-1024",
            csr(vec![uri(ID)], false, &Rsa1024::new()),
            Code::InvalidArgument,
        ),
        (
            "two URI SANs",
            csr(vec![uri(ID), uri(ID)], false, k),
            Code::InvalidArgument,
        ),
        (
            "other trust domain",
            csr(
                vec![uri("spiffe://other.example/ns/default/sa/web")],
                false,
                k,
            ),
            Code::InvalidArgument,
        ),
        (
            "IP SAN",
            csr(
                vec![uri(ID), SanType::IpAddress("10.1.2.3".parse().unwrap())],
                false,
                k,
            ),
            Code::InvalidArgument,
        ),
        (
            "e-mail SAN",
            csr(
                vec![
                    uri(ID),
                    SanType::Rfc822Name("a@example.org".try_into().unwrap()),
                ],
                false,
                k,
            ),
            Code::InvalidArgument,
        ),
        (
            "DNS not granted",
            csr(
                vec![
                    uri(ID),
                    SanType::DnsName("evil.example".try_into().unwrap()),
                ],
                false,
                k,
            ),
            Code::PermissionDenied,
        ),
        (
            "cA=true",
            csr(vec![uri(ID)], true, k),
            Code::InvalidArgument,
        ),
        (
            "65 KiB of garbage",
            vec![0x5a; 65 * 1024],
            Code::InvalidArgument,
        ),
        ("empty", Vec::new(), Code::InvalidArgument),
        (
            "truncated DER",
            good[..good.len() / 2].to_vec(),
            Code::InvalidArgument,
        ),
    ];
    for (what, body, code) in cases {
        let err = sign_with(&server, &me, roots.clone(), body, 0)
            .await
            .expect_err(what);
        assert_eq!(err.code(), code, "{what}: {}", err.message());
        assert!(!err.message().is_empty(), "{what}: empty message");
    }
    let err = sign_with(
        &server,
        &me,
        roots.clone(),
        csr(vec![uri(ID)], false, &Rsa1024::new()),
        0,
    )
    .await
    .unwrap_err();
    assert!(err.message().contains("1024"), "{}", err.message());

    // No credential at all.
    let trust = ServerTrust::Bundle {
        trust_domain: TrustDomain::parse("cluster.local").unwrap(),
        roots: roots.clone(),
    };
    let mut anon = connect(&server.addr, trust, None).await.unwrap();
    let err = anon
        .sign(SignRequest {
            csr: good.clone(),
            ttl_seconds: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);

    // A certificate from another CA.
    let other = Server::start(&tmp.path().join("other"), &[]);
    let other_dir = tmp.path().join("other-id");
    other.mint_json(ID, &other_dir, &[]);
    let stranger = read_identity(&other_dir).unwrap().unwrap();
    let err = sign_with(&server, &stranger, roots.clone(), good.clone(), 0)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{}", err.message());

    assert_eq!(
        issued_total(&server),
        before,
        "a refused request was recorded"
    );

    // Above the maximum TTL: clamped to it, never honoured.
    let resp = sign_with(&server, &me, roots.clone(), good.clone(), 7 * 24 * 3600)
        .await
        .unwrap();
    let leaf = CertInfo::parse(&resp.chain[0]).unwrap();
    let life = leaf.not_after.duration_since(SystemTime::now()).unwrap();
    assert!(
        life <= Duration::from_secs(24 * 3600) && life > Duration::from_secs(24 * 3600 - 60),
        "{life:?}"
    );

    // An expired client certificate cannot renew, and the error says so.
    let short = tmp.path().join("short");
    server.mint_json(ID, &short, &["--ttl", "2s"]);
    let expiring = read_identity(&short).unwrap().unwrap();
    let not_after = expiring.leaf_info().unwrap().not_after;
    if let Ok(d) = not_after.duration_since(SystemTime::now()) {
        tokio::time::sleep(d + Duration::from_millis(1100)).await;
    }
    let err = sign_with(&server, &expiring, roots, good, 0)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("expired"), "{}", err.message());
}

#[test]
fn restart_keeps_root_log_and_unique_serials() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut server = Server::start(&data, &[]);
    let fp = server.root_fingerprint.clone();
    for i in 0..3 {
        server.mint_json(ID, &tmp.path().join(format!("a{i}")), &[]);
    }
    let before = server.admin_json(&["certs", "list"]);
    server.kill();

    let server = Server::start(&data, &[]);
    assert_eq!(server.root_fingerprint, fp);
    for i in 0..3 {
        server.mint_json(ID, &tmp.path().join(format!("b{i}")), &[]);
    }
    let after = server.admin_json(&["certs", "list", "--limit", "1000"]);
    // Three mints, plus the serving certificate the restarted server issued itself.
    assert_eq!(
        after["total"].as_u64().unwrap(),
        before["total"].as_u64().unwrap() + 4
    );
    let serials: Vec<&str> = after["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["serial"].as_str().unwrap())
        .collect();
    let mut unique = serials.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), serials.len());
    // The earlier entries are still there.
    for c in before["certificates"].as_array().unwrap() {
        assert!(serials.contains(&c["serial"].as_str().unwrap()));
    }
}

#[test]
fn data_dir_and_key_files_are_private() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let _server = Server::start(&data, &[]);
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("admin.sock")), 0o600);
    for entry in walk(&data.join("db")) {
        assert_eq!(
            mode(&entry) & 0o077,
            0,
            "{} is group/world accessible",
            entry.display()
        );
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![dir.to_owned()];
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn admin_socket_refuses_other_users() {
    if !rustix_is_root() {
        eprintln!("skipped: this test runs the admin client as `nobody`, which needs root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // A socket directory `nobody` can reach, so the refusal comes from writ's uid check,
    // not only from file permissions.
    let sockdir = tmp.path().join("sock");
    std::fs::create_dir(&sockdir).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let socket = sockdir.join("admin.sock");
    let socket_s = socket.display().to_string();
    // The server refuses a socket directory others can reach: open it up after start.
    std::fs::set_permissions(&sockdir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let server = Server::start(&tmp.path().join("data"), &["--admin-socket", &socket_s]);
    std::fs::set_permissions(&sockdir, std::fs::Permissions::from_mode(0o777)).unwrap();
    // Loosen the socket's mode so the kernel lets `nobody` connect at all.
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o777)).unwrap();

    let nobody = nix::unistd::User::from_name("nobody")
        .unwrap()
        .expect("user nobody");
    let out = std::process::Command::new(common::writ_bin())
        .args(["bundle", "show", "--admin-socket", &socket_s])
        .uid(nobody.uid.as_raw())
        .gid(nobody.gid.as_raw())
        .output()
        .unwrap();
    assert!(!out.status.success(), "nobody reached the admin API");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("admin"), "{err}");
    // The owner still can.
    let ok = writ(&["bundle", "show", "--admin-socket", &socket_s]);
    assert_success(&ok, &["bundle", "show"]);
    drop(server);
}

use std::os::unix::process::CommandExt;

fn rustix_is_root() -> bool {
    nix::unistd::geteuid().is_root()
}
