//! The TLS cryptography writ's server and clients share: ring, with TLS 1.3's
//! AES-128-GCM-SHA256 suite first and P-256 first among key-exchange groups.
//!
//! Why not rustls' default suite order (AES-256-GCM-SHA384 first): the handshake's
//! transcript hash and key schedule then run on SHA-384, whose SHA-512 core has no CPU
//! instructions on x86, while SHA-256 does; the SHA-384 suite cost a renewal on a fresh
//! connection about 3% of the server's CPU. AES-128-GCM is TLS 1.3's mandatory suite, and
//! 128-bit security matches the P-256 and X25519 keys around it. The others stay offered.
//!
//! Why P-256 before X25519: ring's P-256 is assembly (nistz256) and its X25519 is not; a
//! key pair plus the shared secret took 75 µs against 92 µs on the machine in
//! BENCHMARKS.md, on each side of every new connection. A TLS 1.3 server takes the first
//! group in the client's list that it supports, so this decides what writ's own clients
//! (agent, bench) use; other clients keep their own preference and the server never
//! asks them to retry. secp256r1 is TLS 1.3's mandatory group; both are 128-bit secure.

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::ring::{cipher_suite, default_provider, kx_group};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::CertificateDer;
use rustls::{DigitallySignedStruct, SignatureScheme};

/// The ring provider with TLS 1.3 suites in writ's order of preference.
pub fn crypto_provider() -> CryptoProvider {
    let mut provider = default_provider();
    let preferred = [
        cipher_suite::TLS13_AES_128_GCM_SHA256,
        cipher_suite::TLS13_AES_256_GCM_SHA384,
        cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
    ];
    let rest = provider
        .cipher_suites
        .iter()
        .filter(|s| !preferred.iter().any(|p| p.suite() == s.suite()));
    provider.cipher_suites = preferred.iter().chain(rest).copied().collect();
    let first = kx_group::SECP256R1;
    provider.kx_groups.sort_by_key(|g| g.name() != first.name());
    provider
}

/// The handshake-signature half of a certificate verifier, for writ's TLS 1.3-only ends:
/// the server's and the client's verifiers differ in how they judge a chain, not in this.
#[derive(Debug)]
pub struct Tls13Signatures {
    algorithms: WebPkiSupportedAlgorithms,
}

impl Tls13Signatures {
    /// The signature algorithms of `provider` (writ's is [`crypto_provider`]).
    pub fn of(provider: &CryptoProvider) -> Self {
        Self {
            algorithms: provider.signature_verification_algorithms,
        }
    }

    /// A TLS 1.2 handshake signature: never valid, writ speaks TLS 1.3 only.
    pub fn verify_tls12(&self) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    /// Checks a TLS 1.3 CertificateVerify signature over `message` by `cert`'s key.
    pub fn verify_tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    /// The signature schemes a peer may use.
    pub fn schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// writ's client and server settle on P-256 in one round trip: the client's first
    /// key share is the group the server picks, so it is never asked to retry.
    #[test]
    fn writ_clients_and_servers_agree_on_p256_without_a_retry() {
        use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
        use std::sync::Arc;
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["writ.test".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let provider = Arc::new(crypto_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.der().clone()).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = "writ.test".try_into().unwrap();
        let mut c = rustls::ClientConnection::new(Arc::new(client), name).unwrap();
        let mut s = rustls::ServerConnection::new(Arc::new(server)).unwrap();
        for _ in 0..10 {
            if !c.is_handshaking() && !s.is_handshaking() {
                break;
            }
            let mut wire = Vec::new();
            c.write_tls(&mut wire).unwrap();
            s.read_tls(&mut wire.as_slice()).unwrap();
            s.process_new_packets().unwrap();
            let mut wire = Vec::new();
            s.write_tls(&mut wire).unwrap();
            c.read_tls(&mut wire.as_slice()).unwrap();
            c.process_new_packets().unwrap();
        }
        assert!(!c.is_handshaking());
        assert_eq!(
            c.negotiated_key_exchange_group().unwrap().name(),
            rustls::NamedGroup::secp256r1
        );
        assert_eq!(c.handshake_kind(), Some(rustls::HandshakeKind::Full));
    }

    #[test]
    fn p256_comes_first_and_no_group_is_lost() {
        let ours = crypto_provider().kx_groups;
        let theirs = default_provider().kx_groups;
        assert_eq!(ours[0].name(), rustls::NamedGroup::secp256r1);
        assert_eq!(ours.len(), theirs.len());
        for g in &theirs {
            assert!(ours.iter().any(|o| o.name() == g.name()), "{:?}", g.name());
        }
    }

    #[test]
    fn aes_128_gcm_sha256_comes_first_and_nothing_is_lost() {
        let ours = crypto_provider().cipher_suites;
        let theirs = default_provider().cipher_suites;
        assert_eq!(
            ours[0].suite(),
            rustls::CipherSuite::TLS13_AES_128_GCM_SHA256
        );
        assert_eq!(ours.len(), theirs.len());
        for s in &theirs {
            assert!(
                ours.iter().any(|o| o.suite() == s.suite()),
                "{:?}",
                s.suite()
            );
        }
    }
}
