//! The identity a set of files holds: a certificate chain, its private key and the trust
//! bundle, checked to belong together.

use std::fmt;

use der::Decode;
use writ_ca::{CaSigningKey, CertInfo, PrivateKey, SpiffeId};

use super::Error;

/// A workload identity: certificate chain, its private key, and the trust bundle.
pub struct Identity {
    /// DER certificates, leaf first, then intermediates up to (not including) a root.
    pub chain: Vec<Vec<u8>>,
    /// The leaf's private key (zeroizes on drop).
    pub key: PrivateKey,
    /// DER root certificates the workload trusts.
    pub bundle: Vec<Vec<u8>>,
}

impl Identity {
    /// Builds an identity, checking it is a usable set (see [`Identity::validate`]).
    pub fn new(chain: Vec<Vec<u8>>, key: PrivateKey, bundle: Vec<Vec<u8>>) -> Result<Self, Error> {
        let id = Self { chain, key, bundle };
        id.validate()?;
        Ok(id)
    }

    /// Checks the chain is non-empty and parses, the bundle is non-empty and parses, and
    /// the key is the leaf's.
    pub fn validate(&self) -> Result<(), Error> {
        self.check().map_err(|p| Error::Invalid(p.to_string()))
    }

    /// The leaf certificate, DER.
    pub fn leaf(&self) -> &[u8] {
        // `Identity::new` and every reader reject an empty chain; a hand-built one with
        // public fields may still be empty, so this degrades to "no certificate".
        self.chain.first().map_or(&[], Vec::as_slice)
    }

    /// The leaf certificate's facts.
    pub fn leaf_info(&self) -> Result<CertInfo, Error> {
        CertInfo::parse(self.leaf()).map_err(|e| Error::Invalid(format!("leaf certificate: {e}")))
    }

    /// The SPIFFE ID the leaf certificate names.
    pub fn spiffe_id(&self) -> Result<SpiffeId, Error> {
        self.leaf_info()?
            .spiffe_id()
            .map_err(|e| Error::Invalid(format!("leaf certificate: {e}")))
    }

    /// The same certificate and key with another bundle (after a root rotation).
    pub fn with_bundle(&self, bundle: Vec<Vec<u8>>) -> Result<Self, Error> {
        Self::new(self.chain.clone(), self.try_clone_key()?, bundle)
    }

    /// A copy of this identity (the key is re-loaded from its PKCS#8 bytes).
    pub fn try_clone(&self) -> Result<Self, Error> {
        Ok(Self {
            chain: self.chain.clone(),
            key: self.try_clone_key()?,
            bundle: self.bundle.clone(),
        })
    }

    /// The chain as concatenated PEM blocks, leaf first (the contents of `cert.pem`).
    pub fn chain_pem(&self) -> String {
        writ_ca::x509::certs_to_pem(&self.chain)
    }

    /// The bundle as concatenated PEM blocks (the contents of `bundle.pem`).
    pub fn bundle_pem(&self) -> String {
        writ_ca::x509::certs_to_pem(&self.bundle)
    }

    pub(super) fn try_clone_key(&self) -> Result<PrivateKey, Error> {
        PrivateKey::from_pkcs8_der(self.key.pkcs8_der())
            .map_err(|e| Error::Invalid(format!("copying the key: {e}")))
    }

    pub(super) fn check(&self) -> Result<(), Problem> {
        let leaf = self.chain.first().ok_or(Problem::EmptyChain)?;
        for (i, der) in self.chain.iter().enumerate() {
            CertInfo::parse(der).map_err(|e| Problem::BadCert("chain", i, e.to_string()))?;
        }
        if self.bundle.is_empty() {
            return Err(Problem::EmptyBundle);
        }
        for (i, der) in self.bundle.iter().enumerate() {
            CertInfo::parse(der).map_err(|e| Problem::BadCert("bundle", i, e.to_string()))?;
        }
        // Compare the subjectPublicKey bits rather than whole SPKI encodings: the bits
        // identify the key, while AlgorithmIdentifier parameters (RSA's optional NULL) may
        // be encoded differently by different issuers for the same key.
        let cert = x509_cert::Certificate::from_der(leaf)
            .map_err(|e| Problem::BadCert("chain", 0, e.to_string()))?;
        let cert_key = cert
            .tbs_certificate()
            .subject_public_key_info()
            .subject_public_key
            .raw_bytes();
        if cert_key != self.key.public_key_raw() {
            return Err(Problem::KeyMismatch);
        }
        Ok(())
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let id = self.spiffe_id().map(|id| id.to_string());
        f.debug_struct("Identity")
            .field("spiffe_id", &id.as_deref().unwrap_or("<unparseable>"))
            .field("chain_len", &self.chain.len())
            .field("bundle_len", &self.bundle.len())
            // PrivateKey's Debug prints only its type.
            .field("key", &self.key)
            .finish()
    }
}

/// Why a set is unusable, before a path is attached to it.
pub(super) enum Problem {
    EmptyChain,
    EmptyBundle,
    BadCert(&'static str, usize, String),
    KeyMismatch,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::EmptyChain => f.write_str("the certificate chain is empty"),
            Problem::EmptyBundle => f.write_str("the trust bundle is empty"),
            Problem::BadCert(what, i, e) => write!(f, "{what} certificate #{i}: {e}"),
            Problem::KeyMismatch => {
                f.write_str("the private key does not belong to the leaf certificate")
            }
        }
    }
}
