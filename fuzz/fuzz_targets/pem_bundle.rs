//! `certs_from_pem`, `CertInfo::parse` and `verify_chain` over arbitrary bytes, with the
//! last certificate of the input as the only root.
//!
//! Invariants: never panics; PEM round-trips (`certs_to_pem` → `certs_from_pem`); a chain
//! that verifies names the leaf's own URI SAN and facts; when both the SAN-only SPIFFE ID
//! reader and the full parse read a certificate, the reader names the identity the full
//! parse does (each may refuse what the other reads: the reader is webpki's, which
//! rejects e.g. unknown critical extensions).
#![no_main]

use std::time::{Duration, SystemTime};

use libfuzzer_sys::fuzz_target;
use writ_ca::x509::{certs_from_pem, certs_to_pem};
use writ_ca::{CertInfo, Usage, verify_chain};

/// A fixed instant (2026-11-27T00:00:00Z) for inputs whose leaf does not parse, so a run
/// does not depend on the clock.
const FIXED_NOW: u64 = 1_795_737_600;

fuzz_target!(|data: &[u8]| {
    let Ok(certs) = certs_from_pem(data) else {
        return;
    };
    assert!(!certs.is_empty(), "Ok with no certificate");
    let again = certs_from_pem(certs_to_pem(&certs).as_bytes()).expect("printed PEM parses");
    assert_eq!(again, certs, "PEM does not round-trip");

    let infos: Vec<_> = certs.iter().map(|c| CertInfo::parse(c)).collect();
    for (der, info) in certs.iter().zip(&infos) {
        if let (Ok(id), Ok(info)) = (CertInfo::spiffe_id_of(der), info) {
            assert_eq!(
                Some(id),
                info.spiffe_id().ok(),
                "the SAN-only reader disagrees with the full parse"
            );
        }
    }
    // Verify in the middle of the leaf's validity, so the seed chains keep verifying
    // after they expire, while the verification stays deterministic.
    let now = match &infos[0] {
        Ok(leaf) => match leaf.not_after.duration_since(leaf.not_before) {
            Ok(life) => leaf.not_before + life / 2,
            Err(_) => leaf.not_before,
        },
        Err(_) => SystemTime::UNIX_EPOCH + Duration::from_secs(FIXED_NOW),
    };
    let roots = &certs[certs.len() - 1..];
    for usage in [Usage::Client, Usage::Server] {
        let Ok(peer) = verify_chain(&certs, roots, now, usage) else {
            continue;
        };
        let leaf = infos[0].as_ref().expect("a verified leaf parses");
        assert_eq!(peer.leaf.fingerprint, leaf.fingerprint);
        assert_eq!(peer.leaf.fingerprint, writ_ca::x509::sha256_hex(&certs[0]));
        assert_eq!(
            peer.id.as_str(),
            leaf.uris[0],
            "verified identity is not the leaf's URI SAN"
        );
        assert_eq!(leaf.spiffe_id().ok().as_ref(), Some(&peer.id));
        assert!(!leaf.is_ca, "a CA certificate verified as a leaf");
        assert!(leaf.not_before <= now && now <= leaf.not_after);
    }
});
