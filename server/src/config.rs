//! Server configuration: a TOML file, overridden by flags, resolved once into [`Settings`].

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use writ_ca::{CaSettings, KeyType, TrustDomain, Ttl, TtlBounds};

use writ_bootstrap::PlatformIssuer;

use crate::Error;
use crate::platform::JwtIssuerSettings;

/// The server's config file and flags: every field optional, flags win over the file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Where the CA keeps its state.
    pub data_dir: Option<PathBuf>,
    /// gRPC listen address.
    pub listen: Option<SocketAddr>,
    /// Trust domain.
    pub trust_domain: Option<TrustDomain>,
    /// Key type of a newly created CA.
    pub ca_key_type: Option<KeyType>,
    /// Leaf TTL when none is requested.
    pub default_ttl: Option<Ttl>,
    /// Shortest leaf TTL.
    pub min_ttl: Option<Ttl>,
    /// Longest leaf TTL.
    pub max_ttl: Option<Ttl>,
    /// Root lifetime for a newly created CA.
    pub root_ttl: Option<Ttl>,
    /// Intermediate lifetime.
    pub intermediate_ttl: Option<Ttl>,
    /// notBefore backdating for clock skew.
    pub backdate: Option<Ttl>,
    /// Admin socket path (default: `<data-dir>/admin.sock`).
    pub admin_socket: Option<PathBuf>,
    /// DNS names in the server's own certificate.
    pub server_dns: Option<Vec<String>>,
    /// IP addresses in the server's own certificate.
    pub server_ips: Option<Vec<IpAddr>>,
    /// Default lifetime of bootstrap tokens.
    pub token_ttl: Option<Ttl>,
    /// Longest lifetime a bootstrap token may be minted with.
    pub token_max_ttl: Option<Ttl>,
    /// How long used, revoked and expired tokens are kept before pruning.
    pub token_retention: Option<Ttl>,
    /// How long a prepared root is published before it may be activated.
    pub root_propagation: Option<Ttl>,
    /// Trust domains this CA used to serve; their workloads renew into `trust_domain`.
    pub trust_domain_aliases: Option<Vec<TrustDomain>>,
    /// Trusted platform-JWT issuers (Kubernetes, OIDC).
    pub jwt_issuers: Option<Vec<JwtIssuerConfig>>,
    /// Request size, stream, time and failed-authentication limits (`[limits]`).
    pub limits: Option<crate::limits::LimitsConfig>,
    /// Serve Prometheus metrics and `/healthz` over plain HTTP here (off when unset).
    pub metrics_listen: Option<SocketAddr>,
    /// Size in bytes past which the audit journal's live file is sealed as a segment.
    pub audit_segment_bytes: Option<u64>,
    /// File holding the passphrase the CA's private keys are encrypted under.
    pub passphrase_file: Option<PathBuf>,
    /// Development mode: without a passphrase, keep the keys unencrypted (logged).
    pub dev: Option<bool>,
    /// How long a stopping server lets requests in flight finish before it cuts them.
    pub shutdown_grace: Option<Ttl>,
}

/// One `[[jwt_issuers]]` table.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtIssuerConfig {
    /// The exact `iss` claim.
    pub issuer: String,
    /// The issuer's JWKS as a file, re-read when it changes.
    pub jwks_file: PathBuf,
    /// Accepted audiences (default `["istio-ca"]`).
    pub audiences: Option<Vec<String>>,
    /// Accepted algorithms (default `["RS256", "ES256"]`).
    pub algorithms: Option<Vec<String>>,
    /// `kubernetes` (default) or `subject`.
    pub mapping: Option<MappingKind>,
    /// With `mapping = "subject"`: the path the subject goes under, such as `oidc/ci`.
    pub subject_prefix: Option<String>,
}

/// How an issuer's claims name a workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MappingKind {
    /// `spiffe://TD/ns/NS/sa/SA` from service-account claims.
    Kubernetes,
    /// `spiffe://TD/<subject_prefix>/<sub>`.
    Subject,
}

