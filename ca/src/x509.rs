//! Reading certificates writ (or anyone) issued: the facts `cert inspect`, peer
//! authentication and the agent need, parsed once with x509-cert.

use std::net::IpAddr;
use std::time::SystemTime;

use der::Decode;
use x509_cert::Certificate;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{BasicConstraints, SubjectAltName, SubjectKeyIdentifier};

use crate::csr::spki_key_type;
use crate::{Error, KeyType, SpiffeId};

/// The facts of one certificate.
#[derive(Clone, Debug)]
pub struct CertInfo {
    /// SHA-256 of the DER, lowercase hex.
    pub fingerprint: String,
    /// Serial number, lowercase hex.
    pub serial: String,
    /// Subject DN (RFC 4514), possibly empty.
    pub subject: String,
    /// Issuer DN (RFC 4514).
    pub issuer: String,
    /// notBefore.
    pub not_before: SystemTime,
    /// notAfter.
    pub not_after: SystemTime,
    /// URI SANs.
    pub uris: Vec<String>,
    /// DNS SANs.
    pub dns_names: Vec<String>,
    /// IP SANs.
    pub ip_addrs: Vec<IpAddr>,
    /// The subject key type, when it is one writ knows.
    pub key_type: Option<KeyType>,
    /// basicConstraints cA.
    pub is_ca: bool,
    /// Subject key identifier, lowercase hex.
    pub subject_key_id: Option<String>,
}

impl CertInfo {
    /// Parses one DER certificate.
    pub fn parse(der: &[u8]) -> Result<Self, Error> {
        let cert = Certificate::from_der(der)
            .map_err(|e| Error::BadCertificate(format!("not a DER X.509 certificate: {e}")))?;
        let tbs = cert.tbs_certificate();
        let mut info = CertInfo {
            fingerprint: sha256_hex(der),
            serial: hex::encode(tbs.serial_number().as_bytes()),
            subject: tbs.subject().to_string(),
            issuer: tbs.issuer().to_string(),
            not_before: tbs.validity().not_before.to_system_time(),
            not_after: tbs.validity().not_after.to_system_time(),
            uris: Vec::new(),
            dns_names: Vec::new(),
            ip_addrs: Vec::new(),
            key_type: spki_key_type(tbs.subject_public_key_info()).ok(),
            is_ca: false,
            subject_key_id: None,
        };
        let bad = |what: &str, e: der::Error| Error::BadCertificate(format!("{what}: {e}"));
        if let Some((_, san)) = tbs
            .get_extension::<SubjectAltName>()
            .map_err(|e| bad("subjectAltName", e))?
        {
            for name in san.0 {
                match name {
                    GeneralName::UniformResourceIdentifier(s) => info.uris.push(s.to_string()),
                    GeneralName::DnsName(s) => info.dns_names.push(s.to_string()),
                    GeneralName::IpAddress(o) => match o.as_bytes().len() {
                        4 => {
                            let b: [u8; 4] = o.as_bytes().try_into().unwrap_or_default();
                            info.ip_addrs.push(IpAddr::from(b));
                        }
                        16 => {
                            let b: [u8; 16] = o.as_bytes().try_into().unwrap_or_default();
                            info.ip_addrs.push(IpAddr::from(b));
                        }
                        _ => {}
                    },
                    _ => {}
                }
            }
        }
        if let Some((_, bc)) = tbs
            .get_extension::<BasicConstraints>()
            .map_err(|e| bad("basicConstraints", e))?
        {
            info.is_ca = bc.ca;
        }
        if let Some((_, ski)) = tbs
            .get_extension::<SubjectKeyIdentifier>()
            .map_err(|e| bad("subjectKeyIdentifier", e))?
        {
            info.subject_key_id = Some(hex::encode(ski.0.as_bytes()));
        }
        Ok(info)
    }

    /// The SPIFFE ID of one DER certificate, reading only its SAN: for callers that need
    /// nothing else, such as a load generator checking every answer. webpki's parser
    /// borrows the DER instead of decoding it into owned values, at a fraction of the
    /// cost of [`CertInfo::parse`]. It is also stricter: a certificate no relying party
    /// would accept (an unknown critical extension, say) names no identity here, while
    /// [`CertInfo::parse`] reads whatever it holds.
    pub fn spiffe_id_of(der: &[u8]) -> Result<SpiffeId, Error> {
        let der = rustls_pki_types::CertificateDer::from(der);
        let cert = webpki::EndEntityCert::try_from(&der).map_err(|e| {
            Error::BadCertificate(match e {
                webpki::Error::BadDer | webpki::Error::TrailingData(_) => {
                    format!("not a DER X.509 certificate: {e}")
                }
                other => format!("certificate refused: {other}"),
            })
        })?;
        let uris: Vec<&str> = cert.valid_uri_names().collect();
        only_uri(&uris)
    }

    /// The certificate's SPIFFE ID: its only URI SAN, when that is one.
    pub fn spiffe_id(&self) -> Result<SpiffeId, Error> {
        only_uri(&self.uris)
    }

    /// Seconds until notAfter (negative once expired).
    pub fn seconds_left(&self, now: SystemTime) -> i64 {
        match self.not_after.duration_since(now) {
            Ok(d) => d.as_secs() as i64,
            Err(e) => -(e.duration().as_secs() as i64),
        }
    }
}

/// A certificate's SPIFFE ID: its only URI SAN, when that is one.
fn only_uri(uris: &[impl AsRef<str>]) -> Result<SpiffeId, Error> {
    match uris {
        [one] => SpiffeId::parse(one.as_ref()),
        [] => Err(Error::BadCertificate(
            "certificate has no URI SAN (SPIFFE ID)".into(),
        )),
        _ => Err(Error::BadCertificate(
            "certificate has more than one URI SAN".into(),
        )),
    }
}

/// SHA-256 of `bytes`, lowercase hex: writ's fingerprint format.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes))
}

/// Splits PEM text into its DER `CERTIFICATE` blocks, in order.
pub fn certs_from_pem(pem: &[u8]) -> Result<Vec<Vec<u8>>, Error> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(pem).collect();
    let certs = certs.map_err(|e| Error::BadCertificate(format!("PEM: {e}")))?;
    if certs.is_empty() {
        return Err(Error::BadCertificate(
            "no PEM CERTIFICATE block found".into(),
        ));
    }
    Ok(certs.into_iter().map(|c| c.to_vec()).collect())
}

/// Encodes DER certificates as concatenated PEM blocks.
pub fn certs_to_pem<'a>(certs: impl IntoIterator<Item = &'a Vec<u8>>) -> String {
    certs
        .into_iter()
        .map(|der| der_to_pem("CERTIFICATE", der))
        .collect()
}

/// One PEM block with `label` (`CERTIFICATE`, `CERTIFICATE REQUEST`) around `der`.
pub fn der_to_pem(label: &str, der: &[u8]) -> String {
    // Encoding only fails for an invalid label, which callers pass as constants.
    der::pem::encode_string(label, der::pem::LineEnding::LF, der).unwrap_or_default()
}
