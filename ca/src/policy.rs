//! The CSR policy: what a proven caller may obtain. Pure and synchronous.

use std::net::IpAddr;
use std::time::Duration;

use crate::ttl::{LifetimeLimit, OverMax, TtlBounds};
use crate::{Csr, Error, KeyType, SpiffeId, TrustDomain};

/// How a caller proved its identity, recorded in the issuance log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMethod {
    /// An administrator on the local admin socket.
    Admin,
    /// A valid client certificate from this CA (renewal).
    Mtls,
    /// A one-time bootstrap token.
    Token,
    /// A platform JWT (Kubernetes service-account token, OIDC).
    Jwt,
    /// The server issuing its own serving certificate.
    Internal,
}

impl AuthMethod {
    /// A short lowercase name for logs and the issuance log.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::Admin => "admin",
            AuthMethod::Mtls => "mtls",
            AuthMethod::Token => "token",
            AuthMethod::Jwt => "jwt",
            AuthMethod::Internal => "internal",
        }
    }
}

/// What the caller has proven: its identity and the DNS names its credential grants.
#[derive(Clone, Debug)]
pub struct Caller {
    /// The identity the caller proved.
    pub id: SpiffeId,
    /// DNS names the credential allows in the certificate.
    pub dns_allowed: Vec<String>,
    /// How it proved it.
    pub method: AuthMethod,
}

/// A proven caller's request for a leaf, everything but the CSR: who, for how long, and
/// under which API's rules. The one shape every issuance path passes to the CA.
#[derive(Clone, Copy, Debug)]
pub struct LeafRequest<'a> {
    /// Who proved what.
    pub caller: &'a Caller,
    /// The lifetime asked for; `None`: the CA's default.
    pub ttl: Option<Duration>,
    /// The rules of the API the request came through.
    pub rules: Rules,
}

impl<'a> LeafRequest<'a> {
    /// A request by `caller` for `ttl` under `rules`.
    pub fn new(caller: &'a Caller, ttl: Option<Duration>, rules: Rules) -> Self {
        Self { caller, ttl, rules }
    }
}

/// How an API issues: writ's own and Istio's differ on SANs and on over-long lifetimes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rules {
    /// Where the certificate's identity comes from.
    pub sans: SanMode,
    /// What a lifetime above the maximum gets.
    pub over_max: OverMax,
}

impl Rules {
    /// writ's `Sign` and admin `Issue`: the CSR names exactly the proven identity, and an
    /// over-long lifetime is clamped to the maximum.
    pub const WRIT: Rules = Rules {
        sans: SanMode::Exact,
        over_max: OverMax::Clamp,
    };
    /// Istio's `CreateCertificate`: the proven identity whatever the CSR's SANs say, and an
    /// over-long lifetime is refused.
    pub const ISTIO: Rules = Rules {
        sans: SanMode::Authenticated,
        over_max: OverMax::Reject,
    };
}

/// Where the certificate's identity comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SanMode {
    /// The CSR must ask for exactly the proven identity (writ's own API).
    Exact,
    /// The proven identity is issued whatever the CSR's SANs say (Istio's rule); the
    /// CSR's SANs are never copied.
    Authenticated,
}

/// Everything the issuer needs to build a leaf; produced only by [`Policy::evaluate`].
#[derive(Clone, Debug)]
pub struct LeafTemplate {
    /// The identity the certificate names.
    pub id: SpiffeId,
    /// DNS SANs, each granted to the caller.
    pub dns_names: Vec<String>,
    /// IP SANs (only for the server's own certificate).
    pub ip_addrs: Vec<IpAddr>,
    /// The subject key's type.
    pub key_type: KeyType,
    /// The subject key (BIT STRING contents of its SPKI).
    pub public_key: Vec<u8>,
    /// The lifetime to issue for, before clamping to the CA's own expiry.
    pub lifetime: Duration,
    /// The TTL bound that made `lifetime` differ from the one requested, if one did.
    pub limited_by: Option<LifetimeLimit>,
    /// How the caller authenticated.
    pub auth: AuthMethod,
}

/// The CA's issuance policy for one trust domain.
#[derive(Clone, Debug)]
pub struct Policy {
    trust_domain: TrustDomain,
    /// Former trust domains: a CSR may still spell the caller's identity in one of them.
    aliases: Vec<TrustDomain>,
    ttl: TtlBounds,
}

impl Policy {
    /// A policy for `trust_domain` with leaf lifetimes bounded by `ttl`.
    pub fn new(trust_domain: TrustDomain, ttl: TtlBounds) -> Self {
        Self {
            trust_domain,
            aliases: Vec::new(),
            ttl,
        }
    }