impl JwtIssuerConfig {
    fn resolve(self) -> Result<JwtIssuerSettings, Error> {
        let name = self.issuer.clone();
        let bad = |m: String| Error::Config(format!("jwt issuer {name:?}: {m}"));
        let algorithms = match self.algorithms {
            None => writ_bootstrap::DEFAULT_ALGORITHMS.to_vec(),
            Some(list) => list
                .iter()
                .map(|a| {
                    a.parse::<writ_bootstrap::Algorithm>()
                        .map_err(|_| bad(format!("unknown algorithm {a:?}; use RS256, ES256, ...")))
                })
                .collect::<Result<_, _>>()?,
        };
        let mapping = match (
            self.mapping.unwrap_or(MappingKind::Kubernetes),
            self.subject_prefix,
        ) {
            (MappingKind::Kubernetes, None) => writ_bootstrap::IdentityMapping::Kubernetes,
            (MappingKind::Kubernetes, Some(_)) => {
                return Err(bad(
                    "subject_prefix applies only to mapping = \"subject\"".into()
                ));
            }
            (MappingKind::Subject, Some(prefix)) => writ_bootstrap::IdentityMapping::Subject {
                prefix: prefix.trim_matches('/').to_owned(),
            },
            (MappingKind::Subject, None) => {
                return Err(bad(
                    "mapping = \"subject\" needs subject_prefix, such as \"oidc/ci\"".into(),
                ));
            }
        };
        let issuer = PlatformIssuer {
            issuer: self.issuer,
            audiences: self
                .audiences
                .unwrap_or_else(|| vec![writ_bootstrap::DEFAULT_AUDIENCE.to_owned()]),
            algorithms,
            mapping,
        };
        issuer
            .validate()
            .map_err(|e| Error::Config(e.to_string()))?;
        Ok(JwtIssuerSettings {
            issuer,
            jwks_file: self.jwks_file,
        })
    }
}

impl ServerConfig {
    /// Reads a TOML config file; unknown keys are errors.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("reading config {}", path.display()), e))?;
        Self::parse(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }

    /// Parses TOML config text.
    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// Fields set in `flags` replace those in `self`.
    pub fn merge(self, flags: ServerConfig) -> ServerConfig {
        macro_rules! pick {
            ($($f:ident),*) => { ServerConfig { $($f: flags.$f.or(self.$f)),* } };
        }
        pick!(
            data_dir,
            listen,
            trust_domain,
            ca_key_type,
            default_ttl,
            min_ttl,
            max_ttl,
            root_ttl,
            intermediate_ttl,
            backdate,
            admin_socket,
            server_dns,
            server_ips,
            token_ttl,
            token_max_ttl,
            token_retention,
            root_propagation,
            trust_domain_aliases,
            jwt_issuers,
            limits,
            metrics_listen,
            audit_segment_bytes,
            passphrase_file,
            dev,
            shutdown_grace
        )
    }

    /// Applies defaults and checks consistency.
    pub fn resolve(self) -> Result<Settings, Error> {
        let data_dir = match self.data_dir {
            Some(d) => d,
            None => default_data_dir()?,
        };
        let trust_domain = match self.trust_domain {
            Some(td) => td,
            None => TrustDomain::parse("cluster.local")?,
        };
        let d = TtlBounds::default();
        let ttl = TtlBounds::new(
            self.default_ttl.unwrap_or(d.default_ttl()),
            self.min_ttl.unwrap_or(d.min()),
            self.max_ttl.unwrap_or(d.max()),
        )
        .map_err(|e| Error::Config(e.to_string()))?;
        let mut ca = CaSettings::new(trust_domain);
        ca.ttl = ttl;
        if let Some(k) = self.ca_key_type {
            ca.ca_key_type = k;
        }
        if let Some(t) = self.root_ttl {
            ca.root_validity = t.duration();
        }
        if let Some(t) = self.intermediate_ttl {
            ca.intermediate_validity = t.duration();
        }
        if let Some(t) = self.backdate {
            ca.backdate = t.duration();
        }
        if let Some(t) = self.root_propagation {
            ca.propagation = t.duration();
        }
        if ca
            .ttl
            .max()
            .duration()
            .checked_mul(2)
            .is_none_or(|twice| ca.intermediate_validity <= twice)
        {
            return Err(Error::Config(format!(
                "intermediate_ttl ({}) must exceed twice max_ttl ({}), or leaves could not get their full TTL",
                Ttl::from_secs(ca.intermediate_validity.as_secs()),
                ca.ttl.max()
            )));
        }
        if ca.intermediate_validity > ca.root_validity {
            return Err(Error::Config(
                "intermediate_ttl must not exceed root_ttl".into(),
            ));
        }
        if let Some(aliases) = self.trust_domain_aliases {
            if let Some(same) = aliases.iter().find(|a| **a == ca.trust_domain) {
                return Err(Error::Config(format!(
                    "trust_domain_aliases lists {same}, the trust domain itself; list only former trust domains"
                )));
            }
            ca.trust_domain_aliases = aliases;
        }
        let jwt_issuers = self
            .jwt_issuers
            .unwrap_or_default()
            .into_iter()
            .map(JwtIssuerConfig::resolve)
            .collect::<Result<Vec<_>, _>>()?;
        for (i, a) in jwt_issuers.iter().enumerate() {
            if jwt_issuers[..i]
                .iter()
                .any(|b| b.issuer.issuer == a.issuer.issuer)
            {
                return Err(Error::Config(format!(
                    "jwt issuer {:?} is configured twice",
                    a.issuer.issuer
                )));
            }
        }
        let admin_socket = self
            .admin_socket
            .unwrap_or_else(|| data_dir.join("admin.sock"));
        let audit_segment_bytes = match self.audit_segment_bytes {
            None => writ_store::StoreOptions::default().journal_segment_bytes,
            Some(n) if n < MIN_AUDIT_SEGMENT_BYTES => {
                return Err(Error::Config(format!(
                    "audit_segment_bytes = {n} is too small to be useful; use at least {MIN_AUDIT_SEGMENT_BYTES} (64 KiB), or leave it unset for 256 MiB"
                )));
            }
            Some(n) => n,
        };
        Ok(Settings {
            listen: self
                .listen
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8443))),
            admin_socket,
            server_dns: self.server_dns.unwrap_or_else(|| vec!["localhost".into()]),
            server_ips: self
                .server_ips
                .unwrap_or_else(|| vec![IpAddr::from([127, 0, 0, 1])]),
            token_ttl: self.token_ttl.unwrap_or(Ttl::from_secs(15 * 60)),
            token_max_ttl: self.token_max_ttl.unwrap_or(Ttl::from_secs(24 * 3600)),
            token_retention: self
                .token_retention
                .unwrap_or(Ttl::from_secs(7 * 24 * 3600)),
            jwt_issuers,
            limits: self.limits.unwrap_or_default().resolve()?,
            metrics_listen: self.metrics_listen,
            audit_segment_bytes,
            data_dir,
            ca,
            passphrase_file: self.passphrase_file,
            dev: self.dev.unwrap_or(false),
            shutdown_grace: self
                .shutdown_grace
                .map_or(DEFAULT_SHUTDOWN_GRACE, Ttl::duration),
        })
    }
}

