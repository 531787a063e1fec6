//! The agent's TOML config file, and what in it is risky (`writ config check`).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use writ_ca::{KeyType, Ttl};

/// `writ agent --config FILE`: every key optional; flags override. Unknown keys are errors.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentFileConfig {
    /// The CA, `host:port`.
    pub server: Option<String>,
    /// Where the identity files live.
    pub out_dir: Option<PathBuf>,
    /// A one-time bootstrap token for the first identity.
    pub bootstrap_token_file: Option<PathBuf>,
    /// A platform JWT for the first certificate and every renewal.
    pub jwt_file: Option<PathBuf>,
    /// With `jwt_file`: the CA's roots (PEM) for first contact.
    pub ca_bundle: Option<PathBuf>,
    /// With `jwt_file`: the CA root's SHA-256 fingerprint for first contact.
    pub ca_fingerprint: Option<String>,
    /// With `jwt_file`: the CA's trust domain.
    pub trust_domain: Option<writ_ca::TrustDomain>,
    /// Workload API socket.
    pub workload_api_socket: Option<PathBuf>,
    /// Command run after each update.
    pub on_rotate: Option<String>,
    /// Fraction of the lifetime after which to renew.
    pub renew_at: Option<f64>,
    /// Jitter around `renew_at`, as a fraction of the lifetime.
    pub jitter: Option<f64>,
    /// Key type of each new key.
    pub key_type: Option<KeyType>,
    /// Requested lifetime.
    pub ttl: Option<Ttl>,
    /// Prometheus metrics and `/healthz` over plain HTTP (off when unset).
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// uids whose processes may call the Workload API (default: the agent's and root).
    pub workload_uids: Option<Vec<u32>>,
    /// gids whose processes may call the Workload API.
    pub workload_gids: Option<Vec<u32>>,
}

impl AgentFileConfig {
    /// Parses the file's text.
    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }
}

/// One risky or broken thing in an agent config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigFinding {
    /// True for an error, false for a warning.
    pub error: bool,
    /// The setting concerned.
    pub subject: &'static str,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub fix: String,
}

fn finding(error: bool, subject: &'static str, message: String, fix: String) -> ConfigFinding {
    ConfigFinding {
        error,
        subject,
        message,
        fix,
    }
}

/// Checks an agent config file's text.
pub fn check_agent_config(text: &str) -> Vec<ConfigFinding> {
    let c = match AgentFileConfig::parse(text) {
        Ok(c) => c,
        Err(e) => {
            return vec![finding(
                true,
                "config",
                format!("the file does not parse: {}", e.trim()),
                "fix or remove the setting named above".into(),
            )];
        }
    };
    let mut out = Vec::new();
    if c.server.is_none() {
        out.push(finding(
            true,
            "server",
            "no server address".into(),
            "set server = \"ca.example.org:8443\"".into(),
        ));
    }
    if c.out_dir.is_none() {
        out.push(finding(
            true,
            "out_dir",
            "no out_dir".into(),
            "set out_dir = \"/var/lib/writ-agent\"".into(),
        ));
    }
    if let Some(f) = c.renew_at {
        if !(f > 0.0 && f < 1.0) {
            out.push(finding(
                true,
                "renew_at",
                format!("renew_at {f} is outside (0, 1)"),
                "use 0.5".into(),
            ));
        } else if f > 0.8 {
            out.push(finding(
                false,
                "renew_at",
                format!("renewing at {f} of the lifetime leaves little time to retry"),
                "use 0.5 to 0.7".into(),
            ));
        }
    }
    if let Some(dir) = &c.out_dir {
        let key = dir.join("key.pem");
        if let Some(mode) = mode(&key).filter(|m| m & 0o077 != 0) {
            out.push(finding(
                true,
                "out_dir",
                format!(
                    "{} is accessible to group or others (mode {mode:04o})",
                    key.display()
                ),
                format!("chmod 0600 {}", key.display()),
            ));
        }
    }
    if let Some(token) = &c.bootstrap_token_file
        && let Some(mode) = mode(token).filter(|m| m & 0o077 != 0)
    {
        out.push(finding(
            true,
            "bootstrap_token_file",
            format!(
                "{} is readable by group or others (mode {mode:04o})",
                token.display()
            ),
            format!("chmod 0600 {}", token.display()),
        ));
    }
    if let Some(m) = c.metrics_listen.filter(|m| !m.ip().is_loopback()) {
        out.push(finding(
            false,
            "metrics_listen",
            format!(
                "metrics and readiness are served on {m} over plain HTTP without authentication"
            ),
            format!(
                "listen on loopback (metrics_listen = \"127.0.0.1:{}\") or firewall the port",
                m.port()
            ),
        ));
    }
    if let Some(sock) = &c.workload_api_socket
        && let Some(mode) = sock
            .parent()
            .and_then(mode)
            .filter(|m| m & 0o002 != 0 && m & 0o1000 == 0)
    {
        out.push(finding(
            false,
            "workload_api_socket",
            format!("the socket's directory is world-writable (mode {mode:04o})"),
            "put the socket in a directory only the agent's user can write".into(),
        ));
    }
    if let Some(sock) = &c.workload_api_socket
        && let Some(mode) = mode(sock).filter(|m| m & 0o006 != 0)
    {
        out.push(finding(
            true,
            "workload_api_socket",
            format!(
                "{} is accessible to every local user (mode {mode:04o}); only the uid check stands between them and the private key",
                sock.display()
            ),
            format!("chmod 0660 {} (the agent makes it so at start)", sock.display()),
        ));
    }
    let (uids, gids) = (&c.workload_uids, &c.workload_gids);
    if (uids.is_some() || gids.is_some())
        && uids.as_ref().is_none_or(Vec::is_empty)
        && gids.as_ref().is_none_or(Vec::is_empty)
    {
        out.push(finding(
            true,
            "workload_uids",
            "the Workload API allow list is empty: the agent would serve nobody and refuses to start".into(),
            "list the workloads' uids (workload_uids = [1000]) or gids, or remove both for the default (the agent's user and root)".into(),
        ));
    }
    out
}

