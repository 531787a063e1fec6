//! The checkers `matrix.rs` and `lifecycle.rs` rely on must be able to fail: each is shown a
//! certificate it has to reject, so a checker that silently stops checking (a tool whose
//! output format changed, a parse that finds nothing) fails here instead of passing there.

mod support;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, SystemTime};

use writ_ca::{
    Csr, Generation, GenerationState, IssuerRef, KeyType, LeafRequest, PrivateKey, Rules, Validity,
    build_csr, sign_leaf,
};

use support::{LintJob, TestCa};

const HOUR: Duration = Duration::from_secs(3600);

/// The panic message of `f`, which must panic.
fn panic_message(f: impl FnOnce()) -> String {
    let err = catch_unwind(AssertUnwindSafe(f)).expect_err("the checker accepted a bad input");
    err.downcast_ref::<String>()
        .cloned()
        .or_else(|| err.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default()
}

/// pkilint's findings reach the test: a CA certificate without keyUsage (RFC 5280
/// §4.2.1.3: CA certificates MUST carry it) is reported, and so is a leaf whose signature
/// does not verify with the claimed issuer's key.
#[test]
fn pkilint_reports_rfc5280_violations() {
    let key = PrivateKey::generate(KeyType::EcP256).expect("key");
    let mut p = rcgen::CertificateParams::default();
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "no key usage");
    let bad_ca = p
        .self_signed(key.rcgen_pair())
        .expect("self-sign")
        .der()
        .to_vec();

    let ca = TestCa::create(support::settings(KeyType::EcP256));
    let leaf = support::issue(ca.ca(), &key, HOUR).issuance;
    let other = TestCa::create(support::settings(KeyType::EcP256));
    let other_intermediate = support::issue(other.ca(), &key, HOUR).issuance.chain[1].clone();

    let findings = support::pkilint(&[
        LintJob::Cert {
            label: "no-ku CA".into(),
            der: bad_ca,
        },
        LintJob::Chain {
            label: "wrong issuer".into(),
            issuer: other_intermediate,
            subject: leaf.leaf.der,
        },
    ]);
    let has = |label: &str, code: &str| {
        findings
            .iter()
            .any(|f| f.label == label && f.code == code && f.severity == "ERROR")
    };
    assert!(
        has("no-ku CA", "pkix.ca_certificate_no_ku_extension"),
        "{findings:#?}"
    );
    assert!(
        has("wrong issuer", "pkix.signature_verification_failed"),
        "{findings:#?}"
    );
}

/// `openssl verify` rejects a chain presented to another CA's bundle.
#[test]
fn openssl_rejects_a_foreign_root() {
    let key = PrivateKey::generate(KeyType::EcP256).expect("key");
    let ca = TestCa::create(support::settings(KeyType::EcP256));
    let other = TestCa::create(support::settings(KeyType::EcP256));
    let leaf = support::issue(ca.ca(), &key, HOUR).issuance;
    let msg =
        panic_message(|| support::openssl_verify(&other.ca().bundle().roots, &leaf.chain, None));
    assert!(msg.contains("openssl verify"), "{msg}");
}

/// The x509-cert profile checks notice a leaf whose authorityKeyIdentifier is not its
/// issuer's SKI, and a leaf whose key is not the one requested.
#[test]
fn profile_checks_reject_a_mislabelled_leaf() {
    let key = PrivateKey::generate(KeyType::EcP256).expect("key");
    let ca = TestCa::create(support::settings(KeyType::EcP256));
    let csr = build_csr(&key, &support::id(), &[]).expect("CSR");
    let template = ca
        .ca()
        .policy()
        .evaluate(
            &Csr::parse(&csr).expect("CSR parses"),
            &LeafRequest::new(&support::caller(), Some(HOUR), Rules::WRIT),
        )
        .expect("policy");
    let g = Generation::create(
        1,
        ca.ca().policy().trust_domain(),
        KeyType::EcP256,
        Validity {
            root: 24 * HOUR,
            intermediate: 12 * HOUR,
            backdate: Duration::from_secs(10),
        },
        GenerationState::Active,
        SystemTime::now(),
    )
    .expect("generation");
    let wrong_id = [0x42; 20];
    let issuer = IssuerRef {
        key_id: &wrong_id,
        ..g.intermediate.issuer_ref()
    };
    let before = SystemTime::now();
    let leaf = sign_leaf(&template, &issuer, before, Duration::from_secs(10)).expect("sign");
    let after = SystemTime::now();
    let check = |k: &PrivateKey| {
        support::check_leaf(&leaf.der, &g.intermediate.der, k, HOUR, before, after);
    };
    let msg = panic_message(|| check(&key));
    assert!(msg.contains("authorityKeyIdentifier"), "{msg}");

    let right = sign_leaf(
        &template,
        &g.intermediate.issuer_ref(),
        before,
        Duration::from_secs(10),
    )
    .expect("sign");
    let other_key = PrivateKey::generate(KeyType::EcP256).expect("key");
    let msg = panic_message(|| {
        support::check_leaf(
            &right.der,
            &g.intermediate.der,
            &other_key,
            HOUR,
            before,
            after,
        );
    });
    assert!(msg.contains("subject public key"), "{msg}");
    // And the correctly signed leaf passes, so the failures above are the checks'.
    support::check_leaf(&right.der, &g.intermediate.der, &key, HOUR, before, after);
}
