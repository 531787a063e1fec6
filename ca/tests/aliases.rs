//! Trust-domain migration: a CA reconfigured from `old.example` to `new.example` with the
//! old name as an alias keeps its keys, renews old workloads into the new trust domain,
//! and refuses every other trust domain.

mod support;

use std::time::{Duration, SystemTime};

use writ_ca::{
    AuthMethod, CaSettings, Caller, Error, KeyType, LeafRequest, PrivateKey, Rules, SpiffeId,
    TrustDomain, build_csr,
};

use support::TestCa;

fn settings(td: &str, aliases: &[&str]) -> CaSettings {
    let mut s = CaSettings::new(TrustDomain::parse(td).expect("trust domain"));
    s.ca_key_type = KeyType::EcP256;
    s.trust_domain_aliases = aliases
        .iter()
        .map(|a| TrustDomain::parse(a).expect("alias"))
        .collect();
    s
}

fn issue_for(ca: &writ_ca::Authority, id: &str, key: &PrivateKey) -> Vec<Vec<u8>> {
    let id = SpiffeId::parse(id).expect("id");
    let csr = build_csr(key, &id, &[]).expect("csr");
    let caller = Caller {
        id,
        dns_allowed: Vec::new(),
        method: AuthMethod::Admin,
    };
    ca.issue(
        &csr,
        &LeafRequest::new(&caller, Some(Duration::from_secs(3600)), Rules::WRIT),
        SystemTime::now(),
    )
    .expect("issue")
    .chain
}

#[test]
fn an_alias_migrates_the_ca_and_renews_old_identities_into_the_new_domain() {
    let mut ca = TestCa::create(settings("old.example", &[]));
    let key = PrivateKey::generate(KeyType::EcP256).expect("key");
    let old_chain = issue_for(ca.ca(), "spiffe://old.example/ns/prod/sa/web", &key);
    let fingerprint = ca.ca().root_fingerprint().expect("fingerprint");

    // Without the alias the data directory is refused, naming its trust domain.
    let refused = ca
        .reopen_with(settings("new.example", &[]))
        .expect_err("refused");
    assert!(refused.to_string().contains("old.example"), "{refused}");

    // With it, the same CA (same root) opens under the new name.
    assert!(
        !ca.reopen_with(settings("new.example", &["old.example"]))
            .expect("open")
    );
    assert_eq!(
        ca.ca().root_fingerprint().expect("fingerprint"),
        fingerprint
    );
    let peer = ca
        .ca()
        .verify_client(&old_chain, SystemTime::now())
        .expect("alias peer");
    assert_eq!(peer.id.as_str(), "spiffe://new.example/ns/prod/sa/web");
    // A restarted server does not take the old-domain leaf from its log on trust: only
    // `verify_client` maps its identity into the new domain.
    let recent = ca.ca().recent_leaves(16, SystemTime::now()).expect("log");
    assert!(recent.leaves.is_empty(), "{recent:?}");
    // Renewing as that peer issues in the new trust domain only.
    let csr = build_csr(&key, &peer.id, &[]).expect("csr");
    let caller = Caller {
        id: peer.id,
        dns_allowed: Vec::new(),
        method: AuthMethod::Mtls,
    };
    let renewed = ca
        .ca()
        .issue(
            &csr,
            &LeafRequest::new(&caller, None, Rules::WRIT),
            SystemTime::now(),
        )
        .expect("renew");
    assert_eq!(renewed.id.as_str(), "spiffe://new.example/ns/prod/sa/web");

    // The adoption is durable: the alias can be dropped afterwards, and then the old
    // trust domain is as foreign as any other.
    assert!(
        !ca.reopen_with(settings("new.example", &[]))
            .expect("reopen")
    );
    let err = ca
        .ca()
        .verify_client(&old_chain, SystemTime::now())
        .expect_err("old domain without alias");
    assert!(
        matches!(&err, Error::ForeignTrustDomain { id, .. } if id == "spiffe://old.example/ns/prod/sa/web"),
        "{err}"
    );
    assert!(ca.reopen_with(settings("old.example", &[])).is_err());
}

#[test]
fn an_unrelated_trust_domain_is_refused_even_when_it_chains() {
    // The CA itself issued it (as an imported or misconfigured CA could): chaining to the
    // bundle is not enough, the trust domain must be this one or an alias.
    let mut ca = TestCa::create(settings("other.example", &[]));
    let key = PrivateKey::generate(KeyType::EcP256).expect("key");
    let foreign = issue_for(ca.ca(), "spiffe://other.example/web", &key);
    ca.reopen_with(settings("new.example", &["other.example"]))
        .expect("adopt");
    // Now serve new.example with a different alias: other.example is unrelated.
    ca.reopen_with(settings("new.example", &["old.example"]))
        .expect("reopen");
    let err = ca
        .ca()
        .verify_client(&foreign, SystemTime::now())
        .expect_err("unrelated domain");
    assert!(matches!(err, Error::ForeignTrustDomain { .. }), "{err}");
    assert!(err.to_string().contains("trust_domain_aliases"));
}
