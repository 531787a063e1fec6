//! The CA across time: restarts on the same store, intermediate renewal under the same
//! root, and leaves cut to their intermediate's expiry (and saying so). Every chain is cross-checked with
//! rustls-webpki and the `openssl` command line.
//!
//! ec-p256 CAs and keys throughout: the key-type matrix lives in `matrix.rs`.

mod support;

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use writ_ca::store::IssuanceRecord;
use writ_ca::{
    CertInfo, Error, KeyType, LeafRequest, LifetimeLimit, OverMax, PrivateKey, Rules, SanMode,
    Usage, build_csr, verify_chain,
};

use support::{ID, TestCa};

const HOUR: Duration = Duration::from_secs(3600);

/// Reopening the store loads the same CA (root, intermediate, bundle) instead of creating
/// one, the issuance log survives in order, and no serial ever repeats across the restart.
#[test]
fn restart_keeps_the_ca_and_the_issuance_log() {
    let mut ca = TestCa::create(support::settings(KeyType::EcP256));
    let key = PrivateKey::generate(KeyType::EcP256).expect("key");
    let fingerprint = ca.ca().root_fingerprint().expect("fingerprint");
    let bundle = ca.ca().bundle();
    let intermediate_not_after = ca.ca().intermediate_not_after().expect("intermediate");

    let mut leaves = Vec::new();
    for _ in 0..100 {
        leaves.push(support::issue(ca.ca(), &key, HOUR).issuance);
    }
    assert!(
        !ca.reopen(),
        "reopening an existing store must not create a new CA"
    );
    assert_eq!(
        ca.ca().root_fingerprint().expect("fingerprint"),
        fingerprint
    );
    assert_eq!(
        ca.ca().bundle(),
        bundle,
        "bundle (roots and sequence) changed"
    );
    assert_eq!(
        ca.ca().intermediate_not_after().expect("intermediate"),
        intermediate_not_after
    );
    for _ in 0..100 {
        leaves.push(support::issue(ca.ca(), &key, HOUR).issuance);
    }

    // Every leaf, before and after the restart, chains through the same intermediate to
    // the same root.
    let intermediate = &leaves[0].chain[1];
    let now = SystemTime::now();
    for leaf in [&leaves[0], &leaves[199]] {
        assert_eq!(
            &leaf.chain[1], intermediate,
            "intermediate changed on restart"
        );
        verify_chain(&leaf.chain, &bundle.roots, now, Usage::Client).expect("webpki");
        support::openssl_verify(&bundle.roots, &leaf.chain, None);
    }

    // The log holds all 200, newest first, each exactly as issued.
    let store = ca.ca().store();
    assert_eq!(store.issuance_count().expect("count"), 200);
    let records = store.recent_issuance(1000).expect("log");
    assert_eq!(records.len(), 200);
    let serials: HashSet<&str> = records.iter().map(|r| r.serial.as_str()).collect();
    assert_eq!(serials.len(), 200, "a serial repeated");
    for (record, leaf) in records.iter().rev().zip(&leaves) {
        let info = CertInfo::parse(&leaf.leaf.der).expect("leaf parses");
        let expected = IssuanceRecord {
            serial: info.serial,
            spiffe_id: ID.to_owned(),
            not_before: unix(info.not_before),
            not_after: unix(info.not_after),
            fingerprint: info.fingerprint,
            key_type: "ec-p256".to_owned(),
            auth: "mtls".to_owned(),
            generation: 1,
        };
        assert_eq!(record, &expected, "log entry differs from the certificate");
    }
    let mut oldest_first = Vec::new();
    store
        .for_each_issuance(&mut |r| oldest_first.push(r.serial.clone()))
        .expect("scan log");
    let newest_first: Vec<String> = records.iter().rev().map(|r| r.serial.clone()).collect();
    assert_eq!(
        oldest_first, newest_first,
        "log order differs between readers"
    );
}

