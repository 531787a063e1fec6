//! Shared helpers for the CA's integration tests: opening a CA on a temporary sled store,
//! issuing through the real policy path, and the independent checkers the issued
//! certificates are held against (x509-cert profile checks, the `openssl` CLI, pkilint).
//!
//! The external tools are required, not optional: a missing tool fails the test with the
//! command that installs it, so CI can never pass by silently skipping a checker.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use der::asn1::ObjectIdentifier;
use der::flagset::FlagSet;
use der::{Decode, Encode, Tagged};
use x509_cert::Certificate;
use x509_cert::certificate::Version;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, KeyUsages,
    SubjectAltName, SubjectKeyIdentifier,
};

use writ_ca::store::{SledStore, StoreOptions};
use writ_ca::{
    AuthMethod, Authority, CaSettings, Caller, Issuance, KeyType, OverMax, PrivateKey, SanMode,
    SpiffeId, TrustDomain, build_csr,
};

/// The workload identity every test issues.
pub const ID: &str = "spiffe://example.org/ns/default/sa/web";

/// Environment variable naming the Python interpreter that has pkilint installed (for a
/// virtualenv or pipx install whose interpreter is not `python3` on PATH).
pub const PKILINT_ENV: &str = "WRIT_PKILINT";

const OID_SAN: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.17");
const OID_BASIC_CONSTRAINTS: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.19");
const OID_KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.15");
const OID_EXT_KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.37");
const OID_SKI: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.14");
const OID_AKI: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.35");
const OID_KP_SERVER_AUTH: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.1");
const OID_KP_CLIENT_AUTH: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.2");
const OID_ECDSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const OID_ECDSA_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
const OID_RSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");

/// A CA on a sled store in its own temporary directory.
pub struct TestCa {
    /// The CA (an `Option` so tests can close it and reopen the same store).
    pub authority: Option<Authority>,
    settings: CaSettings,
    dir: tempfile::TempDir,
    store_options: StoreOptions,
}

impl TestCa {
    /// Creates a CA with `settings` in a fresh directory.
    pub fn create(settings: CaSettings) -> Self {
        Self::create_with(settings, StoreOptions::default())
    }

    /// Like [`Self::create`], with the store's options (small journal segments, say).
    pub fn create_with(settings: CaSettings, store_options: StoreOptions) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut ca = Self {
            authority: None,
            settings,
            dir,
            store_options,
        };
        let created = ca.open();
        assert!(created, "a fresh store must create a CA");
        ca
    }

    /// The directory the store lives in (`db` and the journal beside it).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// The open CA.
    pub fn ca(&self) -> &Authority {
        self.authority.as_ref().expect("the CA is open")
    }

    /// Closes the CA (releasing sled's lock) and opens it again on the same store.
    /// Returns whether opening created a new CA (it never should).
    pub fn reopen(&mut self) -> bool {
        self.authority = None;
        self.open()
    }

    /// Like [`Self::reopen`], with new settings (a changed trust domain, say); the error
    /// when the CA refuses them.
    #[allow(dead_code)]
    pub fn reopen_with(&mut self, settings: CaSettings) -> Result<bool, writ_ca::Error> {
        self.authority = None;
        self.settings = settings;
        let store = self.store();
        let (authority, created) = Authority::open(self.settings.clone(), Arc::new(store))?;
        self.authority = Some(authority);
        Ok(created)
    }

    fn open(&mut self) -> bool {
        let store = self.store();
        let (authority, created) =
            Authority::open(self.settings.clone(), Arc::new(store)).expect("open authority");
        self.authority = Some(authority);
        created
    }

    fn store(&self) -> SledStore {
        let path = self.dir.path().join("db");
        // sled's background threads can hold the database's file lock for a moment after
        // the `Db` is dropped (sled's own tests block on it for the same reason), so a
        // reopen waits a little for the lock rather than failing at once.
        let mut attempts = 0;
        loop {
            match SledStore::open_with(&path, self.store_options) {
                Ok(store) => break store,
                Err(e) if attempts < 100 && e.to_string().contains("lock") => {
                    attempts += 1;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("open sled store: {e:?}"),
            }
        }
    }
}

