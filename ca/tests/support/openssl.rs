//! The `openssl` command line as an independent verifier of issued chains.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::SystemTime;

/// Verifies `chain` (leaf first) against `roots` with `openssl verify -x509_strict
/// -check_ss_sig`, for both TLS client and server purposes, at `at` (default: now).
/// Panics with openssl's output on failure, or with install instructions when openssl is
/// missing.
pub fn openssl_verify(roots: &[Vec<u8>], chain: &[Vec<u8>], at: Option<SystemTime>) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let bundle = write_pem(dir.path(), "bundle.pem", roots);
    let untrusted = write_pem(dir.path(), "chain.pem", chain);
    let leaf = write_pem(dir.path(), "leaf.pem", &chain[..1]);
    for purpose in ["sslclient", "sslserver"] {
        let mut cmd = openssl();
        // -x509_strict adds RFC 5280 checks (key identifiers, critical
        // basicConstraints on CAs, a critical SAN with an empty subject, ...);
        // -check_ss_sig also verifies the root's self-signature.
        cmd.args([
            "verify",
            "-x509_strict",
            "-check_ss_sig",
            "-purpose",
            purpose,
        ])
        .arg("-CAfile")
        .arg(&bundle)
        .arg("-untrusted")
        .arg(&untrusted);
        if let Some(at) = at {
            let secs = at
                .duration_since(SystemTime::UNIX_EPOCH)
                .expect("after 1970")
                .as_secs();
            cmd.args(["-attime", &secs.to_string()]);
        }
        let out = cmd.arg(&leaf).output().expect("run openssl");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.trim_end().ends_with(": OK"),
            "openssl verify -purpose {purpose} failed:\n{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The `openssl` command; panics with how to install it when it is missing.
pub fn openssl() -> Command {
    let found = Command::new("openssl")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "the `openssl` command is required to cross-check issued certificates; install it \
         (Debian/Ubuntu: `apt-get install -y openssl`)"
    );
    Command::new("openssl")
}

/// Writes `certs` as one PEM file `name` in `dir`.
pub fn write_pem(dir: &Path, name: &str, certs: &[Vec<u8>]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, writ_ca::x509::certs_to_pem(certs)).expect("write PEM");
    path
}
