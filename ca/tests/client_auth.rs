//! Renewal authentication (`Authority::verify_client`): a chain through one of the CA's
//! own current intermediates is checked by the leaf's signature alone, and that shortcut
//! must refuse everything the whole path refuses — a stranger's leaf presented with this
//! CA's (public) intermediate, a tampered leaf, an expired one, one under a retired root.

mod support;

use std::time::{Duration, SystemTime};

use writ_ca::{Error, KeyType, LeafRequest, PrivateKey, Rules};

use support::TestCa;

const HOUR: Duration = Duration::from_secs(3600);

fn refused(result: Result<writ_ca::VerifiedPeer, Error>, why: &str) {
    match result {
        Err(Error::BadCertificate(_)) => {}
        other => panic!("{why}: expected BadCertificate, got {other:?}"),
    }
}

#[test]
fn the_intermediate_shortcut_refuses_what_the_whole_path_refuses() {
    for kind in [KeyType::EcP256, KeyType::Rsa2048] {
        let ca = TestCa::create(support::settings(kind));
        let key = PrivateKey::generate(KeyType::EcP256).expect("key");
        let ours = support::issue(ca.ca(), &key, HOUR).issuance.chain;
        let now = SystemTime::now();
        let peer = ca.ca().verify_client(&ours, now).expect("our own leaf");
        assert_eq!(peer.id.to_string(), support::ID);
        // Extra certificates after the intermediate change nothing.
        let mut longer = ours.clone();
        longer.push(b"not a certificate".to_vec());
        ca.ca().verify_client(&longer, now).expect("with extras");

        // A leaf from another CA with the same trust domain and names, presented with
        // this CA's intermediate, which anyone can copy from a chain.
        let other = TestCa::create(support::settings(kind));
        let theirs = support::issue(other.ca(), &key, HOUR).issuance.chain;
        refused(
            ca.ca()
                .verify_client(&[theirs[0].clone(), ours[1].clone()], now),
            "a stranger's leaf",
        );
        refused(ca.ca().verify_client(&theirs, now), "a stranger's chain");

        // A byte of our leaf's signature changed.
        let mut tampered = ours.clone();
        let last = tampered[0].len() - 1;
        tampered[0][last] ^= 1;
        refused(ca.ca().verify_client(&tampered, now), "a tampered leaf");

        // Expired.
        refused(
            ca.ca().verify_client(&ours, now + 2 * HOUR),
            "an expired leaf",
        );
    }
}

#[test]
fn a_leaf_under_a_retired_root_is_refused() {
    let ca = TestCa::create(support::settings(KeyType::EcP256));
    let key = PrivateKey::generate(KeyType::EcP256).expect("key");
    let old = support::issue(ca.ca(), &key, HOUR).issuance.chain;
    let now = SystemTime::now();
    ca.ca().prepare(None, now).expect("prepare");
    ca.ca().activate(true, now).expect("activate");
    ca.ca()
        .verify_client(&old, now)
        .expect("the previous root is still in the bundle");
    let new = support::issue(ca.ca(), &key, HOUR).issuance.chain;
    ca.ca().retire(true, now).expect("retire");
    refused(
        ca.ca().verify_client(&old, now),
        "a leaf under a retired root",
    );
    ca.ca()
        .verify_client(&new, now)
        .expect("the new generation's leaf");
}

/// What an issuance says about its leaf (identity, DNS names, whether the CA made the
/// root) is exactly what verifying the leaf as a client certificate finds: the server
/// takes the leaves it issues on trust from that record.
#[test]
fn an_issuance_claims_what_verifying_its_leaf_finds() {
    use writ_ca::{AuthMethod, Caller, build_csr};
    let ca = TestCa::create(support::settings(KeyType::EcP256));
    let key = PrivateKey::generate(KeyType::EcP256).expect("key");
    let dns = vec!["web.example.internal".to_owned()];
    let csr = build_csr(&key, &support::id(), &dns).expect("CSR");
    let caller = Caller {
        id: support::id(),
        dns_allowed: dns.clone(),
        method: AuthMethod::Mtls,
    };
    let issuance = ca
        .ca()
        .issue(
            &csr,
            &LeafRequest::new(&caller, Some(HOUR), Rules::WRIT),
            SystemTime::now(),
        )
        .expect("issue");
    assert!(issuance.own_root);
    let peer = ca
        .ca()
        .verify_client(&issuance.chain, SystemTime::now())
        .expect("verifies");
    assert_eq!(peer.id, issuance.id);
    assert_eq!(peer.leaf.dns_names, issuance.dns_names);
    assert_eq!(issuance.dns_names, dns);
    assert_eq!(peer.leaf.not_after, issuance.leaf.not_after);
    assert_eq!(issuance.bundle.sequence, ca.ca().bundle_sequence());
}

/// What a restarted server reads back from the log to recognise the leaves it issued
/// before the restart: the newest first, only while unexpired and while their root is in
/// the bundle, under the bundle sequence they chain to.
#[test]
fn the_log_gives_back_the_leaves_a_restarted_server_may_recognise() {
    let mut ca = TestCa::create(support::settings(KeyType::EcP256));
    let key = PrivateKey::generate(KeyType::EcP256).expect("key");
    let first = support::issue(ca.ca(), &key, HOUR).issuance;
    let second = support::issue(ca.ca(), &key, 2 * HOUR).issuance;
    ca.reopen();
    let fingerprint = |i: &writ_ca::Issuance| {
        let d = ring::digest::digest(&ring::digest::SHA256, &i.leaf.der);
        <[u8; 32]>::try_from(d.as_ref()).expect("32 bytes")
    };
    let recent = |limit, at| ca.ca().recent_leaves(limit, at).expect("log");
    let now = SystemTime::now();
    let r = recent(16, now);
    assert_eq!(r.bundle_sequence, ca.ca().bundle_sequence());
    let found: Vec<_> = r.leaves.iter().map(|l| l.fingerprint).collect();
    assert_eq!(
        found,
        [fingerprint(&second), fingerprint(&first)],
        "newest first"
    );
    assert_eq!(r.leaves[1].id, first.id);
    let whole_seconds = |t: SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    assert_eq!(
        whole_seconds(r.leaves[1].not_after),
        whole_seconds(first.leaf.not_after)
    );
    assert_eq!(recent(1, now).leaves.len(), 1, "at most the limit");
    let later = now + HOUR + Duration::from_secs(60);
    let left: Vec<_> = recent(16, later)
        .leaves
        .iter()
        .map(|l| l.fingerprint)
        .collect();
    assert_eq!(left, [fingerprint(&second)], "the expired leaf is left out");
    ca.ca().deny(&first.id, "test", now).expect("deny");
    assert!(
        recent(16, now).leaves.is_empty(),
        "a denied identity's leaves"
    );
    ca.ca().allow(&first.id).expect("allow");

    // A rotation: the previous root stays in the bundle (under a new sequence), then
    // leaves it, and its leaves with it.
    ca.ca().prepare(None, now).expect("prepare");
    ca.ca().activate(true, now).expect("activate");
    let r = recent(16, now);
    assert_eq!(r.bundle_sequence, ca.ca().bundle_sequence());
    assert_eq!(
        r.leaves.len(),
        2,
        "the previous root still vouches for them"
    );
    let third = support::issue(ca.ca(), &key, HOUR).issuance;
    ca.ca().retire(true, now).expect("retire");
    let found: Vec<_> = recent(16, now)
        .leaves
        .iter()
        .map(|l| l.fingerprint)
        .collect();
    assert_eq!(
        found,
        [fingerprint(&third)],
        "a retired root's leaves are left out"
    );
}
