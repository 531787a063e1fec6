//! Server configuration: a TOML file, overridden by flags, resolved once into [`Settings`].

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use writ_ca::{CaSettings, KeyType, TrustDomain, Ttl, TtlBounds};

use crate::Error;

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
    /// File holding the passphrase the CA's private keys are encrypted under.
    pub passphrase_file: Option<PathBuf>,
    /// Development mode: without a passphrase, keep the keys unencrypted (logged).
    pub dev: Option<bool>,
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
            passphrase_file,
            dev
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
        let admin_socket = self
            .admin_socket
            .unwrap_or_else(|| data_dir.join("admin.sock"));
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
            data_dir,
            ca,
            passphrase_file: self.passphrase_file,
            dev: self.dev.unwrap_or(false),
        })
    }
}

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
    /// The CA's settings.
    pub ca: CaSettings,
    /// The passphrase file (else `WRIT_PASSPHRASE`, else `dev`).
    pub passphrase_file: Option<PathBuf>,
    /// Development mode: unencrypted keys allowed.
    pub dev: bool,
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
    }

    #[test]
    fn absurd_durations_are_refused_not_panicked_on() {
        // Found by reading the fuzz target's code path: both used to panic.
        assert!(ServerConfig::parse("max_ttl = \"300000000000y\"").is_err());
        assert!(ServerConfig::parse("root_ttl = \"10000y\"").is_err());
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
}
