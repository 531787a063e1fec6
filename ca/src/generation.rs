//! CA generations: a root with the intermediate that signs under it, and how they are
//! created and renewed (their persisted form, keys sealed or not: `stored.rs`).

use std::time::{Duration, SystemTime};

use der::Decode;
use serde::{Deserialize, Serialize};

use crate::issuer::{IssuerRef, ca_subject, sign_ca};
use crate::{CaSigningKey, Error, KeyType, PrivateKey, TrustDomain};

mod stored;

pub(crate) use stored::StoredGeneration;

/// Where a generation is in its life: prepared → active → previous → retired.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GenerationState {
    /// Its root is published in the bundle; nothing is signed with it yet.
    Prepared,
    /// It signs new leaves.
    Active,
    /// A newer generation signs; its root stays in the bundle (and leaves it signed keep
    /// verifying) until it is retired.
    Previous,
    /// Its root has left the bundle; its keys are erased.
    Retired,
}

/// A CA certificate with its key (none for an imported root, or once retired).
pub struct CaCert {
    /// The certificate, DER.
    pub der: Vec<u8>,
    /// Its subject common name (subject is `O=writ, CN=<cn>`); for an imported
    /// certificate, its whole subject (RFC 4514).
    pub cn: String,
    /// Its subject key identifier.
    pub key_id: Vec<u8>,
    /// notAfter.
    pub not_after: SystemTime,
    subject: rcgen::DistinguishedName,
    key: Option<PrivateKey>,
    /// The public half, which signs nothing: stands in for `key` when it is absent.
    public: PublicOnly,
    /// The subject was not chosen by writ: it is rebuilt from the certificate.
    imported: bool,
}

impl CaCert {
    fn create(
        cn: String,
        key_type: KeyType,
        path_len: Option<u8>,
        now: SystemTime,
        validity: Duration,
        backdate: Duration,
        parent: Option<&CaCert>,
    ) -> Result<Self, Error> {
        let key = PrivateKey::generate(key_type)?;
        let key_id = key_identifier(key.public_key_raw());
        let subject = ca_subject(&cn);
        let parent_ref = match parent {
            Some(p) => Some(
                p.signing_ref()
                    .ok_or_else(|| Error::Signing(format!("writ holds no key for {}", p.cn)))?,
            ),
            None => None,
        };
        let issued = sign_ca(
            &subject,
            &key,
            &key_id,
            path_len,
            now - backdate,
            // Ttl caps durations at 100 years; a CaSettings built in code could still ask
            // for more than X.509 dates can hold.
            now.checked_add(validity)
                .filter(|t| *t < SystemTime::UNIX_EPOCH + MAX_DATE)
                .ok_or_else(|| {
                    Error::InvalidDuration(format!(
                        "a CA lifetime of {validity:?} ends beyond year 9999"
                    ))
                })?,
            parent_ref.as_ref(),
        )?;
        Ok(Self {
            der: issued.der,
            cn,
            key_id,
            not_after: issued.not_after,
            subject,
            public: PublicOnly {
                kind: key_type,
                raw: key.public_key_raw().to_vec(),
            },
            key: Some(key),
            imported: false,
        })
    }

    /// A certificate writ did not issue (an imported CA), with its key when writ holds it.
    /// The subject must be reproducible by rcgen (`issuer::rcgen_name`); the caller checks
    /// the encoding byte for byte.
    pub(crate) fn imported(der: Vec<u8>, key: Option<PrivateKey>) -> Result<Self, Error> {
        let cert = x509_cert::Certificate::from_der(&der)
            .map_err(|e| Error::BadCertificate(e.to_string()))?;
        let subject =
            crate::issuer::rcgen_name(cert.tbs_certificate().subject()).map_err(Error::Import)?;
        let info = crate::CertInfo::parse(&der)?;
        let key_id = match &info.subject_key_id {
            Some(hex_id) => {
                hex::decode(hex_id).map_err(|e| Error::BadCertificate(e.to_string()))?
            }
            None => key_identifier(
                cert.tbs_certificate()
                    .subject_public_key_info()
                    .subject_public_key
                    .raw_bytes(),
            ),
        };
        Ok(Self {
            cn: info.subject,
            key_id,
            not_after: info.not_after,
            subject,
            public: PublicOnly::of(&der)?,
            key,
            imported: true,
            der,
        })
    }

