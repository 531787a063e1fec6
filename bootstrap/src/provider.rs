//! jsonwebtoken's crypto backend, implemented over `ring`.
//!
//! jsonwebtoken 11 panics at run time unless exactly one backend is chosen. We install our
//! own rather than enabling a bundled one, deliberately:
//! - `rust_crypto` drags a second, older RustCrypto stack (p256 0.13, rsa 0.9, sha2 0.10,
//!   der 0.7, ...) beside the one writ-ca uses: dozens of duplicate crates to audit.
//! - `aws_lc_rs` adds a C/CMake build and a second crypto library.
//! - `ring` is already in the tree (rustls, rcgen, webpki), is constant-time, and does
//!   everything a JWT needs in about a hundred lines here.
//!
//! The provider is process-wide, so it also verifies what other writ code may meet
//! (ES384, RS256-512, PS256-512, EdDSA platform tokens). It signs only ECDSA, and it
//! refuses every HMAC algorithm outright: no HS* token can verify anywhere in a process
//! running it, which closes the "public key used as HMAC secret" confusion at the root.

use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::{ErrorKind, Result as JwtResult};
use jsonwebtoken::jwk::{EllipticCurve, ThumbprintHash};
use jsonwebtoken::signature::{self, Signer, Verifier};
use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind, EncodingKey};
use ring::rand::SystemRandom;
use ring::signature::{self as sig, EcdsaKeyPair, KeyPair, RsaParameters, VerificationAlgorithm};

/// Makes writ's ring-backed provider jsonwebtoken's process default. Idempotent; call it
/// early at start-up so every jsonwebtoken user in the process shares it.
/// [`crate::Bootstrap::open`] calls it too, and self-tests ES256 on whatever is installed.
pub fn install_crypto_provider() {
    if let Err(existing) = PROVIDER.install_default()
        && !std::ptr::eq(existing, &PROVIDER)
    {
        tracing::debug!("a jsonwebtoken crypto provider was already installed; keeping it");
    }
}

/// The provider itself.
static PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: new_signer,
    verifier_factory: new_verifier,
    key_utils: KeyUtils {
        rsa_pub_components_from_private_key: rsa_components_from_private_key,
        // ring cannot parse a bare PKCS#1 public key into (n, e); no writ caller needs it.
        rsa_pub_components_from_public_key: |_| Err(ErrorKind::UnsupportedAlgorithm.into()),
        ec_pub_components_from_private_key: ec_components_from_private_key,
        ed_pub_components_from_private_key: ed_component_from_private_key,
        compute_digest,
    },
};

fn new_signer(alg: &Algorithm, key: &EncodingKey) -> JwtResult<Box<dyn JwtSigner>> {
    let signing = match alg {
        Algorithm::ES256 => &sig::ECDSA_P256_SHA256_FIXED_SIGNING,
        Algorithm::ES384 => &sig::ECDSA_P384_SHA384_FIXED_SIGNING,
        _ => return Err(ErrorKind::UnsupportedAlgorithm.into()),
    };
    if key.family() != alg.family() {
        return Err(ErrorKind::InvalidKeyFormat.into());
    }
    let rng = SystemRandom::new();
    let pair = EcdsaKeyPair::from_pkcs8(signing, key.as_bytes(), &rng)
        .map_err(|_| ErrorKind::InvalidEcdsaKey)?;
    Ok(Box::new(EcdsaSigner {
        alg: *alg,
        pair,
        rng,
    }))
}

struct EcdsaSigner {
    alg: Algorithm,
    pair: EcdsaKeyPair,
    rng: SystemRandom,
}

impl Signer<Vec<u8>> for EcdsaSigner {
    fn try_sign(&self, msg: &[u8]) -> Result<Vec<u8>, signature::Error> {
        let s = self
            .pair
            .sign(&self.rng, msg)
            .map_err(|_| signature::Error::new())?;
        Ok(s.as_ref().to_vec())
    }
}

impl JwtSigner for EcdsaSigner {
    fn algorithm(&self) -> Algorithm {
        self.alg
    }
}