/// Default settings for `example.org` with `ca_key_type`.
pub fn settings(ca_key_type: KeyType) -> CaSettings {
    let mut s = CaSettings::new(TrustDomain::parse("example.org").expect("trust domain"));
    s.ca_key_type = ca_key_type;
    s
}

/// The workload identity as a `SpiffeId`.
pub fn id() -> SpiffeId {
    SpiffeId::parse(ID).expect("SPIFFE ID")
}

/// A caller that proved [`ID`] with its client certificate.
pub fn caller() -> Caller {
    Caller {
        id: id(),
        dns_allowed: Vec::new(),
        method: AuthMethod::Mtls,
    }
}

/// One issuance and the wall-clock window it happened in.
pub struct Issued {
    /// What the CA returned.
    pub issuance: Issuance,
    /// Just before the call.
    pub before: SystemTime,
    /// Just after the call.
    pub after: SystemTime,
}

/// Issues a leaf for [`ID`] with `key` through the full CSR → policy → sign path.
pub fn issue(ca: &Authority, key: &PrivateKey, ttl: Duration) -> Issued {
    let csr = build_csr(key, &id(), &[]).expect("build CSR");
    let before = SystemTime::now();
    let issuance = ca
        .issue(&csr, &caller(), Some(ttl), OverMax::Clamp, SanMode::Exact)
        .expect("issue");
    let after = SystemTime::now();
    Issued {
        issuance,
        before,
        after,
    }
}

// ---------------------------------------------------------------------------------------
// x509-cert profile checks
// ---------------------------------------------------------------------------------------

/// Parses a DER certificate with x509-cert.
pub fn parse(der: &[u8]) -> Certificate {
    Certificate::from_der(der).expect("certificate parses with x509-cert")
}

/// The subject key identifier, which must be present and non-critical (RFC 5280 §4.2.1.2).
pub fn ski(cert: &Certificate) -> Vec<u8> {
    let (critical, ski) = cert
        .tbs_certificate()
        .get_extension::<SubjectKeyIdentifier>()
        .expect("subjectKeyIdentifier decodes")
        .expect("subjectKeyIdentifier present (RFC 5280 §4.2.1.2)");
    assert!(!critical, "subjectKeyIdentifier must not be critical");
    assert!(!ski.0.as_bytes().is_empty(), "empty subjectKeyIdentifier");
    ski.0.as_bytes().to_vec()
}

/// The authority key identifier's keyIdentifier, if the extension is present.
pub fn aki(cert: &Certificate) -> Option<Vec<u8>> {
    let (critical, aki) = cert
        .tbs_certificate()
        .get_extension::<AuthorityKeyIdentifier>()
        .expect("authorityKeyIdentifier decodes")?;
    assert!(!critical, "authorityKeyIdentifier must not be critical");
    assert!(
        aki.authority_cert_issuer.is_none() && aki.authority_cert_serial_number.is_none(),
        "authorityKeyIdentifier should carry only keyIdentifier"
    );
    Some(
        aki.key_identifier
            .expect("authorityKeyIdentifier has keyIdentifier")
            .as_bytes()
            .to_vec(),
    )
}

/// The subject DN, DER.
pub fn subject_der(cert: &Certificate) -> Vec<u8> {
    cert.tbs_certificate()
        .subject()
        .to_der()
        .expect("subject encodes")
}

fn issuer_der(cert: &Certificate) -> Vec<u8> {
    cert.tbs_certificate()
        .issuer()
        .to_der()
        .expect("issuer encodes")
}

fn not_before(cert: &Certificate) -> SystemTime {
    cert.tbs_certificate()
        .validity()
        .not_before
        .to_system_time()
}

