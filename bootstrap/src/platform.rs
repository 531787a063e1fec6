//! Platform JWTs: Kubernetes service-account tokens and OIDC ID tokens, verified against a
//! trusted issuer's JWKS and mapped to a SPIFFE ID.
//!
//! Pure: the caller hands in the issuer's current key set and the time, so every refusal
//! is tested without files or clocks. Claims are checked here rather than by
//! jsonwebtoken's `Validation` so each refusal names what was wrong.

use std::time::{Duration, SystemTime};

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use writ_ca::{SpiffeId, TrustDomain};

use crate::signer::check_len;
use crate::{Error, Result};

/// Clock skew tolerated on `exp` and `nbf`, as Kubernetes' own API server allows.
pub const PLATFORM_LEEWAY: Duration = Duration::from_secs(60);

/// Algorithms accepted when an issuer names none: what Kubernetes and most OIDC
/// providers sign with.
pub const DEFAULT_ALGORITHMS: [Algorithm; 2] = [Algorithm::RS256, Algorithm::ES256];

/// The audience Istio's agents request tokens for, accepted when an issuer names none.
pub const DEFAULT_AUDIENCE: &str = "istio-ca";

/// How an issuer's verified claims become a SPIFFE ID in the CA's trust domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdentityMapping {
    /// Kubernetes: namespace `NS` and service account `SA` (from the `kubernetes.io`
    /// claims, or `sub` = `system:serviceaccount:NS:SA`) become `ns/NS/sa/SA`.
    Kubernetes,
    /// OIDC: `sub` becomes one path segment under `prefix` (no leading `/`).
    Subject {
        /// Path segments before the subject, such as `oidc/ci`.
        prefix: String,
    },
}

/// One trusted issuer: who it is, what it must address, and how it names workloads.
#[derive(Clone, Debug)]
pub struct PlatformIssuer {
    /// The exact `iss` claim.
    pub issuer: String,
    /// Accepted `aud` values; a token must name at least one.
    pub audiences: Vec<String>,
    /// Accepted signature algorithms (never an HMAC one).
    pub algorithms: Vec<Algorithm>,
    /// Claims to SPIFFE ID.
    pub mapping: IdentityMapping,
}

impl PlatformIssuer {
    /// Checks the issuer's settings once, at configuration time.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| {
            Err(Error::InvalidInput(format!(
                "jwt issuer {:?}: {m}",
                self.issuer
            )))
        };
        if self.issuer.is_empty() {
            return bad("`issuer` is empty".into());
        }
        if self.audiences.is_empty() || self.audiences.iter().any(String::is_empty) {
            return bad("`audiences` must name at least one non-empty audience".into());
        }
        if self.algorithms.is_empty() {
            return bad("`algorithms` is empty".into());
        }
        if let Some(a) = self.algorithms.iter().find(|a| !is_asymmetric(**a)) {
            return bad(format!(
                "algorithm {a:?} is not accepted: platform tokens must be signed with a public-key algorithm (RS256, ES256, ...)"
            ));
        }
        if let IdentityMapping::Subject { prefix } = &self.mapping {
            // A throwaway trust domain: only the path's syntax matters here.
            let td = TrustDomain::parse("example.org").map_err(Error::Storage)?;
            if let Err(e) = td.workload(&format!("{prefix}/x")) {
                return bad(format!("`subject_prefix`: {e}"));
            }
        }
        Ok(())
    }
}

