//! SPIFFE identities: [`TrustDomain`] and [`SpiffeId`], parsed once per the SPIFFE-ID
//! specification (github.com/spiffe/spiffe, standards/SPIFFE-ID.md §2).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::Error;

/// Longest trust domain name the specification allows (SPIFFE-ID §2.1).
pub const MAX_TRUST_DOMAIN_LEN: usize = 255;
/// Longest SPIFFE ID, scheme included (SPIFFE-ID §2.3).
pub const MAX_SPIFFE_ID_LEN: usize = 2048;

const SCHEME: &str = "spiffe://";

/// A SPIFFE trust domain name such as `cluster.local`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrustDomain(String);

impl TrustDomain {
    /// Parses a bare trust domain name (`example.org`) or its ID form (`spiffe://example.org`).
    pub fn parse(s: &str) -> Result<Self, Error> {
        let name = s.strip_prefix(SCHEME).unwrap_or(s);
        check_trust_domain(name)?;
        Ok(Self(name.to_owned()))
    }

    /// The name without scheme.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The trust domain's own ID, `spiffe://<name>`, as the Workload API keys bundles.
    pub fn id_string(&self) -> String {
        format!("{SCHEME}{}", self.0)
    }

    /// The workload identity `spiffe://<self>/<path>`; `path` has no leading `/`.
    pub fn workload(&self, path: &str) -> Result<SpiffeId, Error> {
        SpiffeId::parse(&format!("{SCHEME}{}/{path}", self.0))
    }
}

fn check_trust_domain(name: &str) -> Result<(), Error> {
    if name.is_empty() {
        return Err(Error::InvalidId("trust domain is empty".into()));
    }
    if name.len() > MAX_TRUST_DOMAIN_LEN {
        return Err(Error::InvalidId(format!(
            "trust domain is {} bytes; at most {MAX_TRUST_DOMAIN_LEN} are allowed",
            name.len()
        )));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '.' | '-' | '_'))
    {
        let why = match c {
            'A'..='Z' => "trust domains are lowercase".to_owned(),
            ':' => "a port is not allowed".to_owned(),
            '@' => "userinfo is not allowed".to_owned(),
            '%' => "percent-encoding is not allowed".to_owned(),
            _ => format!("character {c:?} is not allowed (use a-z 0-9 . - _)"),
        };
        return Err(Error::InvalidId(format!("trust domain {name:?}: {why}")));
    }
    Ok(())
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TrustDomain({})", self.0)
    }
}

impl FromStr for TrustDomain {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Self::parse(s)
    }
}

/// A SPIFFE ID `spiffe://<trust-domain>/<path>`; the path may be empty only for a
/// trust domain's own ID (see [`SpiffeId::is_workload`]).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    id: String,
    td_len: usize,
}

impl SpiffeId {
    /// Parses a workload SPIFFE ID; its path must be non-empty.
    pub fn parse(s: &str) -> Result<Self, Error> {
        let id = Self::parse_any(s)?;
        if !id.is_workload() {
            return Err(Error::InvalidId(format!(
                "{s:?} names a trust domain, not a workload: add a path such as /ns/default/sa/web"
            )));
        }
        Ok(id)
    }

    /// Parses any SPIFFE ID, including a trust domain's own (empty path).
    pub fn parse_any(s: &str) -> Result<Self, Error> {
        if s.len() > MAX_SPIFFE_ID_LEN {
            return Err(Error::InvalidId(format!(
                "SPIFFE ID is {} bytes; at most {MAX_SPIFFE_ID_LEN} are allowed",
                s.len()
            )));
        }
        let rest = s.strip_prefix(SCHEME).ok_or_else(|| {
            Error::InvalidId(format!("{:?} does not start with spiffe://", truncate(s)))
        })?;
        if let Some(c) = rest.chars().find(|c| matches!(c, '?' | '#')) {
            return Err(Error::InvalidId(format!(
                "SPIFFE IDs carry no query or fragment (found {c:?})"
            )));
        }
        let (td, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        check_trust_domain(td)?;
        check_path(path)?;
        Ok(Self {
            id: s.to_owned(),
            td_len: td.len(),
        })
    }

    /// The trust domain this ID belongs to.
    pub fn trust_domain(&self) -> TrustDomain {
        TrustDomain(self.trust_domain_str().to_owned())
    }

    /// The trust domain name, borrowed.
    pub fn trust_domain_str(&self) -> &str {
        &self.id[SCHEME.len()..SCHEME.len() + self.td_len]
    }

    /// The path, with its leading `/`, or empty.
    pub fn path(&self) -> &str {
        &self.id[SCHEME.len() + self.td_len..]
    }

    /// True when the ID names a workload (non-empty path), as leaf certificates require.
    pub fn is_workload(&self) -> bool {
        !self.path().is_empty()
    }

    /// The full ID.
    pub fn as_str(&self) -> &str {
        &self.id
    }

    /// True when this ID is in `td`.
    pub fn is_member_of(&self, td: &TrustDomain) -> bool {
        self.trust_domain_str() == td.as_str()
    }

    /// The same path in another trust domain (trust-domain migration).
    pub fn with_trust_domain(&self, td: &TrustDomain) -> SpiffeId {
        SpiffeId {
            id: format!("{SCHEME}{}{}", td.as_str(), self.path()),
            td_len: td.as_str().len(),
        }
    }
}

fn check_path(path: &str) -> Result<(), Error> {
    if path.is_empty() {
        return Ok(());
    }
    // `path` starts with '/', so the first split element is empty by construction.
    for seg in path.split('/').skip(1) {
        match seg {
            "" => {
                return Err(Error::InvalidId(
                    "SPIFFE ID path has an empty segment or a trailing '/'".into(),
                ));
            }
            "." | ".." => {
                return Err(Error::InvalidId(format!(
                    "SPIFFE ID path segment {seg:?} is not allowed"
                )));
            }
            _ => {}
        }
        if let Some(c) = seg
            .chars()
            .find(|c| !matches!(c, 'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' | '_'))
        {
            return Err(Error::InvalidId(format!(
                "SPIFFE ID path character {c:?} is not allowed (use a-z A-Z 0-9 . - _)"
            )));
        }
    }
    Ok(())
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

impl fmt::Debug for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpiffeId({})", self.id)
    }
}

