//! Root rotation: prepare → activate → retire, durable at every step; the cross-signed
//! root that lets peers still trusting only the old root verify new leaves; key-type
//! migration (importing an external CA is in `import.rs`). Chains are checked with
//! rustls-webpki and `openssl verify`.

mod support;

use std::path::Path;
use std::time::{Duration, SystemTime};

use writ_ca::{
    Authority, Error, GenerationState, KeyType, PrivateKey, RotationAction, Usage, verify_chain,
};

use support::{LintJob, TestCa};
use writ_store::StoreOptions;

const HOUR: Duration = Duration::from_secs(3600);
const SECOND: Duration = Duration::from_secs(1);

fn states(ca: &Authority) -> Vec<(u64, GenerationState)> {
    support::status(ca)
        .iter()
        .map(|g| (g.id, g.state))
        .collect()
}

/// The whole cycle with a restart after every phase: the bundle grows at prepare and
/// shrinks at retire (sequence +1 each time, unchanged at activate); after activate new
/// leaves carry the new root cross-signed by the old one and verify against either root
/// alone; after retire they chain to the new root only.
#[test]
fn full_cycle_survives_restarts() {
    let settings = support::settings(KeyType::EcP256);
    let propagation = settings.propagation;
    assert_eq!(propagation, 2 * settings.refresh_hint);
    let mut ca = TestCa::create(settings);
    let key = PrivateKey::generate(KeyType::EcP256).expect("key");
    let old_root = ca.ca().bundle().roots[0].clone();
    assert_eq!(ca.ca().bundle().sequence, 1);
    assert_eq!(ca.ca().next_step(SystemTime::now()).expect("next"), None);
    let old_leaf = support::issue(ca.ca(), &key, HOUR).issuance;

    // Prepare: the new root is published beside the old one; nothing signs with it.
    let t0 = SystemTime::now();
    let prepared = ca.ca().prepare(None, t0).expect("prepare");
    assert_eq!(
        (prepared.id, prepared.state),
        (2, GenerationState::Prepared)
    );
    assert_eq!(prepared.key_type, KeyType::EcP256);
    let bundle = ca.ca().bundle();
    assert_eq!(bundle.sequence, 2);
    assert_eq!(bundle.roots.len(), 2);
    assert_eq!(bundle.roots[0], old_root);
    let new_root = bundle.roots[1].clone();
    assert_eq!(
        writ_ca::x509::sha256_hex(&new_root),
        prepared.root_fingerprint
    );
    assert!(matches!(ca.ca().prepare(None, t0), Err(Error::Rotation(_))));
    let during = support::issue(ca.ca(), &key, HOUR).issuance;
    assert_eq!(
        during.chain.len(),
        2,
        "the prepared generation must not sign"
    );
    verify_chain(
        &during.chain,
        std::slice::from_ref(&old_root),
        t0,
        Usage::Client,
    )
    .expect("old root");
    ca.reopen_same();
    let step = ca.ca().next_step(t0).expect("next").expect("a step");
    assert_eq!(step.action, RotationAction::Activate);
    assert_eq!(step.generation, 2);
    assert!(step.allowed_at >= t0 + propagation - SECOND && step.allowed_at <= t0 + propagation);

    // Activating before the propagation period is refused and says when it is allowed.
    let early = ca.ca().activate(false, t0 + propagation / 2);
    match &early {
        Err(Error::TooEarly { allowed_at, .. }) => assert_eq!(*allowed_at, step.allowed_at),
        other => panic!("expected TooEarly, got {other:?}"),
    }
    let message = early.unwrap_err().to_string();
    assert!(
        message.contains(&humantime::format_rfc3339_seconds(step.allowed_at).to_string()),
        "{message}"
    );
    assert_eq!(
        states(ca.ca()),
        [(1, GenerationState::Active), (2, GenerationState::Prepared)]
    );

    let active = ca.ca().activate(false, step.allowed_at).expect("activate");
    assert_eq!((active.id, active.state), (2, GenerationState::Active));
    assert!(active.cross_signed);
    assert_eq!(
        ca.ca().bundle(),
        bundle,
        "activation must not touch the bundle"
    );
    assert_eq!(
        ca.ca().root_fingerprint().expect("fp"),
        prepared.root_fingerprint
    );
    ca.reopen_same();
    assert_eq!(
        states(ca.ca()),
        [(1, GenerationState::Previous), (2, GenerationState::Active)]
    );

    // New leaves: leaf, new intermediate, new root cross-signed by the old root.
    let new = support::issue(ca.ca(), &key, HOUR).issuance;
    assert_eq!(new.chain.len(), 3);
    support::check_cross_signed(&new.chain[2], &new_root, &old_root);
    // The activation happened at `step.allowed_at` (in the future), so the cross-signed
    // root is valid from then: check there.
    let now = step.allowed_at + SECOND;
    for roots in [
        vec![old_root.clone()],
        vec![new_root.clone()],
        bundle.roots.clone(),
    ] {
        for usage in [Usage::Client, Usage::Server] {
            verify_chain(&new.chain, &roots, now, usage).expect("new leaf verifies");
        }
        support::openssl_verify(&roots, &new.chain, Some(now));
    }
    // Leaves of the old generation still verify against the bundle.
    verify_chain(&old_leaf.chain, &bundle.roots, now, Usage::Client).expect("old leaf");
    support::openssl_verify(&bundle.roots, &old_leaf.chain, Some(now));
    lint_cross_signed(&old_root, &new.chain[2], &new.chain[1]);

    // Retire is refused while leaves of generation 1 live, and says how many and until when.
    let latest = [&old_leaf, &during]
        .iter()
        .map(|i| i.leaf.not_after)
        .max()
        .expect("two leaves");
    let step = ca.ca().next_step(now).expect("next").expect("a step");
    assert_eq!(
        (step.action, step.generation, step.allowed_at),
        (RotationAction::Retire, 1, latest)
    );
    let refused = ca.ca().retire(false, now);
    match &refused {
        Err(Error::LiveLeaves {
            generation: 1,
            count: 2,
            latest: l,
        }) => assert_eq!(*l, latest),
        other => panic!("expected LiveLeaves, got {other:?}"),
    }
    let message = refused.unwrap_err().to_string();
    assert!(message.contains("would break 2 certificate"), "{message}");
    let g1 = &support::status(ca.ca())[0];
    assert_eq!(
        (g1.live_leaves, g1.latest_leaf_not_after),
        (2, Some(latest))
    );

    // Once they have expired, retiring needs no force.
    let retired = ca.ca().retire(false, latest + SECOND).expect("retire");
    assert_eq!((retired.id, retired.state), (1, GenerationState::Retired));
    let after = ca.ca().bundle();
    assert_eq!(after.sequence, 3);
    assert_eq!(after.roots, std::slice::from_ref(&new_root));
    assert_eq!(ca.ca().next_step(now).expect("next"), None);
    ca.reopen_same();
    assert_eq!(
        states(ca.ca()),
        [(1, GenerationState::Retired), (2, GenerationState::Active)]
    );

    let last = support::issue(ca.ca(), &key, HOUR).issuance;
    assert_eq!(
        last.chain.len(),
        2,
        "no cross-signed root once the old root is gone"
    );
    assert_eq!(last.chain[1], new.chain[1]);
    verify_chain(&last.chain, &after.roots, now, Usage::Client).expect("new root");
    support::openssl_verify(&after.roots, &last.chain, Some(now));
    assert!(verify_chain(&last.chain, &[old_root], now, Usage::Client).is_err());
    assert_eq!(
        ca.ca().expiries().len(),
        2,
        "one root and one intermediate remain: {:?}",
        ca.ca().expiries()
    );
}