/// Renewal happens once less than max(lifetime/2, 2 × max TTL) of the intermediate
/// remains; it replaces the intermediate (new key, new subject) under the same root, so
/// the bundle does not change, old leaves keep verifying and new leaves chain through the
/// new intermediate. The renewal persists across a restart.
///
/// `renew_intermediate_if_due(t)` signs the new intermediate from `t` on, so with a
/// future `t` the new chain is checked at `t`: the intermediate lifetime (60h) is chosen
/// so renewal falls due (at +12h) within a 24h leaf's life, and both chains are valid
/// then.
#[test]
fn intermediate_renews_under_the_same_root() {
    let mut settings = support::settings(KeyType::EcP256);
    settings.intermediate_validity = 60 * HOUR;
    let max_ttl = settings.ttl.max().duration();
    assert_eq!(
        max_ttl,
        24 * HOUR,
        "the test assumes the default 24h max TTL"
    );
    let created = SystemTime::now();
    let mut ca = TestCa::create(settings);
    let key = PrivateKey::generate(KeyType::EcP256).expect("key");
    let fingerprint = ca.ca().root_fingerprint().expect("fingerprint");
    let bundle = ca.ca().bundle();
    let first_not_after = ca.ca().intermediate_not_after().expect("intermediate");
    assert!(first_not_after >= created + 60 * HOUR - Duration::from_secs(1));

    // margin = max(60h / 2, 2 × 24h) = 48h before notAfter, i.e. 12h after creation.
    let renewal_at = ca.ca().intermediate_renewal_at().expect("renewal time");
    assert_eq!(renewal_at, first_not_after - 48 * HOUR);
    let now = SystemTime::now();
    assert!(!ca.ca().renew_intermediate_if_due(now).expect("renew"));
    assert!(
        !ca.ca()
            .renew_intermediate_if_due(renewal_at - Duration::from_secs(1))
            .expect("renew"),
        "renewed before it was due"
    );
    let old = support::issue(ca.ca(), &key, 24 * HOUR).issuance;
    assert_eq!(
        ca.ca().intermediate_not_after().expect("intermediate"),
        first_not_after,
        "the intermediate changed without a renewal"
    );

    let t = renewal_at + Duration::from_secs(60);
    assert!(
        ca.ca().renew_intermediate_if_due(t).expect("renew"),
        "renewal was due"
    );
    assert_eq!(
        ca.ca().root_fingerprint().expect("fingerprint"),
        fingerprint
    );
    assert_eq!(
        ca.ca().bundle(),
        bundle,
        "renewal must not touch the bundle"
    );
    let second_not_after = ca.ca().intermediate_not_after().expect("intermediate");
    assert!(
        second_not_after >= t + 60 * HOUR - Duration::from_secs(1)
            && second_not_after <= t + 60 * HOUR,
        "the new intermediate does not get its full lifetime"
    );
    assert!(
        !ca.ca().renew_intermediate_if_due(t).expect("renew"),
        "renewed twice"
    );

    let new = support::issue(ca.ca(), &key, 24 * HOUR);
    let new_chain = &new.issuance.chain;
    assert_ne!(
        new_chain[1], old.chain[1],
        "leaf not signed by the new intermediate"
    );
    let root = &bundle.roots[0];
    support::check_ca_pair(root, &new_chain[1], KeyType::EcP256, t);
    let (old_int, new_int) = (support::parse(&old.chain[1]), support::parse(&new_chain[1]));
    assert_ne!(
        support::ski(&old_int),
        support::ski(&new_int),
        "SKI (key) reused"
    );
    assert_ne!(
        support::subject_der(&old_int),
        support::subject_der(&new_int),
        "subject reused"
    );
    support::check_leaf(
        &new.issuance.leaf.der,
        &new_chain[1],
        &key,
        24 * HOUR,
        new.before,
        new.after,
    );

    // At `t` both intermediates are valid: the old leaf still verifies through the old
    // one, the new leaf through the new one, against the unchanged bundle.
    for chain in [&old.chain, new_chain] {
        for usage in [Usage::Client, Usage::Server] {
            let peer = verify_chain(chain, &bundle.roots, t, usage).expect("webpki at t");
            assert_eq!(peer.id.as_str(), ID);
        }
        support::openssl_verify(&bundle.roots, chain, Some(t));
    }
    // A chain mixing the new leaf with the old intermediate must not verify.
    let mixed = vec![new_chain[0].clone(), old.chain[1].clone()];
    assert!(verify_chain(&mixed, &bundle.roots, t, Usage::Client).is_err());

    // The renewal is durable.
    assert!(!ca.reopen());
    assert_eq!(
        ca.ca().intermediate_not_after().expect("intermediate"),
        second_not_after
    );
    assert_eq!(ca.ca().bundle(), bundle);
    let after_restart = support::issue(ca.ca(), &key, HOUR).issuance;
    assert_eq!(after_restart.chain[1], new_chain[1]);
}

