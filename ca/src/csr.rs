//! PKCS#10 certificate signing requests: a strict parse with x509-cert, proof of possession
//! (the CSR's signature must verify with its own key), and the facts the policy needs.
//!
//! Nothing from the CSR except its public key and the identity it asks for ever reaches a
//! certificate: the CA decides every extension (see `policy.rs`).

use der::asn1::{Any, ObjectIdentifier};
use der::{Decode, Encode, Tag, Tagged};
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{BasicConstraints, SubjectAltName};
use x509_cert::request::CertReq;
use x509_cert::spki::SubjectPublicKeyInfoOwned as SubjectPublicKeyInfo;

use crate::{Error, KeyType, PrivateKey, SpiffeId};

/// The largest CSR accepted, PEM or DER.
pub const MAX_CSR_LEN: usize = 64 * 1024;

const OID_EXTENSION_REQ: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.14");
const OID_SAN: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.17");
const OID_BASIC_CONSTRAINTS: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.19");
// Extensions real clients (Go's x509, OpenSSL, Istio's agent) put in CSRs. They are
// understood and ignored even when marked critical: the CA decides these itself.
const OID_KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.15");
const OID_EXT_KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.37");
const OID_SUBJECT_KEY_ID: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.14");

const OID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const OID_P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const OID_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const OID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");

const OID_ECDSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const OID_ECDSA_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
const OID_RSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
const OID_RSA_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.12");
const OID_RSA_SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.13");

/// A subject alternative name other than URI and DNS, named for error messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OtherSan(pub &'static str);

/// A parsed CSR whose signature has been verified.
#[derive(Clone, Debug)]
pub struct Csr {
    key_type: KeyType,
    public_key: Vec<u8>,
    uris: Vec<String>,
    dns_names: Vec<String>,
    other_sans: Vec<OtherSan>,
    requests_ca: bool,
    unknown_critical: Vec<String>,
}

impl Csr {
    /// Parses a PEM or DER CSR and verifies its signature with its own public key.
    pub fn parse(input: &[u8]) -> Result<Self, Error> {
        if input.is_empty() {
            return Err(Error::MalformedCsr("the request carries no CSR".into()));
        }
        if input.len() > MAX_CSR_LEN {
            return Err(Error::CsrTooLarge {
                len: input.len(),
                max: MAX_CSR_LEN,
            });
        }
        let req = decode(input)?;
        let (key_type, public_key) = public_key(&req)?;
        verify_signature(&req, key_type, &public_key)?;

        let mut csr = Csr {
            key_type,
            public_key,
            uris: Vec::new(),
            dns_names: Vec::new(),
            other_sans: Vec::new(),
            requests_ca: false,
            unknown_critical: Vec::new(),
        };
        csr.read_extensions(&req)?;
        Ok(csr)
    }

    /// The key type of the CSR's public key.
    pub fn key_type(&self) -> KeyType {
        self.key_type
    }

    /// The subjectPublicKey BIT STRING contents (EC point or PKCS#1 RSA key).
    pub fn public_key(&self) -> &[u8] {
        &self.public_key
    }

    /// URI SANs, as written.
    pub fn uris(&self) -> &[String] {
        &self.uris
    }

    /// DNS SANs, as written.
    pub fn dns_names(&self) -> &[String] {
        &self.dns_names
    }

    /// SANs of any other kind (IP, e-mail, directory name, ...).
    pub fn other_sans(&self) -> &[OtherSan] {
        &self.other_sans
    }

    /// True when the CSR asks for `cA=true`.
    pub fn requests_ca(&self) -> bool {
        self.requests_ca
    }

    /// OIDs of critical extensions writ does not understand.
    pub fn unknown_critical(&self) -> &[String] {
        &self.unknown_critical
    }

    fn read_extensions(&mut self, req: &CertReq) -> Result<(), Error> {
        let mut seen_ext_req = false;
        for attr in req.info.attributes.iter() {
            if attr.oid != OID_EXTENSION_REQ {
                continue;
            }
            if seen_ext_req || attr.values.len() != 1 {
                return Err(Error::MalformedCsr(
                    "more than one extensionRequest attribute".into(),
                ));
            }
            seen_ext_req = true;
            for value in attr.values.iter() {
                let exts: Vec<Extension> = value
                    .decode_as()
                    .map_err(|e| Error::MalformedCsr(format!("extensionRequest: {e}")))?;
                let mut oids: Vec<&ObjectIdentifier> = Vec::new();
                for ext in &exts {
                    if oids.contains(&&ext.extn_id) {
                        return Err(Error::MalformedCsr(format!(
                            "extension {} appears twice",
                            ext.extn_id
                        )));
                    }
                    oids.push(&ext.extn_id);
                    self.read_extension(ext)?;
                }
            }
        }
        Ok(())
    }