/// notAfter.
pub fn not_after(cert: &Certificate) -> SystemTime {
    cert.tbs_certificate().validity().not_after.to_system_time()
}

fn extension_oids(cert: &Certificate) -> Vec<ObjectIdentifier> {
    cert.tbs_certificate()
        .extensions()
        .map(|exts| exts.iter().map(|e| e.extn_id).collect())
        .unwrap_or_default()
}

/// The signature algorithm a certificate signed by a `signer` key must carry.
fn signature_oid(signer: KeyType) -> ObjectIdentifier {
    match signer {
        KeyType::EcP256 => OID_ECDSA_SHA256,
        KeyType::EcP384 => OID_ECDSA_SHA384,
        KeyType::Rsa2048 | KeyType::Rsa3072 | KeyType::Rsa4096 => OID_RSA_SHA256,
    }
}

/// Checks the version, serial and signature-algorithm fields every certificate shares.
fn check_common(what: &str, cert: &Certificate, signer: KeyType) {
    let tbs = cert.tbs_certificate();
    assert_eq!(tbs.version(), Version::V3, "{what}: must be X.509 v3");
    // RFC 5280 §4.1.2.2: positive, at most 20 octets; CA/B BR §7.1: ≥ 64 bits of entropy.
    let serial = tbs.serial_number().as_bytes();
    assert!(serial.len() <= 20, "{what}: serial longer than 20 octets");
    assert!(serial[0] & 0x80 == 0, "{what}: serial is negative");
    let significant: Vec<u8> = serial.iter().copied().skip_while(|b| *b == 0).collect();
    let bits = significant
        .first()
        .map_or(0, |b| significant.len() * 8 - b.leading_zeros() as usize);
    assert!(bits >= 64, "{what}: serial has only {bits} bits");
    // RFC 5280 §4.1.1.2: the outer and inner signature algorithms must match.
    assert_eq!(
        cert.signature_algorithm(),
        tbs.signature(),
        "{what}: signatureAlgorithm differs from tbsCertificate.signature"
    );
    assert_eq!(
        tbs.signature().oid,
        signature_oid(signer),
        "{what}: wrong signature algorithm for a {signer} issuer"
    );
    if signer.is_rsa() {
        // RFC 4055 §5: sha256WithRSAEncryption parameters MUST be NULL, not absent.
        let params = tbs.signature().parameters.as_ref();
        assert!(
            params.is_some_and(|p| p.tag() == der::Tag::Null),
            "{what}: RSA signature algorithm parameters must be NULL"
        );
    }
    let oids = extension_oids(cert);
    let unique: HashSet<_> = oids.iter().collect();
    assert_eq!(unique.len(), oids.len(), "{what}: duplicate extension");
}

