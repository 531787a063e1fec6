//! The files in `packaging/`: the systemd units pass `systemd-analyze verify` with no
//! complaint (an unknown or misspelt directive is only a warning there, so any output
//! fails the test), and the default configs pass `writ config check` with no finding.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::{writ, writ_bin};

const UNITS: [&str; 2] = ["writ-server.service", "writ-agent.service"];

fn packaging() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/packaging"))
}

#[test]
fn systemd_units_verify_cleanly() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: systemd-analyze is not installed (apt-get install systemd)");
        return;
    }
    // `verify` checks that ExecStart's binary exists: point it at the one under test.
    let tmp = tempfile::tempdir().unwrap();
    let mut paths = Vec::new();
    for unit in UNITS {
        let text = std::fs::read_to_string(packaging().join(unit)).unwrap();
        assert!(text.contains("ExecStart=/usr/bin/writ "), "{unit}");
        let path = tmp.path().join(unit);
        std::fs::write(&path, text.replace("/usr/bin/writ", writ_bin())).unwrap();
        paths.push(path);
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(&paths)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && said.trim().is_empty(), "{said}");
}

/// The hardening the units promise is really in them (a verify pass says nothing about
/// directives that are missing).
#[test]
fn units_run_unprivileged_and_sandboxed() {
    for (unit, user) in UNITS.iter().zip(["writ", "writ-agent"]) {
        let text = std::fs::read_to_string(packaging().join(unit)).unwrap();
        for line in [
            format!("User={user}"),
            "NoNewPrivileges=yes".into(),
            "ProtectSystem=strict".into(),
            "ProtectHome=yes".into(),
            "PrivateTmp=yes".into(),
            "CapabilityBoundingSet=\n".into(),
            "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6".into(),
            "SystemCallFilter=@system-service".into(),
            "UMask=0077".into(),
        ] {
            assert!(text.contains(&line), "{unit} lacks {line:?}");
        }
    }
    let server = std::fs::read_to_string(packaging().join(UNITS[0])).unwrap();
    assert!(
        server.contains("StateDirectory=writ\n") && server.contains("LoadCredential=passphrase:")
    );
    assert!(!server.contains("--allow-root") && !server.contains("--dev"));
}

#[test]
fn default_configs_pass_config_check() {
    for (file, kind) in [("server.toml", "server"), ("agent.toml", "agent")] {
        let path = packaging().join(file).display().to_string();
        let out = writ(&["config", "check", "--kind", kind, &path, "-o", "json"]);
        assert!(
            out.status.success(),
            "{file}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let findings: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(findings, serde_json::json!([]), "{file}");
    }
    // The packaged server config names the systemd credential, so it never runs unencrypted.
    let text = std::fs::read_to_string(packaging().join("server.toml")).unwrap();
    assert!(text.contains("passphrase_file = \"/run/credentials/writ-server.service/passphrase\""));
}
