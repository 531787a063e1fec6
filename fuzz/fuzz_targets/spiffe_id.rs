//! `SpiffeId::parse_any` and `TrustDomain::parse` over arbitrary UTF-8.
//!
//! Invariants: never panics; whatever parses prints back to the canonical string and
//! parses again to an equal value (parse → print → parse).
#![no_main]

use libfuzzer_sys::fuzz_target;
use writ_ca::{SpiffeId, TrustDomain};

fuzz_target!(|s: &str| {
    if let Ok(id) = SpiffeId::parse_any(s) {
        let printed = id.to_string();
        assert_eq!(printed, s, "a parsed SPIFFE ID prints differently");
        assert_eq!(id.as_str(), s);
        let again = SpiffeId::parse_any(&printed).expect("a printed SPIFFE ID parses");
        assert_eq!(again, id);
        // The parts agree with the whole.
        assert_eq!(
            format!("spiffe://{}{}", id.trust_domain_str(), id.path()),
            printed
        );
        let td = id.trust_domain();
        assert!(id.is_member_of(&td));
        assert_eq!(TrustDomain::parse(id.trust_domain_str()).ok(), Some(td));
        // `parse` is `parse_any` restricted to workloads.
        assert_eq!(SpiffeId::parse(s).is_ok(), id.is_workload());
    } else {
        assert!(
            SpiffeId::parse(s).is_err(),
            "parse accepts what parse_any refuses"
        );
    }

    if let Ok(td) = TrustDomain::parse(s) {
        // Both `example.org` and `spiffe://example.org` are accepted; the bare name prints.
        let printed = td.to_string();
        assert_eq!(printed, s.strip_prefix("spiffe://").unwrap_or(s));
        assert_eq!(TrustDomain::parse(&printed).ok().as_ref(), Some(&td));
        assert_eq!(TrustDomain::parse(&td.id_string()).ok().as_ref(), Some(&td));
        let own = SpiffeId::parse_any(&td.id_string()).expect("a trust domain's own ID parses");
        assert!(!own.is_workload());
        assert!(own.is_member_of(&td));
    }
});