    fn read_extension(&mut self, ext: &Extension) -> Result<(), Error> {
        let value = ext.extn_value.as_bytes();
        match ext.extn_id {
            OID_SAN => {
                let san = SubjectAltName::from_der(value)
                    .map_err(|e| Error::MalformedCsr(format!("subjectAltName: {e}")))?;
                for name in san.0 {
                    match name {
                        GeneralName::UniformResourceIdentifier(s) => self.uris.push(s.to_string()),
                        GeneralName::DnsName(s) => self.dns_names.push(s.to_string()),
                        GeneralName::IpAddress(_) => self.other_sans.push(OtherSan("IP address")),
                        GeneralName::Rfc822Name(_) => self.other_sans.push(OtherSan("e-mail")),
                        GeneralName::DirectoryName(_) => {
                            self.other_sans.push(OtherSan("directory name"))
                        }
                        GeneralName::OtherName(_) => self.other_sans.push(OtherSan("otherName")),
                        GeneralName::EdiPartyName(_) => {
                            self.other_sans.push(OtherSan("ediPartyName"))
                        }
                        GeneralName::RegisteredId(_) => {
                            self.other_sans.push(OtherSan("registeredID"))
                        }
                    }
                }
            }
            OID_BASIC_CONSTRAINTS => {
                let bc = BasicConstraints::from_der(value)
                    .map_err(|e| Error::MalformedCsr(format!("basicConstraints: {e}")))?;
                self.requests_ca = bc.ca;
            }
            OID_KEY_USAGE | OID_EXT_KEY_USAGE | OID_SUBJECT_KEY_ID => {}
            other if ext.critical => self.unknown_critical.push(other.to_string()),
            _ => {}
        }
        Ok(())
    }
}

/// Builds a DER CSR for `id` (the only URI SAN) and `dns_names`, signed by `key`: what a
/// workload sends to obtain or renew its certificate.
pub fn build_csr(key: &PrivateKey, id: &SpiffeId, dns_names: &[String]) -> Result<Vec<u8>, Error> {
    use rcgen::{CertificateParams, DistinguishedName, SanType};
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    let uri = id
        .as_str()
        .try_into()
        .map_err(|_| Error::InvalidId("SPIFFE ID is not ASCII".into()))?;
    p.subject_alt_names.push(SanType::URI(uri));
    for name in dns_names {
        let dns = name
            .as_str()
            .try_into()
            .map_err(|_| Error::CsrRejected(format!("{name:?} is not a valid DNS name")))?;
        p.subject_alt_names.push(SanType::DnsName(dns));
    }
    let csr = p
        .serialize_request(key.rcgen_pair())
        .map_err(|e| Error::Signing(format!("building CSR: {e}")))?;
    Ok(csr.der().to_vec())
}

/// A DER CSR carrying only `key`, no names: for APIs that issue the caller's
/// authenticated identity whatever the CSR says (Istio's), when the caller cannot know
/// that identity in advance.
pub fn build_bare_csr(key: &PrivateKey) -> Result<Vec<u8>, Error> {
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    let csr = p
        .serialize_request(key.rcgen_pair())
        .map_err(|e| Error::Signing(format!("building CSR: {e}")))?;
    Ok(csr.der().to_vec())
}

fn decode(input: &[u8]) -> Result<CertReq, Error> {
    let trimmed = input.trim_ascii_start();
    if trimmed.starts_with(b"-----BEGIN") {
        use der::DecodePem;
        let text = std::str::from_utf8(trimmed)
            .map_err(|_| Error::MalformedCsr("PEM is not valid UTF-8".into()))?;
        CertReq::from_pem(text.trim_end())
            .map_err(|e| Error::MalformedCsr(format!("PEM CERTIFICATE REQUEST: {e}")))
    } else {
        CertReq::from_der(input).map_err(|e| Error::MalformedCsr(format!("DER: {e}")))
    }
}

fn public_key(req: &CertReq) -> Result<(KeyType, Vec<u8>), Error> {
    let spki = &req.info.public_key;
    let kind = spki_key_type(spki)?;
    let key = spki
        .subject_public_key
        .as_bytes()
        .ok_or_else(|| Error::MalformedCsr("public key has unused bits".into()))?
        .to_vec();
    Ok((kind, key))
}

