//! Istio compatibility: a client generated from its own copy of Istio's CA proto (the
//! `istio-ca-client` crate), with tonic's own TLS stack, obtains a certificate from a real
//! `writ server` with a Kubernetes-style JWT and renews it over mTLS. Then every way a
//! platform JWT must be refused, and trust-domain aliases.
#![allow(clippy::unwrap_used)]

mod common;
#[path = "common/jwt.rs"]
mod jwt;

use std::path::Path;
use std::process::Command;

use istio_ca_client::istio_certificate_service_client::IstioCertificateServiceClient;
use istio_ca_client::{IstioCertificateRequest, IstioCertificateResponse};
use rcgen::{CertificateParams, KeyPair, SanType};
use serde_json::json;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Status};

use common::{Server, assert_success};
use jwt::{HOUR, K8S_ISSUER, TestIssuer, k8s_claims, start_server, write_jwks};

/// The bundle's roots as PEM, from the admin CLI.
fn roots_pem(server: &Server) -> String {
    let out = server.admin(&["bundle", "show"]);
    assert_success(&out, &["bundle", "show"]);
    String::from_utf8(out.stdout).unwrap()
}

/// A TLS channel as istio-agent opens one: the CA verified by name under the roots, and
/// optionally a client certificate.
async fn channel(server: &Server, roots: &str, client: Option<(&str, &str)>) -> Channel {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(roots))
        .domain_name("localhost");
    if let Some((chain, key)) = client {
        tls = tls.identity(Identity::from_pem(chain, key));
    }
    Endpoint::from_shared(format!("https://{}", server.addr))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// A PEM CSR for a new P-256 key naming `san` (Istio puts its own guess of its identity
/// there), and the key as PKCS#8 PEM.
fn csr(san: Option<&str>) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::default();
    if let Some(uri) = san {
        p.subject_alt_names = vec![SanType::URI(uri.try_into().unwrap())];
    }
    let csr = p.serialize_request(&key).unwrap().pem().unwrap();
    (csr, key.serialize_pem())
}

