//! The trust bundle: the roots a workload of this trust domain trusts, with a sequence
//! number that changes on every change.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use der::Decode;
use serde_json::{Value, json};
use x509_cert::Certificate;

use crate::{Error, KeyType, TrustDomain};

/// The current set of roots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustBundle {
    /// The trust domain.
    pub trust_domain: TrustDomain,
    /// Root certificates, DER, oldest generation first.
    pub roots: Vec<Vec<u8>>,
    /// Changes whenever `roots` changes; never goes backwards.
    pub sequence: u64,
    /// How often a client that cannot watch should re-fetch.
    pub refresh_hint: Duration,
}

impl TrustBundle {
    /// The roots as concatenated PEM blocks.
    pub fn to_pem(&self) -> String {
        crate::x509::certs_to_pem(&self.roots)
    }

    /// The SPIFFE bundle format (SPIFFE Trust Domain and Bundle spec §4): a JWKS with one
    /// `x509-svid` key per root carrying its certificate in `x5c`, no `kid`, plus
    /// `spiffe_sequence` and `spiffe_refresh_hint`.
    pub fn to_spiffe_json(&self) -> Result<Value, Error> {
        let keys = self
            .roots
            .iter()
            .map(|der| jwk(der))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(json!({
            "keys": keys,
            "spiffe_sequence": self.sequence,
            "spiffe_refresh_hint": self.refresh_hint.as_secs(),
        }))
    }
}

fn jwk(der: &[u8]) -> Result<Value, Error> {
    let cert = Certificate::from_der(der).map_err(|e| Error::BadCertificate(e.to_string()))?;
    let spki = cert.tbs_certificate().subject_public_key_info();
    let kind = crate::csr::spki_key_type(spki)?;
    let raw = spki
        .subject_public_key
        .as_bytes()
        .ok_or_else(|| Error::BadCertificate("public key has unused bits".into()))?;
    let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
    let mut key = match kind {
        KeyType::EcP256 | KeyType::EcP384 => {
            let n = if kind == KeyType::EcP256 { 32 } else { 48 };
            if raw.len() != 1 + 2 * n || raw[0] != 4 {
                return Err(Error::BadCertificate("EC point is not uncompressed".into()));
            }
            json!({
                "kty": "EC",
                "crv": if kind == KeyType::EcP256 { "P-256" } else { "P-384" },
                "x": b64(&raw[1..1 + n]),
                "y": b64(&raw[1 + n..]),
            })
        }
        _ => {
            let (n, e) = crate::csr::rsa_components(raw)?;
            json!({ "kty": "RSA", "n": b64(&n), "e": b64(&e) })
        }
    };
    key["use"] = json!("x509-svid");
    key["x5c"] = json!([STANDARD.encode(der)]);
    Ok(key)
}
