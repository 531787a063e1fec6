//! CA generations: a root with the intermediate that signs under it, and how they are
//! created, renewed and persisted.

use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::issuer::{IssuerRef, ca_subject, sign_ca};
use crate::{CaSigningKey, Error, KeyType, PrivateKey, TrustDomain};

/// Where a generation is in its life: prepared → active → retired.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GenerationState {
    /// Its root is published in the bundle; nothing is signed with it yet.
    Prepared,
    /// It signs new leaves.
    Active,
    /// Its root has left the bundle.
    Retired,
}

/// A CA certificate with its key.
pub struct CaCert {
    /// The certificate, DER.
    pub der: Vec<u8>,
    /// Its subject common name (subject is `O=writ, CN=<cn>`).
    pub cn: String,
    /// Its subject key identifier.
    pub key_id: Vec<u8>,
    /// notAfter.
    pub not_after: SystemTime,
    subject: rcgen::DistinguishedName,
    key: PrivateKey,
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
        let parent_ref = parent.map(CaCert::issuer_ref);
        let issued = sign_ca(
            &subject,
            &key,
            &key_id,
            path_len,
            now - backdate,
            now + validity,
            parent_ref.as_ref(),
        )?;
        Ok(Self {
            der: issued.der,
            cn,
            key_id,
            not_after: issued.not_after,
            subject,
            key,
        })
    }

    /// This certificate as an issuer.
    pub fn issuer_ref(&self) -> IssuerRef<'_> {
        IssuerRef {
            subject: &self.subject,
            key_id: &self.key_id,
            not_after: self.not_after,
            key: &self.key,
        }
    }

    /// The signing key.
    pub fn key(&self) -> &PrivateKey {
        &self.key
    }

    /// SHA-256 fingerprint of the certificate, lowercase hex.
    pub fn fingerprint(&self) -> String {
        crate::x509::sha256_hex(&self.der)
    }

    fn to_stored(&self) -> StoredCaCert {
        StoredCaCert {
            der: B64.encode(&self.der),
            key: Zeroizing::new(B64.encode(self.key.pkcs8_der())),
            cn: self.cn.clone(),
            key_id: hex::encode(&self.key_id),
        }
    }

    fn from_stored(s: &StoredCaCert) -> Result<Self, Error> {
        let corrupt = |what: &str| Error::Corrupt(format!("CA certificate {}: {what}", s.cn));
        let der = B64
            .decode(&s.der)
            .map_err(|_| corrupt("certificate encoding"))?;
        let pkcs8 = Zeroizing::new(
            B64.decode(s.key.as_bytes())
                .map_err(|_| corrupt("key encoding"))?,
        );
        let key = PrivateKey::from_pkcs8_der(&pkcs8)?;
        let info = crate::CertInfo::parse(&der)?;
        Ok(Self {
            der,
            subject: ca_subject(&s.cn),
            cn: s.cn.clone(),
            key_id: hex::decode(&s.key_id).map_err(|_| corrupt("key id"))?,
            not_after: info.not_after,
            key,
        })
    }
}

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
    /// When the generation entered its current state.
    pub since: SystemTime,
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
            since: now,
        })
    }

    /// Replaces the intermediate with a fresh one (new key) under the same root; the trust
    /// bundle does not change.
    pub fn renew_intermediate(
        &mut self,
        td: &TrustDomain,
        validity: Validity,
        now: SystemTime,
    ) -> Result<(), Error> {
        let n = self.intermediates_issued + 1;
        let tag = random_tag();
        self.intermediate = CaCert::create(
            format!("writ intermediate {td} G{}.{n} {tag}", self.id),
            self.intermediate.key().kind(),
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
        self.intermediate.key().kind()
    }

    pub(crate) fn to_stored(&self) -> StoredGeneration {
        StoredGeneration {
            id: self.id,
            state: self.state,
            root: self.root.to_stored(),
            intermediate: self.intermediate.to_stored(),
            intermediates_issued: self.intermediates_issued,
            since: unix(self.since),
        }
    }

    pub(crate) fn from_stored(s: &StoredGeneration) -> Result<Self, Error> {
        Ok(Self {
            id: s.id,
            state: s.state,
            root: CaCert::from_stored(&s.root)?,
            intermediate: CaCert::from_stored(&s.intermediate)?,
            intermediates_issued: s.intermediates_issued,
            since: SystemTime::UNIX_EPOCH + Duration::from_secs(s.since),
        })
    }
}

fn random_tag() -> String {
    let mut b = [0u8; 3];
    // See issuer::random_serial: a failing system RNG is unrecoverable.
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
        .unwrap_or_else(|_| panic!("system random number generator failed"));
    hex::encode(b)
}

pub(crate) fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The persisted form of a CA certificate and key.
#[derive(Serialize, Deserialize)]
pub(crate) struct StoredCaCert {
    der: String,
    key: Zeroizing<String>,
    cn: String,
    key_id: String,
}

/// The persisted form of a generation.
#[derive(Serialize, Deserialize)]
pub(crate) struct StoredGeneration {
    id: u64,
    state: GenerationState,
    root: StoredCaCert,
    intermediate: StoredCaCert,
    intermediates_issued: u32,
    since: u64,
}
