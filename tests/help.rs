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
