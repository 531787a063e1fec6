//! Connecting to a writ server: TLS 1.3 over rustls, the server verified by its SPIFFE ID
//! (`spiffe://<td>/writ/server`) under the trust bundle — or, on first contact, under the
//! root whose fingerprint the bootstrap token pins — never by DNS name, so any address
//! that reaches the server works.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tonic::transport::{Channel, Endpoint, Uri};
use writ_ca::{SpiffeId, TrustDomain, Usage, verify_chain, x509::sha256_hex};
use writ_proto::coalesce::Coalesced;
use writ_proto::v1::ca_client::CaClient;

use crate::Error;
use crate::files::Identity;

/// The path of the server's SPIFFE ID.
pub const SERVER_ID_PATH: &str = "writ/server";

/// How the client decides the server is the right CA.
#[derive(Clone, Debug)]
pub enum ServerTrust {
    /// The server's chain must verify under these roots (the trust bundle).
    Bundle {
        /// The trust domain.
        trust_domain: TrustDomain,
        /// Root certificates, DER.
        roots: Vec<Vec<u8>>,
    },
    /// The server's chain must lead to a root with this SHA-256 fingerprint (lowercase hex):
    /// first contact, when all the client has is a bootstrap token.
    PinnedRoot {
        /// The trust domain.
        trust_domain: TrustDomain,
        /// Root fingerprint.
        fingerprint: String,
    },
}

impl ServerTrust {
    fn trust_domain(&self) -> &TrustDomain {
        match self {
            ServerTrust::Bundle { trust_domain, .. }
            | ServerTrust::PinnedRoot { trust_domain, .. } => trust_domain,
        }
    }
}

/// Opens a gRPC channel to the CA at `addr` (`host:port`), presenting `identity`'s
/// certificate when given.
pub async fn connect(
    addr: &str,
    trust: ServerTrust,
    identity: Option<&Identity>,
) -> Result<CaClient<Channel>, Error> {
    let config = client_config(trust, identity)?;
    let channel = channel(addr, config).await?;
    Ok(CaClient::new(channel))
}

/// Like [`connect`] with `identity`'s certificate, for a renewal that sends nothing but
/// that certificate and a CSR: it also accepts the writ server of another trust domain
/// under the same bundle, which is what a CA adopted into a new trust domain (its old one
/// an alias) presents. Nothing secret crosses such a connection — a bearer token would —
/// so the worst a look-alike server can do is refuse or answer with a chain the caller
/// checks anyway.
pub async fn connect_for_renewal(
    addr: &str,
    trust: ServerTrust,
    identity: &Identity,
) -> Result<CaClient<Channel>, Error> {
    let config = config(trust, Some(identity), ServerId::AnyTrustDomain)?;
    let channel = channel(addr, config).await?;
    Ok(CaClient::new(channel))
}

/// A channel to `addr` over TLS with `config`.
pub async fn channel(addr: &str, config: ClientConfig) -> Result<Channel, Error> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let target = addr.to_owned();
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| Error::Connect(format!("{addr:?} is not a host:port address: {e}")))?
        .connect_timeout(Duration::from_secs(10))
        .tcp_nodelay(true);
    endpoint
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let connector = connector.clone();
            let target = target.clone();
            async move {
                let tls = tls_connect(&connector, &target).await?;
                Ok::<_, std::io::Error>(TokioIo::new(Coalesced::new(tls)))
            }
        }))
        .await
        .map_err(|e| unreachable(addr, &e))
}

/// A TLS connection to `addr` (`host:port`), with Nagle off.
pub async fn tls_connect(
    connector: &tokio_rustls::TlsConnector,
    addr: &str,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    // The name is not checked (the verifier checks the SPIFFE ID); SNI is off.
    let name = ServerName::try_from("writ.invalid").map_err(std::io::Error::other)?;
    connector.connect(name, tcp).await
}

/// The error for a server at `addr` that could not be reached or completed no handshake.
pub fn unreachable(addr: &str, e: &dyn std::error::Error) -> Error {
    Error::Connect(format!(
        "cannot reach the writ server at {addr}: {}",
        source_chain(e)
    ))
}

/// The rustls client configuration: TLS 1.3, the SPIFFE server check, an optional client
/// certificate.
pub fn client_config(
    trust: ServerTrust,
    identity: Option<&Identity>,
) -> Result<ClientConfig, Error> {
    config(trust, identity, ServerId::SameTrustDomain)
}

/// Which writ server identities a client accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ServerId {
    /// Only `spiffe://<the caller's trust domain>/writ/server`.
    SameTrustDomain,
    /// `spiffe://<any trust domain>/writ/server` (renewal across a trust-domain move).
    AnyTrustDomain,
}