/// How long a stopping server waits for requests in flight: far longer than a signing
/// request takes, well inside an orchestrator's kill deadline (Kubernetes: 30 s).
const DEFAULT_SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// The smallest audit segment size accepted: a few hundred records.
const MIN_AUDIT_SEGMENT_BYTES: u64 = 64 * 1024;

/// Resolved settings the server runs with.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Data directory.
    pub data_dir: PathBuf,
    /// gRPC listen address.
    pub listen: SocketAddr,
    /// Admin socket path.
    pub admin_socket: PathBuf,
    /// DNS SANs of the server certificate.
    pub server_dns: Vec<String>,
    /// IP SANs of the server certificate.
    pub server_ips: Vec<IpAddr>,
    /// Default bootstrap token lifetime.
    pub token_ttl: Ttl,
    /// Longest bootstrap token lifetime.
    pub token_max_ttl: Ttl,
    /// Retention of spent tokens.
    pub token_retention: Ttl,
    /// Trusted platform-JWT issuers.
    pub jwt_issuers: Vec<JwtIssuerSettings>,
    /// The metrics endpoint's address, if enabled.
    pub metrics_listen: Option<SocketAddr>,
    /// Size past which the audit journal's live file is sealed as a segment.
    pub audit_segment_bytes: u64,
    /// The CA's settings.
    pub ca: CaSettings,
    /// Abuse limits.
    pub limits: crate::limits::Limits,
    /// The passphrase file (else `WRIT_PASSPHRASE`, else `dev`).
    pub passphrase_file: Option<PathBuf>,
    /// Development mode: unencrypted keys allowed.
    pub dev: bool,
    /// How long a stopping server lets requests in flight finish.
    pub shutdown_grace: std::time::Duration,
}