    /// The same policy, reading a CSR's `spiffe://<alias>/P` as `spiffe://<trust domain>/P`:
    /// a workload renewing across a trust-domain move asks under the name it holds.
    pub fn with_aliases(mut self, aliases: Vec<TrustDomain>) -> Self {
        self.aliases = aliases;
        self
    }

    /// The trust domain this policy issues in.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The TTL bounds.
    pub fn ttl(&self) -> &TtlBounds {
        &self.ttl
    }

    /// Decides whether the request's caller may obtain a certificate for `csr`, and on
    /// what terms.
    pub fn evaluate(&self, csr: &Csr, request: &LeafRequest<'_>) -> Result<LeafTemplate, Error> {
        let caller = request.caller;
        if !caller.id.is_member_of(&self.trust_domain) {
            return Err(Error::IdentityMismatch {
                requested: format!("an identity in {}", self.trust_domain),
                proven: caller.id.to_string(),
            });
        }
        if let Some(oid) = csr.unknown_critical().first() {
            return Err(Error::CsrRejected(format!(
                "CSR requests critical extension {oid}, which writ does not understand"
            )));
        }
        if csr.requests_ca() {
            return Err(Error::CsrRejected(
                "CSR asks for a CA certificate (basicConstraints cA=true); writ issues only leaf certificates".into(),
            ));
        }
        let dns_names = match request.rules.sans {
            SanMode::Exact => {
                self.check_exact_identity(csr, caller)?;
                check_dns(csr.dns_names(), &caller.dns_allowed)?;
                csr.dns_names()
                    .iter()
                    .map(|d| d.to_ascii_lowercase())
                    .collect()
            }
            // Istio clients put their own guess of the identity in the CSR; the
            // authenticated identity wins and the CSR's names are never issued.
            SanMode::Authenticated => Vec::new(),
        };
        let (lifetime, limited_by) = self.ttl.resolve(request.ttl, request.rules.over_max)?;
        Ok(LeafTemplate {
            id: caller.id.clone(),
            dns_names,
            ip_addrs: Vec::new(),
            key_type: csr.key_type(),
            public_key: csr.public_key().to_vec(),
            lifetime,
            limited_by,
            auth: caller.method,
        })
    }

    fn check_exact_identity(&self, csr: &Csr, caller: &Caller) -> Result<(), Error> {
        if let Some(other) = csr.other_sans().first() {
            return Err(Error::CsrRejected(format!(
                "CSR carries an {} SAN; only one URI SAN (the SPIFFE ID) and granted DNS names are allowed",
                other.0
            )));
        }
        let [uri] = csr.uris() else {
            return Err(Error::CsrRejected(format!(
                "CSR must carry exactly one URI SAN, the SPIFFE ID; it carries {}",
                csr.uris().len()
            )));
        };
        let mut requested = SpiffeId::parse(uri)?;
        if self.aliases.iter().any(|a| requested.is_member_of(a)) {
            requested = requested.with_trust_domain(&self.trust_domain);
        }
        if !requested.is_member_of(&self.trust_domain) {
            return Err(Error::CsrRejected(format!(
                "{requested} is not in this CA's trust domain {}",
                self.trust_domain
            )));
        }
        if requested != caller.id {
            return Err(Error::IdentityMismatch {
                requested: requested.to_string(),
                proven: caller.id.to_string(),
            });
        }
        Ok(())
    }
}

fn check_dns(requested: &[String], allowed: &[String]) -> Result<(), Error> {
    for name in requested {
        let lower = name.to_ascii_lowercase();
        if !is_dns_name(&lower) {
            return Err(Error::CsrRejected(format!(
                "{name:?} is not a valid DNS name"
            )));
        }
        if !allowed.iter().any(|a| a.eq_ignore_ascii_case(&lower)) {
            return Err(Error::DnsNotAllowed(name.clone()));
        }
    }
    Ok(())
}