fn is_asymmetric(a: Algorithm) -> bool {
    !matches!(a, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

/// A platform token that verified: the identity it proves.
#[derive(Clone, Debug)]
pub struct PlatformIdentity {
    /// The SPIFFE ID the claims map to.
    pub spiffe_id: SpiffeId,
    /// The issuer that vouched for it.
    pub issuer: String,
    /// The token's `sub`, for logs.
    pub subject: String,
    /// The token's `exp`.
    pub expires_at: SystemTime,
}

/// The `iss` a token claims, read without verification so the caller can pick the issuer
/// (and its keys) to verify with. Nothing else about the token is trusted yet.
pub fn peek_issuer(token: &str) -> Result<String> {
    #[derive(Deserialize)]
    struct Iss {
        iss: String,
    }
    check_len(token)?;
    jsonwebtoken::dangerous::insecure_decode_claims::<Iss>(token)
        .map(|c| c.iss)
        .map_err(|_| Error::Malformed("the claims carry no `iss` string"))
}

/// Verifies `token` as issued by `issuer`, signed by a key of `keys`, at `now`, and maps
/// it to an identity in `td`.
pub fn verify_platform_token(
    token: &str,
    issuer: &PlatformIssuer,
    keys: &JwkSet,
    td: &TrustDomain,
    now: SystemTime,
) -> Result<PlatformIdentity> {
    check_len(token)?;
    // Idempotent; jsonwebtoken panics without a provider, so never depend on start-up order.
    crate::install_crypto_provider();
    let refuse = |reason: String| Error::PlatformToken {
        issuer: issuer.issuer.clone(),
        reason,
    };
    let header = read_header(token)?;
    let alg = header
        .alg
        .parse::<Algorithm>()
        .ok()
        .filter(|a| issuer.algorithms.contains(a))
        .ok_or_else(|| Error::WrongAlgorithm(header.alg.chars().take(16).collect()))?;
    if header.crit {
        return Err(Error::Malformed("the header marks extensions critical"));
    }
    let jwk = select_key(keys, header.kid.as_deref(), alg).map_err(refuse)?;
    let key = DecodingKey::from_jwk(jwk)
        .map_err(|_| refuse(format!("JWKS key {:?} is unusable", jwk.common.key_id)))?;
    let mut validation = Validation::new(alg);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    let claims = jsonwebtoken::decode::<Claims>(token, &key, &validation)
        .map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidSignature => refuse(
                "the signature does not verify with the issuer's key: the token was altered or signed by another key".into(),
            ),
            _ => Error::Malformed("the claims are not a platform token's (iss, sub, aud, exp)"),
        })?
        .claims;
    // Signature verified: the claims can be judged now.
    if claims.iss != issuer.issuer {
        return Err(refuse(format!("`iss` is {:?}", shorten(&claims.iss))));
    }
    if !claims.aud.iter().any(|a| issuer.audiences.contains(a)) {
        return Err(refuse(format!(
            "audience {:?} is not accepted (expected one of {:?}); request the token for that audience",
            claims.aud.iter().map(|a| shorten(a)).collect::<Vec<_>>(),
            issuer.audiences
        )));
    }
    let exp = claims
        .exp
        .ok_or_else(|| refuse("the token has no `exp`".into()))?;
    let expires_at = crate::claims::from_unix(exp);
    if expires_at + PLATFORM_LEEWAY <= now {
        return Err(refuse(format!(
            "the token expired at {}; mount a fresh projected token",
            humantime::format_rfc3339_seconds(expires_at)
        )));
    }
    if let Some(nbf) = claims.nbf {
        let nbf = crate::claims::from_unix(nbf);
        if nbf > now + PLATFORM_LEEWAY {
            return Err(refuse(format!(
                "the token is not valid before {}; check the clocks",
                humantime::format_rfc3339_seconds(nbf)
            )));
        }
    }
    let subject = claims.sub.clone().unwrap_or_default();
    let spiffe_id = map_identity(&claims, &issuer.mapping, td).map_err(refuse)?;
    Ok(PlatformIdentity {
        spiffe_id,
        issuer: issuer.issuer.clone(),
        subject,
        expires_at,
    })
}

/// Picks the verification key: by `kid`, or the only key that fits the algorithm when the
/// token names none. A key whose own `alg` differs from the token's is never used.
fn select_key<'k>(
    keys: &'k JwkSet,
    kid: Option<&str>,
    alg: Algorithm,
) -> std::result::Result<&'k Jwk, String> {
    let fits = |k: &&Jwk| {
        k.common
            .key_algorithm
            .is_none_or(|ka| ka.to_string() == format!("{alg:?}"))
    };
    match kid {
        Some(kid) => keys
            .keys
            .iter()
            .filter(fits)
            .find(|k| k.common.key_id.as_deref() == Some(kid))
            .ok_or_else(|| {
                format!(
                    "no key {:?} for {alg:?} in the issuer's JWKS (the issuer rotated keys? refresh the JWKS file)",
                    shorten(kid)
                )
            }),
        None => {
            let mut fitting = keys.keys.iter().filter(fits);
            match (fitting.next(), fitting.next()) {
                (Some(k), None) => Ok(k),
                _ => Err("the token names no `kid` and the JWKS does not have exactly one key for its algorithm".into()),
            }
        }
    }
}