/// `$XDG_STATE_HOME/writ`, else `~/.local/state/writ`: a per-user default, so the server
/// runs with zero flags for a non-root user.
pub fn default_data_dir() -> Result<PathBuf, Error> {
    if let Some(d) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d).join("writ"));
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(home) => Ok(PathBuf::from(home).join(".local/state/writ")),
        None => Err(Error::Config(
            "no HOME or XDG_STATE_HOME to put the data directory in; pass --data-dir".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Resolves a config file's text with a data directory set.
    fn resolve(text: &str) -> Result<Settings, Error> {
        let mut c = ServerConfig::parse(text).map_err(Error::Config)?;
        c.data_dir = Some("/tmp/x".into());
        c.resolve()
    }

    #[test]
    fn flags_override_file_and_unknown_keys_fail() {
        let file = ServerConfig::parse("listen = \"127.0.0.1:9000\"\nmax_ttl = \"2h\"\n").unwrap();
        let flags = ServerConfig {
            listen: Some("127.0.0.1:9001".parse().unwrap()),
            ..Default::default()
        };
        let merged = file.merge(flags);
        assert_eq!(merged.listen.unwrap().port(), 9001);
        assert_eq!(merged.max_ttl.unwrap().secs(), 7200);
        assert!(ServerConfig::parse("lisen = \"x\"").is_err());
        assert!(ServerConfig::parse("max_ttl = \"forever\"").is_err());
        assert!(ServerConfig::parse("ca_key_type = \"rsa-1024\"").is_err());
        let limits =
            ServerConfig::parse("[limits]\nauth_failures = 3\nauth_failure_window = \"2s\"\n")
                .unwrap()
                .limits
                .unwrap();
        assert_eq!(limits.auth_failures, Some(3));
        assert!(ServerConfig::parse("[limits]\nmax_reqest_bytes = 1\n").is_err());
    }

    #[test]
    fn shutdown_grace_defaults_to_ten_seconds_and_must_be_positive() {
        assert_eq!(resolve("").unwrap().shutdown_grace.as_secs(), 10);
        assert_eq!(
            resolve("shutdown_grace = \"45s\"")
                .unwrap()
                .shutdown_grace
                .as_secs(),
            45
        );
        assert!(ServerConfig::parse("shutdown_grace = \"0s\"").is_err());
    }

    #[test]
    fn absurd_durations_are_refused_not_panicked_on() {
        // Found by reading the fuzz target's code path: both used to panic.
        assert!(ServerConfig::parse("max_ttl = \"300000000000y\"").is_err());
        assert!(ServerConfig::parse("root_ttl = \"10000y\"").is_err());
    }

    #[test]
    fn jwt_issuers_and_aliases_resolve_with_defaults_and_refuse_mistakes() {
        let s = resolve(
            "trust_domain = \"new.example\"\ntrust_domain_aliases = [\"old.example\"]\n[[jwt_issuers]]\nissuer = \"https://k8s\"\njwks_file = \"/j.json\"\n",
        )
        .unwrap();
        assert_eq!(s.ca.trust_domain_aliases[0].as_str(), "old.example");
        let i = &s.jwt_issuers[0].issuer;
        assert_eq!(i.audiences, ["istio-ca"]);
        assert_eq!(i.algorithms, writ_bootstrap::DEFAULT_ALGORITHMS);
        assert_eq!(i.mapping, writ_bootstrap::IdentityMapping::Kubernetes);

        let base = "[[jwt_issuers]]\nissuer = \"https://k8s\"\njwks_file = \"/j.json\"\n";
        for (extra, why) in [
            ("algorithms = [\"HS256\"]\n", "public-key"),
            ("algorithms = [\"XX1\"]\n", "unknown algorithm"),
            ("audiences = []\n", "audience"),
            ("mapping = \"subject\"\n", "subject_prefix"),
            ("subject_prefix = \"a\"\n", "only to mapping"),
        ] {
            let err = resolve(&format!("{base}{extra}")).unwrap_err().to_string();
            assert!(err.contains(why), "{extra}: {err}");
        }
        let twice = format!("{base}{base}");
        assert!(resolve(&twice).unwrap_err().to_string().contains("twice"));
        assert!(resolve(&format!("{base}audience = [\"x\"]\n")).is_err());
        let same =
            resolve("trust_domain = \"a.example\"\ntrust_domain_aliases = [\"a.example\"]\n");
        assert!(
            same.unwrap_err()
                .to_string()
                .contains("the trust domain itself")
        );
    }

    #[test]
    fn inconsistent_ttls_are_refused() {
        let c = ServerConfig {
            data_dir: Some("/tmp/x".into()),
            min_ttl: Some(Ttl::from_secs(600)),
            default_ttl: Some(Ttl::from_secs(60)),
            ..Default::default()
        };
        assert!(matches!(c.resolve(), Err(Error::Config(_))));
    }

    #[test]
    fn audit_segments_have_a_floor_and_a_default() {
        let resolve = |text: &str| ServerConfig::parse(text).map_err(Error::Config)?.resolve();
        let small = resolve("data_dir = \"/tmp/x\"\naudit_segment_bytes = 65535\n");
        assert!(
            small.unwrap_err().to_string().contains("at least 65536"),
            "a tiny segment size would seal on nearly every flush"
        );
        let set = resolve("data_dir = \"/tmp/x\"\naudit_segment_bytes = 65536\n").unwrap();
        assert_eq!(set.audit_segment_bytes, 65536);
        let default = resolve("data_dir = \"/tmp/x\"\n").unwrap();
        assert_eq!(default.audit_segment_bytes, 256 << 20);
    }
}
