//! `writ config check`: what in a server config is insecure or risky, each finding with a
//! severity and a one-line fix. Pure over the file's text and the file system it names.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use crate::ServerConfig;

mod finding;
mod platform;

pub use finding::{Finding, Severity, exit_code};

const DAY: Duration = Duration::from_secs(86_400);

/// Checks a server config file's text.
pub fn check_server_config(text: &str) -> Vec<Finding> {
    let config = match ServerConfig::parse(text) {
        Ok(c) => c,
        // Unknown keys and bad values are errors, never silently ignored.
        Err(e) => {
            return vec![Finding::new(
                Severity::Error,
                "config",
                format!("the file does not parse: {}", e.trim()),
                "fix or remove the setting named above (see README.md for the keys)",
            )];
        }
    };
    let mut out = Vec::new();
    if config.dev == Some(true) && config.passphrase_file.is_none() {
        out.push(Finding::new(
            Severity::Warning,
            "dev",
            "development mode: the CA's private keys are stored unencrypted",
            "remove `dev = true` and set passphrase_file (or WRIT_PASSPHRASE)",
        ));
    }
    if let Some(Err(e)) = config.limits.as_ref().map(|l| l.resolve()) {
        out.push(Finding::new(
            Severity::Error,
            "limits",
            e.to_string(),
            "fix the [limits] value named above (see SECURITY.md, Limits and their defaults)",
        ));
    }
    let max_ttl = config.max_ttl.map(|t| t.duration());
    if let Some(max) = max_ttl.filter(|m| *m > DAY) {
        out.push(Finding::new(
            Severity::Warning,
            "max_ttl",
            format!(
                "leaf certificates may live {}; a stolen key stays useful that long",
                humantime::format_duration(max)
            ),
            "set max_ttl to 24h or less",
        ));
    }
    if let Some(t) = config
        .token_max_ttl
        .map(|t| t.duration())
        .filter(|t| *t > DAY)
    {
        out.push(Finding::new(
            Severity::Warning,
            "token_max_ttl",
            format!(
                "bootstrap tokens may live {}",
                humantime::format_duration(t)
            ),
            "set token_max_ttl to 24h or less",
        ));
    }
    if let Some(k) = config
        .ca_key_type
        .filter(|k| *k == writ_ca::KeyType::Rsa2048)
    {
        out.push(Finding::new(
            Severity::Warning,
            "ca_key_type",
            format!("{k} is weak for a root that lives years"),
            "use ec-p256, ec-p384 or rsa-3072 and up",
        ));
    }
    let max = max_ttl.unwrap_or(DAY);
    if let Some(root) = config.root_ttl.map(|t| t.duration())
        && (root <= max || root < 90 * DAY)
    {
        out.push(Finding::new(
            Severity::Warning,
            "root_ttl",
            format!("the root lives only {}", humantime::format_duration(root)),
            "give the root years (root_ttl = \"10y\") and rotate it with `writ root rotate`",
        ));
    }
    if let Some(i) = config.intermediate_ttl.map(|t| t.duration())
        && i <= max * 2
    {
        out.push(Finding::new(
            Severity::Error,
            "intermediate_ttl",
            "the intermediate does not outlive twice the max leaf TTL; the server refuses to start",
            "raise intermediate_ttl above 2 × max_ttl",
        ));
    }
    if let (Some(d), Some(min), Some(max)) = (config.default_ttl, config.min_ttl, config.max_ttl)
        && !(min <= d && d <= max)
    {
        out.push(Finding::new(
            Severity::Error,
            "default_ttl",
            "min_ttl <= default_ttl <= max_ttl does not hold; the server refuses to start",
            "order the three TTLs",
        ));
    }
    if let Some(dir) = &config.data_dir {
        check_private(dir, "data_dir", &mut out);
        // The whole tree, not only db/: keys or backups copied beside it are as sensitive.
        if let Ok(entries) = walk(dir) {
            for p in entries {
                check_private(&p, "data_dir", &mut out);
            }
        }
    }
    if let Some(sock) = &config.admin_socket {
        let inside = config
            .data_dir
            .as_ref()
            .is_some_and(|d| sock.starts_with(d));
        if !inside {
            if let Some(parent) = sock.parent()
                && let Ok(m) = std::fs::metadata(parent)
            {
                // Keep the sticky bit: /tmp (1777) is not the same risk as a 0777 directory.
                let mode = m.permissions().mode() & 0o7777;
                if mode & 0o002 != 0 && mode & 0o1000 == 0 {
                    out.push(Finding::new(
                        Severity::Error,
                        "admin_socket",
                        format!(
                            "{} is world-writable: anyone can replace the admin socket",
                            parent.display()
                        ),
                        format!(
                            "chmod 0755 {} (or keep the socket in the data dir)",
                            parent.display()
                        ),
                    ));
                } else if mode & 0o022 != 0 {
                    // Sticky and world-writable (/tmp) or group-writable: nobody else can
                    // replace a socket that exists, but another user can take the path
                    // while the server is down and receive the admin CLI's requests.
                    out.push(Finding::new(
                        Severity::Warning,
                        "admin_socket",
                        format!(
                            "{} is writable by {} (mode {mode:04o}): another user can take the socket's path while the server is stopped",
                            parent.display(),
                            if mode & 0o002 != 0 { "everyone" } else { "its group" }
                        ),
                        "keep the admin socket in the data dir or a directory only the server's user can write",
                    ));
                }
            }
            if let Ok(m) = std::fs::metadata(sock)
                && m.permissions().mode() & 0o077 != 0
            {
                out.push(Finding::new(
                    Severity::Warning,
                    "admin_socket",
                    format!("{} is accessible to group or others", sock.display()),
                    format!("chmod 0600 {}", sock.display()),
                ));
            }
        }
    }
    if let Some(m) = config.metrics_listen.filter(|m| !m.ip().is_loopback()) {
        out.push(Finding::new(
            Severity::Warning,
            "metrics_listen",
            format!(
                "metrics and readiness are served on {m} over plain HTTP without authentication; they reveal issuance rates and CA expiry dates"
            ),
            format!(
                "listen on loopback (metrics_listen = \"127.0.0.1:{}\") or restrict the port with a firewall",
                m.port()
            ),
        ));
    }
    if let Some(listen) = config.listen
        && !listen.ip().is_loopback()
        && config
            .server_dns
            .as_ref()
            .is_none_or(|d| d.iter().all(|n| n == "localhost"))
    {
        out.push(Finding::new(
            Severity::Warning,
            "server_dns",
            format!("the server listens on {listen} but its certificate names only localhost"),
            "add the name clients use with server_dns = [\"ca.example.org\"]",
        ));
    }
    platform::platform_findings(&config, &mut out);
    out
}

