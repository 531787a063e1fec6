//! CA private keys sealed at rest: AES-256-GCM under a key-encryption key (KEK) derived
//! from the operator's passphrase with Argon2id.
//!
//! The core never reads a passphrase itself: the edge (the server) reads it from a file or
//! the environment and hands the bytes to [`unlock`], which returns a [`Sealer`] that
//! [`crate::Authority::open_sealed`] and the bootstrap key store use to seal and open keys.
//!
//! The KDF salt and parameters live next to the CA state (tree `ca`, key `kek`) with a
//! check value sealed under the KEK, so a wrong passphrase is recognised before anything
//! is read or written. Each key blob is sealed with a fresh random nonce and bound by its
//! associated data to what it is (trust domain, generation, role and certificate), so a
//! sealed key moved onto another certificate's record does not open.

use std::fmt;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::Error;
use crate::store::Store;

/// Store tree of the KDF record.
pub const KEK_TREE: &str = "ca";
/// Store key of the KDF record.
pub const KEK_KEY: &[u8] = b"kek";
/// Associated data of the check value.
const CHECK_AAD: &[u8] = b"writ kek check v1";
const CHECK_PLAINTEXT: &[u8] = b"writ";
const SALT_LEN: usize = 16;
/// Prefix of a sealed blob stored as bytes (the bootstrap token-signing key).
pub const SEALED_PREFIX: &[u8] = b"sealed:v1:";

/// Argon2id cost parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_kib: u32,
    /// Passes.
    pub t: u32,
    /// Lanes.
    pub p: u32,
}

impl Default for KdfParams {
    /// 64 MiB, 3 passes, 1 lane: OWASP's first Argon2id recommendation with extra memory;
    /// about a second on one core, paid once at start-up.
    fn default() -> Self {
        Self {
            m_kib: 64 * 1024,
            t: 3,
            p: 1,
        }
    }
}

impl KdfParams {
    fn argon2(&self) -> Result<argon2::Argon2<'static>, Error> {
        let params = argon2::Params::new(self.m_kib, self.t, self.p, Some(32))
            .map_err(|e| Error::Corrupt(format!("key-encryption parameters: {e}")))?;
        // A stored record could ask for absurd memory: refuse above 4 GiB.
        if self.m_kib > 4 * 1024 * 1024 {
            return Err(Error::Corrupt(format!(
                "key-encryption parameters ask for {} KiB of memory",
                self.m_kib
            )));
        }
        Ok(argon2::Argon2::new(
            argon2::Algorithm::Argon2id,
            argon2::Version::V0x13,
            params,
        ))
    }
}

/// What the operator asked for: no encryption (development mode) or a passphrase.
pub enum KeyProtection {
    /// Keys stay unencrypted. Refused by [`unlock`] if the store's keys are sealed.
    Unencrypted,
    /// Keys are sealed under a KEK derived from this passphrase.
    Passphrase {
        /// The passphrase bytes.
        passphrase: Zeroizing<Vec<u8>>,
        /// Cost parameters for a new KEK record (an existing record keeps its own).
        params: KdfParams,
    },
}

impl fmt::Debug for KeyProtection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyProtection::Unencrypted => f.write_str("Unencrypted"),
            KeyProtection::Passphrase { params, .. } => {
                write!(f, "Passphrase(<redacted>, {params:?})")
            }
        }
    }
}

/// The key-encryption key. Its bytes live only inside ring's key schedule.
pub struct Kek {
    key: LessSafeKey,
}

impl Kek {
    /// Derives the KEK from `passphrase` with Argon2id.
    pub fn derive(passphrase: &[u8], params: &KdfParams, salt: &[u8]) -> Result<Self, Error> {
        let mut raw = Zeroizing::new([0u8; 32]);
        params
            .argon2()?
            .hash_password_into(passphrase, salt, raw.as_mut())
            .map_err(|e| Error::Key(format!("deriving the key-encryption key: {e}")))?;
        let key = UnboundKey::new(&AES_256_GCM, raw.as_ref())
            .map_err(|_| Error::Key("AES-256-GCM key".into()))?;
        Ok(Self {
            key: LessSafeKey::new(key),
        })
    }

    /// Seals `plaintext` with a fresh random nonce; returns base64(nonce ‖ ciphertext ‖ tag).
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<String, Error> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| Error::Key("no randomness for a nonce".into()))?;
        let mut buf = Zeroizing::new(plaintext.to_vec());
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut *buf,
            )
            .map_err(|_| Error::Key("sealing a key failed".into()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        Ok(B64.encode(out))
    }

    /// Opens a blob from [`Kek::seal`]. Fails with [`Error::WrongPassphrase`] when the tag
    /// does not verify (another passphrase, or a blob moved to another record).
    pub fn open(&self, aad: &[u8], sealed: &str) -> Result<Zeroizing<Vec<u8>>, Error> {
        let mut bytes = Zeroizing::new(
            B64.decode(sealed.as_bytes())
                .map_err(|_| Error::Corrupt("sealed key encoding".into()))?,
        );
        if bytes.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return Err(Error::Corrupt("sealed key is truncated".into()));
        }
        let nonce = Nonce::try_assume_unique_for_key(&bytes[..NONCE_LEN])
            .map_err(|_| Error::Corrupt("sealed key nonce".into()))?;
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(aad), &mut bytes[NONCE_LEN..])
            .map_err(|_| Error::WrongPassphrase)?;
        Ok(Zeroizing::new(plain.to_vec()))
    }
}