    /// This certificate as an issuer. Without the private key (an imported root, a
    /// retired generation) signing through it fails with [`Error::Key`]; see
    /// [`CaCert::key`].
    pub fn issuer_ref(&self) -> IssuerRef<'_> {
        IssuerRef {
            subject: &self.subject,
            key_id: &self.key_id,
            not_after: self.not_after,
            key: match &self.key {
                Some(k) => k,
                None => &self.public,
            },
        }
    }

    /// This certificate as an issuer, when writ holds its key.
    pub(crate) fn signing_ref(&self) -> Option<IssuerRef<'_>> {
        self.key.as_ref().map(|_| self.issuer_ref())
    }

    /// The subject as rcgen writes it.
    pub(crate) fn rcgen_subject(&self) -> &rcgen::DistinguishedName {
        &self.subject
    }

    /// The signing key, when writ holds it.
    pub fn key(&self) -> Option<&PrivateKey> {
        self.key.as_ref()
    }

    /// The certificate's subject public key: its type and raw bits.
    pub(crate) fn public_key(&self) -> (KeyType, &[u8]) {
        (self.public.kind, &self.public.raw)
    }

    /// Erases the private key (a retired generation signs nothing again).
    pub(crate) fn forget_key(&mut self) {
        self.key = None;
    }

    /// SHA-256 fingerprint of the certificate, lowercase hex.
    pub fn fingerprint(&self) -> String {
        crate::x509::sha256_hex(&self.der)
    }
}

/// A CA's public key standing in for its absent private key: it signs nothing.
struct PublicOnly {
    kind: KeyType,
    raw: Vec<u8>,
}

impl PublicOnly {
    fn of(der: &[u8]) -> Result<Self, Error> {
        let cert = x509_cert::Certificate::from_der(der)
            .map_err(|e| Error::BadCertificate(e.to_string()))?;
        let spki = cert.tbs_certificate().subject_public_key_info();
        Ok(Self {
            kind: crate::csr::spki_key_type(spki)?,
            raw: spki.subject_public_key.raw_bytes().to_vec(),
        })
    }
}

impl CaSigningKey for PublicOnly {
    fn key_type(&self) -> KeyType {
        self.kind
    }
    fn public_key_raw(&self) -> &[u8] {
        &self.raw
    }
    fn sign(&self, _msg: &[u8]) -> Result<Vec<u8>, Error> {
        Err(Error::Key(
            "writ holds no private key for this CA certificate (an imported root or a retired generation)".into(),
        ))
    }
}

/// 9999-12-31T23:59:59Z, the last instant an X.509 GeneralizedTime can express.
const MAX_DATE: Duration = Duration::from_secs(253_402_300_799);

/// RFC 7093 §2 method 1: the leftmost 160 bits of SHA-256 of the subjectPublicKey.
fn key_identifier(public_key: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, public_key).as_ref()[..20].to_vec()
}

/// A root and the intermediate signing under it.
pub struct Generation {
    /// Monotonic generation number, starting at 1.
    pub id: u64,
    /// Life-cycle state.
    pub state: GenerationState,
    /// The root.
    pub root: CaCert,
    /// The current intermediate.
    pub intermediate: CaCert,
    /// How many intermediates this generation has had (renewals + 1).
    pub intermediates_issued: u32,
    /// When the generation entered its current state (for a prepared one: when its root
    /// was first published).
    pub since: SystemTime,
    /// Imported (Istio `cacerts`) rather than created by writ: writ holds no root key, so
    /// it cannot renew the intermediate or cross-sign a successor's root.
    pub imported: bool,
    /// CA certificates between the intermediate and the root, intermediate's issuer first
    /// (imported generations only; empty for writ's own).
    pub chain: Vec<Vec<u8>>,
    /// This generation's root certified by the previous generation's root, served after
    /// the intermediate while that root is still in the bundle; with the generation that
    /// signed it.
    pub cross_signed: Option<(u64, Vec<u8>)>,
}