/// A leaf never outlives its intermediate: a TTL beyond the intermediate's remaining life
/// is cut to its notAfter (and the cut leaf still verifies); a shorter TTL is honoured.
#[test]
fn leaves_never_outlive_the_intermediate() {
    let mut settings = support::settings(KeyType::EcP256);
    settings.intermediate_validity = HOUR;
    let ca = TestCa::create(settings);
    let key = PrivateKey::generate(KeyType::EcP256).expect("key");
    let int_not_after = ca.ca().intermediate_not_after().expect("intermediate");
    let csr = build_csr(&key, &support::id(), &[]).expect("CSR");
    let caller = support::caller();

    for (ttl, over_max) in [
        (24 * HOUR, OverMax::Reject),
        (24 * HOUR, OverMax::Clamp),
        (48 * HOUR, OverMax::Clamp),
    ] {
        let issued = ca
            .ca()
            .issue(
                &csr,
                &LeafRequest::new(
                    &caller,
                    Some(ttl),
                    Rules {
                        sans: SanMode::Exact,
                        over_max,
                    },
                ),
                SystemTime::now(),
            )
            .expect("issue");
        assert_eq!(
            issued.leaf.not_after, int_not_after,
            "{ttl:?} ({over_max:?}): leaf not cut to the intermediate's notAfter"
        );
        // The answer says so, even where max_ttl had cut the request first.
        assert_eq!(issued.limited_by, Some(LifetimeLimit::IssuerExpiry));
        assert!(issued.lifetime < HOUR, "{:?}", issued.lifetime);
        let cert = support::parse(&issued.leaf.der);
        assert_eq!(support::not_after(&cert), int_not_after);
        let record = &ca.ca().store().recent_issuance(1).expect("log")[0];
        assert_eq!(record.not_after, unix(int_not_after), "log disagrees");
        let peer = verify_chain(
            &issued.chain,
            &issued.bundle.roots,
            SystemTime::now(),
            Usage::Client,
        )
        .expect("cut leaf verifies");
        assert_eq!(peer.id.as_str(), ID);
        support::openssl_verify(&issued.bundle.roots, &issued.chain, None);
    }

    // Above the maximum with Reject is still refused: cutting is not a licence to ask.
    let refused = ca.ca().issue(
        &csr,
        &LeafRequest::new(
            &caller,
            Some(48 * HOUR),
            Rules {
                sans: SanMode::Exact,
                over_max: OverMax::Reject,
            },
        ),
        SystemTime::now(),
    );
    assert!(
        matches!(refused, Err(Error::TtlTooLong { .. })),
        "{refused:?}"
    );

    // Nothing asked: the default (1h) outlives the intermediate, and the answer says why
    // the certificate is shorter than usual.
    let default = ca
        .ca()
        .issue(
            &csr,
            &LeafRequest::new(&caller, None, Rules::WRIT),
            SystemTime::now(),
        )
        .expect("issue");
    assert_eq!(default.leaf.not_after, int_not_after);
    assert_eq!(default.limited_by, Some(LifetimeLimit::IssuerExpiry));

    // Within the intermediate's life, the requested TTL is honoured exactly.
    let half_hour = Duration::from_secs(30 * 60);
    let short = support::issue(ca.ca(), &key, half_hour);
    assert!(short.issuance.leaf.not_after < int_not_after);
    assert_eq!(short.issuance.lifetime, half_hour);
    assert_eq!(short.issuance.limited_by, None);
    support::check_leaf(
        &short.issuance.leaf.der,
        &short.issuance.chain[1],
        &key,
        half_hour,
        short.before,
        short.after,
    );
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// A denied identity gets nothing through any path (policy-checked issue, a decided
/// template, the pre-spend `evaluate`), other identities and the CA's own certificate are
/// unaffected, the deny survives a restart, and `allow` lifts it.
#[test]
fn a_denied_identity_is_refused_on_every_path_until_allowed() {
    let mut ca = TestCa::create(support::settings(KeyType::EcP256));
    let key = PrivateKey::generate(KeyType::EcP256).expect("key");
    let csr_der = build_csr(&key, &support::id(), &[]).expect("CSR");
    let caller = support::caller();
    let denied = ca
        .ca()
        .deny(&support::id(), "key leaked", SystemTime::now())
        .expect("deny");
    assert_eq!(denied.reason, "key leaked");
    assert!(!ca.reopen());
    assert_eq!(ca.ca().denied().len(), 1, "the deny survives a restart");

    let refused = ca
        .ca()
        .issue(
            &csr_der,
            &LeafRequest::new(&caller, None, Rules::WRIT),
            SystemTime::now(),
        )
        .unwrap_err();
    assert!(matches!(&refused, Error::IdentityDenied { id } if id == ID));
    assert!(refused.to_string().contains("writ identity allow"));
    let csr = writ_ca::Csr::parse(&csr_der).expect("parse");
    assert!(matches!(
        ca.ca()
            .evaluate(&csr, &LeafRequest::new(&caller, None, Rules::WRIT)),
        Err(Error::IdentityDenied { .. })
    ));
    // A template decided elsewhere (a new authentication path) is refused too.
    let template = ca
        .ca()
        .policy()
        .evaluate(&csr, &LeafRequest::new(&caller, None, Rules::WRIT))
        .expect("the policy alone knows nothing of denies");
    assert!(matches!(
        ca.ca().issue_template(&template, SystemTime::now()),
        Err(Error::IdentityDenied { .. })
    ));
    let mut internal = template.clone();
    internal.auth = writ_ca::AuthMethod::Internal;
    ca.ca()
        .issue_template(&internal, SystemTime::now())
        .expect("the CA's own certificate is exempt");

    let other = writ_ca::SpiffeId::parse("spiffe://example.org/other").expect("id");
    ca.ca().check_allowed(&other).expect("others unaffected");
    let foreign = writ_ca::SpiffeId::parse("spiffe://elsewhere.org/x").expect("id");
    assert!(matches!(
        ca.ca().deny(&foreign, "", SystemTime::now()),
        Err(Error::InvalidId(_))
    ));

    assert!(ca.ca().allow(&support::id()).expect("allow"));
    assert!(!ca.ca().allow(&support::id()).expect("allow twice"));
    support::issue(ca.ca(), &key, HOUR);
    assert!(!ca.reopen());
    assert!(ca.ca().denied().is_empty(), "the allow survives a restart");
}

/// The health self-test signs and verifies without touching the issuance log, and fails
/// once the intermediate has expired (a CA that could no longer issue valid leaves).
#[test]
fn self_test_signs_without_recording_and_fails_past_the_intermediate() {
    let ca = TestCa::create(support::settings(KeyType::EcP256));
    let key = PrivateKey::generate(KeyType::EcP256).expect("key");
    let public = writ_ca::CaSigningKey::public_key_raw(&key).to_vec();
    let before = ca.ca().store().recent_issuance(100).expect("log").len();
    ca.ca()
        .self_test(&public, SystemTime::now())
        .expect("self-test");
    let after = ca.ca().store().recent_issuance(100).expect("log").len();
    assert_eq!(before, after, "the self-test recorded a certificate");

    let past = ca.ca().intermediate_not_after().expect("intermediate") + HOUR;
    assert!(ca.ca().self_test(&public, past).is_err());
}

/// The facts the issuer reports without re-parsing (serial, validity to the second,
/// fingerprint) are exactly what the certificate says.
#[test]
fn issued_facts_match_a_parse() {
    let ca = TestCa::create(support::settings(KeyType::EcP256));
    let key = PrivateKey::generate(KeyType::EcP256).expect("key");
    for ttl in [HOUR, Duration::from_millis(90_500), Duration::from_secs(61)] {
        let leaf = support::issue(ca.ca(), &key, ttl).issuance.leaf;
        let parsed = CertInfo::parse(&leaf.der).expect("parse");
        assert_eq!(leaf.serial, parsed.serial);
        assert_eq!(leaf.not_before, parsed.not_before);
        assert_eq!(leaf.not_after, parsed.not_after);
        assert_eq!(leaf.fingerprint, parsed.fingerprint);
    }
}

/// The SAN-only reader (what a client checking an answer needs) names the leaf's SPIFFE ID,
/// as the full parse does, and refuses a CA certificate (no URI SAN) and bytes that are
/// not a certificate.
#[test]
fn the_san_only_reader_agrees_with_the_full_parse() {
    let ca = TestCa::create(support::settings(KeyType::EcP256));
    let key = PrivateKey::generate(KeyType::EcP256).expect("key");
    let issuance = support::issue(ca.ca(), &key, HOUR).issuance;
    let leaf = &issuance.chain[0];
    assert_eq!(CertInfo::spiffe_id_of(leaf).expect("leaf"), support::id());
    assert_eq!(
        CertInfo::parse(leaf)
            .and_then(|i| i.spiffe_id())
            .expect("leaf"),
        support::id()
    );
    for ca_cert in issuance.chain[1..].iter().chain(&ca.ca().bundle().roots) {
        let err = CertInfo::spiffe_id_of(ca_cert).unwrap_err();
        assert!(err.to_string().contains("no URI SAN"), "{err}");
    }
    let err = CertInfo::spiffe_id_of(&leaf[..leaf.len() / 2]).unwrap_err();
    assert!(
        err.to_string().contains("not a DER X.509 certificate"),
        "{err}"
    );
}

/// The SAN-only reader is stricter than the full parse: a certificate carrying a critical
/// extension no one understands names no identity, since no relying party would accept it.
/// (Found by the `pem_bundle` fuzz target: one bit turned basicConstraints into 2.5.37.19.)
#[test]
fn the_san_only_reader_refuses_an_unknown_critical_extension() {
    let mut params = rcgen::CertificateParams::default();
    params.subject_alt_names = vec![rcgen::SanType::URI(ID.try_into().expect("uri"))];
    let mut unknown = rcgen::CustomExtension::from_oid_content(&[2, 5, 37, 19], vec![0x30, 0x00]);
    unknown.set_criticality(true);
    params.custom_extensions = vec![unknown];
    let key = rcgen::KeyPair::generate().expect("key");
    let der = params.self_signed(&key).expect("cert").der().to_vec();
    assert_eq!(
        CertInfo::parse(&der)
            .and_then(|i| i.spiffe_id())
            .expect("the full parse reads it"),
        support::id()
    );
    let err = CertInfo::spiffe_id_of(&der).unwrap_err();
    assert!(err.to_string().contains("certificate refused"), "{err}");
    assert!(err.to_string().contains("CriticalExtension"), "{err}");
}
