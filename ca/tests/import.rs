//! Importing an external CA (Istio's `cacerts` layout) built with the `openssl` command
//! line: a good import becomes a prepared generation that activates, chains to the
//! imported root and through a cross-signed root to writ's old one, and rotates away like
//! any other; a bad import is refused and changes nothing.

mod support;

use std::path::Path;
use std::time::{Duration, SystemTime};

use der::Encode;
use writ_ca::{
    Error, GenerationState, GenerationSummary, KeyType, PrivateKey, Usage, verify_chain,
};

use support::TestCa;

const HOUR: Duration = Duration::from_secs(3600);

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
        let mut cmd = support::openssl();
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
        let out = support::openssl()
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
    ca.reopen_same();
    ca.ca().activate(true, now).expect("activate");
    ca.reopen_same();

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
    support::check_cross_signed(&chain[3], &imported_root, &old_root);
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
    ca.reopen_same();
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
    let before = support::status(ca.ca());
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
        assert_eq!(support::status(ca.ca()), before, "{what}: status changed");
        assert_eq!(ca.ca().bundle(), bundle, "{what}: bundle changed");
    }
    let _ = ext.path();
}
