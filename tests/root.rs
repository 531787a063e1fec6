//! End to end: root rotation with zero downtime, cross-signing, refusals, crash safety,
//! and bundle following by the agent.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use common::agent::Agent;
use common::{Server, openssl_verify, read_certs, wait_until};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use writ_agent::files::read_identity;
use writ_ca::{Usage, verify_chain};

fn mint(server: &Server, id: &str, dir: &Path, ttl: &str) {
    common::assert_success(&server.mint_ttl(id, dir, ttl, &[]), &["x509", "mint"]);
}

fn root_status(server: &Server) -> serde_json::Value {
    server.admin_json(&["root", "status"])
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Checks the server's chain against the roots in `bundle.pem` at handshake time: leaves
/// carry only a SPIFFE ID, so there is no DNS name to check.
#[derive(Debug)]
struct BundleVerifier {
    roots: Vec<Vec<u8>>,
}

impl ServerCertVerifier for BundleVerifier {
    fn verify_server_cert(
        &self,
        ee: &CertificateDer<'_>,
        inter: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let chain: Vec<Vec<u8>> = std::iter::once(ee)
            .chain(inter)
            .map(|c| c.to_vec())
            .collect();
        verify_chain(&chain, &self.roots, SystemTime::now(), Usage::Server)
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2".into()))
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            m,
            c,
            d,
            &provider().signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A workload's TLS configs, rebuilt from its files for every connection, as a service that
/// reloads on change would.
fn server_config(dir: &Path) -> Arc<rustls::ServerConfig> {
    let id = read_identity(dir).unwrap().unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for r in &id.bundle {
        roots.add(CertificateDer::from(r.clone())).unwrap();
    }
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .unwrap();
    let chain = id.chain.iter().cloned().map(CertificateDer::from).collect();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(id.key.pkcs8_der().to_vec()));
    Arc::new(
        rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .unwrap(),
    )
}

fn client_config(dir: &Path) -> Arc<rustls::ClientConfig> {
    let id = read_identity(dir).unwrap().unwrap();
    let chain = id.chain.iter().cloned().map(CertificateDer::from).collect();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(id.key.pkcs8_der().to_vec()));
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(BundleVerifier {
                roots: id.bundle.clone(),
            }))
            .with_client_auth_cert(chain, key)
            .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_under_mtls_traffic_fails_no_handshake() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(
        &tmp.path().join("data"),
        &[
            "--min-ttl",
            "1s",
            "--default-ttl",
            "4s",
            "--root-propagation",
            "3s",
        ],
    );
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    mint(
        &server,
        "spiffe://cluster.local/ns/shop/sa/backend",
        &a,
        "4s",
    );
    mint(
        &server,
        "spiffe://cluster.local/ns/shop/sa/frontend",
        &b,
        "4s",
    );
    let old_root = server.root_fingerprint.clone();
    let _agents = (
        Agent::start(&server, &a, &[]),
        Agent::start(&server, &b, &[]),
    );

    // Workload A serves mTLS, reloading its files for each connection.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let a_dir = a.clone();
    let server_failures = Arc::new(AtomicU64::new(0));
    let sf = server_failures.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = tokio_rustls::TlsAcceptor::from(server_config(&a_dir));
            let sf = sf.clone();
            tokio::spawn(async move {
                match acceptor.accept(tcp).await {
                    Ok(mut tls) => {
                        let mut buf = [0u8; 4];
                        if tls.read_exact(&mut buf).await.is_ok() {
                            let _ = tls.write_all(&buf).await;
                            let _ = tls.shutdown().await;
                        }
                    }
                    Err(e) => {
                        eprintln!("server-side handshake failure: {e}");
                        sf.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });

    // Workload B calls A continuously, a new handshake each time.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let client = {
        let (stop, ok, failed, b) = (stop.clone(), ok.clone(), failed.clone(), b.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let connector = tokio_rustls::TlsConnector::from(client_config(&b));
                let result = async {
                    let tcp = tokio::net::TcpStream::connect(addr).await?;
                    let mut tls = connector
                        .connect(ServerName::try_from("backend.invalid").unwrap(), tcp)
                        .await?;
                    tls.write_all(b"ping").await?;
                    let mut buf = [0u8; 4];
                    tls.read_exact(&mut buf).await?;
                    Ok::<_, std::io::Error>(buf)
                }
                .await;
                match result {
                    Ok(buf) if &buf == b"ping" => ok.fetch_add(1, Ordering::Relaxed),
                    Ok(_) => failed.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        eprintln!("client-side failure: {e}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    assert!(wait_until(Duration::from_secs(5), || ok
        .load(Ordering::Relaxed)
        > 5));
    let st = server.admin_json(&["root", "rotate"]);
    assert_eq!(st["rotating"], true);
    let done = {
        let server = &server;
        wait_until(Duration::from_secs(60), || {
            let s = root_status(server);
            s["rotating"] == false
                && s["generations"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|g| g["state"] != "retired")
                    .count()
                    == 1
        })
    };
    assert!(
        done,
        "the rotation did not complete: {}",
        root_status(&server)
    );
    // Let both agents pick up the final bundle and certificates, with traffic still flowing.
    let new_root = root_status(&server)["generations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["state"] == "active")
        .unwrap()["root_fingerprint"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(new_root, old_root);
    for dir in [&a, &b] {
        assert!(
            wait_until(Duration::from_secs(20), || {
                let id = read_identity(dir).unwrap().unwrap();
                id.bundle.len() == 1
                    && writ_ca::x509::sha256_hex(&id.bundle[0]) == new_root
                    && verify_chain(&id.chain, &id.bundle, SystemTime::now(), Usage::Client).is_ok()
            }),
            "{} did not end on the new root alone",
            dir.display()
        );
    }
    let before = ok.load(Ordering::Relaxed);
    assert!(wait_until(Duration::from_secs(5), || ok
        .load(Ordering::Relaxed)
        > before + 5));
    stop.store(true, Ordering::Relaxed);
    client.await.unwrap();
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "client-side failures during rotation"
    );
    assert_eq!(
        server_failures.load(Ordering::Relaxed),
        0,
        "server-side failures during rotation"
    );
    assert!(
        ok.load(Ordering::Relaxed) > 50,
        "too little traffic to mean anything"
    );
}

#[test]
fn old_bundle_verifies_leaves_after_activation_and_steps_are_refused_when_unsafe() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &["--root-propagation", "1h"]);
    let before = tmp.path().join("before");
    mint(&server, "spiffe://cluster.local/a", &before, "1h");
    let old_bundle = tmp.path().join("old-bundle.pem");
    std::fs::copy(before.join("bundle.pem"), &old_bundle).unwrap();

    let st = server.admin_json(&["root", "prepare"]);
    assert_eq!(st["generations"][1]["state"], "prepared");
    assert_eq!(st["next_action"], "activate");
    // Too early: the new root has not had time to propagate.
    let out = server.admin(&["root", "activate"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("FailedPrecondition"), "{err}");
    server.admin_json(&["root", "activate", "--force"]);

    let after = tmp.path().join("after");
    mint(&server, "spiffe://cluster.local/b", &after, "1h");
    let chain = read_certs(&after.join("cert.pem"));
    // A peer that never received the new bundle still verifies the new leaf.
    let old_roots = read_certs(&old_bundle);
    assert_eq!(old_roots.len(), 1);
    verify_chain(&chain, &old_roots, SystemTime::now(), Usage::Client).unwrap();
    assert!(openssl_verify(&old_bundle, &after.join("cert.pem")));
    // And one with only the new root does too.
    let st = root_status(&server);
    let active = st["generations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["state"] == "active")
        .unwrap();
    let new_roots: Vec<Vec<u8>> = read_certs(&after.join("bundle.pem"))
        .into_iter()
        .filter(|r| writ_ca::x509::sha256_hex(r) == active["root_fingerprint"].as_str().unwrap())
        .collect();
    verify_chain(&chain, &new_roots, SystemTime::now(), Usage::Client).unwrap();

    // Retiring with live leaves under the old root is refused, and says what it would break.
    let out = server.admin(&["root", "retire"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("would break"), "{err}");
    let st = server.admin_json(&["root", "retire", "--force"]);
    assert_eq!(st["generations"][0]["state"], "retired");
}

#[test]
fn crash_after_each_phase_resumes_where_it_was() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let args = ["--root-propagation", "1h", "--ca-key-type", "rsa-2048"];
    let mut server = Server::start(&data, &args);
    for step in [
        &["root", "prepare", "--key-type", "ec-p256"][..],
        &["root", "activate", "--force"],
        &["root", "retire", "--force"],
    ] {
        let after = server.admin_json(step);
        server.kill();
        server = Server::start(&data, &args);
        let again = root_status(&server);
        assert_eq!(
            again["generations"], after["generations"],
            "state changed across a crash after {step:?}"
        );
        assert_eq!(again["bundle_sequence"], after["bundle_sequence"]);
    }
    // RSA-2048 root rotated to an ECDSA P-256 one, end to end.
    let st = root_status(&server);
    let gens = st["generations"].as_array().unwrap();
    assert_eq!(gens[0]["key_type"], "rsa-2048");
    assert_eq!(gens[0]["state"], "retired");
    assert_eq!(gens[1]["key_type"], "ec-p256");
    assert_eq!(gens[1]["state"], "active");
    let out = tmp.path().join("leaf");
    mint(&server, "spiffe://cluster.local/c", &out, "1h");
    let chain = read_certs(&out.join("cert.pem"));
    let bundle = read_certs(&out.join("bundle.pem"));
    assert_eq!(bundle.len(), 1);
    assert_eq!(
        writ_ca::CertInfo::parse(&bundle[0]).unwrap().key_type,
        Some(writ_ca::KeyType::EcP256)
    );
    verify_chain(&chain, &bundle, SystemTime::now(), Usage::Client).unwrap();
    assert!(openssl_verify(
        &out.join("bundle.pem"),
        &out.join("cert.pem")
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepared_root_reaches_the_agent_files_and_workload_api_without_renewal() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &[]);
    let out: PathBuf = tmp.path().join("id");
    mint(&server, "spiffe://cluster.local/ns/x/sa/y", &out, "1h");
    let serial = read_identity(&out)
        .unwrap()
        .unwrap()
        .leaf_info()
        .unwrap()
        .serial;
    let socket = tmp.path().join("workload.sock");
    let socket_arg = socket.display().to_string();
    let _agent = Agent::start(&server, &out, &["--workload-api-socket", &socket_arg]);
    assert!(wait_until(Duration::from_secs(10), || socket.exists()));
    let client = spiffe::WorkloadApiClient::connect_to(format!("unix:{}", socket.display()))
        .await
        .unwrap();
    let td = spiffe::TrustDomain::new("cluster.local").unwrap();
    assert_eq!(
        client
            .fetch_x509_bundles()
            .await
            .unwrap()
            .get(&td)
            .unwrap()
            .authorities()
            .len(),
        1
    );

    server.admin_json(&["root", "prepare"]);
    assert!(
        wait_until(Duration::from_secs(10), || read_certs(
            &out.join("bundle.pem")
        )
        .len()
            == 2),
        "the new root did not reach bundle.pem"
    );
    let mut seen = 0;
    for _ in 0..100 {
        seen = client
            .fetch_x509_bundles()
            .await
            .unwrap()
            .get(&td)
            .unwrap()
            .authorities()
            .len();
        if seen == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(seen, 2, "the Workload API still serves one root");
    assert_eq!(
        read_identity(&out)
            .unwrap()
            .unwrap()
            .leaf_info()
            .unwrap()
            .serial,
        serial,
        "a bundle change must not renew"
    );
}

/// Builds an Istio-style `cacerts` directory with the openssl CLI: a root and an
/// intermediate CA under it.
fn openssl_cacerts(dir: &Path) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl is required (apt-get install openssl)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    std::fs::write(dir.join("ca.ext"), "basicConstraints=critical,CA:true,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n").unwrap();
    run(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        "root-key.pem",
    ]);
    run(&[
        "req",
        "-x509",
        "-new",
        "-key",
        "root-key.pem",
        "-days",
        "3650",
        "-subj",
        "/O=Example/CN=Example Root",
        "-out",
        "root-cert.pem",
        "-addext",
        "basicConstraints=critical,CA:true",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    run(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        "ca-key.pem",
    ]);
    run(&[
        "req",
        "-new",
        "-key",
        "ca-key.pem",
        "-subj",
        "/O=Example/CN=Example Mesh CA",
        "-out",
        "ca.csr",
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        "ca.csr",
        "-CA",
        "root-cert.pem",
        "-CAkey",
        "root-key.pem",
        "-CAcreateserial",
        "-days",
        "365",
        "-extfile",
        "ca.ext",
        "-out",
        "ca-cert.pem",
    ]);
    let chain = [
        std::fs::read(dir.join("ca-cert.pem")).unwrap(),
        std::fs::read(dir.join("root-cert.pem")).unwrap(),
    ]
    .concat();
    std::fs::write(dir.join("cert-chain.pem"), chain).unwrap();
}

#[test]
fn plugged_in_ca_imports_and_bad_imports_change_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &["--root-propagation", "1h"]);
    let cacerts = tmp.path().join("cacerts");
    std::fs::create_dir(&cacerts).unwrap();
    openssl_cacerts(&cacerts);
    let p = |f: &str| cacerts.join(f).display().to_string();
    let before = root_status(&server);

    // The root's key in place of the intermediate's: refused with the reason, nothing changes.
    let out = server.admin(&[
        "root",
        "import",
        "--cert",
        &p("ca-cert.pem"),
        "--key",
        &p("root-key.pem"),
        "--chain",
        &p("cert-chain.pem"),
        "--root",
        &p("root-cert.pem"),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("InvalidArgument"), "{err}");
    // The root presented as the CA to sign with, with a chain that does not lead to it.
    let out = server.admin(&[
        "root",
        "import",
        "--cert",
        &p("ca-cert.pem"),
        "--key",
        &p("ca-key.pem"),
        "--chain",
        &p("ca-cert.pem"),
        "--root",
        &p("ca-cert.pem"),
    ]);
    assert!(!out.status.success());
    assert_eq!(root_status(&server), before);

    let st = server.admin_json(&[
        "root",
        "import",
        "--cert",
        &p("ca-cert.pem"),
        "--key",
        &p("ca-key.pem"),
        "--chain",
        &p("cert-chain.pem"),
        "--root",
        &p("root-cert.pem"),
    ]);
    let imported = &st["generations"][1];
    assert_eq!(imported["state"], "prepared");
    assert_eq!(imported["imported"], true);
    server.admin_json(&["root", "activate", "--force"]);
    let out = tmp.path().join("leaf");
    mint(&server, "spiffe://cluster.local/imported", &out, "1h");
    // The leaf verifies under the organisation's own root.
    let chain = read_certs(&out.join("cert.pem"));
    let org_root = read_certs(&cacerts.join("root-cert.pem"));
    verify_chain(&chain, &org_root, SystemTime::now(), Usage::Client).unwrap();
    assert!(openssl_verify(
        &cacerts.join("root-cert.pem"),
        &out.join("cert.pem")
    ));
}