fn check_private(path: &Path, subject: &str, out: &mut Vec<Finding>) {
    if let Ok(m) = std::fs::symlink_metadata(path) {
        let mode = m.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            let want = if m.is_dir() { "0700" } else { "0600" };
            out.push(Finding::new(
                Severity::Error,
                subject,
                format!(
                    "{} is accessible to group or others (mode {mode:04o}); it holds CA keys",
                    path.display()
                ),
                format!("chmod {want} {}", path.display()),
            ));
        }
    }
}

fn walk(dir: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            out.extend(walk(&p)?);
        }
        out.push(p);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subjects(text: &str) -> Vec<(Severity, String)> {
        check_server_config(text)
            .into_iter()
            .map(|f| (f.severity, f.subject))
            .collect()
    }

    #[test]
    fn clean_config_has_no_findings() {
        assert!(
            check_server_config("trust_domain = \"example.org\"\nmax_ttl = \"12h\"\n").is_empty()
        );
        assert_eq!(exit_code(&[]), 0);
    }

    #[test]
    fn limits_that_lock_everyone_out_are_errors() {
        let f = check_server_config("[limits]\nmax_request_bytes = 1000\n");
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].severity, Severity::Error);
        assert!(check_server_config("[limits]\nauth_failures = 5\n").is_empty());
    }

    #[test]
    fn each_risk_is_reported() {
        assert_eq!(
            subjects("dev = true"),
            [(Severity::Warning, "dev".to_owned())]
        );
        assert!(subjects("dev = true\npassphrase_file = \"/etc/writ/passphrase\"").is_empty());
        assert_eq!(
            subjects("max_ttl = \"48h\""),
            [(Severity::Warning, "max_ttl".to_owned())]
        );
        assert_eq!(
            subjects("token_max_ttl = \"72h\""),
            [(Severity::Warning, "token_max_ttl".to_owned())]
        );
        assert_eq!(
            subjects("ca_key_type = \"rsa-2048\""),
            [(Severity::Warning, "ca_key_type".to_owned())]
        );
        assert_eq!(
            subjects("root_ttl = \"30d\""),
            [(Severity::Warning, "root_ttl".to_owned())]
        );
        assert_eq!(
            subjects("intermediate_ttl = \"36h\""),
            [(Severity::Error, "intermediate_ttl".to_owned())]
        );
        assert_eq!(
            subjects("default_ttl = \"2h\"\nmin_ttl = \"1m\"\nmax_ttl = \"1h\""),
            [(Severity::Error, "default_ttl".to_owned())]
        );
        assert_eq!(
            subjects("listen = \"0.0.0.0:8443\""),
            [(Severity::Warning, "server_dns".to_owned())]
        );
        assert_eq!(
            subjects("metrics_listen = \"0.0.0.0:9090\""),
            [(Severity::Warning, "metrics_listen".to_owned())]
        );
        assert!(subjects("metrics_listen = \"127.0.0.1:9090\"").is_empty());
        assert!(subjects("metrics_listen = \"[::1]:9090\"").is_empty());
        assert_eq!(
            subjects("unknown_key = 1"),
            [(Severity::Error, "config".to_owned())]
        );
        assert_eq!(
            subjects("max_ttl = \"soon\""),
            [(Severity::Error, "config".to_owned())]
        );
    }

    #[test]
    fn loose_file_modes_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(data.join("db")).unwrap();
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(data.join("db/conf"), b"x").unwrap();
        std::fs::set_permissions(data.join("db/conf"), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        let text = format!("data_dir = {:?}", data.display().to_string());
        let f = check_server_config(&text);
        // data/, data/db/ and data/db/conf.
        assert_eq!(f.len(), 3, "{f:?}");
        assert!(
            f.iter()
                .all(|f| f.severity == Severity::Error && f.fix.starts_with("chmod"))
        );

        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let text = format!(
            "admin_socket = {:?}",
            open.join("admin.sock").display().to_string()
        );
        assert_eq!(
            subjects(&text),
            [(Severity::Error, "admin_socket".to_owned())]
        );
        assert_eq!(exit_code(&check_server_config(&text)), 2);
    }

    #[test]
    fn loose_admin_socket_directories_and_files_outside_db() {
        let dir = tempfile::tempdir().unwrap();
        for (mode, want) in [
            (0o775, Some(Severity::Warning)),
            (0o1777, Some(Severity::Warning)),
            (0o777, Some(Severity::Error)),
            (0o755, None),
        ] {
            let parent = dir.path().join(format!("run{mode:o}"));
            std::fs::create_dir(&parent).unwrap();
            std::fs::set_permissions(&parent, std::fs::Permissions::from_mode(mode)).unwrap();
            let text = format!(
                "admin_socket = {:?}",
                parent.join("admin.sock").display().to_string()
            );
            let got: Vec<_> = subjects(&text);
            match want {
                Some(sev) => assert_eq!(got, [(sev, "admin_socket".to_owned())], "{mode:o}"),
                None => assert!(got.is_empty(), "{mode:o}: {got:?}"),
            }
        }
        // Inside the data dir the data dir's own check covers it.
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
        let text = format!(
            "data_dir = {:?}\nadmin_socket = {:?}",
            data.display().to_string(),
            data.join("admin.sock").display().to_string()
        );
        assert!(subjects(&text).is_empty());

        // A key left beside db/ readable by others is found too.
        let key = data.join("root-backup.key");
        std::fs::write(&key, b"x").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
        let f = check_server_config(&text);
        assert_eq!(f.len(), 1, "{f:?}");
        assert!(
            f[0].message.contains("root-backup.key")
                && f[0].fix == format!("chmod 0600 {}", key.display())
        );
    }
}
