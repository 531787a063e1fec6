//! Root rotation: prepare → activate → retire, durable at every step; the cross-signed
//! root that lets peers still trusting only the old root verify new leaves; key-type
//! migration; and importing an external CA (Istio `cacerts` layout) built with the
//! `openssl` command line. Chains are checked with rustls-webpki and `openssl verify`.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use der::Encode;
use writ_ca::{
    Authority, Error, GenerationState, GenerationSummary, KeyType, PrivateKey, RotationAction,
    Usage, verify_chain,
};

use support::{LintJob, TestCa};
use writ_ca::store::StoreOptions;

const HOUR: Duration = Duration::from_secs(3600);
const SECOND: Duration = Duration::from_secs(1);

fn states(ca: &Authority) -> Vec<(u64, GenerationState)> {
    status(ca).iter().map(|g| (g.id, g.state)).collect()
}

fn status(ca: &Authority) -> Vec<GenerationSummary> {
    ca.status(SystemTime::now()).expect("status")
}

/// Reopens the store and checks the CA comes back exactly as it was.
fn reopen_same(ca: &mut TestCa) {
    let before = status(ca.ca());
    let bundle = ca.ca().bundle();
    let expiries = ca.ca().expiries();
    assert!(!ca.reopen(), "reopening must not create a CA");
    assert_eq!(status(ca.ca()), before, "status changed across a restart");
    assert_eq!(ca.ca().bundle(), bundle, "bundle changed across a restart");
    assert_eq!(ca.ca().expiries(), expiries);
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
    reopen_same(&mut ca);
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
    reopen_same(&mut ca);
    assert_eq!(
        states(ca.ca()),
        [(1, GenerationState::Previous), (2, GenerationState::Active)]
    );

    // New leaves: leaf, new intermediate, new root cross-signed by the old root.
    let new = support::issue(ca.ca(), &key, HOUR).issuance;
    assert_eq!(new.chain.len(), 3);
    check_cross_signed(&new.chain[2], &new_root, &old_root);
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
    let g1 = &status(ca.ca())[0];
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
    reopen_same(&mut ca);
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
    reopen_same(&mut ca);
    let new = support::issue(ca.ca(), &key, HOUR).issuance;
    let bundle = ca.ca().bundle();
    let new_root = bundle.roots[1].clone();
    support::check_ca_pair(&new_root, &new.chain[1], KeyType::EcP256, SystemTime::now());
    check_cross_signed(&new.chain[2], &new_root, &old_root);
    for roots in [vec![old_root.clone()], vec![new_root.clone()]] {
        verify_chain(&new.chain, &roots, SystemTime::now(), Usage::Server).expect("verifies");
        support::openssl_verify(&roots, &new.chain, None);
    }
    let summaries = status(ca.ca());
    assert_eq!(summaries[0].key_type, KeyType::Rsa2048);
    assert_eq!(summaries[1].key_type, KeyType::EcP256);

    assert!(matches!(
        ca.ca().retire(false, now),
        Err(Error::LiveLeaves { count: 1, .. })
    ));
    ca.ca().retire(true, now).expect("forced retire");
    reopen_same(&mut ca);
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
// Import
// ---------------------------------------------------------------------------------------

/// An external CA made with openssl: root → mid → ca (the intermediate writ signs with).
struct External {
    dir: tempfile::TempDir,
}

impl External {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = Self { dir };
        e.make(
            "root",
            "/O=Example Corp/CN=Example Root CA",
            None,
            "CA:true",
            3650,
        );
        e.make(
            "mid",
            "/O=Example Corp/CN=Example Mid CA",
            Some("root"),
            "CA:true,pathlen:1",
            3000,
        );
        e.make(
            "ca",
            "/C=US/O=Example Corp/OU=Mesh/CN=Istio intermediate",
            Some("mid"),
            "CA:true,pathlen:0",
            365,
        );
        e
    }

    /// Makes `<name>-cert.pem` and `<name>-key.pem` (PKCS#8, P-256).
    fn make(&self, name: &str, subject: &str, issuer: Option<&str>, bc: &str, days: u32) {
        self.make_with(
            &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
            name,
            subject,
            issuer,
            bc,
            days,
        );
    }

    /// Makes `<name>-cert.pem` and `<name>-key.pem` (PKCS#8) with openssl's `newkey` options.
    fn make_with(
        &self,
        newkey: &[&str],
        name: &str,
        subject: &str,
        issuer: Option<&str>,
        bc: &str,
        days: u32,
    ) {
        let mut cmd = Command::new("openssl");
        cmd.current_dir(self.dir.path())
            .args(["req", "-x509", "-new"])
            .args(newkey)
            .args(["-nodes", "-keyout"])
            .arg(format!("{name}-key.pem"))
            .arg("-out")
            .arg(format!("{name}-cert.pem"))
            .args(["-subj", subject, "-days", &days.to_string()])
            .args(["-addext", &format!("basicConstraints=critical,{bc}")]);
        if bc.starts_with("CA:true") {
            cmd.args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
        } else {
            cmd.args(["-addext", "keyUsage=critical,digitalSignature"]);
        }
        if let Some(issuer) = issuer {
            cmd.arg("-CA")
                .arg(format!("{issuer}-cert.pem"))
                .arg("-CAkey")
                .arg(format!("{issuer}-key.pem"));
        }
        let out = cmd.output().expect("run openssl");
        assert!(
            out.status.success(),
            "openssl req failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs openssl with `args` in the directory, for its output file.
    fn openssl(&self, args: &[&str]) {
        let out = Command::new("openssl")
            .current_dir(self.dir.path())
            .args(args)
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn read(&self, file: &str) -> Vec<u8> {
        std::fs::read(self.dir.path().join(file)).expect("read")
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Istio's `cert-chain.pem`: ca, mid, root.
    fn chain(&self) -> Vec<u8> {
        [
            self.read("ca-cert.pem"),
            self.read("mid-cert.pem"),
            self.read("root-cert.pem"),
        ]
        .concat()
    }

    fn der(&self, file: &str) -> Vec<u8> {
        writ_ca::x509::certs_from_pem(&self.read(file)).expect("PEM")[0].clone()
    }
}

/// A good import becomes a prepared generation (its root joins the bundle), activates,
/// issues leaves whose chains verify against the imported root and, through the
/// cross-signed root, against writ's old root; it survives a restart (the subject is
/// rebuilt byte for byte from the certificate); it cannot renew its intermediate; and
/// it rotates away like any other generation.
#[test]
fn import_then_rotate() {
    let ext = External::new();
    let mut ca = TestCa::create(support::settings(KeyType::EcP256));
    let key = PrivateKey::generate(KeyType::EcP256).expect("key");
    let old_root = ca.ca().bundle().roots[0].clone();
    let now = SystemTime::now();
    // Istio's tooling often writes SEC1 (`EC PRIVATE KEY`) keys.
    ext.openssl(&["ec", "-in", "ca-key.pem", "-out", "ca-key-sec1.pem"]);
    let sec1 = ext.read("ca-key-sec1.pem");
    assert!(String::from_utf8_lossy(&sec1).contains("BEGIN EC PRIVATE KEY"));
    let g2 = ca
        .ca()
        .import(
            &ext.read("ca-cert.pem"),
            &sec1,
            &ext.chain(),
            &ext.read("root-cert.pem"),
            now,
        )
        .expect("import");
    assert_eq!(
        (g2.id, g2.state, g2.imported),
        (2, GenerationState::Prepared, true)
    );
    let imported_root = ext.der("root-cert.pem");
    assert_eq!(
        ca.ca().bundle().roots,
        [old_root.clone(), imported_root.clone()]
    );
    assert_eq!(ca.ca().bundle().sequence, 2);
    // An imported intermediate about to expire cannot activate, even forced.
    let refused = ca.ca().activate(true, g2.intermediate_not_after - HOUR);
    assert!(
        matches!(&refused, Err(Error::Rotation(m)) if m.contains("expires at")),
        "{refused:?}"
    );
    reopen_same(&mut ca);
    ca.ca().activate(true, now).expect("activate");
    reopen_same(&mut ca);

    let issued = support::issue(ca.ca(), &key, HOUR).issuance;
    // The imported root's own constraints are only checked on the whole path, so the
    // server must not take this leaf on trust as one of its own.
    assert!(!issued.own_root);
    // Nor after a restart: the log's record of it is not read back as one of its own.
    let fingerprint = ring::digest::digest(&ring::digest::SHA256, &issued.chain[0]);
    let recent = ca.ca().recent_leaves(16, SystemTime::now()).expect("log");
    assert!(
        recent
            .leaves
            .iter()
            .all(|l| l.fingerprint[..] != *fingerprint.as_ref()),
        "{recent:?}"
    );
    let chain = &issued.chain;
    assert_eq!(chain.len(), 4, "leaf, ca, mid, cross-signed root");
    assert_eq!(chain[1], ext.der("ca-cert.pem"));
    assert_eq!(chain[2], ext.der("mid-cert.pem"));
    check_cross_signed(&chain[3], &imported_root, &old_root);
    let leaf = support::parse(&chain[0]);
    assert_eq!(
        leaf.tbs_certificate().issuer().to_der().expect("issuer"),
        support::subject_der(&support::parse(&chain[1])),
        "issuer DN not reproduced byte for byte"
    );
    for roots in [vec![imported_root.clone()], vec![old_root.clone()]] {
        verify_chain(chain, &roots, SystemTime::now(), Usage::Client).expect("verifies");
        support::openssl_verify(&roots, chain, None);
    }

    // writ cannot renew an imported intermediate: it says so once renewal is due.
    assert!(matches!(
        ca.ca().intermediate_renewal_at(),
        Err(Error::NotRenewable { generation: 2, .. })
    ));
    assert!(!ca.ca().renew_intermediate_if_due(now).expect("not yet due"));
    let late = g2.intermediate_not_after - 24 * HOUR;
    assert!(matches!(
        ca.ca().renew_intermediate_if_due(late),
        Err(Error::NotRenewable { generation: 2, .. })
    ));
    let names: Vec<String> = ca.ca().expiries().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names.len(), 6, "{names:?}");

    // Rotating away from the imported generation: writ holds no key for its root, so
    // the successor is not cross-signed; the bundle carries both roots meanwhile.
    ca.ca().retire(true, now).expect("retire G1");
    ca.ca().prepare(None, now).expect("prepare G3");
    let g3 = ca.ca().activate(true, now).expect("activate G3");
    assert!(!g3.cross_signed);
    let next = support::issue(ca.ca(), &key, HOUR).issuance;
    assert_eq!(next.chain.len(), 2);
    verify_chain(
        &next.chain,
        &ca.ca().bundle().roots,
        SystemTime::now(),
        Usage::Client,
    )
    .expect("G3 leaf");
    reopen_same(&mut ca);
}

/// An RSA CA whose key is PKCS#1 (`RSA PRIVATE KEY`, openssl's `-traditional`) imports,
/// and its leaves verify against the imported root.
#[test]
fn import_rsa_pkcs1_key() {
    let ext = External::new();
    ext.make_with(
        &["-newkey", "rsa:2048"],
        "rsa",
        "/O=Example Corp/CN=RSA intermediate",
        Some("mid"),
        "CA:true,pathlen:0",
        365,
    );
    ext.openssl(&[
        "rsa",
        "-in",
        "rsa-key.pem",
        "-traditional",
        "-out",
        "rsa-key-pkcs1.pem",
    ]);
    let pkcs1 = ext.read("rsa-key-pkcs1.pem");
    assert!(String::from_utf8_lossy(&pkcs1).contains("BEGIN RSA PRIVATE KEY"));
    let ca = TestCa::create(support::settings(KeyType::EcP256));
    let chain = [ext.read("rsa-cert.pem"), ext.read("mid-cert.pem")].concat();
    let now = SystemTime::now();
    let g2 = ca
        .ca()
        .import(
            &ext.read("rsa-cert.pem"),
            &pkcs1,
            &chain,
            &ext.read("root-cert.pem"),
            now,
        )
        .expect("import");
    assert_eq!(g2.key_type, KeyType::Rsa2048);
    ca.ca().activate(true, now).expect("activate");
    let key = PrivateKey::generate(KeyType::EcP256).expect("key");
    let issued = support::issue(ca.ca(), &key, HOUR).issuance;
    let root = ext.der("root-cert.pem");
    verify_chain(
        &issued.chain,
        std::slice::from_ref(&root),
        SystemTime::now(),
        Usage::Client,
    )
    .expect("verifies");
    support::openssl_verify(std::slice::from_ref(&root), &issued.chain, None);
}

/// Each bad import is refused with a clear error and changes nothing.
#[test]
fn bad_imports_change_nothing() {
    let ext = External::new();
    ext.make(
        "leafish",
        "/O=Example Corp/CN=not a CA",
        Some("mid"),
        "CA:false",
        365,
    );
    ext.make("other", "/O=Other/CN=Other Root", None, "CA:true", 3650);
    ext.make(
        "twoou",
        "/O=Example Corp/OU=a/OU=b/CN=two OUs",
        Some("mid"),
        "CA:true,pathlen:0",
        365,
    );
    let ca = TestCa::create(support::settings(KeyType::EcP256));
    let before = status(ca.ca());
    let bundle = ca.ca().bundle();
    let now = SystemTime::now();
    let ca_not_after = support::not_after(&support::parse(&ext.der("ca-cert.pem")));
    let chain = ext.chain();
    let (cert, key, root) = (
        ext.read("ca-cert.pem"),
        ext.read("ca-key.pem"),
        ext.read("root-cert.pem"),
    );
    let mid_only = [ext.read("ca-cert.pem"), ext.read("root-cert.pem")].concat();
    let cases: Vec<(&str, Result<GenerationSummary, Error>, &str)> = vec![
        (
            "mismatched key",
            ca.ca()
                .import(&cert, &ext.read("mid-key.pem"), &chain, &root, now),
            "not the key of ca-cert.pem",
        ),
        (
            "not a CA",
            ca.ca().import(
                &ext.read("leafish-cert.pem"),
                &ext.read("leafish-key.pem"),
                &chain,
                &root,
                now,
            ),
            "not a CA certificate",
        ),
        (
            "expired",
            ca.ca()
                .import(&cert, &key, &chain, &root, ca_not_after + HOUR),
            "expired at",
        ),
        (
            "expires before a max-TTL leaf",
            ca.ca()
                .import(&cert, &key, &chain, &root, ca_not_after - HOUR),
            "sooner than a leaf of the maximum TTL",
        ),
        (
            "chain missing the mid CA",
            ca.ca().import(&cert, &key, &mid_only, &root, now),
            "does not lead from ca-cert.pem to root-cert.pem",
        ),
        (
            "another root",
            ca.ca()
                .import(&cert, &key, &chain, &ext.read("other-cert.pem"), now),
            "does not lead from ca-cert.pem to root-cert.pem",
        ),
        (
            "repeated attribute",
            ca.ca().import(
                &ext.read("twoou-cert.pem"),
                &ext.read("twoou-key.pem"),
                &chain,
                &root,
                now,
            ),
            "repeats",
        ),
    ];
    for (what, result, expected) in cases {
        match result {
            Err(Error::Import(m)) => assert!(m.contains(expected), "{what}: {m}"),
            other => panic!("{what}: expected an import refusal, got {other:?}"),
        }
        assert_eq!(status(ca.ca()), before, "{what}: status changed");
        assert_eq!(ca.ca().bundle(), bundle, "{what}: bundle changed");
    }
    let _ = ext.path();
}

// ---------------------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------------------

/// `cross` certifies `new_root`'s subject and key (same SKI) under `old_root`, as a CA,
/// never outliving `old_root`.
fn check_cross_signed(cross: &[u8], new_root: &[u8], old_root: &[u8]) {
    let (x, new, old) = (
        support::parse(cross),
        support::parse(new_root),
        support::parse(old_root),
    );
    assert_eq!(
        support::subject_der(&x),
        support::subject_der(&new),
        "subject"
    );
    assert_eq!(support::ski(&x), support::ski(&new), "SKI");
    assert_eq!(
        x.tbs_certificate().subject_public_key_info(),
        new.tbs_certificate().subject_public_key_info(),
        "key"
    );
    assert_eq!(
        x.tbs_certificate().issuer().to_der().expect("issuer"),
        support::subject_der(&old),
        "issuer"
    );
    assert_eq!(support::aki(&x), Some(support::ski(&old)), "AKI");
    assert!(writ_ca::CertInfo::parse(cross).expect("parses").is_ca);
    assert!(support::not_after(&x) <= support::not_after(&old));
    assert!(support::not_after(&x) <= support::not_after(&new));
}

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
