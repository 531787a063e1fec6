//! Key types by mnemonic, private keys that zeroize, and the signing-key trait the CA
//! signs through (so an HSM or KMS key can replace a software key without touching policy).

use std::fmt;
use std::str::FromStr;

use rcgen::{PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PKCS_RSA_SHA256, SignatureAlgorithm};
use rustls_pki_types::PrivatePkcs8KeyDer;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::Zeroizing;

use crate::Error;

/// The key types writ issues for and signs with, named by mnemonic everywhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyType {
    /// ECDSA on P-256 with SHA-256.
    EcP256,
    /// ECDSA on P-384 with SHA-384.
    EcP384,
    /// RSA 2048-bit, PKCS#1 v1.5 with SHA-256.
    Rsa2048,
    /// RSA 3072-bit.
    Rsa3072,
    /// RSA 4096-bit.
    Rsa4096,
}

impl KeyType {
    /// Every key type, in mnemonic order.
    pub const ALL: [KeyType; 5] = [
        KeyType::EcP256,
        KeyType::EcP384,
        KeyType::Rsa2048,
        KeyType::Rsa3072,
        KeyType::Rsa4096,
    ];

    /// The mnemonic: `ec-p256`, `ec-p384`, `rsa-2048`, `rsa-3072`, `rsa-4096`.
    pub fn mnemonic(self) -> &'static str {
        match self {
            KeyType::EcP256 => "ec-p256",
            KeyType::EcP384 => "ec-p384",
            KeyType::Rsa2048 => "rsa-2048",
            KeyType::Rsa3072 => "rsa-3072",
            KeyType::Rsa4096 => "rsa-4096",
        }
    }

    /// True for RSA keys (which may also carry keyEncipherment, RFC 8813 §3).
    pub fn is_rsa(self) -> bool {
        matches!(self, KeyType::Rsa2048 | KeyType::Rsa3072 | KeyType::Rsa4096)
    }

    /// The signature algorithm a key of this type signs with.
    pub fn signature_algorithm(self) -> &'static SignatureAlgorithm {
        match self {
            KeyType::EcP256 => &PKCS_ECDSA_P256_SHA256,
            KeyType::EcP384 => &PKCS_ECDSA_P384_SHA384,
            _ => &PKCS_RSA_SHA256,
        }
    }

    /// The RSA type for a modulus of `bits`, if writ accepts that size.
    pub fn rsa_of_bits(bits: usize) -> Option<KeyType> {
        match bits {
            2048 => Some(KeyType::Rsa2048),
            3072 => Some(KeyType::Rsa3072),
            4096 => Some(KeyType::Rsa4096),
            _ => None,
        }
    }

    fn rsa_bits(self) -> Option<usize> {
        match self {
            KeyType::Rsa2048 => Some(2048),
            KeyType::Rsa3072 => Some(3072),
            KeyType::Rsa4096 => Some(4096),
            _ => None,
        }
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.mnemonic())
    }
}

impl FromStr for KeyType {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        KeyType::ALL
            .into_iter()
            .find(|k| k.mnemonic() == s)
            .ok_or_else(|| Error::UnknownKeyType(s.to_owned()))
    }
}

impl Serialize for KeyType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.mnemonic())
    }
}

impl<'de> Deserialize<'de> for KeyType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A key the CA signs certificates with. Implemented by [`PrivateKey`] in software; an
/// HSM or KMS key implements it without ever exposing the private half.
pub trait CaSigningKey: Send + Sync {
    /// The key's type.
    fn key_type(&self) -> KeyType;
    /// The public key as the subjectPublicKey BIT STRING contents (EC point or PKCS#1 RSA key).
    fn public_key_raw(&self) -> &[u8];
    /// Signs `msg` with the key type's signature algorithm.
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, Error>;
}

/// Lets rcgen sign through any [`CaSigningKey`].
pub(crate) struct RcgenSigner<'a>(pub(crate) &'a dyn CaSigningKey);

impl rcgen::PublicKeyData for RcgenSigner<'_> {
    fn der_bytes(&self) -> &[u8] {
        self.0.public_key_raw()
    }
    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.0.key_type().signature_algorithm()
    }
}

impl rcgen::SigningKey for RcgenSigner<'_> {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.0.sign(msg).map_err(|_| rcgen::Error::RingUnspecified)
    }
}

/// A software private key. The PKCS#8 bytes zeroize on drop; `Debug` shows only the type.
pub struct PrivateKey {
    kind: KeyType,
    pkcs8: Zeroizing<Vec<u8>>,
    pair: rcgen::KeyPair,
}