async fn create(
    channel: &Channel,
    csr: &str,
    validity: i64,
    bearer: Option<&str>,
) -> Result<IstioCertificateResponse, Status> {
    let mut req = tonic::Request::new(IstioCertificateRequest {
        csr: csr.to_owned(),
        validity_duration: validity,
        metadata: None,
    });
    if let Some(token) = bearer {
        req.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    req.metadata_mut()
        .insert("clusterid", "Kubernetes".parse().unwrap());
    IstioCertificateServiceClient::new(channel.clone())
        .create_certificate(req)
        .await
        .map(|r| r.into_inner())
}

/// `openssl x509 -noout ARGS` on one PEM certificate.
fn openssl_x509(pem: &str, args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.pem");
    std::fs::write(&path, pem).unwrap();
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-in"])
        .arg(&path)
        .args(args)
        .output()
        .expect("openssl is required for these tests");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn pem_count(pem: &str) -> usize {
    pem.matches("-----BEGIN CERTIFICATE-----").count()
}

/// Checks Istio's layout element by element; returns (leaf, chain without roots).
fn check_layout(
    resp: &IstioCertificateResponse,
    roots: &str,
    id: &str,
    dir: &Path,
) -> (String, String) {
    let chain = &resp.cert_chain;
    assert!(chain.len() >= 3, "leaf, intermediate, roots: {chain:?}");
    for (i, e) in chain[..chain.len() - 1].iter().enumerate() {
        assert_eq!(
            pem_count(e),
            1,
            "element {i} must be exactly one certificate"
        );
    }
    let leaf = &chain[0];
    assert!(openssl_x509(leaf, &["-ext", "subjectAltName"]).contains(&format!("URI:{id}")));
    assert!(openssl_x509(leaf, &["-ext", "basicConstraints"]).contains("CA:FALSE"));
    assert!(openssl_x509(&chain[1], &["-ext", "basicConstraints"]).contains("CA:TRUE"));
    let last = chain.last().unwrap();
    assert_eq!(
        last.trim(),
        roots.trim(),
        "the last element is every root, together"
    );
    // openssl agrees the chain verifies under those roots.
    let bundle = dir.join("roots.pem");
    let untrusted = dir.join("chain.pem");
    std::fs::write(&bundle, last).unwrap();
    let without_roots = chain[..chain.len() - 1].concat();
    std::fs::write(&untrusted, &without_roots).unwrap();
    assert!(common::openssl_verify(&bundle, &untrusted));
    (leaf.clone(), without_roots)
}

fn lifetime_secs(leaf: &str) -> i64 {
    let dates = openssl_x509(leaf, &["-startdate", "-enddate", "-dateopt", "iso_8601"]);
    let get = |k: &str| {
        let line = dates.lines().find(|l| l.starts_with(k)).unwrap();
        let v = line.split_once('=').unwrap().1.trim().trim_end_matches('Z');
        let out = Command::new("date")
            .args(["-u", "-d", v, "+%s"])
            .output()
            .unwrap();
        String::from_utf8(out.stdout)
            .unwrap()
            .trim()
            .parse::<i64>()
            .unwrap()
    };
    get("notAfter") - get("notBefore")
}

struct Setup {
    _dir: tempfile::TempDir,
    server: Server,
    issuer: TestIssuer,
    jwks: std::path::PathBuf,
    roots: String,
    work: std::path::PathBuf,
}

fn setup(extra_config: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let issuer = TestIssuer::rsa(K8S_ISSUER, "k1");
    let (server, jwks) = start_server(dir.path(), &issuer, extra_config);
    let roots = roots_pem(&server);
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    Setup {
        _dir: dir,
        server,
        issuer,
        jwks,
        roots,
        work,
    }
}

const WEB: &str = "spiffe://cluster.local/ns/prod/sa/web";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_istio_client_gets_a_certificate_with_a_k8s_jwt_and_renews_over_mtls() {
    let s = setup("");
    let anon = channel(&s.server, &s.roots, None).await;
    let token = s.issuer.k8s_token("prod", "web", "istio-ca", HOUR);
    let (csr_pem, key_pem) = csr(Some(WEB));
    let resp = create(&anon, &csr_pem, 0, Some(&token)).await.unwrap();
    let (leaf, chain) = check_layout(&resp, &s.roots, WEB, &s.work);
    // validity_duration 0: the server's default (1h), plus the 10 s backdate.
    assert_eq!(lifetime_secs(&leaf), 3600 + 10);

    // Renewal: the certificate is the credential; the CSR names nothing at all, and the
    // identity still comes from the certificate.
    let mtls = channel(&s.server, &s.roots, Some((&chain, &key_pem))).await;
    let (csr2, _key2) = csr(None);
    let renewed = create(&mtls, &csr2, 600, None).await.unwrap();
    let (leaf2, _) = check_layout(&renewed, &s.roots, WEB, &s.work);
    assert_ne!(leaf2, leaf);
    assert_eq!(lifetime_secs(&leaf2), 600 + 10);

    // Above the maximum (24h) Istio's rule applies: refused, not clamped.
    let err = create(&mtls, &csr2, 48 * HOUR, None).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    // Impersonation is never honoured.
    let mut req = tonic::Request::new(IstioCertificateRequest {
        csr: csr2.clone(),
        validity_duration: 0,
        metadata: Some(prost_types::Struct {
            fields: [(
                "ImpersonatedIdentity".to_owned(),
                prost_types::Value {
                    kind: Some(prost_types::value::Kind::StringValue(
                        "spiffe://cluster.local/ns/kube-system/sa/admin".into(),
                    )),
                },
            )]
            .into(),
        }),
    });
    req.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let err = IstioCertificateServiceClient::new(anon.clone())
        .create_certificate(req)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    // A CSR whose signature does not verify is refused even though its SANs are ignored.
    let mut bad = csr_pem.clone();
    let at = bad.len() - 40;
    bad.replace_range(at..at + 1, if &bad[at..at + 1] == "A" { "B" } else { "A" });
    let err = create(&anon, &bad, 0, Some(&token)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    // No credential at all.
    let err = create(&anon, &csr2, 0, None).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn platform_jwts_are_refused_for_every_flaw_and_identity_comes_from_the_token() {
    let s = setup("");
    let anon = channel(&s.server, &s.roots, None).await;
    let before = s.server.admin_json(&["certs", "list"])["total"]
        .as_u64()
        .unwrap();
    let (csr_pem, _) = csr(Some(WEB));
    let good = k8s_claims(K8S_ISSUER, "prod", "web", "istio-ca", HOUR);

    let stranger = TestIssuer::rsa("https://evil.example", "k1");
    let other_key = TestIssuer::rsa(K8S_ISSUER, "k1");
    let unknown_kid = TestIssuer::rsa(K8S_ISSUER, "k9");
    let tampered = {
        let t = s.issuer.token(&good);
        let mut parts: Vec<&str> = t.split('.').collect();
        let evil = k8s_claims(K8S_ISSUER, "kube-system", "admin", "istio-ca", HOUR);
        let payload = base64_url(evil.to_string().as_bytes());
        parts[1] = &payload;
        parts.join(".")
    };
    let none = format!(
        "{}.{}.",
        base64_url(json!({"alg": "none", "kid": "k1"}).to_string().as_bytes()),
        base64_url(good.to_string().as_bytes())
    );
    let hs256 = {
        let msg = format!(
            "{}.{}",
            base64_url(json!({"alg": "HS256", "kid": "k1"}).to_string().as_bytes()),
            base64_url(good.to_string().as_bytes())
        );
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &s.issuer.public_key_bytes());
        let tag = ring::hmac::sign(&key, msg.as_bytes());
        format!("{msg}.{}", base64_url(tag.as_ref()))
    };
    let cases = [
        (
            "unknown issuer",
            stranger.k8s_token("prod", "web", "istio-ca", HOUR),
            "not trusted",
        ),
        (
            "wrong audience",
            s.issuer.k8s_token("prod", "web", "vault", HOUR),
            "audience",
        ),
        (
            "expired",
            s.issuer.k8s_token("prod", "web", "istio-ca", -600),
            "expired",
        ),
        ("alg none", none, "algorithm"),
        ("HS256 keyed with the public key", hs256, "algorithm"),
        (
            "unknown kid",
            unknown_kid.k8s_token("prod", "web", "istio-ca", HOUR),
            "no key",
        ),
        (
            "signed by another key",
            other_key.k8s_token("prod", "web", "istio-ca", HOUR),
            "signature",
        ),
        ("tampered payload", tampered, "signature"),
    ];
    for (what, token, says) in &cases {
        let err = create(&anon, &csr_pem, 0, Some(token)).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{what}: {err:?}");
        assert!(err.message().contains(says), "{what}: {}", err.message());
        // writ's own API refuses it the same way.
        let err = writ_sign(&anon, &csr_pem, token).await.unwrap_err();
        assert_eq!(
            err.code(),
            Code::Unauthenticated,
            "{what} (writ API): {err:?}"
        );
    }
    let after = s.server.admin_json(&["certs", "list"])["total"]
        .as_u64()
        .unwrap();
    assert_eq!(after, before, "a refused token must not issue anything");

    // A token for SA `a` with a CSR naming SA `b`: Istio's API issues `a`, never `b`...
    let token_a = s.issuer.k8s_token("prod", "a", "istio-ca", HOUR);
    let (csr_b, _) = csr(Some("spiffe://cluster.local/ns/prod/sa/b"));
    let resp = create(&anon, &csr_b, 0, Some(&token_a)).await.unwrap();
    let sans = openssl_x509(&resp.cert_chain[0], &["-ext", "subjectAltName"]);
    assert!(
        sans.contains("URI:spiffe://cluster.local/ns/prod/sa/a"),
        "{sans}"
    );
    assert!(!sans.contains("sa/b"), "{sans}");
    // ...and writ's own API, where the CSR must name the proven identity, refuses it.
    let err = writ_sign(&anon, &csr_b, &token_a).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let (csr_a, _) = csr(Some("spiffe://cluster.local/ns/prod/sa/a"));
    let signed = writ_sign(&anon, &csr_a, &token_a).await.unwrap();
    assert_eq!(signed.spiffe_id, "spiffe://cluster.local/ns/prod/sa/a");

    // The issuer rotates its key: the new JWKS file is picked up without a restart, and
    // tokens signed with the retired key stop working.
    let rotated = TestIssuer::ec(K8S_ISSUER, "k2");
    write_jwks(&s.jwks, &[&rotated]);
    let fresh = rotated.k8s_token("prod", "web", "istio-ca", HOUR);
    create(&anon, &csr_pem, 0, Some(&fresh)).await.unwrap();
    let old = s.issuer.k8s_token("prod", "web", "istio-ca", HOUR);
    let err = create(&anon, &csr_pem, 0, Some(&old)).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
}

async fn writ_sign(
    channel: &Channel,
    csr_pem: &str,
    token: &str,
) -> Result<writ_proto::v1::SignResponse, Status> {
    let mut req = tonic::Request::new(writ_proto::v1::SignRequest {
        csr: csr_pem.as_bytes().to_vec(),
        ttl_seconds: 0,
    });
    req.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    writ_proto::v1::ca_client::CaClient::new(channel.clone())
        .sign(req)
        .await
        .map(|r| r.into_inner())
}

fn base64_url(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alias_renews_old_certificates_into_the_new_trust_domain() {
    let mut s = setup("trust_domain = \"old.example\"");
    let data = s.server.data_dir.clone();
    let anon = channel(&s.server, &s.roots, None).await;
    let token = s.issuer.k8s_token("prod", "web", "istio-ca", HOUR);
    let (csr_pem, key_pem) = csr(None);
    let resp = create(&anon, &csr_pem, 0, Some(&token)).await.unwrap();
    let (_, old_chain) = check_layout(
        &resp,
        &s.roots,
        "spiffe://old.example/ns/prod/sa/web",
        &s.work,
    );
    s.server.stop();

    // The migration: same data dir, new trust domain, the old one as an alias.
    let jwks = s.jwks.display().to_string();
    let restart = |td: &str, alias: Option<&str>| {
        let mut args = vec!["--trust-domain", td];
        if let Some(a) = alias {
            args.extend(["--trust-domain-alias", a]);
        }
        let config = s
            .work
            .join(format!("{td}-{}.toml", alias.unwrap_or("none")));
        std::fs::write(
            &config,
            format!("[[jwt_issuers]]\nissuer = \"{K8S_ISSUER}\"\njwks_file = \"{jwks}\"\n"),
        )
        .unwrap();
        let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        all.extend(["--config".into(), config.display().to_string()]);
        Server::start(&data, &all.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let mut server = restart("new.example", Some("old.example"));
    let mtls = channel(&server, &s.roots, Some((&old_chain, &key_pem))).await;
    let (csr2, key2) = csr(None);
    let renewed = create(&mtls, &csr2, 0, None).await.unwrap();
    let (_, new_chain) = check_layout(
        &renewed,
        &s.roots,
        "spiffe://new.example/ns/prod/sa/web",
        &s.work,
    );
    // New tokens map into the new trust domain too.
    let anon = channel(&server, &s.roots, None).await;
    let (csr3, _) = csr(None);
    let resp = create(&anon, &csr3, 0, Some(&token)).await.unwrap();
    check_layout(
        &resp,
        &s.roots,
        "spiffe://new.example/ns/prod/sa/web",
        &s.work,
    );
    server.stop();

    // Without the alias, old.example is as unrelated as any other trust domain.
    let server = restart("new.example", None);
    let mtls_old = channel(&server, &s.roots, Some((&old_chain, &key_pem))).await;
    let err = create(&mtls_old, &csr2, 0, None).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(
        err.message().contains("trust_domain_aliases"),
        "{}",
        err.message()
    );
    let mtls_new = channel(&server, &s.roots, Some((&new_chain, &key2))).await;
    let (csr4, _) = csr(None);
    create(&mtls_new, &csr4, 0, None).await.unwrap();
}
