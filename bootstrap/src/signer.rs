//! The CA's dedicated token-signing key (ES256, P-256): created on first use, kept in the
//! store, and the only key a bootstrap token verifies with.
//!
//! It is separate from the CA keys so that rotating or re-keying the CA does not touch
//! outstanding tokens, and a token-key leak cannot sign certificates.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use writ_ca::TrustDomain;
use writ_ca::seal::Sealer;
use writ_ca::store::Store;
use writ_ca::{CaSigningKey, KeyType, PrivateKey};
use zeroize::Zeroizing;

use crate::claims::Claims;
use crate::{Error, MAX_TOKEN_LEN, Result, SecretToken};

/// Store tree for the bootstrap feature's own settings and key.
pub(crate) const KEY_TREE: &str = "bootstrap";
/// The token-signing key, PKCS#8 DER.
pub(crate) const KEY_NAME: &[u8] = b"token_signing_key";

/// Signs and verifies bootstrap tokens with the persisted ES256 key.
pub(crate) struct TokenSigner {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl TokenSigner {
    /// Loads the key from `store`, generating and persisting it the first time, stored
    /// through `sealer` and bound (AAD) to the trust domain. A key bound to one of
    /// `previous` (a trust-domain migration) is re-bound to `td`.
    pub fn load_or_create(
        store: &dyn Store,
        sealer: &Sealer,
        td: &TrustDomain,
        previous: &[TrustDomain],
    ) -> Result<Self> {
        let aad_for =
            |td: &TrustDomain| format!("writ bootstrap token-signing key v1|{td}").into_bytes();
        let aad = aad_for(td);
        let pkcs8 = match store.get(KEY_TREE, KEY_NAME)? {
            Some(stored) => {
                let (der, reseal) = match sealer.open_bytes(&aad, &stored) {
                    Ok((der, unsealed)) => (der, unsealed.then_some("it was stored unencrypted")),
                    Err(e) => previous
                        .iter()
                        .find_map(|old| sealer.open_bytes(&aad_for(old), &stored).ok())
                        .map(|(der, _)| (der, Some("the trust domain changed")))
                        .ok_or(Error::Sealing(e))?,
                };
                if let Some(why) = reseal {
                    let sealed = sealer.seal_bytes(&aad, &der).map_err(Error::Sealing)?;
                    if store.compare_and_swap(KEY_TREE, KEY_NAME, Some(&stored), Some(&sealed))? {
                        tracing::warn!(reason = why, "re-sealed the bootstrap token-signing key");
                    }
                }
                der
            }
            None => {
                let fresh = PrivateKey::generate(KeyType::EcP256).map_err(|e| {
                    Error::Signing(format!("generating the token-signing key: {e}"))
                })?;
                let der = fresh.pkcs8_der();
                let sealed = sealer.seal_bytes(&aad, der).map_err(Error::Sealing)?;
                // Compare-and-swap, so two openers racing on one store settle on one key.
                if store.compare_and_swap(KEY_TREE, KEY_NAME, None, Some(&sealed))? {
                    tracing::info!("created the bootstrap token-signing key (ES256)");
                    Zeroizing::new(der.to_vec())
                } else {
                    let stored = store.get(KEY_TREE, KEY_NAME)?.ok_or_else(|| {
                        Error::Corrupt("the token-signing key vanished while being created".into())
                    })?;
                    sealer.open_bytes(&aad, &stored).map_err(Error::Sealing)?.0
                }
            }
        };
        let key = PrivateKey::from_pkcs8_der(&pkcs8)
            .map_err(|e| Error::Corrupt(format!("token-signing key: {e}")))?;
        if key.kind() != KeyType::EcP256 {
            return Err(Error::Corrupt(format!(
                "token-signing key is {}, expected ec-p256",
                key.kind()
            )));
        }
        let signer = Self::from_key(&key);
        signer.self_test()?;
        Ok(signer)
    }

    /// Wraps an ES256 key.
    pub fn from_key(key: &PrivateKey) -> Self {
        // Pinned to ES256: a header naming any other algorithm never reaches a verifier.
        let mut validation = Validation::new(Algorithm::ES256);
        // Times, issuer and audience are checked by `Claims::check` against the caller's
        // `now`; jsonwebtoken's own checks read the system clock.
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.leeway = 0;
        Self {
            encoding: EncodingKey::from_ec_der(key.pkcs8_der()),
            decoding: DecodingKey::from_ec_der(key.public_key_raw()),
            validation,
        }
    }

    /// Signs `claims` into a compact JWT.
    pub fn sign(&self, claims: &Claims) -> Result<SecretToken> {
        let token = jsonwebtoken::encode(&Header::new(Algorithm::ES256), claims, &self.encoding)
            .map_err(|e| Error::Signing(e.to_string()))?;
        Ok(SecretToken::new(token))
    }

