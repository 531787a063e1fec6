//! The token's claims as they travel (and as the server stores them), the `jti` type, and
//! the issuer, audience and time checks (RFC 7519 §4.1).

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use writ_ca::TrustDomain;

use crate::{Error, Result};

/// Bytes of randomness in a `jti`: 128 bits, so guessing a live one is hopeless.
const JTI_BYTES: usize = 16;

/// The claims writ signs into a bootstrap token. Stored verbatim (never the token), so
/// verification can insist the token's claims equal what the admin minted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Claims {
    /// This CA: `writ://<trust-domain>`.
    pub iss: String,
    /// writ bootstrap for this trust domain: `writ-bootstrap:<trust-domain>`.
    pub aud: String,
    /// The SPIFFE ID the token grants.
    pub sub: String,
    /// The token's unique id.
    pub jti: Jti,
    /// Minted at, Unix seconds.
    pub iat: u64,
    /// Not before, Unix seconds.
    pub nbf: u64,
    /// Expires at, Unix seconds.
    pub exp: u64,
    /// SHA-256 of the CA root, lowercase hex: the machine pins it before sending the token.
    pub ca_fingerprint: String,
    /// DNS names the certificate may carry besides the SPIFFE ID.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<String>,
}

impl Claims {
    /// Checks issuer, audience and the validity window at `now`, in that order.
    pub fn check(&self, td: &TrustDomain, now: SystemTime, leeway: Duration) -> Result<()> {
        let iss = issuer(td);
        if self.iss != iss {
            return Err(Error::WrongIssuer {
                expected: iss,
                found: shorten(&self.iss),
            });
        }
        let aud = audience(td);
        if self.aud != aud {
            return Err(Error::WrongAudience {
                expected: aud,
                found: shorten(&self.aud),
            });
        }
        if self.nbf > self.exp || self.iat > self.exp {
            return Err(Error::Malformed("the validity window is inverted"));
        }
        let (now, leeway) = (unix_secs(now), leeway.as_secs());
        if self.nbf > now.saturating_add(leeway) {
            return Err(Error::NotYetValid {
                jti: self.jti.clone(),
                not_before: from_unix(self.nbf),
            });
        }
        if is_expired(self.exp, now, leeway) {
            return Err(Error::Expired {
                jti: self.jti.clone(),
                expired_at: from_unix(self.exp),
            });
        }
        Ok(())
    }
}

/// The `iss` of tokens minted by the CA of `td`.
pub(crate) fn issuer(td: &TrustDomain) -> String {
    format!("{}{td}", crate::BOOTSTRAP_ISSUER_PREFIX)
}

/// The `aud` of tokens redeemable at writ's bootstrap endpoint for `td`.
pub(crate) fn audience(td: &TrustDomain) -> String {
    format!("writ-bootstrap:{td}")
}

/// True once `exp` plus `leeway` seconds has passed at `now` (all Unix seconds).
pub(crate) fn is_expired(exp: u64, now: u64, leeway: u64) -> bool {
    now > exp.saturating_add(leeway)
}

/// Unix seconds; a clock before 1970 reads as 0 (every token is then not yet valid).
pub(crate) fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// 9999-12-31T23:59:59Z, the last second RFC 3339 (and so every message naming a token's
/// times) can write.
const LATEST: u64 = 253_402_300_799;

/// The instant `secs` after the epoch; a token's claim beyond [`LATEST`] reads as
/// `LATEST`, so no claim can overflow the clock or an error message that prints it.
pub(crate) fn from_unix(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs.min(LATEST))
}

/// True for a SHA-256 fingerprint as writ prints them: 64 lowercase hex digits.
pub(crate) fn is_fingerprint(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Claim values echoed in errors come from a token; keep messages short.
fn shorten(s: &str) -> String {
    match s.char_indices().nth(80) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_owned(),
    }
}

/// A token's unique id: 128 random bits as 32 lowercase hex digits. It names a token in
/// logs and admin commands; it does not authorize anything.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Jti(String);

impl Jti {
    /// Parses a `jti` as printed by `list` or `mint`.
    pub fn parse(s: &str) -> Result<Self> {
        let ok =
            s.len() == 2 * JTI_BYTES && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !ok {
            return Err(Error::InvalidInput(format!(
                "{:?} is not a bootstrap token id: expected {} lowercase hex digits",
                shorten(s),
                2 * JTI_BYTES
            )));
        }
        Ok(Self(s.to_owned()))
    }

    /// A fresh random `jti` from the operating system's RNG.
    pub(crate) fn generate() -> Result<Self> {
        use ring::rand::SecureRandom;
        let mut bytes = [0u8; JTI_BYTES];
        ring::rand::SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| Error::Signing("the operating system's RNG failed".into()))?;
        Ok(Self(hex::encode(bytes)))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Jti {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Jti {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Jti({})", self.0)
    }
}

impl FromStr for Jti {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

impl TryFrom<String> for Jti {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        Self::parse(&s)
    }
}

impl From<Jti> for String {
    fn from(j: Jti) -> Self {
        j.0
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn claims(td: &TrustDomain, iat: u64, exp: u64) -> Claims {
        Claims {
            iss: issuer(td),
            aud: audience(td),
            sub: format!("spiffe://{td}/host/a"),
            jti: Jti::generate().unwrap(),
            iat,
            nbf: iat,
            exp,
            ca_fingerprint: "ab".repeat(32),
            dns: vec![],
        }
    }

    #[test]
    fn jti_is_128_bits_of_hex_and_parses_back() {
        let a = Jti::generate().unwrap();
        assert_eq!(a.as_str().len(), 32);
        assert_eq!(Jti::parse(a.as_str()).unwrap(), a);
        assert_ne!(a, Jti::generate().unwrap());
        for bad in [
            "",
            "ABCDEF0123456789abcdef0123456789",
            "0123",
            &"0".repeat(33),
            "g".repeat(32).as_str(),
        ] {
            assert!(
                matches!(Jti::parse(bad), Err(Error::InvalidInput(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn time_window_has_leeway_on_both_ends() {
        let td = TrustDomain::parse("example.org").unwrap();
        let c = claims(&td, 1000, 1900);
        let leeway = Duration::from_secs(30);
        for ok in [970, 1000, 1900, 1930] {
            assert!(c.check(&td, from_unix(ok), leeway).is_ok(), "{ok}");
        }
        assert!(matches!(
            c.check(&td, from_unix(969), leeway),
            Err(Error::NotYetValid { .. })
        ));
        assert!(matches!(
            c.check(&td, from_unix(1931), leeway),
            Err(Error::Expired { .. })
        ));
    }

    #[test]
    fn issuer_and_audience_are_exact() {
        let td = TrustDomain::parse("example.org").unwrap();
        let other = TrustDomain::parse("example.org.evil").unwrap();
        let now = from_unix(1000);
        let mut c = claims(&td, 1000, 1900);
        c.iss = issuer(&other);
        assert!(matches!(
            c.check(&td, now, Duration::ZERO),
            Err(Error::WrongIssuer { .. })
        ));
        let mut c = claims(&td, 1000, 1900);
        c.aud = audience(&other);
        assert!(matches!(
            c.check(&td, now, Duration::ZERO),
            Err(Error::WrongAudience { .. })
        ));
    }
}