/// True for a syntactically valid DNS name (RFC 1123 labels, optional leading `*.`).
pub fn is_dns_name(name: &str) -> bool {
    let name = name.strip_prefix("*.").unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PrivateKey;
    use crate::csr::tests::{make_csr, uri};
    use proptest::prelude::*;
    use rcgen::SanType;

    fn policy() -> Policy {
        Policy::new(TrustDomain::parse("td").unwrap(), TtlBounds::default())
    }

    fn caller(id: &str, dns: &[&str]) -> Caller {
        Caller {
            id: SpiffeId::parse(id).unwrap(),
            dns_allowed: dns.iter().map(|s| s.to_string()).collect(),
            method: AuthMethod::Mtls,
        }
    }

    fn eval(sans: Vec<SanType>, ca: bool, who: &Caller) -> Result<LeafTemplate, Error> {
        let key = PrivateKey::generate(KeyType::EcP256).unwrap();
        let csr = Csr::parse(&make_csr(&key, sans, ca)).unwrap();
        policy().evaluate(&csr, &LeafRequest::new(who, None, Rules::WRIT))
    }

    #[test]
    fn own_identity_is_issued() {
        let c = caller("spiffe://td/a", &["a.example"]);
        let t = eval(
            vec![
                uri("spiffe://td/a"),
                SanType::DnsName("A.example".try_into().unwrap()),
            ],
            false,
            &c,
        )
        .unwrap();
        assert_eq!(t.id.as_str(), "spiffe://td/a");
        assert_eq!(t.dns_names, ["a.example"]);
        assert_eq!(t.lifetime, Duration::from_secs(3600));
    }

    #[test]
    fn a_csr_may_name_the_caller_in_a_former_trust_domain() {
        let moved = policy().with_aliases(vec![TrustDomain::parse("old").unwrap()]);
        let key = PrivateKey::generate(KeyType::EcP256).unwrap();
        let ask = |id: &str, who: &Caller| {
            let csr = Csr::parse(&make_csr(&key, vec![uri(id)], false)).unwrap();
            moved.evaluate(&csr, &LeafRequest::new(who, None, Rules::WRIT))
        };
        let c = caller("spiffe://td/a", &[]);
        assert_eq!(
            ask("spiffe://old/a", &c).unwrap().id.as_str(),
            "spiffe://td/a"
        );
        assert!(matches!(
            ask("spiffe://old/b", &c),
            Err(Error::IdentityMismatch { .. })
        ));
        assert!(matches!(
            ask("spiffe://other/a", &c),
            Err(Error::CsrRejected(_))
        ));
        // Without the alias the old spelling is a foreign trust domain.
        assert!(matches!(
            eval(vec![uri("spiffe://old/a")], false, &c),
            Err(Error::CsrRejected(_))
        ));
    }

    #[test]
    fn rejections() {
        let c = caller("spiffe://td/a", &[]);
        assert!(matches!(
            eval(vec![uri("spiffe://td/b")], false, &c),
            Err(Error::IdentityMismatch { .. })
        ));
        assert!(matches!(
            eval(vec![uri("spiffe://other/a")], false, &c),
            Err(Error::CsrRejected(_))
        ));
        assert!(matches!(
            eval(vec![uri("spiffe://td/a"), uri("spiffe://td/a")], false, &c),
            Err(Error::CsrRejected(_))
        ));
        assert!(matches!(
            eval(vec![], false, &c),
            Err(Error::CsrRejected(_))
        ));
        assert!(matches!(
            eval(vec![uri("spiffe://td/a")], true, &c),
            Err(Error::CsrRejected(_))
        ));
        assert!(matches!(
            eval(
                vec![
                    uri("spiffe://td/a"),
                    SanType::IpAddress("10.0.0.1".parse().unwrap())
                ],
                false,
                &c
            ),
            Err(Error::CsrRejected(_))
        ));
        assert!(matches!(
            eval(
                vec![
                    uri("spiffe://td/a"),
                    SanType::DnsName("x.example".try_into().unwrap())
                ],
                false,
                &c
            ),
            Err(Error::DnsNotAllowed(_))
        ));
        assert!(matches!(
            eval(vec![uri("https://td/a")], false, &c),
            Err(Error::InvalidId(_))
        ));
        let foreign = caller("spiffe://other/a", &[]);
        assert!(matches!(
            eval(vec![uri("spiffe://other/a")], false, &foreign),
            Err(Error::IdentityMismatch { .. })
        ));
    }

    #[test]
    fn authenticated_mode_ignores_csr_sans() {
        let key = PrivateKey::generate(KeyType::EcP256).unwrap();
        let csr = Csr::parse(&make_csr(
            &key,
            vec![
                uri("spiffe://td/other"),
                SanType::DnsName("x.y".try_into().unwrap()),
            ],
            false,
        ))
        .unwrap();
        let t = policy()
            .evaluate(
                &csr,
                &LeafRequest::new(&caller("spiffe://td/a", &[]), None, Rules::ISTIO),
            )
            .unwrap();
        assert_eq!(t.id.as_str(), "spiffe://td/a");
        assert!(t.dns_names.is_empty());
    }

    proptest! {
        #[test]
        fn dns_check_never_panics(s in ".{0,80}") {
            let _ = is_dns_name(&s);
        }

        #[test]
        fn valid_labels_are_dns_names(labels in proptest::collection::vec("[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", 1..5)) {
            prop_assert!(is_dns_name(&labels.join(".")));
        }
    }
}