    /// Checks size, shape, the pinned algorithm and the signature; returns the claims,
    /// which the caller must still [`Claims::check`].
    pub fn verify(&self, token: &str) -> Result<Claims> {
        check_len(token)?;
        check_header(token)?;
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(map_jwt_error)
    }

    /// Proves the installed jsonwebtoken provider signs and verifies ES256 with this key,
    /// so a foreign provider fails at start-up rather than on the first machine.
    fn self_test(&self) -> Result<()> {
        let probe = serde_json::json!({ "probe": "writ-bootstrap" });
        let fail = |why: String| {
            Error::Signing(format!(
                "the process's jsonwebtoken crypto provider cannot do ES256 ({why}); \
                 call writ_bootstrap::install_crypto_provider() at start-up"
            ))
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::ES256), &probe, &self.encoding)
            .map_err(|e| fail(e.to_string()))?;
        jsonwebtoken::decode::<serde_json::Value>(&token, &self.decoding, &self.validation)
            .map_err(|e| fail(e.to_string()))?;
        Ok(())
    }
}

/// Refuses a token over [`MAX_TOKEN_LEN`] before any parsing.
pub(crate) fn check_len(token: &str) -> Result<()> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(Error::TooLarge {
            len: token.len(),
            max: MAX_TOKEN_LEN,
        });
    }
    Ok(())
}

/// Reads `alg` ourselves: jsonwebtoken cannot even parse `"alg": "none"`, and the caller
/// deserves "wrong algorithm" rather than "malformed" for an algorithm-confusion attempt.
fn check_header(token: &str) -> Result<()> {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Error::Malformed("expected three dot-separated parts"));
    };
    let header = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| Error::Malformed("the header is not base64url"))?;
    let header: serde_json::Value =
        serde_json::from_slice(&header).map_err(|_| Error::Malformed("the header is not JSON"))?;
    let alg = header
        .get("alg")
        .ok_or(Error::Malformed("the header names no algorithm"))?;
    if alg != "ES256" {
        let alg = alg.as_str().map_or_else(|| alg.to_string(), str::to_owned);
        return Err(Error::WrongAlgorithm(alg.chars().take(16).collect()));
    }
    // RFC 7515 §4.1.11: extensions marked critical must be understood; we know none.
    if header.get("crit").is_some() {
        return Err(Error::Malformed("the header marks extensions critical"));
    }
    Ok(())
}

fn map_jwt_error(e: jsonwebtoken::errors::Error) -> Error {
    match e.kind() {
        ErrorKind::InvalidSignature => Error::BadSignature,
        ErrorKind::InvalidToken => Error::Malformed("expected three dot-separated parts"),
        ErrorKind::Base64(_) => Error::Malformed("a part is not base64url"),
        ErrorKind::Utf8(_) => Error::Malformed("a part is not UTF-8"),
        ErrorKind::Json(_)
        | ErrorKind::InvalidClaimFormat(_)
        | ErrorKind::MissingRequiredClaim(_) => {
            Error::Malformed("the claims are not writ bootstrap claims")
        }
        // Key or provider failures (the header was already pinned to ES256) are ours,
        // not the caller's.
        other => Error::Signing(format!("{other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::claims::tests::claims;
    use writ_ca::TrustDomain;

    fn signer() -> TokenSigner {
        crate::install_crypto_provider();
        TokenSigner::from_key(&PrivateKey::generate(KeyType::EcP256).unwrap())
    }

    #[test]
    fn signs_and_verifies_claims() {
        let s = signer();
        let c = claims(&TrustDomain::parse("example.org").unwrap(), 10, 20);
        let token = s.sign(&c).unwrap();
        assert_eq!(s.verify(token.expose()).unwrap(), c);
    }

    #[test]
    fn header_checks_precede_the_signature() {
        let s = signer();
        let b64 = |v: &str| URL_SAFE_NO_PAD.encode(v);
        let none = format!("{}.{}.", b64(r#"{"alg":"none"}"#), b64("{}"));
        assert!(matches!(s.verify(&none), Err(Error::WrongAlgorithm(a)) if a == "none"));
        let crit = format!(
            "{}.{}.AA",
            b64(r#"{"alg":"ES256","crit":["x"]}"#),
            b64("{}")
        );
        assert!(matches!(s.verify(&crit), Err(Error::Malformed(_))));
        let no_alg = format!("{}.{}.AA", b64(r#"{"typ":"JWT"}"#), b64("{}"));
        assert!(matches!(s.verify(&no_alg), Err(Error::Malformed(_))));
        let num = format!("{}.{}.AA", b64(r#"{"alg":7}"#), b64("{}"));
        assert!(matches!(s.verify(&num), Err(Error::WrongAlgorithm(a)) if a == "7"));
    }
}