impl PrivateKey {
    /// Generates a fresh key of `kind` from the operating system's RNG.
    pub fn generate(kind: KeyType) -> Result<Self, Error> {
        let pkcs8 = match kind.rsa_bits() {
            // ring cannot generate RSA keys; the `rsa` crate does, and ring signs with them.
            Some(bits) => {
                use rsa::pkcs8::EncodePrivateKey;
                let key = rsa::PrivateKey::new(&mut getrandom::SysRng, bits)
                    .map_err(|e| Error::Key(format!("RSA key generation failed: {e}")))?;
                let doc = key
                    .to_pkcs8_der()
                    .map_err(|e| Error::Key(format!("RSA key encoding failed: {e}")))?;
                Zeroizing::new(doc.as_bytes().to_vec())
            }
            None => {
                let pair = rcgen::KeyPair::generate_for(kind.signature_algorithm())
                    .map_err(|e| Error::Key(e.to_string()))?;
                Zeroizing::new(pair.serialize_der())
            }
        };
        Self::from_pkcs8_der(&pkcs8)
    }

    /// Loads an unencrypted PKCS#8 DER key and detects its type.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, Error> {
        let pkcs8 = Zeroizing::new(der.to_vec());
        let kind = detect_key_type(&pkcs8)?;
        let pair = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(
            &PrivatePkcs8KeyDer::from(pkcs8.as_slice()),
            kind.signature_algorithm(),
        )
        .map_err(|e| Error::Key(format!("unusable {kind} key: {e}")))?;
        Ok(Self { kind, pkcs8, pair })
    }

    /// Loads a PEM `PRIVATE KEY` (PKCS#8).
    pub fn from_pem(pem: &str) -> Result<Self, Error> {
        use rustls_pki_types::pem::PemObject;
        let der = PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes())
            .map_err(|_| Error::Key("expected a PEM \"PRIVATE KEY\" (PKCS#8) block".into()))?;
        Self::from_pkcs8_der(der.secret_pkcs8_der())
    }

    /// The key's type.
    pub fn kind(&self) -> KeyType {
        self.kind
    }

    /// The PKCS#8 DER bytes (secret).
    pub fn pkcs8_der(&self) -> &[u8] {
        &self.pkcs8
    }

    /// The key as PEM `PRIVATE KEY` (secret; zeroizes on drop).
    pub fn to_pem(&self) -> Zeroizing<String> {
        Zeroizing::new(self.pair.serialize_pem())
    }

    /// The DER SubjectPublicKeyInfo.
    pub fn public_key_spki(&self) -> Vec<u8> {
        rcgen::PublicKeyData::subject_public_key_info(&self.pair)
    }

    /// The rcgen key pair, for building CSRs and self-signed certificates.
    pub fn rcgen_pair(&self) -> &rcgen::KeyPair {
        &self.pair
    }
}

impl CaSigningKey for PrivateKey {
    fn key_type(&self) -> KeyType {
        self.kind
    }
    fn public_key_raw(&self) -> &[u8] {
        rcgen::PublicKeyData::der_bytes(&self.pair)
    }
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, Error> {
        rcgen::SigningKey::sign(&self.pair, msg).map_err(|e| Error::Key(e.to_string()))
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrivateKey({}, <redacted>)", self.kind)
    }
}

fn detect_key_type(pkcs8: &[u8]) -> Result<KeyType, Error> {
    use ring::signature::{
        ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P384_SHA384_ASN1_SIGNING, EcdsaKeyPair, RsaKeyPair,
    };
    let rng = ring::rand::SystemRandom::new();
    if EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8, &rng).is_ok() {
        return Ok(KeyType::EcP256);
    }
    if EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_ASN1_SIGNING, pkcs8, &rng).is_ok() {
        return Ok(KeyType::EcP384);
    }
    match RsaKeyPair::from_pkcs8(pkcs8) {
        Ok(k) => {
            let bits = k.public().modulus_len() * 8;
            KeyType::rsa_of_bits(bits)
                .ok_or_else(|| Error::UnsupportedKey(format!("RSA key of {bits} bits")))
        }
        Err(_) => Err(Error::Key(
            "not a PKCS#8 ECDSA P-256/P-384 or RSA 2048/3072/4096 key".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mnemonics_round_trip() {
        for k in KeyType::ALL {
            assert_eq!(k.mnemonic().parse::<KeyType>().unwrap(), k);
        }
        assert!("ed25519".parse::<KeyType>().is_err());
        assert!("rsa-1024".parse::<KeyType>().is_err());
    }

    #[test]
    fn generated_keys_reload_with_their_type() {
        for k in [KeyType::EcP256, KeyType::EcP384, KeyType::Rsa2048] {
            let key = PrivateKey::generate(k).unwrap();
            let again = PrivateKey::from_pem(&key.to_pem()).unwrap();
            assert_eq!(again.kind(), k);
            assert_eq!(again.public_key_raw(), key.public_key_raw());
        }
    }

    #[test]
    fn debug_redacts() {
        let key = PrivateKey::generate(KeyType::EcP256).unwrap();
        let dbg = format!("{key:?}");
        assert_eq!(dbg, "PrivateKey(ec-p256, <redacted>)");
    }
}
