//! The server's TLS: TLS 1.3 only (ring provider), a serving certificate that is swapped in
//! place when renewed, and optional client certificates.
//!
//! Client chains are *not* judged during the handshake: the handshake only proves the
//! client holds the certificate's key (CertificateVerify). The handlers then verify the
//! chain against the live trust bundle, so an expired or foreign certificate gets a precise
//! `Unauthenticated` status instead of an opaque handshake failure, and a root rotation
//! needs no TLS reconfiguration.

use std::fmt;
use std::sync::{Arc, RwLock};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};

use crate::Error;

/// The ring provider writ uses everywhere.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(writ_proto::tls::crypto_provider())
}

/// The serving certificate, replaceable while the server runs.
pub struct ServingCert {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ServingCert {
    /// A resolver serving `chain` (leaf first) with `key` (PKCS#8 DER).
    pub fn new(chain: Vec<Vec<u8>>, key_pkcs8: &[u8]) -> Result<Self, Error> {
        Ok(Self {
            current: RwLock::new(certified_key(chain, key_pkcs8)?),
        })
    }

    /// Swaps in a renewed certificate; new handshakes use it at once.
    pub fn replace(&self, chain: Vec<Vec<u8>>, key_pkcs8: &[u8]) -> Result<(), Error> {
        let ck = certified_key(chain, key_pkcs8)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = ck;
        Ok(())
    }

    fn get(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl fmt::Debug for ServingCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServingCert")
    }
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }
}

fn certified_key(chain: Vec<Vec<u8>>, key_pkcs8: &[u8]) -> Result<Arc<CertifiedKey>, Error> {
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pkcs8.to_vec()));
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| Error::Tls(format!("serving key: {e}")))?;
    let chain = chain.into_iter().map(CertificateDer::from).collect();
    Ok(Arc::new(CertifiedKey::new(chain, signing)))
}

/// Accepts any client certificate whose holder proves possession of its key; the chain is
/// verified by the handlers (see the module docs). Clients without one are let through for
/// the endpoints that take other credentials (bootstrap tokens, JWTs).
#[derive(Debug)]
struct PossessionOnly {
    signatures: writ_proto::tls::Tls13Signatures,
}

impl ClientCertVerifier for PossessionOnly {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
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

/// The rustls server configuration: TLS 1.3, HTTP/2 or the bundle push channel, optional
/// client certificates.
pub fn server_config(cert: Arc<ServingCert>) -> Result<ServerConfig, Error> {
    let provider = provider();
    let verifier = Arc::new(PossessionOnly {
        signatures: writ_proto::tls::Tls13Signatures::of(&provider),
    });
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(cert);
    // Push first: the server's order decides, and only writ's agent offers it.
    config.alpn_protocols = vec![writ_proto::push::ALPN.to_vec(), b"h2".to_vec()];
    // The server's suite order (see `writ_proto::tls`) wins over the client's, so
    // istio-agent, Envoy and OpenSSL clients get the cheaper handshake too.
    config.ignore_client_order = true;
    // Agents hold one long-lived connection each and never resume: session tickets on
    // every handshake would be work and state for nothing, and writ wants every
    // connection to present its client certificate afresh.
    config.send_tls13_tickets = 0;
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    Ok(config)
}