/// The key type of a SubjectPublicKeyInfo, or why writ does not accept it.
pub(crate) fn spki_key_type(spki: &SubjectPublicKeyInfo) -> Result<KeyType, Error> {
    let alg = spki.algorithm.oid;
    if alg == OID_EC_PUBLIC_KEY {
        let curve: ObjectIdentifier = spki
            .algorithm
            .parameters
            .as_ref()
            .ok_or_else(|| Error::MalformedCsr("EC key without a named curve".into()))?
            .decode_as()
            .map_err(|_| Error::UnsupportedKey("EC key with explicit curve parameters".into()))?;
        match curve {
            OID_P256 => Ok(KeyType::EcP256),
            OID_P384 => Ok(KeyType::EcP384),
            other => Err(Error::UnsupportedKey(format!("EC curve {other}"))),
        }
    } else if alg == OID_RSA {
        let key = spki
            .subject_public_key
            .as_bytes()
            .ok_or_else(|| Error::MalformedCsr("public key has unused bits".into()))?;
        let bits = rsa_modulus_bits(key)?;
        KeyType::rsa_of_bits(bits)
            .ok_or_else(|| Error::UnsupportedKey(format!("RSA key of {bits} bits")))
    } else if alg == OID_ED25519 {
        Err(Error::UnsupportedKey("Ed25519 key".into()))
    } else {
        Err(Error::UnsupportedKey(format!("key algorithm {alg}")))
    }
}

/// The modulus and exponent of a PKCS#1 RSAPublicKey `SEQUENCE { modulus, publicExponent }`,
/// big-endian without leading zeros.
pub(crate) fn rsa_components(key: &[u8]) -> Result<(Vec<u8>, Vec<u8>), Error> {
    let bad = || Error::MalformedCsr("RSA public key is not a PKCS#1 RSAPublicKey".into());
    let items: Vec<Any> = Vec::from_der(key).map_err(|_| bad())?;
    let [modulus, exponent] = items.as_slice() else {
        return Err(bad());
    };
    if modulus.tag() != Tag::Integer || exponent.tag() != Tag::Integer {
        return Err(bad());
    }
    let strip = |v: &[u8]| v[v.iter().take_while(|b| **b == 0).count()..].to_vec();
    Ok((strip(modulus.value()), strip(exponent.value())))
}

fn rsa_modulus_bits(key: &[u8]) -> Result<usize, Error> {
    let (n, _) = rsa_components(key)?;
    let bad = || Error::MalformedCsr("RSA public key has an empty modulus".into());
    match n.first() {
        Some(first) => Ok((n.len() - 1) * 8 + (8 - first.leading_zeros() as usize)),
        None => Err(bad()),
    }
}