fn new_verifier(alg: &Algorithm, key: &DecodingKey) -> JwtResult<Box<dyn JwtVerifier>> {
    let scheme = match alg {
        // JWS ECDSA signatures are fixed-width r||s (RFC 7518 §3.4), not ASN.1.
        Algorithm::ES256 => Scheme::Raw(&sig::ECDSA_P256_SHA256_FIXED),
        Algorithm::ES384 => Scheme::Raw(&sig::ECDSA_P384_SHA384_FIXED),
        Algorithm::EdDSA => Scheme::Raw(&sig::ED25519),
        Algorithm::RS256 => Scheme::Rsa(&sig::RSA_PKCS1_2048_8192_SHA256),
        Algorithm::RS384 => Scheme::Rsa(&sig::RSA_PKCS1_2048_8192_SHA384),
        Algorithm::RS512 => Scheme::Rsa(&sig::RSA_PKCS1_2048_8192_SHA512),
        Algorithm::PS256 => Scheme::Rsa(&sig::RSA_PSS_2048_8192_SHA256),
        Algorithm::PS384 => Scheme::Rsa(&sig::RSA_PSS_2048_8192_SHA384),
        Algorithm::PS512 => Scheme::Rsa(&sig::RSA_PSS_2048_8192_SHA512),
        // HS256/384/512 are deliberately refused (see the module comment), as is any
        // algorithm a later jsonwebtoken adds before we review it.
        _ => return Err(ErrorKind::UnsupportedAlgorithm.into()),
    };
    if key.family() != alg.family() {
        return Err(ErrorKind::InvalidKeyFormat.into());
    }
    Ok(Box::new(RingVerifier {
        alg: *alg,
        scheme,
        key: key.clone(),
    }))
}

