//! `Csr::parse` over arbitrary bytes, and the policy over every CSR that parses.
//!
//! Invariants: never panics; a template the policy grants names exactly the caller's
//! identity, only DNS names the caller was granted, the CSR's own key, and a lifetime
//! within the TTL bounds.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use writ_ca::{
    AuthMethod, Caller, Csr, LeafRequest, OverMax, Policy, Rules, SanMode, SpiffeId, TrustDomain,
    TtlBounds,
};

/// The identity the seed CSRs ask for (see `examples/gen_corpus.rs`).
const CALLER_ID: &str = "spiffe://example.org/ns/default/sa/web";
/// The one DNS name the caller may put in its certificate.
const CALLER_DNS: &str = "web.example.org";

fn fixture() -> &'static (Policy, Caller) {
    static FIXTURE: OnceLock<(Policy, Caller)> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let td = TrustDomain::parse("example.org").expect("constant trust domain");
        let caller = Caller {
            id: SpiffeId::parse(CALLER_ID).expect("constant SPIFFE ID"),
            dns_allowed: vec![CALLER_DNS.to_owned()],
            method: AuthMethod::Mtls,
        };
        (Policy::new(td, TtlBounds::default()), caller)
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(csr) = Csr::parse(data) else { return };
    let (policy, caller) = fixture();
    for mode in [SanMode::Exact, SanMode::Authenticated] {
        let Ok(t) = policy.evaluate(
            &csr,
            &LeafRequest::new(
                caller,
                None,
                Rules {
                    sans: mode,
                    over_max: OverMax::Clamp,
                },
            ),
        ) else {
            continue;
        };
        assert_eq!(t.id, caller.id, "{mode:?}: template names another identity");
        assert!(
            t.dns_names.iter().all(|n| caller.dns_allowed.contains(n)),
            "{mode:?}: DNS names {:?} not granted",
            t.dns_names
        );
        assert!(t.ip_addrs.is_empty(), "{mode:?}: IP SANs from a CSR");
        assert_eq!(t.key_type, csr.key_type());
        assert_eq!(t.public_key, csr.public_key());
        assert!(
            !csr.requests_ca(),
            "{mode:?}: granted a CSR asking for cA=true"
        );
        let ttl = policy.ttl();
        assert!(t.lifetime >= ttl.min().duration() && t.lifetime <= ttl.max().duration());
        if mode == SanMode::Exact {
            assert!(
                csr.other_sans().is_empty(),
                "exact mode granted other SAN types"
            );
            assert_eq!(csr.uris(), [CALLER_ID], "exact mode granted other URI SANs");
        }
    }
});