fn verify_signature(req: &CertReq, kind: KeyType, key: &[u8]) -> Result<(), Error> {
    use ring::signature as sig;
    let alg: &dyn sig::VerificationAlgorithm = match (req.algorithm.oid, kind) {
        (OID_ECDSA_SHA256, KeyType::EcP256) => &sig::ECDSA_P256_SHA256_ASN1,
        (OID_ECDSA_SHA384, KeyType::EcP256) => &sig::ECDSA_P256_SHA384_ASN1,
        (OID_ECDSA_SHA256, KeyType::EcP384) => &sig::ECDSA_P384_SHA256_ASN1,
        (OID_ECDSA_SHA384, KeyType::EcP384) => &sig::ECDSA_P384_SHA384_ASN1,
        (OID_RSA_SHA256, k) if k.is_rsa() => &sig::RSA_PKCS1_2048_8192_SHA256,
        (OID_RSA_SHA384, k) if k.is_rsa() => &sig::RSA_PKCS1_2048_8192_SHA384,
        (OID_RSA_SHA512, k) if k.is_rsa() => &sig::RSA_PKCS1_2048_8192_SHA512,
        (oid, k) => {
            return Err(Error::MalformedCsr(format!(
                "signature algorithm {oid} is not supported for a {k} key \
                 (use ecdsa-with-SHA256/384 or sha256/384/512WithRSAEncryption)"
            )));
        }
    };
    let signature = req
        .signature
        .as_bytes()
        .ok_or_else(|| Error::MalformedCsr("signature has unused bits".into()))?;
    // Re-encoding is exact: x509-cert decodes DER strictly, so the encoding is canonical.
    let tbs = req
        .info
        .to_der()
        .map_err(|e| Error::MalformedCsr(format!("re-encoding request info: {e}")))?;
    sig::UnparsedPublicKey::new(alg, key)
        .verify(&tbs, signature)
        .map_err(|_| Error::CsrSignature)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rcgen::{CertificateParams, CustomExtension, DistinguishedName, IsCa, SanType};

    /// Builds a CSR with rcgen for `key` carrying the given SANs.
    pub(crate) fn make_csr(key: &PrivateKey, sans: Vec<SanType>, ca: bool) -> Vec<u8> {
        let mut p = CertificateParams::default();
        p.distinguished_name = DistinguishedName::new();
        p.subject_alt_names = sans;
        if ca {
            p.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        }
        p.serialize_request(key.rcgen_pair())
            .unwrap()
            .der()
            .to_vec()
    }

    pub(crate) fn uri(s: &str) -> SanType {
        SanType::URI(s.try_into().unwrap())
    }

    #[test]
    fn parses_every_key_type_pem_and_der() {
        for k in [KeyType::EcP256, KeyType::EcP384, KeyType::Rsa2048] {
            let key = PrivateKey::generate(k).unwrap();
            let der = make_csr(&key, vec![uri("spiffe://td/a")], false);
            let csr = Csr::parse(&der).unwrap();
            assert_eq!(csr.key_type(), k);
            assert_eq!(csr.uris(), ["spiffe://td/a"]);
            let pem =
                der::pem::encode_string("CERTIFICATE REQUEST", der::pem::LineEnding::LF, &der)
                    .unwrap();
            assert_eq!(Csr::parse(pem.as_bytes()).unwrap().key_type(), k);
        }
    }

    #[test]
    fn tampered_signature_fails() {
        let key = PrivateKey::generate(KeyType::EcP256).unwrap();
        let mut der = make_csr(&key, vec![uri("spiffe://td/a")], false);
        let n = der.len();
        der[n - 3] ^= 0x01;
        assert!(matches!(
            Csr::parse(&der),
            Err(Error::CsrSignature) | Err(Error::MalformedCsr(_))
        ));
        // Tamper the signed body instead: the URI changes, the signature no longer matches.
        let mut der = make_csr(&key, vec![uri("spiffe://td/aaaa")], false);
        let pos = der.windows(4).position(|w| w == b"aaaa").unwrap();
        der[pos] = b'b';
        assert!(matches!(Csr::parse(&der), Err(Error::CsrSignature)));
    }

    #[test]
    fn rejects_garbage_empty_and_oversized() {
        assert!(matches!(Csr::parse(b""), Err(Error::MalformedCsr(_))));
        assert!(matches!(
            Csr::parse(&[0x30, 0x03, 1, 2, 3]),
            Err(Error::MalformedCsr(_))
        ));
        let big = vec![0x41u8; 65 * 1024];
        assert!(matches!(Csr::parse(&big), Err(Error::CsrTooLarge { .. })));
        assert!(matches!(
            Csr::parse(
                b"-----BEGIN CERTIFICATE REQUEST-----\nnope\n-----END CERTIFICATE REQUEST-----\n"
            ),
            Err(Error::MalformedCsr(_))
        ));
    }

    #[test]
    fn records_ca_request_and_other_sans() {
        let key = PrivateKey::generate(KeyType::EcP256).unwrap();
        let der = make_csr(
            &key,
            vec![
                uri("spiffe://td/a"),
                SanType::IpAddress("10.0.0.1".parse().unwrap()),
                SanType::Rfc822Name("a@b.c".try_into().unwrap()),
            ],
            true,
        );
        let csr = Csr::parse(&der).unwrap();
        assert!(csr.requests_ca());
        assert_eq!(
            csr.other_sans(),
            [OtherSan("IP address"), OtherSan("e-mail")]
        );
    }

    #[test]
    fn unknown_critical_extension_is_recorded() {
        let key = PrivateKey::generate(KeyType::EcP256).unwrap();
        let mut p = CertificateParams::default();
        p.subject_alt_names = vec![uri("spiffe://td/a")];
        let mut ext =
            CustomExtension::from_oid_content(&[1, 3, 6, 1, 4, 1, 99999, 1], vec![0x05, 0x00]);
        ext.set_criticality(true);
        p.custom_extensions = vec![ext];
        let der = p
            .serialize_request(key.rcgen_pair())
            .unwrap()
            .der()
            .to_vec();
        let csr = Csr::parse(&der).unwrap();
        assert_eq!(csr.unknown_critical(), ["1.3.6.1.4.1.99999.1"]);
    }
}