/// How keys are written to and read from the store. Cheap to clone.
#[derive(Clone)]
pub enum Sealer {
    /// Unencrypted (development mode).
    Plaintext,
    /// Sealed under a KEK.
    Kek(Arc<Kek>),
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Sealer::Plaintext => "Sealer::Plaintext",
            Sealer::Kek(_) => "Sealer::Kek(<redacted>)",
        })
    }
}

impl Sealer {
    /// The KEK, when keys are sealed.
    pub fn kek(&self) -> Option<&Kek> {
        match self {
            Sealer::Plaintext => None,
            Sealer::Kek(k) => Some(k),
        }
    }

    /// Encodes a key for storage as bytes: sealed (`sealed:v1:` + base64) under a KEK, the
    /// DER itself otherwise.
    pub fn seal_bytes(&self, aad: &[u8], der: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error> {
        match self.kek() {
            None => Ok(Zeroizing::new(der.to_vec())),
            Some(kek) => {
                let mut out = SEALED_PREFIX.to_vec();
                out.extend_from_slice(kek.seal(aad, der)?.as_bytes());
                Ok(Zeroizing::new(out))
            }
        }
    }

    /// Decodes bytes from [`Sealer::seal_bytes`]. Returns the DER and whether it was
    /// stored unencrypted although a KEK is in use (so the caller re-seals it).
    pub fn open_bytes(
        &self,
        aad: &[u8],
        stored: &[u8],
    ) -> Result<(Zeroizing<Vec<u8>>, bool), Error> {
        match (stored.strip_prefix(SEALED_PREFIX), self.kek()) {
            (Some(sealed), Some(kek)) => {
                let sealed = std::str::from_utf8(sealed)
                    .map_err(|_| Error::Corrupt("sealed key encoding".into()))?;
                Ok((kek.open(aad, sealed)?, false))
            }
            (Some(_), None) => Err(Error::KeysSealed),
            (None, kek) => Ok((Zeroizing::new(stored.to_vec()), kek.is_some())),
        }
    }
}

/// The persisted KDF record.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KekRecord {
    version: u32,
    kdf: String,
    params: KdfParams,
    salt: String,
    check: String,
}

/// Turns the operator's choice into a [`Sealer`] for `store`.
///
/// - `Unencrypted` on a store whose keys are sealed: [`Error::KeysSealed`].
/// - A passphrase on a store with a KEK record: derives with the stored salt and
///   parameters and checks it; a wrong passphrase is [`Error::WrongPassphrase`] and
///   nothing is written.
/// - A passphrase on a store without one (new, or unencrypted so far): creates the record
///   with a fresh salt; the keys are sealed when next written, which
///   [`crate::Authority::open_sealed`] does at once for keys it finds unencrypted.
///
/// Returns the sealer and whether this call created the KEK record.
pub fn unlock(store: &dyn Store, protection: KeyProtection) -> Result<(Sealer, bool), Error> {
    let existing = store.get(KEK_TREE, KEK_KEY)?;
    let (passphrase, params) = match protection {
        KeyProtection::Unencrypted => {
            return match existing {
                Some(_) => Err(Error::KeysSealed),
                None => Ok((Sealer::Plaintext, false)),
            };
        }
        KeyProtection::Passphrase { passphrase, params } => (passphrase, params),
    };
    if passphrase.is_empty() {
        return Err(empty_passphrase());
    }
    if let Some(bytes) = existing {
        let kek = open_record(&bytes, &passphrase)?;
        return Ok((Sealer::Kek(Arc::new(kek)), false));
    }
    let mut salt = [0u8; SALT_LEN];
    SystemRandom::new()
        .fill(&mut salt)
        .map_err(|_| Error::Key("no randomness for a salt".into()))?;
    let kek = Kek::derive(&passphrase, &params, &salt)?;
    let record = KekRecord {
        version: 1,
        kdf: "argon2id".into(),
        params,
        salt: B64.encode(salt),
        check: kek.seal(CHECK_AAD, CHECK_PLAINTEXT)?,
    };
    let bytes = serde_json::to_vec(&record).map_err(|e| Error::Storage(e.to_string()))?;
    // Compare-and-swap: two openers racing on a fresh store settle on one salt.
    if !store.compare_and_swap(KEK_TREE, KEK_KEY, None, Some(&bytes))? {
        return Err(Error::Storage(
            "the key-encryption record was created concurrently; start again".into(),
        ));
    }
    Ok((Sealer::Kek(Arc::new(kek)), true))
}