impl FromStr for SpiffeId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Self::parse(s)
    }
}

impl Serialize for SpiffeId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.id)
    }
}

impl<'de> Deserialize<'de> for SpiffeId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse_any(&s).map_err(serde::de::Error::custom)
    }
}

impl Serialize for TrustDomain {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for TrustDomain {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_valid_ids() {
        let id = SpiffeId::parse("spiffe://example.org/ns/default/sa/web").unwrap();
        assert_eq!(id.trust_domain_str(), "example.org");
        assert_eq!(id.path(), "/ns/default/sa/web");
        assert!(SpiffeId::parse("spiffe://a-b_c.d/x.y-z_W").is_ok());
        let td = SpiffeId::parse_any("spiffe://example.org").unwrap();
        assert!(!td.is_workload());
    }

    #[test]
    fn rejects_invalid_ids() {
        for bad in [
            "",
            "spiffe://",
            "http://example.org/a",
            "SPIFFE://example.org/a",
            "spiffe://Example.org/a",
            "spiffe://example.org",
            "spiffe://example.org/",
            "spiffe://example.org//a",
            "spiffe://example.org/a/",
            "spiffe://example.org/./a",
            "spiffe://example.org/a/..",
            "spiffe://example.org:8080/a",
            "spiffe://user@example.org/a",
            "spiffe://example.org/a?b=c",
            "spiffe://example.org/a#frag",
            "spiffe://example.org/a%20b",
            "spiffe://exa%41mple.org/a",
            "spiffe://example.org/a b",
            "spiffe:///a",
        ] {
            assert!(SpiffeId::parse(bad).is_err(), "{bad:?} was accepted");
        }
        let long_td = format!("spiffe://{}/a", "a".repeat(256));
        assert!(SpiffeId::parse(&long_td).is_err());
        let long_id = format!("spiffe://a/{}", "b".repeat(2048));
        assert!(SpiffeId::parse(&long_id).is_err());
    }

    #[test]
    fn trust_domain_accepts_id_form() {
        assert_eq!(TrustDomain::parse("spiffe://x.y").unwrap().as_str(), "x.y");
        assert!(TrustDomain::parse("X.y").is_err());
        assert!(TrustDomain::parse("").is_err());
    }

    #[test]
    fn alias_rewrites_trust_domain() {
        let id = SpiffeId::parse("spiffe://old.example/ns/a/sa/b").unwrap();
        let new = id.with_trust_domain(&TrustDomain::parse("new.example").unwrap());
        assert_eq!(new.as_str(), "spiffe://new.example/ns/a/sa/b");
        assert_eq!(new.trust_domain_str(), "new.example");
    }

    proptest! {
        #[test]
        fn parse_print_parse_round_trips(
            td in "[a-z0-9._-]{1,40}",
            segs in proptest::collection::vec("[a-zA-Z0-9._-]{1,12}", 1..6),
        ) {
            let s = format!("spiffe://{td}/{}", segs.join("/"));
            match SpiffeId::parse(&s) {
                Ok(id) => {
                    prop_assert_eq!(id.to_string(), s.clone());
                    let again = SpiffeId::parse(&id.to_string()).unwrap();
                    prop_assert_eq!(again, id);
                }
                Err(_) => prop_assert!(segs.iter().any(|s| s == "." || s == "..")),
            }
        }

        #[test]
        fn arbitrary_input_never_panics(s in ".{0,300}") {
            if let Ok(id) = SpiffeId::parse_any(&s) {
                prop_assert_eq!(SpiffeId::parse_any(id.as_str()).unwrap(), id);
            }
        }
    }
}