/// An RSA CA moves to ECDSA: the new generation has the requested key type, leaves
/// verify through an ECDSA root cross-signed with RSA, and `force` overrides both the
/// propagation wait and live leaves.
#[test]
fn rsa_to_ecdsa_rotation_with_force() {
    let mut ca = TestCa::create(support::settings(KeyType::Rsa2048));
    let key = PrivateKey::generate(KeyType::EcP256).expect("key");
    let old_root = ca.ca().bundle().roots[0].clone();
    assert!(matches!(
        ca.ca().activate(true, SystemTime::now()),
        Err(Error::Rotation(_))
    ));
    assert!(matches!(
        ca.ca().retire(true, SystemTime::now()),
        Err(Error::Rotation(_))
    ));
    let live = support::issue(ca.ca(), &key, HOUR).issuance;

    let now = SystemTime::now();
    let g2 = ca
        .ca()
        .prepare(Some(KeyType::EcP256), now)
        .expect("prepare");
    assert_eq!(g2.key_type, KeyType::EcP256);
    ca.ca().activate(true, now).expect("forced activation");
    ca.reopen_same();
    let new = support::issue(ca.ca(), &key, HOUR).issuance;
    let bundle = ca.ca().bundle();
    let new_root = bundle.roots[1].clone();
    support::check_ca_pair(&new_root, &new.chain[1], KeyType::EcP256, SystemTime::now());
    support::check_cross_signed(&new.chain[2], &new_root, &old_root);
    for roots in [vec![old_root.clone()], vec![new_root.clone()]] {
        verify_chain(&new.chain, &roots, SystemTime::now(), Usage::Server).expect("verifies");
        support::openssl_verify(&roots, &new.chain, None);
    }
    let summaries = support::status(ca.ca());
    assert_eq!(summaries[0].key_type, KeyType::Rsa2048);
    assert_eq!(summaries[1].key_type, KeyType::EcP256);

    assert!(matches!(
        ca.ca().retire(false, now),
        Err(Error::LiveLeaves { count: 1, .. })
    ));
    ca.ca().retire(true, now).expect("forced retire");
    ca.reopen_same();
    assert_eq!(ca.ca().bundle().roots, std::slice::from_ref(&new_root));
    assert_eq!(ca.ca().bundle().sequence, 3);
    // The forced retire broke the old leaf, as it said it would.
    assert!(verify_chain(&live.chain, &ca.ca().bundle().roots, now, Usage::Client).is_err());
    // A third generation can start once the previous one is gone.
    let g3 = ca.ca().prepare(None, now).expect("prepare again");
    assert_eq!((g3.id, g3.key_type), (3, KeyType::Rsa2048));
}