fn config(
    trust: ServerTrust,
    identity: Option<&Identity>,
    accept: ServerId,
) -> Result<ClientConfig, Error> {
    let provider = Arc::new(writ_proto::tls::crypto_provider());
    let verifier = Arc::new(SpiffeServerVerifier {
        expected: trust
            .trust_domain()
            .workload(SERVER_ID_PATH)
            .map_err(Error::Ca)?,
        accept,
        trust,
        signatures: writ_proto::tls::Tls13Signatures::of(&provider),
        last_verified: Mutex::new(None),
    });
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| Error::Connect(format!("TLS set-up: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match identity {
        Some(id) => {
            let chain = id.chain.iter().cloned().map(CertificateDer::from).collect();
            let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(id.key.pkcs8_der().to_vec()));
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| Error::Connect(format!("client certificate: {e}")))?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    config.enable_sni = false;
    Ok(config)
}

#[derive(Debug)]
struct SpiffeServerVerifier {
    trust: ServerTrust,
    expected: SpiffeId,
    accept: ServerId,
    signatures: writ_proto::tls::Tls13Signatures,
    /// The last chain that verified, until its first certificate expires: a configuration
    /// used for many connections (the bench's simulated fleet, any long-running client)
    /// meets the same server chain each time, and its path needs checking once. Each
    /// handshake still verifies the server's signature over it (CertificateVerify). The
    /// lock is held while verifying, so handshakes meeting a new chain together check it
    /// once.
    last_verified: Mutex<Option<VerifiedChain>>,
}

/// A server chain that verified, and until when that holds.
#[derive(Debug)]
struct VerifiedChain {
    chain: Vec<Vec<u8>>,
    not_after: SystemTime,
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented = || std::iter::once(end_entity).chain(intermediates);
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(now.as_secs());
        let mut last = self.last_verified.lock().unwrap_or_else(|p| p.into_inner());
        if last.as_ref().is_some_and(|v| {
            now < v.not_after
                && v.chain.len() == presented().count()
                && v.chain.iter().zip(presented()).all(|(a, b)| a[..] == b[..])
        }) {
            return Ok(ServerCertVerified::assertion());
        }
        let chain: Vec<Vec<u8>> = presented().map(|c| c.to_vec()).collect();
        let roots = match &self.trust {
            ServerTrust::Bundle { roots, .. } => roots.clone(),
            ServerTrust::PinnedRoot { fingerprint, .. } => {
                match chain.iter().find(|c| sha256_hex(c) == *fingerprint) {
                    Some(root) => vec![root.clone()],
                    None => {
                        return Err(rustls::Error::General(format!(
                            "the server's CA is not the one the token pins (root fingerprint {fingerprint}); refusing to send the token"
                        )));
                    }
                }
            }
        };
        let peer = verify_chain(&chain, &roots, now, Usage::Server)
            .map_err(|e| rustls::Error::General(format!("server certificate: {e}")))?;
        let moved =
            self.accept == ServerId::AnyTrustDomain && peer.id.path() == self.expected.path();
        if peer.id != self.expected && !moved {
            return Err(rustls::Error::General(format!(
                "server presented {} but a writ server of this trust domain is {}",
                peer.id, self.expected
            )));
        }
        // Good until the first certificate of the chain expires; one that cannot be read
        // here (it verified, so this does not happen) is simply not remembered.
        let not_after = chain.iter().skip(1).try_fold(peer.leaf.not_after, |t, c| {
            writ_ca::x509::CertInfo::parse(c).map(|i| t.min(i.not_after))
        });
        *last = not_after
            .ok()
            .map(|not_after| VerifiedChain { chain, not_after });
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signatures.verify_tls12()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signatures.verify_tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.signatures.schemes()
    }
}

