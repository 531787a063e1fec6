//! Profile checks of issued certificates with x509-cert: key usages, extensions and
//! identifiers as RFC 5280 and the X509-SVID specification require.

use std::collections::HashSet;
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

use writ_ca::{KeyType, PrivateKey};

use super::ID;

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

/// `cross` certifies `new_root`'s subject and key (same SKI) under `old_root`, as a CA,
/// never outliving `old_root`.
pub fn check_cross_signed(cross: &[u8], new_root: &[u8], old_root: &[u8]) {
    let (x, new, old) = (parse(cross), parse(new_root), parse(old_root));
    assert_eq!(subject_der(&x), subject_der(&new), "subject");
    assert_eq!(ski(&x), ski(&new), "SKI");
    assert_eq!(
        x.tbs_certificate().subject_public_key_info(),
        new.tbs_certificate().subject_public_key_info(),
        "key"
    );
    assert_eq!(
        x.tbs_certificate().issuer().to_der().expect("issuer"),
        subject_der(&old),
        "issuer"
    );
    assert_eq!(aki(&x), Some(ski(&old)), "AKI");
    assert!(writ_ca::CertInfo::parse(cross).expect("parses").is_ca);
    assert!(not_after(&x) <= not_after(&old));
    assert!(not_after(&x) <= not_after(&new));
}