fn mode(p: &Path) -> Option<u32> {
    std::fs::metadata(p)
        .ok()
        .map(|m| m.permissions().mode() & 0o7777)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_allow_list_and_a_world_accessible_socket_are_flagged() {
        let base = "server = \"a:1\"\nout_dir = \"/x\"\n";
        for lists in [
            "workload_uids = []\n",
            "workload_uids = []\nworkload_gids = []\n",
        ] {
            let f = check_agent_config(&format!("{base}{lists}"));
            assert!(
                f.iter().any(|f| f.error && f.subject == "workload_uids"),
                "{f:?}"
            );
        }
        for fine in ["workload_uids = [1000]\n", "workload_gids = [5]\n", ""] {
            let f = check_agent_config(&format!("{base}{fine}"));
            assert!(
                f.iter().all(|f| f.subject != "workload_uids"),
                "{fine}: {f:?}"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("w.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let text = format!(
            "{base}workload_api_socket = {:?}\n",
            sock.display().to_string()
        );
        std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o660)).unwrap();
        assert!(check_agent_config(&text).is_empty());
        std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
        let f = check_agent_config(&text);
        assert!(
            f.iter()
                .any(|f| f.error && f.message.contains("every local user")),
            "{f:?}"
        );
    }

    #[test]
    fn findings() {
        assert!(check_agent_config("server = \"a:1\"\nout_dir = \"/nonexistent\"\n").is_empty());
        let f = check_agent_config("out_dir = \"/x\"\nrenew_at = 1.5\n");
        assert_eq!(
            f.iter().map(|f| (f.error, f.subject)).collect::<Vec<_>>(),
            [(true, "server"), (true, "renew_at")]
        );
        let f = check_agent_config("server = \"a:1\"\nout_dir = \"/x\"\nrenew_at = 0.9\n");
        assert_eq!(
            f.iter().map(|f| (f.error, f.subject)).collect::<Vec<_>>(),
            [(false, "renew_at")]
        );
        assert_eq!(check_agent_config("srever = 1")[0].subject, "config");
        let f = check_agent_config(
            "server = \"a:1\"\nout_dir = \"/x\"\nmetrics_listen = \"0.0.0.0:9091\"\n",
        );
        assert_eq!(
            f.iter().map(|f| (f.error, f.subject)).collect::<Vec<_>>(),
            [(false, "metrics_listen")]
        );
        assert!(
            check_agent_config(
                "server = \"a:1\"\nout_dir = \"/x\"\nmetrics_listen = \"127.0.0.1:9091\"\n"
            )
            .is_empty()
        );

        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("t");
        std::fs::write(&token, "x").unwrap();
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
        let text = format!(
            "server = \"a:1\"\nout_dir = \"/x\"\nbootstrap_token_file = {:?}\n",
            token.display().to_string()
        );
        let f = check_agent_config(&text);
        assert_eq!(f.len(), 1);
        assert!(f[0].error && f[0].fix.starts_with("chmod 0600"));
    }
}