/// How long a generation's certificates live.
#[derive(Clone, Copy, Debug)]
pub struct Validity {
    /// The root's lifetime.
    pub root: Duration,
    /// Each intermediate's lifetime.
    pub intermediate: Duration,
    /// How far notBefore is backdated for clock skew.
    pub backdate: Duration,
}

impl Generation {
    /// Creates generation `id` with fresh `key_type` keys for both root and intermediate.
    pub fn create(
        id: u64,
        td: &TrustDomain,
        key_type: KeyType,
        validity: Validity,
        state: GenerationState,
        now: SystemTime,
    ) -> Result<Self, Error> {
        // A random tag keeps subjects distinct across installations sharing a trust
        // domain; the generation number keeps them distinct within one.
        let tag = random_tag();
        let root = CaCert::create(
            format!("writ root {td} G{id} {tag}"),
            key_type,
            None,
            now,
            validity.root,
            validity.backdate,
            None,
        )?;
        let intermediate = CaCert::create(
            format!("writ intermediate {td} G{id}.1 {tag}"),
            key_type,
            Some(0),
            now,
            validity.intermediate,
            validity.backdate,
            Some(&root),
        )?;
        Ok(Self {
            id,
            state,
            root,
            intermediate,
            intermediates_issued: 1,
            since: whole_seconds(now),
            imported: false,
            chain: Vec::new(),
            cross_signed: None,
        })
    }

    /// Certifies this generation's root (subject, key and SKI unchanged) with `old`'s
    /// root, valid no longer than `old`'s root, so peers that trust only the old root
    /// verify leaves of this generation. `None` when writ holds no key for `old`'s root
    /// (an imported generation).
    pub fn cross_sign(
        &self,
        old: &Generation,
        backdate: Duration,
        now: SystemTime,
    ) -> Result<Option<Vec<u8>>, Error> {
        let Some(issuer) = old.root.signing_ref() else {
            return Ok(None);
        };
        let (kind, raw) = self.root.public_key();
        let issued = crate::issuer::sign_cross(
            &self.root.subject,
            (kind, raw),
            &self.root.key_id,
            now - backdate,
            self.root.not_after,
            &issuer,
        )?;
        Ok(Some(issued.der))
    }

    /// The certificates served after a leaf: the intermediate, any CA certificates up to
    /// the root, and the cross-signed root while `previous` (the generation that signed
    /// it) is still in the bundle.
    pub fn chain_after_leaf(&self, previous: Option<u64>) -> Vec<Vec<u8>> {
        let mut chain = vec![self.intermediate.der.clone()];
        chain.extend(self.chain.iter().cloned());
        if let Some((by, der)) = &self.cross_signed
            && Some(*by) == previous
        {
            chain.push(der.clone());
        }
        chain
    }

    /// Erases the private keys of a retired generation.
    pub(crate) fn forget_keys(&mut self) {
        self.root.forget_key();
        self.intermediate.forget_key();
    }

    /// Replaces the intermediate with a fresh one (new key) under the same root; the trust
    /// bundle does not change.
    pub fn renew_intermediate(
        &mut self,
        td: &TrustDomain,
        validity: Validity,
        now: SystemTime,
    ) -> Result<(), Error> {
        if self.imported || self.root.key().is_none() {
            return Err(Error::NotRenewable {
                generation: self.id,
                not_after: self.intermediate.not_after,
            });
        }
        let n = self.intermediates_issued + 1;
        let tag = random_tag();
        self.intermediate = CaCert::create(
            format!("writ intermediate {td} G{}.{n} {tag}", self.id),
            self.key_type(),
            Some(0),
            now,
            validity.intermediate,
            validity.backdate,
            Some(&self.root),
        )?;
        self.intermediates_issued = n;
        Ok(())
    }

    /// The key type of the generation's intermediate.
    pub fn key_type(&self) -> KeyType {
        self.intermediate.public_key().0
    }
}

fn random_tag() -> String {
    let mut b = [0u8; 3];
    // See issuer::random_serial: a failing system RNG is unrecoverable.
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
        .unwrap_or_else(|_| panic!("system random number generator failed"));
    hex::encode(b)
}

/// `t` truncated to whole seconds, as persisted: a state read back equals the state
/// written.
pub(crate) fn whole_seconds(t: SystemTime) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(unix(t))
}

pub(crate) fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