/// An error and its causes on one line: transport errors hide the useful part (a refused
/// connection, a certificate complaint) in their sources.
pub fn source_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let msg = s.to_string();
        if !out.contains(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        cur = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use writ_ca::{
        AuthMethod, Caller, Csr, Generation, GenerationState, KeyType, LeafRequest, Policy,
        PrivateKey, Rules, TtlBounds, Validity, build_csr, sign_leaf,
    };

    /// A CA and a server certificate for `spiffe://td.test/writ/server` valid for `ttl`.
    fn server_chain(ttl: Duration) -> (Vec<Vec<u8>>, Vec<u8>, TrustDomain) {
        chain_for(SERVER_ID_PATH, ttl)
    }

    /// A CA and a certificate for `spiffe://td.test/<path>` valid for `ttl`.
    fn chain_for(path: &str, ttl: Duration) -> (Vec<Vec<u8>>, Vec<u8>, TrustDomain) {
        let td = TrustDomain::parse("td.test").unwrap();
        let validity = Validity {
            root: Duration::from_secs(86400),
            intermediate: Duration::from_secs(43200),
            backdate: Duration::from_secs(5),
        };
        let now = SystemTime::now();
        let g = Generation::create(
            1,
            &td,
            KeyType::EcP256,
            validity,
            GenerationState::Active,
            now,
        )
        .unwrap();
        let id = td.workload(path).unwrap();
        let key = PrivateKey::generate(KeyType::EcP256).unwrap();
        let csr = Csr::parse(&build_csr(&key, &id, &[]).unwrap()).unwrap();
        let caller = Caller {
            id,
            dns_allowed: Vec::new(),
            method: AuthMethod::Mtls,
        };
        let template = Policy::new(td.clone(), TtlBounds::default())
            .evaluate(&csr, &LeafRequest::new(&caller, Some(ttl), Rules::WRIT))
            .unwrap();
        let leaf = sign_leaf(&template, &g.intermediate.issuer_ref(), now, Duration::ZERO).unwrap();
        (
            vec![leaf.der, g.intermediate.der.clone()],
            g.root.der.clone(),
            td,
        )
    }

    fn check(
        v: &SpiffeServerVerifier,
        chain: &[Vec<u8>],
        at: SystemTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let certs: Vec<CertificateDer<'_>> = chain
            .iter()
            .map(|c| CertificateDer::from(c.as_slice()))
            .collect();
        let secs = at.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
        v.verify_server_cert(
            &certs[0],
            &certs[1..],
            &ServerName::try_from("writ.invalid").unwrap(),
            &[],
            UnixTime::since_unix_epoch(Duration::from_secs(secs)),
        )
    }

    /// A renewal client of `caller_td` trusting `root`, accepting `accept`.
    fn verifier(caller_td: &str, root: Vec<u8>, accept: ServerId) -> SpiffeServerVerifier {
        let td = TrustDomain::parse(caller_td).unwrap();
        SpiffeServerVerifier {
            expected: td.workload(SERVER_ID_PATH).unwrap(),
            accept,
            trust: ServerTrust::Bundle {
                trust_domain: td,
                roots: vec![root],
            },
            signatures: writ_proto::tls::Tls13Signatures::of(&writ_proto::tls::crypto_provider()),
            last_verified: Mutex::new(None),
        }
    }

    /// A renewal accepts the writ server of the trust domain its CA moved to, and nothing
    /// else from there; every other client accepts only its own trust domain's server.
    #[test]
    fn only_a_renewal_accepts_the_server_of_another_trust_domain() {
        let now = SystemTime::now();
        let (server, root, _) = chain_for(SERVER_ID_PATH, Duration::from_secs(120));
        let moved = verifier("old.test", root.clone(), ServerId::AnyTrustDomain);
        check(&moved, &server, now).expect("the moved CA's server");
        let strict = verifier("old.test", root.clone(), ServerId::SameTrustDomain);
        let err = check(&strict, &server, now).unwrap_err().to_string();
        assert!(err.contains("spiffe://td.test/writ/server"), "{err}");

        let (workload, root, _) = chain_for("ns/a/sa/web", Duration::from_secs(120));
        let moved = verifier("old.test", root, ServerId::AnyTrustDomain);
        let err = check(&moved, &workload, now).unwrap_err().to_string();
        assert!(
            err.contains("server presented spiffe://td.test/ns/a/sa/web"),
            "a workload of the other trust domain is not a writ server: {err}"
        );
        let (_, other_root, _) = server_chain(Duration::from_secs(120));
        let moved = verifier("old.test", other_root, ServerId::AnyTrustDomain);
        assert!(
            check(&moved, &server, now).is_err(),
            "a server under another root"
        );
    }

    /// A verifier used for many connections remembers the chain it verified, and that
    /// never lets through what a full check refuses: another chain, or the same one
    /// once its leaf has expired.
    #[test]
    fn a_remembered_server_chain_accepts_only_itself_until_it_expires() {
        let (chain, root, td) = server_chain(Duration::from_secs(120));
        let v = SpiffeServerVerifier {
            expected: td.workload(SERVER_ID_PATH).unwrap(),
            accept: ServerId::SameTrustDomain,
            trust: ServerTrust::Bundle {
                trust_domain: td,
                roots: vec![root],
            },
            signatures: writ_proto::tls::Tls13Signatures::of(&writ_proto::tls::crypto_provider()),
            last_verified: Mutex::new(None),
        };
        let now = SystemTime::now();
        check(&v, &chain, now).expect("verifies");
        assert!(v.last_verified.lock().unwrap().is_some());
        check(&v, &chain, now).expect("remembered");

        let mut tampered = chain.clone();
        let last = tampered[0].len() - 1;
        tampered[0][last] ^= 1;
        assert!(check(&v, &tampered, now).is_err(), "a tampered leaf");
        let (stranger, _, _) = server_chain(Duration::from_secs(120));
        assert!(check(&v, &stranger, now).is_err(), "another CA's chain");
        assert!(
            check(&v, &chain, now + Duration::from_secs(600)).is_err(),
            "the remembered chain after its leaf expired"
        );
    }
}
