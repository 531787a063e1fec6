//! The persisted form of a generation: certificates and keys as the store's JSON holds
//! them, and the sealing of the private keys under the passphrase's key.

use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{CaCert, Generation, GenerationState, PublicOnly, unix};
use crate::issuer::ca_subject;
use crate::seal::Kek;
use crate::{Error, PrivateKey};

impl CaCert {
    /// The persisted form, its key (if it still has one) unencrypted.
    fn to_stored(&self) -> StoredCaCert {
        StoredCaCert {
            der: B64.encode(&self.der),
            key: self
                .key
                .as_ref()
                .map(|k| Zeroizing::new(B64.encode(k.pkcs8_der()))),
            sealed_key: None,
            cn: self.cn.clone(),
            key_id: hex::encode(&self.key_id),
            imported: self.imported,
        }
    }

    /// Back from the persisted form; a sealed key must have been opened first.
    fn from_stored(s: &StoredCaCert) -> Result<Self, Error> {
        let corrupt = |what: &str| Error::Corrupt(format!("CA certificate {}: {what}", s.cn));
        let der = B64
            .decode(&s.der)
            .map_err(|_| corrupt("certificate encoding"))?;
        let key = match &s.key {
            Some(b64) => {
                let pkcs8 = Zeroizing::new(
                    B64.decode(b64.as_bytes())
                        .map_err(|_| corrupt("key encoding"))?,
                );
                Some(PrivateKey::from_pkcs8_der(&pkcs8)?)
            }
            None => None,
        };
        if s.imported {
            let mut cert = Self::imported(der, key)?;
            cert.key_id = hex::decode(&s.key_id).map_err(|_| corrupt("key id"))?;
            return Ok(cert);
        }
        let info = crate::CertInfo::parse(&der)?;
        Ok(Self {
            public: PublicOnly::of(&der)?,
            der,
            subject: ca_subject(&s.cn),
            cn: s.cn.clone(),
            key_id: hex::decode(&s.key_id).map_err(|_| corrupt("key id"))?,
            not_after: info.not_after,
            key,
            imported: false,
        })
    }
}

impl Generation {
    /// The persisted form, keys unencrypted: the store seals them when it has a KEK.
    pub(crate) fn to_stored(&self) -> StoredGeneration {
        StoredGeneration {
            id: self.id,
            state: self.state,
            root: self.root.to_stored(),
            intermediate: self.intermediate.to_stored(),
            intermediates_issued: self.intermediates_issued,
            since: unix(self.since),
            imported: self.imported,
            chain: self.chain.iter().map(|c| B64.encode(c)).collect(),
            cross_signed: self
                .cross_signed
                .as_ref()
                .map(|(by, der)| (*by, B64.encode(der))),
        }
    }

    /// Back from the persisted form, once its keys were opened.
    pub(crate) fn from_stored(s: &StoredGeneration) -> Result<Self, Error> {
        Ok(Self {
            id: s.id,
            state: s.state,
            root: CaCert::from_stored(&s.root)?,
            intermediate: CaCert::from_stored(&s.intermediate)?,
            intermediates_issued: s.intermediates_issued,
            since: SystemTime::UNIX_EPOCH + Duration::from_secs(s.since),
            imported: s.imported,
            chain: s
                .chain
                .iter()
                .map(|c| B64.decode(c))
                .collect::<Result<_, _>>()
                .map_err(|_| Error::Corrupt(format!("generation {}: chain encoding", s.id)))?,
            cross_signed: match &s.cross_signed {
                Some((by, der)) => Some((
                    *by,
                    B64.decode(der).map_err(|_| {
                        Error::Corrupt(format!("generation {}: cross-signed encoding", s.id))
                    })?,
                )),
                None => None,
            },
        })
    }
}

/// The persisted form of a CA certificate and key.
#[derive(Serialize, Deserialize)]
pub(crate) struct StoredCaCert {
    der: String,
    /// Absent for an imported root and once retired (state version 2).
    key: Option<Zeroizing<String>>,
    /// The key sealed under the KEK (`crate::seal`), in place of `key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sealed_key: Option<String>,
    cn: String,
    key_id: String,
    #[serde(default)]
    imported: bool,
}

impl StoredCaCert {
    /// What a sealed key is bound to: trust domain, generation, role and certificate.
    fn aad(&self, td: &str, generation: u64, role: &str) -> Vec<u8> {
        let cert = crate::x509::sha256_hex(self.der.as_bytes());
        format!("writ ca key v1|{td}|G{generation}|{role}|{cert}").into_bytes()
    }

    fn seal_key(&mut self, kek: &Kek, aad: &[u8]) -> Result<(), Error> {
        if let Some(b64) = self.key.take() {
            let der = Zeroizing::new(B64.decode(b64.as_bytes()).map_err(|_| {
                Error::Corrupt(format!("CA certificate {}: key encoding", self.cn))
            })?);
            self.sealed_key = Some(kek.seal(aad, &der)?);
        }
        Ok(())
    }

    /// Opens a sealed key in place; returns whether an unencrypted key was found while a
    /// KEK is in use (it must be re-sealed).
    fn open_key(&mut self, kek: Option<&Kek>, aad: &[u8]) -> Result<bool, Error> {
        match (self.sealed_key.take(), kek) {
            (Some(sealed), Some(kek)) => {
                let der = kek.open(aad, &sealed)?;
                self.key = Some(Zeroizing::new(B64.encode(&*der)));
                Ok(false)
            }
            (Some(_), None) => Err(Error::KeysSealed),
            (None, kek) => Ok(kek.is_some() && self.key.is_some()),
        }
    }
}

impl StoredGeneration {
    /// Seals both private keys under `kek` for storage.
    pub(crate) fn seal_keys(&mut self, td: &str, kek: &Kek) -> Result<(), Error> {
        let aad = self.root.aad(td, self.id, "root");
        self.root.seal_key(kek, &aad)?;
        let aad = self.intermediate.aad(td, self.id, "intermediate");
        self.intermediate.seal_key(kek, &aad)
    }

    /// Opens both private keys; returns how many were stored unencrypted although a KEK
    /// is in use.
    pub(crate) fn open_keys(&mut self, td: &str, kek: Option<&Kek>) -> Result<usize, Error> {
        let aad = self.root.aad(td, self.id, "root");
        let root = self.root.open_key(kek, &aad)?;
        let aad = self.intermediate.aad(td, self.id, "intermediate");
        let intermediate = self.intermediate.open_key(kek, &aad)?;
        Ok(usize::from(root) + usize::from(intermediate))
    }
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
    // Version 2 additions; a version 1 state reads them as empty.
    #[serde(default)]
    imported: bool,
    #[serde(default)]
    chain: Vec<String>,
    #[serde(default)]
    cross_signed: Option<(u64, String)>,
}