fn empty_passphrase() -> Error {
    Error::Key("the passphrase is empty; put at least one character in the passphrase file".into())
}

/// Parses the KDF record `bytes` (as [`unlock`] stores it under [`KEK_TREE`]/[`KEK_KEY`])
/// and opens its check value with the KEK `passphrase` derives: [`Error::WrongPassphrase`]
/// when it does not open. Lets a store check a copy of the record before it opens.
pub fn open_record(bytes: &[u8], passphrase: &[u8]) -> Result<Kek, Error> {
    if passphrase.is_empty() {
        return Err(empty_passphrase());
    }
    let record: KekRecord = serde_json::from_slice(bytes)
        .map_err(|e| Error::Corrupt(format!("key-encryption record: {e}")))?;
    if record.version != 1 || record.kdf != "argon2id" {
        return Err(Error::Corrupt(format!(
            "key-encryption record version {} ({}) is not one this writ reads",
            record.version, record.kdf
        )));
    }
    let salt = B64
        .decode(record.salt.as_bytes())
        .map_err(|_| Error::Corrupt("key-encryption salt".into()))?;
    let kek = Kek::derive(passphrase, &record.params, &salt)?;
    kek.open(CHECK_AAD, &record.check)?;
    Ok(kek)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::store::memory::MemoryStore;

    /// Cheap parameters: these tests exercise the sealing logic, not Argon2's cost.
    const FAST: KdfParams = KdfParams {
        m_kib: 64,
        t: 1,
        p: 1,
    };

    /// A passphrase at [`FAST`] cost.
    fn pass(p: &str) -> KeyProtection {
        KeyProtection::Passphrase {
            passphrase: Zeroizing::new(p.as_bytes().to_vec()),
            params: FAST,
        }
    }

    #[test]
    fn seal_open_round_trip_and_aad_binding() {
        let kek = Kek::derive(b"pw", &FAST, b"0123456789abcdef").unwrap();
        let a = kek.seal(b"root", b"secret").unwrap();
        let b = kek.seal(b"root", b"secret").unwrap();
        assert_ne!(a, b, "fresh nonce per seal");
        assert_eq!(&*kek.open(b"root", &a).unwrap(), b"secret");
        assert!(matches!(
            kek.open(b"intermediate", &a),
            Err(Error::WrongPassphrase)
        ));
        let other = Kek::derive(b"pw2", &FAST, b"0123456789abcdef").unwrap();
        assert!(matches!(
            other.open(b"root", &a),
            Err(Error::WrongPassphrase)
        ));
        assert!(matches!(kek.open(b"root", "AAAA"), Err(Error::Corrupt(_))));
        assert!(matches!(kek.open(b"root", "%%"), Err(Error::Corrupt(_))));
    }

    #[test]
    fn unlock_creates_checks_and_refuses() {
        let store = MemoryStore::default();
        assert!(matches!(
            unlock(&store, KeyProtection::Unencrypted),
            Ok((Sealer::Plaintext, false))
        ));
        let (s, created) = unlock(&store, pass("right")).unwrap();
        assert!(created && s.kek().is_some());
        let record = store.get(KEK_TREE, KEK_KEY).unwrap().unwrap();
        let (_, created) = unlock(&store, pass("right")).unwrap();
        assert!(!created);
        assert!(matches!(
            unlock(&store, pass("wrong")),
            Err(Error::WrongPassphrase)
        ));
        assert!(matches!(
            unlock(&store, KeyProtection::Unencrypted),
            Err(Error::KeysSealed)
        ));
        assert!(matches!(unlock(&store, pass("")), Err(Error::Key(_))));
        assert_eq!(store.get(KEK_TREE, KEK_KEY).unwrap().unwrap(), record);
    }

    #[test]
    fn absurd_stored_parameters_are_refused() {
        let huge = KdfParams {
            m_kib: u32::MAX,
            t: 1,
            p: 1,
        };
        assert!(matches!(
            Kek::derive(b"pw", &huge, b"0123456789abcdef"),
            Err(Error::Corrupt(_))
        ));
    }

    #[test]
    fn bytes_round_trip_and_migration_flag() {
        let kek = Sealer::Kek(Arc::new(
            Kek::derive(b"pw", &FAST, b"0123456789abcdef").unwrap(),
        ));
        let sealed = kek.seal_bytes(b"tok", b"\x30der").unwrap();
        assert!(sealed.starts_with(SEALED_PREFIX));
        let (der, was_plain) = kek.open_bytes(b"tok", &sealed).unwrap();
        assert_eq!(&*der, b"\x30der");
        assert!(!was_plain);
        let (_, was_plain) = kek.open_bytes(b"tok", b"\x30der").unwrap();
        assert!(was_plain);
        assert!(matches!(
            Sealer::Plaintext.open_bytes(b"tok", &sealed),
            Err(Error::KeysSealed)
        ));
    }
}
