//! `--help` is the manual: the top level carries the manual-page sections, and every
//! command documents itself.
#![allow(clippy::unwrap_used)]

mod common;

use common::writ;

#[test]
fn top_level_help_reads_like_a_manual_page() {
    let out = writ(&["--help"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for section in [
        "EXAMPLES:",
        "FILES:",
        "ENVIRONMENT:",
        "EXIT STATUS:",
        "WRIT_PASSPHRASE",
    ] {
        assert!(text.contains(section), "missing {section}");
    }
}

#[test]
fn every_command_documents_itself() {
    let out = writ(&["--help"]);
    let text = String::from_utf8(out.stdout).unwrap();
    let commands: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .collect();
    assert!(commands.len() >= 15, "{commands:?}");
    for c in commands {
        let out = writ(&[c, "--help"]);
        assert!(out.status.success(), "{c} --help failed");
        let help = String::from_utf8(out.stdout).unwrap();
        assert!(help.contains("Usage: writ"), "{c}: {help}");
    }
}

#[test]
fn a_log_filter_that_does_not_parse_is_said_not_dropped() {
    let run = |filter: &str| {
        std::process::Command::new(common::writ_bin())
            .args(["cert", "inspect", "/nonexistent/cert.pem"])
            .env("WRIT_LOG", filter)
            .output()
            .unwrap()
    };
    let out = run("bogus===");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("WRIT_LOG=\"bogus===\" is not a log filter") && stderr.contains("info"),
        "{stderr}"
    );
    // The command itself still runs and fails for its own reason.
    assert!(stderr.contains("/nonexistent/cert.pem"), "{stderr}");
    let out = run("warn,writ_server=debug");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("not a log filter"), "{stderr}");
}
