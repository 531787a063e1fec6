//! The client certificate of a simulated agent in `handshake` mode: each connection
//! presents the certificate the previous renewal returned, as a real agent does.
//!
//! Why: the server remembers chains it has verified; one certificate presented on every
//! connection would be verified once and then only looked up, which no fleet of distinct
//! agents enjoys.

use std::sync::{Arc, Mutex};

use rustls::SignatureScheme;
use rustls::client::ResolvesClientCert;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::{CertifiedKey, SigningKey};
use writ_ca::PrivateKey;

use crate::Error;

/// One agent's current certificate, replaced after each renewal.
#[derive(Debug)]
pub(crate) struct RotatingCert {
    current: Mutex<Arc<CertifiedKey>>,
}

impl RotatingCert {
    /// Starts with `chain` for `key`.
    pub(crate) fn new(key: &Arc<dyn SigningKey>, chain: &[Vec<u8>]) -> Self {
        Self {
            current: Mutex::new(certified(key, chain)),
        }
    }

    /// Presents `chain` for `key` from the next connection on.
    pub(crate) fn replace(&self, key: &Arc<dyn SigningKey>, chain: &[Vec<u8>]) {
        let next = certified(key, chain);
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = next;
    }
}

/// `key` loaded for rustls, once: parsing a key per connection is not what an agent does.
pub(crate) fn signing_key(key: &PrivateKey) -> Result<Arc<dyn SigningKey>, Error> {
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.pkcs8_der().to_vec()));
    rustls::crypto::ring::default_provider()
        .key_provider
        .load_private_key(der)
        .map_err(|e| Error::Options(format!("client key: {e}")))
}

fn certified(key: &Arc<dyn SigningKey>, chain: &[Vec<u8>]) -> Arc<CertifiedKey> {
    let chain = chain.iter().cloned().map(CertificateDer::from).collect();
    Arc::new(CertifiedKey::new(chain, key.clone()))
}

impl ResolvesClientCert for RotatingCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        schemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        let current = self
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        current
            .key
            .choose_scheme(schemes)
            .is_some()
            .then_some(current)
    }

    fn has_certs(&self) -> bool {
        true
    }
}