/// An activation long after preparing gives the new generation a fresh intermediate
/// rather than one already due for renewal.
#[test]
fn late_activation_renews_the_prepared_intermediate() {
    let mut settings = support::settings(KeyType::EcP256);
    settings.intermediate_validity = 60 * HOUR;
    let ca = TestCa::create(settings);
    let now = SystemTime::now();
    let g2 = ca.ca().prepare(None, now).expect("prepare");
    let later = now + 20 * HOUR;
    let active = ca.ca().activate(false, later).expect("activate");
    assert!(active.intermediate_not_after > g2.intermediate_not_after);
    assert!(active.intermediate_not_after >= later + 60 * HOUR - 2 * SECOND);
    assert!(!ca.ca().renew_intermediate_if_due(later).expect("renew"));
}

// ---------------------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------------------

fn lint_cross_signed(old_root: &[u8], cross: &[u8], intermediate: &[u8]) {
    let findings = support::pkilint(&[
        LintJob::Cert {
            label: "cross-signed root".into(),
            der: cross.to_vec(),
        },
        LintJob::Chain {
            label: "old root → cross-signed root".into(),
            issuer: old_root.to_vec(),
            subject: cross.to_vec(),
        },
        LintJob::Chain {
            label: "cross-signed root → intermediate".into(),
            issuer: cross.to_vec(),
            subject: intermediate.to_vec(),
        },
    ]);
    assert!(findings.is_empty(), "pkilint: {findings:#?}");
}

/// Once audit segments were archived, leaves they recorded are invisible to the count of
/// live leaves: retiring waits until the longest TTL has passed since the oldest record
/// left (or is forced), and the pending step says until when.
#[test]
fn retiring_waits_out_certificates_recorded_in_archived_segments() {
    let options = StoreOptions {
        journal_segment_bytes: 64 * 1024,
    };
    let mut ca = TestCa::create_with(support::settings(KeyType::EcP256), options);
    let key = PrivateKey::generate(KeyType::EcP256).expect("key");
    let live = ca.dir().join("audit.jsonl");
    while sealed_segments(ca.dir()).len() < 2 {
        support::issue(ca.ca(), &key, HOUR);
    }
    let now = SystemTime::now();
    ca.ca().prepare(None, now).expect("prepare");
    ca.ca().activate(true, now).expect("activate");
    assert!(live.exists());

    let oldest = sealed_segments(ca.dir()).remove(0);
    std::fs::remove_file(&oldest).expect("archive the oldest segment");
    ca.reopen();
    // Every leaf left on record has expired two hours on; the archived ones may not have.
    let later = now + 2 * HOUR;
    let max_ttl = support::settings(KeyType::EcP256).ttl.max().duration();
    let refused = ca.ca().retire(false, later);
    let Err(Error::TooEarly {
        allowed_at, why, ..
    }) = &refused
    else {
        panic!("expected TooEarly, got {refused:?}");
    };
    assert!(why.contains("archived"), "{why}");
    assert!(
        *allowed_at > now + max_ttl - HOUR && *allowed_at <= SystemTime::now() + max_ttl,
        "allowed at {allowed_at:?}"
    );
    let step = ca.ca().next_step(later).expect("next").expect("a step");
    assert_eq!(
        (step.action, step.allowed_at),
        (RotationAction::Retire, *allowed_at)
    );
    ca.ca()
        .retire(false, *allowed_at + SECOND)
        .expect("retire once the longest TTL has passed");
}

fn sealed_segments(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            name.starts_with("audit-") && name.ends_with(".jsonl")
        })
        .collect();
    out.sort();
    out
}