enum Scheme {
    /// Key bytes as ring takes them: an uncompressed EC point, an Ed25519 key.
    Raw(&'static dyn VerificationAlgorithm),
    /// RSA: the key is PKCS#1 DER or (n, e) from a JWK.
    Rsa(&'static RsaParameters),
}

struct RingVerifier {
    alg: Algorithm,
    scheme: Scheme,
    key: DecodingKey,
}

impl Verifier<Vec<u8>> for RingVerifier {
    fn verify(&self, msg: &[u8], signature: &Vec<u8>) -> Result<(), signature::Error> {
        let ok = match (&self.scheme, self.key.kind()) {
            (Scheme::Raw(alg), DecodingKeyKind::SecretOrDer(key)) => {
                sig::UnparsedPublicKey::new(*alg, key).verify(msg, signature)
            }
            (Scheme::Rsa(params), DecodingKeyKind::SecretOrDer(der)) => {
                sig::UnparsedPublicKey::new(*params, der).verify(msg, signature)
            }
            (Scheme::Rsa(params), DecodingKeyKind::RsaModulusExponent { n, e }) => {
                sig::RsaPublicKeyComponents { n, e }.verify(params, msg, signature)
            }
            (Scheme::Raw(_), DecodingKeyKind::RsaModulusExponent { .. }) => {
                return Err(signature::Error::new());
            }
        };
        ok.map_err(|_| signature::Error::new())
    }
}

impl JwtVerifier for RingVerifier {
    fn algorithm(&self) -> Algorithm {
        self.alg
    }
}

fn rsa_components_from_private_key(der: &[u8]) -> JwtResult<(Vec<u8>, Vec<u8>)> {
    let pair =
        sig::RsaKeyPair::from_der(der).map_err(|e| ErrorKind::InvalidRsaKey(e.to_string()))?;
    let c = sig::RsaPublicKeyComponents::<Vec<u8>>::from(pair.public());
    Ok((c.n, c.e))
}

fn ec_components_from_private_key(
    pkcs8: &[u8],
    alg: Algorithm,
) -> JwtResult<(EllipticCurve, Vec<u8>, Vec<u8>)> {
    let (signing, curve, width) = match alg {
        Algorithm::ES256 => (
            &sig::ECDSA_P256_SHA256_FIXED_SIGNING,
            EllipticCurve::P256,
            32,
        ),
        Algorithm::ES384 => (
            &sig::ECDSA_P384_SHA384_FIXED_SIGNING,
            EllipticCurve::P384,
            48,
        ),
        _ => return Err(ErrorKind::InvalidEcdsaKey.into()),
    };
    let pair = EcdsaKeyPair::from_pkcs8(signing, pkcs8, &SystemRandom::new())
        .map_err(|_| ErrorKind::InvalidEcdsaKey)?;
    // ring's public key is the uncompressed point 0x04 || x || y.
    match pair.public_key().as_ref().split_first() {
        Some((4, xy)) if xy.len() == 2 * width => {
            let (x, y) = xy.split_at(width);
            Ok((curve, x.to_vec(), y.to_vec()))
        }
        _ => Err(ErrorKind::InvalidEcdsaKey.into()),
    }
}

fn ed_component_from_private_key(pkcs8: &[u8], curve: &EllipticCurve) -> JwtResult<Vec<u8>> {
    if *curve != EllipticCurve::Ed25519 {
        return Err(ErrorKind::InvalidAlgorithm.into());
    }
    let pair = sig::Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8)
        .map_err(|_| ErrorKind::InvalidEddsaKey)?;
    Ok(pair.public_key().as_ref().to_vec())
}

fn compute_digest(data: &[u8], hash: ThumbprintHash) -> JwtResult<Vec<u8>> {
    let alg = match hash {
        ThumbprintHash::SHA256 => &ring::digest::SHA256,
        ThumbprintHash::SHA384 => &ring::digest::SHA384,
        ThumbprintHash::SHA512 => &ring::digest::SHA512,
        _ => return Err(ErrorKind::UnsupportedAlgorithm.into()),
    };
    Ok(ring::digest::digest(alg, data).as_ref().to_vec())
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{Header, Validation, decode, encode};
    use serde_json::{Value, json};
    use writ_ca::{CaSigningKey, KeyType, PrivateKey};

    use super::*;

    fn validation(alg: Algorithm) -> Validation {
        let mut v = Validation::new(alg);
        v.required_spec_claims.clear();
        v.validate_exp = false;
        v.validate_aud = false;
        v
    }

    #[test]
    fn es256_round_trips_and_rejects_another_key() {
        install_crypto_provider();
        let key = PrivateKey::generate(KeyType::EcP256).unwrap();
        let other = PrivateKey::generate(KeyType::EcP256).unwrap();
        let enc = EncodingKey::from_ec_der(key.pkcs8_der());
        let token = encode(&Header::new(Algorithm::ES256), &json!({"a": 1}), &enc).unwrap();
        let dec = DecodingKey::from_ec_der(key.public_key_raw());
        let got = decode::<Value>(&token, &dec, &validation(Algorithm::ES256)).unwrap();
        assert_eq!(got.claims, json!({"a": 1}));
        let wrong = DecodingKey::from_ec_der(other.public_key_raw());
        let err = decode::<Value>(&token, &wrong, &validation(Algorithm::ES256)).unwrap_err();
        assert_eq!(*err.kind(), ErrorKind::InvalidSignature);
    }

    #[test]
    fn hmac_is_refused_both_ways() {
        install_crypto_provider();
        let secret = EncodingKey::from_secret(b"k");
        let err = encode(&Header::new(Algorithm::HS256), &json!({}), &secret).unwrap_err();
        assert_eq!(*err.kind(), ErrorKind::UnsupportedAlgorithm);
        assert!(new_verifier(&Algorithm::HS256, &DecodingKey::from_secret(b"k")).is_err());
    }

    #[test]
    fn rs256_and_eddsa_verify_for_other_callers() {
        install_crypto_provider();
        let rsa = PrivateKey::generate(KeyType::Rsa2048).unwrap();
        let pair = sig::RsaKeyPair::from_pkcs8(rsa.pkcs8_der()).unwrap();
        let msg = b"header.payload";
        let mut s = vec![0; pair.public().modulus_len()];
        let rng = SystemRandom::new();
        pair.sign(&sig::RSA_PKCS1_SHA256, &rng, msg, &mut s)
            .unwrap();
        let der = DecodingKey::from_rsa_der(pair.public().as_ref());
        let v = new_verifier(&Algorithm::RS256, &der).unwrap();
        assert!(v.verify(msg, &s).is_ok());
        assert!(v.verify(b"other", &s).is_err());
        let c = sig::RsaPublicKeyComponents::<Vec<u8>>::from(pair.public());
        let comps = DecodingKey::from_rsa_raw_components(&c.n, &c.e);
        assert!(
            new_verifier(&Algorithm::RS256, &comps)
                .unwrap()
                .verify(msg, &s)
                .is_ok()
        );

        let ed_doc = sig::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let ed = sig::Ed25519KeyPair::from_pkcs8(ed_doc.as_ref()).unwrap();
        let s = ed.sign(msg).as_ref().to_vec();
        let key = DecodingKey::from_ed_der(ed.public_key().as_ref());
        assert!(
            new_verifier(&Algorithm::EdDSA, &key)
                .unwrap()
                .verify(msg, &s)
                .is_ok()
        );
        let pubkey = ed_component_from_private_key(ed_doc.as_ref(), &EllipticCurve::Ed25519);
        assert_eq!(pubkey.unwrap(), ed.public_key().as_ref());
    }

    #[test]
    fn key_utils_cover_ec_and_digest() {
        let key = PrivateKey::generate(KeyType::EcP256).unwrap();
        let (curve, x, y) =
            ec_components_from_private_key(key.pkcs8_der(), Algorithm::ES256).unwrap();
        assert_eq!(curve, EllipticCurve::P256);
        assert_eq!([&[4u8][..], &x, &y].concat(), key.public_key_raw());
        assert_eq!(
            compute_digest(b"", ThumbprintHash::SHA256).unwrap().len(),
            32
        );
    }
}