/// Asserts the X509-SVID leaf profile (SPIFFE X509-SVID §4, §5; RFC 5280) for a leaf
/// issued for [`ID`] with a `leaf_key` subject key, by `intermediate`, asking for `ttl`
/// between `before` and `after`.
pub fn check_leaf(
    leaf_der: &[u8],
    intermediate_der: &[u8],
    leaf_key: &PrivateKey,
    ttl: Duration,
    before: SystemTime,
    after: SystemTime,
) {
    let what = &format!("{} leaf", leaf_key.kind());
    let leaf = parse(leaf_der);
    let intermediate = parse(intermediate_der);
    let tbs = leaf.tbs_certificate();
    check_common(what, &leaf, subject_key_type(&intermediate));

    // Name chaining and key identifiers (RFC 5280 §4.1.2.4, §4.2.1.1).
    assert_eq!(
        issuer_der(&leaf),
        subject_der(&intermediate),
        "{what}: issuer is not the intermediate's subject"
    );
    assert_eq!(
        aki(&leaf).as_deref(),
        Some(ski(&intermediate).as_slice()),
        "{what}: authorityKeyIdentifier is not the intermediate's subjectKeyIdentifier"
    );
    ski(&leaf);

    // The subject key is the CSR's, untouched.
    assert_eq!(
        tbs.subject_public_key_info()
            .to_der()
            .expect("SPKI encodes"),
        leaf_key.public_key_spki(),
        "{what}: subject public key differs from the CSR's"
    );

    // SAN: exactly one URI, the SPIFFE ID (X509-SVID §2); an empty subject makes the SAN
    // critical (RFC 5280 §4.1.2.6).
    let (san_critical, san) = tbs
        .get_extension::<SubjectAltName>()
        .expect("subjectAltName decodes")
        .expect("subjectAltName present");
    let uris: Vec<String> = san
        .0
        .iter()
        .filter_map(|n| match n {
            GeneralName::UniformResourceIdentifier(u) => Some(u.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(uris, [ID], "{what}: URI SANs");
    assert_eq!(san.0.len(), 1, "{what}: unexpected non-URI SANs");
    if tbs.subject().is_empty() {
        assert!(
            san_critical,
            "{what}: empty subject requires a critical SAN"
        );
    }

    // basicConstraints cA=false, critical (X509-SVID §4.1).
    let (bc_critical, bc) = tbs
        .get_extension::<BasicConstraints>()
        .expect("basicConstraints decodes")
        .expect("basicConstraints present (X509-SVID §4.1)");
    assert!(bc_critical, "{what}: basicConstraints must be critical");
    assert!(!bc.ca, "{what}: leaf must have cA=false");
    assert_eq!(bc.path_len_constraint, None, "{what}: pathLen on a leaf");

    // keyUsage: critical digitalSignature; keyEncipherment only for RSA keys (RFC 8813
    // §3 forbids it for EC); never keyCertSign/cRLSign (X509-SVID §4.3).
    let (ku_critical, ku) = tbs
        .get_extension::<KeyUsage>()
        .expect("keyUsage decodes")
        .expect("keyUsage present (X509-SVID §4.3)");
    assert!(ku_critical, "{what}: keyUsage must be critical");
    let mut expected = FlagSet::from(KeyUsages::DigitalSignature);
    if leaf_key.kind().is_rsa() {
        expected |= KeyUsages::KeyEncipherment;
    }
    assert_eq!(ku.0, expected, "{what}: keyUsage bits");
    assert!(
        !ku.key_cert_sign() && !ku.crl_sign(),
        "{what}: CA key usage"
    );

    // EKU: serverAuth and clientAuth (X509-SVID §4.4).
    let (_, eku) = tbs
        .get_extension::<ExtendedKeyUsage>()
        .expect("extKeyUsage decodes")
        .expect("extKeyUsage present");
    assert_eq!(
        eku.0.iter().collect::<HashSet<_>>(),
        [OID_KP_SERVER_AUTH, OID_KP_CLIENT_AUTH]
            .iter()
            .collect::<HashSet<_>>(),
        "{what}: extKeyUsage"
    );

    // Nothing beyond the profile.
    let mut oids = extension_oids(&leaf);
    oids.sort();
    let mut allowed = vec![
        OID_SAN,
        OID_BASIC_CONSTRAINTS,
        OID_KEY_USAGE,
        OID_EXT_KEY_USAGE,
        OID_SKI,
        OID_AKI,
    ];
    allowed.sort();
    assert_eq!(oids, allowed, "{what}: extension set");

    // Validity: starts no later than the request (backdated), lasts the requested TTL
    // measured from the moment of issuance (notAfter is truncated to whole seconds).
    let nb = not_before(&leaf);
    let na = not_after(&leaf);
    assert!(nb <= before, "{what}: notBefore is after issuance");
    assert!(
        nb <= SystemTime::now(),
        "{what}: notBefore is in the future"
    );
    assert!(
        nb >= before - Duration::from_secs(120),
        "{what}: notBefore backdated by more than two minutes"
    );
    assert!(
        na >= before + ttl - Duration::from_secs(1) && na <= after + ttl,
        "{what}: notAfter − issuance is not the requested {ttl:?}"
    );
    assert!(
        na <= not_after(&intermediate),
        "{what}: outlives its intermediate"
    );
}

/// Asserts the CA profile of a root and the intermediate it signed (RFC 5280 §4.2.1.3,
/// §4.2.1.9): critical cA=true, critical keyUsage keyCertSign+cRLSign, intermediate
/// pathLen 0, distinct subjects and key identifiers, both valid at `at`. `ca` is the CA
/// key type.
pub fn check_ca_pair(root_der: &[u8], intermediate_der: &[u8], ca: KeyType, at: SystemTime) {
    let root = parse(root_der);
    let int = parse(intermediate_der);
    for (what, cert, path_len) in [("root", &root, None), ("intermediate", &int, Some(0))] {
        let what = &format!("{ca} {what}");
        let tbs = cert.tbs_certificate();
        check_common(what, cert, ca);
        assert_eq!(
            subject_key_type(cert),
            ca,
            "{what}: CA key is not the configured type"
        );
        assert!(
            !tbs.subject().is_empty(),
            "{what}: CA subject must not be empty"
        );
        let (bc_critical, bc) = tbs
            .get_extension::<BasicConstraints>()
            .expect("basicConstraints decodes")
            .expect("basicConstraints present on a CA (RFC 5280 §4.2.1.9)");
        assert!(bc_critical, "{what}: basicConstraints must be critical");
        assert!(bc.ca, "{what}: cA must be true");
        assert_eq!(
            bc.path_len_constraint, path_len,
            "{what}: pathLenConstraint"
        );
        let (ku_critical, ku) = tbs
            .get_extension::<KeyUsage>()
            .expect("keyUsage decodes")
            .expect("keyUsage present on a CA (RFC 5280 §4.2.1.3)");
        assert!(ku_critical, "{what}: keyUsage must be critical");
        assert_eq!(
            ku.0,
            KeyUsages::KeyCertSign | KeyUsages::CRLSign,
            "{what}: keyUsage bits"
        );
        assert!(
            tbs.get_extension::<SubjectAltName>()
                .expect("subjectAltName decodes")
                .is_none(),
            "{what}: a CA certificate carries no SPIFFE ID"
        );
        assert!(
            not_before(cert) <= at && at < not_after(cert),
            "{what}: not valid at the time checked"
        );
    }
    // The root is self-issued and self-signed; the intermediate chains to it by name and
    // by key identifier.
    assert_eq!(
        issuer_der(&root),
        subject_der(&root),
        "root is not self-issued"
    );
    if let Some(aki) = aki(&root) {
        assert_eq!(
            aki,
            ski(&root),
            "root authorityKeyIdentifier is not its own SKI"
        );
    }
    assert_eq!(
        issuer_der(&int),
        subject_der(&root),
        "intermediate issuer is not the root's subject"
    );
    assert_eq!(
        aki(&int).as_deref(),
        Some(ski(&root).as_slice()),
        "intermediate authorityKeyIdentifier is not the root's subjectKeyIdentifier"
    );
    assert_ne!(
        subject_der(&root),
        subject_der(&int),
        "root and intermediate subjects must differ"
    );
    assert_ne!(
        ski(&root),
        ski(&int),
        "root and intermediate SKIs must differ"
    );
    assert!(
        not_after(&int) <= not_after(&root),
        "intermediate outlives its root"
    );
}

/// The key type of a certificate's subject key (via writ's own reader; the key is
/// writ's, so an unknown type is a failure).
fn subject_key_type(cert: &Certificate) -> KeyType {
    let der = cert.to_der().expect("certificate encodes");
    writ_ca::CertInfo::parse(&der)
        .expect("CertInfo parses")
        .key_type
        .expect("a key type writ knows")
}

// ---------------------------------------------------------------------------------------
// The openssl command line
// ---------------------------------------------------------------------------------------

/// Verifies `chain` (leaf first) against `roots` with `openssl verify -x509_strict
/// -check_ss_sig`, for
/// both TLS client and server purposes, at `at` (default: now). Panics with openssl's
/// output on failure, or with install instructions when openssl is missing.
pub fn openssl_verify(roots: &[Vec<u8>], chain: &[Vec<u8>], at: Option<SystemTime>) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let bundle = write_pem(dir.path(), "bundle.pem", roots);
    let untrusted = write_pem(dir.path(), "chain.pem", chain);
    let leaf = write_pem(dir.path(), "leaf.pem", &chain[..1]);
    for purpose in ["sslclient", "sslserver"] {
        let mut cmd = openssl();
        // -x509_strict adds RFC 5280 checks (key identifiers, critical
        // basicConstraints on CAs, a critical SAN with an empty subject, ...);
        // -check_ss_sig also verifies the root's self-signature.
        cmd.args([
            "verify",
            "-x509_strict",
            "-check_ss_sig",
            "-purpose",
            purpose,
        ])
        .arg("-CAfile")
        .arg(&bundle)
        .arg("-untrusted")
        .arg(&untrusted);
        if let Some(at) = at {
            let secs = at
                .duration_since(SystemTime::UNIX_EPOCH)
                .expect("after 1970")
                .as_secs();
            cmd.args(["-attime", &secs.to_string()]);
        }
        let out = cmd.arg(&leaf).output().expect("run openssl");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.trim_end().ends_with(": OK"),
            "openssl verify -purpose {purpose} failed:\n{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn openssl() -> Command {
    let found = Command::new("openssl")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "the `openssl` command is required to cross-check issued certificates; install it \
         (Debian/Ubuntu: `apt-get install -y openssl`)"
    );
    Command::new("openssl")
}

/// Writes `certs` as one PEM file `name` in `dir`.
pub fn write_pem(dir: &Path, name: &str, certs: &[Vec<u8>]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, writ_ca::x509::certs_to_pem(certs)).expect("write PEM");
    path
}

// ---------------------------------------------------------------------------------------
// pkilint (DigiCert's RFC 5280 linter)
// ---------------------------------------------------------------------------------------

/// What pkilint is asked to lint.
pub enum LintJob {
    /// One certificate, with `lint_pkix_cert` (RFC 5280 profile).
    Cert {
        /// Names the certificate in findings.
        label: String,
        /// The certificate, DER.
        der: Vec<u8>,
    },
    /// An issuer/subject pair, with `lint_pkix_signer_signee_cert_chain` (name chaining,
    /// key identifiers, and the subject's signature verified with the issuer's key).
    Chain {
        /// Names the pair in findings.
        label: String,
        /// The issuer, DER.
        issuer: Vec<u8>,
        /// The subject, DER.
        subject: Vec<u8>,
    },
}

/// One pkilint finding at WARNING severity or above.
#[derive(Debug, Clone)]
pub struct Finding {
    /// The job's label.
    pub label: String,
    /// FATAL, ERROR or WARNING.
    pub severity: String,
    /// pkilint's finding code, e.g. `pkix.ca_certificate_no_ku_extension`.
    pub code: String,
    /// The validator that reported it.
    pub validator: String,
    /// Where in the certificate.
    pub node_path: String,
    /// pkilint's message, if any.
    pub message: String,
}

/// Runs pkilint's own CLI entry points (`lint_pkix_cert` and
/// `lint_pkix_signer_signee_cert_chain`, exactly as the console scripts call them) over
/// every job in one Python process, and returns findings at WARNING or above. Panics with
/// install instructions when pkilint is missing, or when a linter fails to run.
pub fn pkilint(jobs: &[LintJob]) -> Vec<Finding> {
    let python = pkilint_python();
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut spec = Vec::new();
    let mut labels = Vec::new();
    for (i, job) in jobs.iter().enumerate() {
        let (label, kind, certs) = match job {
            LintJob::Cert { label, der } => (label, "cert", vec![der]),
            LintJob::Chain {
                label,
                issuer,
                subject,
            } => (label, "chain", vec![issuer, subject]),
        };
        let files: Vec<String> = certs
            .iter()
            .enumerate()
            .map(|(j, der)| {
                let path = write_pem(dir.path(), &format!("{i}-{j}.pem"), &[(*der).clone()]);
                path.to_string_lossy().into_owned()
            })
            .collect();
        spec.push(serde_json::json!({ "kind": kind, "files": files }));
        labels.push(label.clone());
    }
    let spec_path = dir.path().join("jobs.json");
    std::fs::write(&spec_path, serde_json::to_vec(&spec).expect("encode jobs")).expect("write");
    let out = Command::new(&python)
        .arg("-c")
        .arg(PKILINT_DRIVER)
        .arg(&spec_path)
        .output()
        .expect("run pkilint");
    assert!(
        out.status.success(),
        "pkilint ({}) failed to run:\n{}{}",
        python.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let reports: Vec<serde_json::Value> =
        serde_json::from_slice(&out.stdout).expect("pkilint driver prints a JSON array");
    assert_eq!(reports.len(), jobs.len(), "one pkilint report per job");
    let mut findings = Vec::new();
    for (label, report) in labels.iter().zip(&reports) {
        let results = report["results"]
            .as_array()
            .unwrap_or_else(|| panic!("{label}: unexpected pkilint report {report}"));
        for result in results {
            for f in result["finding_descriptions"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
                findings.push(Finding {
                    label: label.clone(),
                    severity: s(&f["severity"]),
                    code: s(&f["code"]),
                    validator: s(&result["validator"]),
                    node_path: s(&result["node_path"]),
                    message: s(&f["message"]),
                });
            }
        }
    }
    findings
}

/// Calls pkilint's CLI `main(argv)` per job, capturing each JSON report, and prints them
/// as one JSON array. A linter's exit code counts findings, so it is not an error here.
const PKILINT_DRIVER: &str = r#"
import contextlib, io, json, sys
from pkilint.bin import lint_pkix_cert, lint_pkix_signer_signee_cert_chain
mains = {"cert": lint_pkix_cert.main, "chain": lint_pkix_signer_signee_cert_chain.main}
reports = []
for job in json.load(open(sys.argv[1])):
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        mains[job["kind"]](["lint", "--severity", "WARNING", "--format", "JSON", *job["files"]])
    reports.append(json.loads(buf.getvalue()))
print(json.dumps(reports))
"#;

/// The Python interpreter that can import pkilint: `$WRIT_PKILINT`, else `python3`, else
/// the interpreter named by the `lint_pkix_cert` script on PATH (a pipx or virtualenv
/// install).
fn pkilint_python() -> PathBuf {
    let can_import = |python: &Path| {
        Command::new(python)
            .args(["-c", "import pkilint.bin.lint_pkix_cert"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if let Some(python) = std::env::var_os(PKILINT_ENV) {
        let python = PathBuf::from(python);
        assert!(
            can_import(&python),
            "{PKILINT_ENV}={} cannot `import pkilint`; point it at the Python interpreter \
             pkilint is installed in",
            python.display()
        );
        return python;
    }
    let python3 = PathBuf::from("python3");
    if can_import(&python3) {
        return python3;
    }
    let from_script = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("lint_pkix_cert"))
        .filter_map(|script| std::fs::read_to_string(script).ok())
        .filter_map(|text| {
            let first = text.lines().next()?.strip_prefix("#!")?.trim().to_owned();
            Some(PathBuf::from(first))
        })
        .find(|python| can_import(python));
    from_script.unwrap_or_else(|| {
        panic!(
            "pkilint (DigiCert's RFC 5280 linter) is required to lint issued certificates; \
             install it with `pip install pkilint` (or `pipx install pkilint`), or set \
             {PKILINT_ENV} to a Python interpreter that can `import pkilint`"
        )
    })
}
