//! Connecting to a writ server: TLS 1.3 over rustls, the server verified by its SPIFFE ID
//! (`spiffe://<td>/writ/server`) under the trust bundle — or, on first contact, under the
//! root whose fingerprint the bootstrap token pins — never by DNS name, so any address
//! that reaches the server works.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
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
                let tcp = tokio::net::TcpStream::connect(&target).await?;
                tcp.set_nodelay(true)?;
                // The name is not checked (the verifier checks the SPIFFE ID); SNI is off.
                let name = ServerName::try_from("writ.invalid").map_err(std::io::Error::other)?;
                let tls = connector.connect(name, tcp).await?;
                Ok::<_, std::io::Error>(TokioIo::new(Coalesced::new(tls)))
            }
        }))
        .await
        .map_err(|e| {
            Error::Connect(format!(
                "cannot reach the writ server at {addr}: {}",
                source_chain(&e)
            ))
        })
}

/// The rustls client configuration: TLS 1.3, the SPIFFE server check, an optional client
/// certificate.
pub fn client_config(
    trust: ServerTrust,
    identity: Option<&Identity>,
) -> Result<ClientConfig, Error> {
    let provider = Arc::new(writ_proto::tls::crypto_provider());
    let verifier = Arc::new(SpiffeServerVerifier {
        expected: trust
            .trust_domain()
            .workload(SERVER_ID_PATH)
            .map_err(Error::Ca)?,
        trust,
        algorithms: provider.signature_verification_algorithms,
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
    algorithms: WebPkiSupportedAlgorithms,
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
        let chain: Vec<Vec<u8>> = std::iter::once(end_entity)
            .chain(intermediates)
            .map(|c| c.to_vec())
            .collect();
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
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(now.as_secs());
        let peer = verify_chain(&chain, &roots, now, Usage::Server)
            .map_err(|e| rustls::Error::General(format!("server certificate: {e}")))?;
        if peer.id != self.expected {
            return Err(rustls::Error::General(format!(
                "server presented {} but a writ server of this trust domain is {}",
                peer.id, self.expected
            )));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
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