fn map_identity(
    claims: &Claims,
    mapping: &IdentityMapping,
    td: &TrustDomain,
) -> std::result::Result<SpiffeId, String> {
    let path = match mapping {
        IdentityMapping::Kubernetes => {
            let from_sub = claims.sub.as_deref().map(|s| {
                s.strip_prefix("system:serviceaccount:")
                    .and_then(|rest| rest.split_once(':'))
                    .ok_or_else(|| {
                        format!("`sub` {:?} is not system:serviceaccount:NS:SA", shorten(s))
                    })
            });
            let from_k8s = claims.kubernetes.as_ref().and_then(|k| {
                Some((
                    k.namespace.as_str(),
                    k.serviceaccount.as_ref()?.name.as_str(),
                ))
            });
            let (ns, sa) = match (from_k8s, from_sub) {
                (Some(k8s), Some(Ok(sub))) if k8s != sub => {
                    return Err(
                        "the `kubernetes.io` claims and `sub` name different service accounts"
                            .into(),
                    );
                }
                // A `sub` that is there must name the same service account, so a
                // malformed one is refused even when `kubernetes.io` says who it is.
                (_, Some(Err(e))) => return Err(e),
                (Some(k8s), _) => k8s,
                (None, Some(sub)) => sub?,
                (None, None) => {
                    return Err(
                        "the token carries neither `kubernetes.io` claims nor a `sub`".into(),
                    );
                }
            };
            for (what, name) in [("namespace", ns), ("service account", sa)] {
                if !is_k8s_name(name) {
                    return Err(format!(
                        "{what} {:?} is not a Kubernetes name",
                        shorten(name)
                    ));
                }
            }
            format!("ns/{ns}/sa/{sa}")
        }
        IdentityMapping::Subject { prefix } => {
            let sub = claims
                .sub
                .as_deref()
                .filter(|s| !s.is_empty())
                .ok_or("the token has no `sub`")?;
            if sub.contains('/') {
                return Err(format!("`sub` {:?} contains '/'", shorten(sub)));
            }
            format!("{prefix}/{sub}")
        }
    };
    td.workload(&path)
        .map_err(|e| format!("cannot name a SPIFFE ID from the claims: {e}"))
}

/// RFC 1123 labels and subdomains, as Kubernetes names namespaces and service accounts.
fn is_k8s_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

fn shorten(s: &str) -> String {
    s.chars().take(64).collect()
}

struct RawHeader {
    alg: String,
    kid: Option<String>,
    crit: bool,
}

/// Reads the header ourselves: jsonwebtoken cannot parse `"alg": "none"`, and the caller
/// deserves "wrong algorithm" rather than "malformed" for an algorithm-confusion attempt.
fn read_header(token: &str) -> Result<RawHeader> {
    use base64::Engine as _;
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Error::Malformed("expected three dot-separated parts"));
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| Error::Malformed("the header is not base64url"))?;
    let v: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|_| Error::Malformed("the header is not JSON"))?;
    let alg = match v.get("alg") {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => return Err(Error::Malformed("the header names no algorithm")),
    };
    let kid = match v.get("kid") {
        None => None,
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(Error::Malformed("the header's `kid` is not a string")),
    };
    Ok(RawHeader {
        alg,
        kid,
        crit: v.get("crit").is_some(),
    })
}

#[derive(Deserialize)]
struct Claims {
    iss: String,
    sub: Option<String>,
    #[serde(default, deserialize_with = "one_or_many")]
    aud: Vec<String>,
    exp: Option<u64>,
    nbf: Option<u64>,
    #[serde(rename = "kubernetes.io")]
    kubernetes: Option<KubernetesClaims>,
}

#[derive(Deserialize)]
struct KubernetesClaims {
    namespace: String,
    serviceaccount: Option<Named>,
}

#[derive(Deserialize)]
struct Named {
    name: String,
}

/// `aud` is a string or an array of strings (RFC 7519 §4.1.3).
fn one_or_many<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Aud {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Aud::deserialize(d)? {
        Aud::One(a) => vec![a],
        Aud::Many(v) => v,
    })
}

#[cfg(test)]
#[path = "platform_tests.rs"]
mod tests;
