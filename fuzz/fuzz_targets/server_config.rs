//! `ServerConfig::parse` over arbitrary UTF-8, and `resolve` on whatever parses.
//!
//! Invariants: never panics; resolved settings are consistent (TTL bounds ordered,
//! intermediate longer than twice the max leaf TTL and no longer than the root, and a
//! root created now would end before the last instant X.509 can express).
#![no_main]

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use libfuzzer_sys::fuzz_target;
use writ_server::ServerConfig;

/// A fixed "now" (2026-11-27T00:00:00Z).
const NOW: u64 = 1_795_737_600;
/// 9999-12-31T23:59:59Z: the last time a certificate can carry (RFC 5280 §4.1.2.5).
const LAST_X509_TIME: u64 = 253_402_300_799;

fuzz_target!(|text: &str| {
    let Ok(mut config) = ServerConfig::parse(text) else {
        return;
    };
    // Without a data dir `resolve` reads $HOME / $XDG_STATE_HOME; keep the run hermetic.
    // `resolve` only builds paths, it creates nothing.
    if config.data_dir.is_none() {
        config.data_dir = Some(PathBuf::from("/nonexistent/writ-fuzz"));
    }
    let data_dir = config.data_dir.clone();
    let admin_socket = config.admin_socket.clone();
    let Ok(s) = config.resolve() else { return };
    assert_eq!(Some(&s.data_dir), data_dir.as_ref());
    if admin_socket.is_none() {
        assert_eq!(s.admin_socket, s.data_dir.join("admin.sock"));
    }
    let ttl = s.ca.ttl;
    assert!(ttl.min() <= ttl.default_ttl() && ttl.default_ttl() <= ttl.max());
    assert!(s.ca.intermediate_validity > ttl.max().duration());
    assert!(s.ca.intermediate_validity <= s.ca.root_validity);
    // Settings that resolve must be ones a CA can be created with: `Authority::open`
    // signs a root valid for `root_validity` from now.
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(NOW);
    let last = SystemTime::UNIX_EPOCH + Duration::from_secs(LAST_X509_TIME);
    assert!(
        now.checked_add(s.ca.root_validity)
            .is_some_and(|t| t <= last),
        "root_ttl {:?} resolves but no certificate can be valid that long",
        s.ca.root_validity
    );
});
