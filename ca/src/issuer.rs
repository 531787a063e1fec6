//! Building and signing certificates with rcgen: leaves per the X509-SVID specification
//! (github.com/spiffe/spiffe, standards/X509-SVID.md) and CA certificates.

use std::time::{Duration, SystemTime};

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyIdMethod, KeyUsagePurpose, SanType, SerialNumber,
};

use crate::key::RcgenSigner;
use crate::ttl::LifetimeLimit;
use crate::{CaSigningKey, Error, KeyType, LeafTemplate};

/// A certificate this CA signed.
#[derive(Clone, Debug)]
pub struct Issued {
    /// The certificate, DER.
    pub der: Vec<u8>,
    /// Serial number, lowercase hex.
    pub serial: String,
    /// notBefore.
    pub not_before: SystemTime,
    /// notAfter.
    pub not_after: SystemTime,
    /// SHA-256 of the DER, lowercase hex.
    pub fingerprint: String,
}

/// The facts about an issuing CA certificate that signing needs.
pub struct IssuerRef<'a> {
    /// The CA's subject, exactly as encoded in its certificate.
    pub subject: &'a DistinguishedName,
    /// The CA's subject key identifier (becomes the leaf's authority key identifier).
    pub key_id: &'a [u8],
    /// The CA's notAfter: nothing it signs outlives it.
    pub not_after: SystemTime,
    /// The CA's key.
    pub key: &'a dyn CaSigningKey,
}

impl IssuerRef<'_> {
    fn rcgen(&self) -> Issuer<'static, RcgenSigner<'_>> {
        let mut p = CertificateParams::default();
        p.distinguished_name = self.subject.clone();
        p.key_identifier_method = KeyIdMethod::PreSpecified(self.key_id.to_vec());
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        Issuer::new(p, RcgenSigner(self.key))
    }
}

/// The lifetime a leaf for `template` signed at `now` gets under an issuer whose notAfter
/// is `issuer_end`, and why it differs from the one requested: the policy's answer unless
/// the issuer ends first. A cut lifetime is in whole seconds, as notAfter is encoded.
pub(crate) fn granted_lifetime(
    template: &LeafTemplate,
    issuer_end: SystemTime,
    now: SystemTime,
) -> (Duration, Option<LifetimeLimit>) {
    match issuer_end.duration_since(now) {
        Ok(left) if left >= template.lifetime => (template.lifetime, template.limited_by),
        Ok(left) => (
            Duration::from_secs(left.as_secs()),
            Some(LifetimeLimit::IssuerExpiry),
        ),
        Err(_) => (Duration::ZERO, Some(LifetimeLimit::IssuerExpiry)),
    }
}

/// Signs a leaf for `template`: one URI SAN, `cA=false`, critical keyUsage
/// digitalSignature (+keyEncipherment for RSA only, RFC 8813), EKU server+client auth,
/// empty subject with a critical SAN, a random 127-bit serial, notBefore backdated by
/// `backdate`, notAfter never beyond the issuer's.
pub fn sign_leaf(
    template: &LeafTemplate,
    issuer: &IssuerRef<'_>,
    now: SystemTime,
    backdate: Duration,
) -> Result<Issued, Error> {
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    let uri = template
        .id
        .as_str()
        .try_into()
        .map_err(|_| Error::Signing("SPIFFE ID is not IA5".into()))?;
    p.subject_alt_names.push(SanType::URI(uri));
    for dns in &template.dns_names {
        let name = dns
            .as_str()
            .try_into()
            .map_err(|_| Error::Signing(format!("DNS name {dns:?} is not IA5")))?;
        p.subject_alt_names.push(SanType::DnsName(name));
    }
    for ip in &template.ip_addrs {
        p.subject_alt_names.push(SanType::IpAddress(*ip));
    }
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    if template.key_type.is_rsa() {
        p.key_usages.push(KeyUsagePurpose::KeyEncipherment);
    }
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    p.use_authority_key_identifier_extension = true;
    let not_after = (now + template.lifetime).min(issuer.not_after);
    if not_after <= now {
        return Err(Error::Signing(
            "the issuing CA has expired; renew the intermediate".into(),
        ));
    }
    sign(
        p,
        now - backdate,
        not_after,
        &SubjectKey::raw(template.key_type, &template.public_key),
        issuer,
    )
}

/// Signs a CA certificate (root when `issuer` is `None`: self-signed).
pub(crate) fn sign_ca(
    subject: &DistinguishedName,
    key: &dyn CaSigningKey,
    key_id: &[u8],
    path_len: Option<u8>,
    not_before: SystemTime,
    not_after: SystemTime,
    issuer: Option<&IssuerRef<'_>>,
) -> Result<Issued, Error> {
    let mut p = CertificateParams::default();
    p.distinguished_name = subject.clone();
    p.is_ca = match path_len {
        Some(n) => IsCa::Ca(rcgen::BasicConstraints::Constrained(n)),
        None => IsCa::Ca(rcgen::BasicConstraints::Unconstrained),
    };
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.key_identifier_method = KeyIdMethod::PreSpecified(key_id.to_vec());
    let subject_key = SubjectKey::raw(key.key_type(), key.public_key_raw());
    match issuer {
        Some(issuer) => {
            p.use_authority_key_identifier_extension = true;
            sign(
                p,
                not_before,
                not_after.min(issuer.not_after),
                &subject_key,
                issuer,
            )
        }
        None => {
            p.serial_number = Some(random_serial());
            p.not_before = not_before.into();
            p.not_after = not_after.into();
            let cert = p
                .self_signed(&RcgenSigner(key))
                .map_err(|e| Error::Signing(e.to_string()))?;
            finish(cert.der().to_vec())
        }
    }
}

/// Certifies another CA's key and subject with `issuer`: a cross-signed certificate
/// (RFC 4158 §2.3) with the same subject, key and subject key identifier as that CA's own
/// certificate, so a peer trusting only `issuer`'s root builds a path to the other CA.
pub(crate) fn sign_cross(
    subject: &DistinguishedName,
    subject_key: (KeyType, &[u8]),
    key_id: &[u8],
    not_before: SystemTime,
    not_after: SystemTime,
    issuer: &IssuerRef<'_>,
) -> Result<Issued, Error> {
    let mut p = CertificateParams::default();
    p.distinguished_name = subject.clone();
    p.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.key_identifier_method = KeyIdMethod::PreSpecified(key_id.to_vec());
    p.use_authority_key_identifier_extension = true;
    sign(
        p,
        not_before,
        not_after.min(issuer.not_after),
        &SubjectKey::raw(subject_key.0, subject_key.1),
        issuer,
    )
}

/// An rcgen name that encodes exactly like `name`, for issuing under a CA whose subject
/// writ did not choose (an imported CA). rcgen writes one attribute per RDN, each type at
/// most once, as UTF8String, PrintableString or IA5String; anything else is refused.
/// Callers still compare the encoding byte for byte (see `import.rs`).
pub(crate) fn rcgen_name(name: &x509_cert::name::Name) -> Result<DistinguishedName, String> {
    use der::{Tag, Tagged};
    let mut dn = DistinguishedName::new();
    let mut seen = Vec::new();
    for rdn in name.iter_rdn() {
        let mut attrs = rdn.iter();
        let (Some(atv), None) = (attrs.next(), attrs.next()) else {
            return Err(format!(
                "multi-valued RDN in {name}: writ can only reproduce one attribute per RDN"
            ));
        };
        let arcs: Vec<u64> = atv.oid.arcs().map(u64::from).collect();
        if seen.contains(&arcs) {
            return Err(format!(
                "attribute {} repeats in {name}: writ can only reproduce each attribute type once",
                atv.oid
            ));
        }
        seen.push(arcs.clone());
        let text = std::str::from_utf8(atv.value.value())
            .map_err(|_| format!("attribute {} in {name} is not valid text", atv.oid))?;
        let value = match atv.value.tag() {
            Tag::Utf8String => rcgen::DnValue::Utf8String(text.to_owned()),
            Tag::PrintableString => rcgen::DnValue::PrintableString(
                text.try_into()
                    .map_err(|_| format!("bad PrintableString in {name}"))?,
            ),
            Tag::Ia5String => rcgen::DnValue::Ia5String(
                text.try_into()
                    .map_err(|_| format!("bad IA5String in {name}"))?,
            ),
            other => {
                return Err(format!(
                    "attribute {} in {name} is a {other}; writ reproduces UTF8String, PrintableString and IA5String",
                    atv.oid
                ));
            }
        };
        dn.push(DnType::from_oid(&arcs), value);
    }
    Ok(dn)
}

/// A subject DN `O=writ, CN=<cn>`.
pub(crate) fn ca_subject(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "writ");
    dn.push(DnType::CommonName, cn);
    dn
}

fn sign(
    mut p: CertificateParams,
    not_before: SystemTime,
    not_after: SystemTime,
    subject_key: &SubjectKey<'_>,
    issuer: &IssuerRef<'_>,
) -> Result<Issued, Error> {
    let serial = random_serial_bytes();
    p.serial_number = Some(SerialNumber::from_slice(&serial));
    p.not_before = not_before.into();
    p.not_after = not_after.into();
    let cert = p
        .signed_by(subject_key, &issuer.rcgen())
        .map_err(|e| Error::Signing(e.to_string()))?;
    // The facts are known: reporting them without re-parsing the certificate saves a
    // DER parse on every issuance (`facts_match_a_parse` checks they agree).
    let der = cert.der().to_vec();
    Ok(Issued {
        fingerprint: crate::x509::sha256_hex(&der),
        serial: hex::encode(serial),
        not_before: whole_seconds(not_before),
        not_after: whole_seconds(not_after),
        der,
    })
}

/// `t` as X.509 encodes it: whole seconds (rcgen drops the fraction).
fn whole_seconds(t: SystemTime) -> SystemTime {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(d.as_secs()),
        Err(_) => t,
    }
}

fn finish(der: Vec<u8>) -> Result<Issued, Error> {
    // Report the encoded (second-truncated) times, not the requested ones.
    let info = crate::CertInfo::parse(&der)?;
    Ok(Issued {
        fingerprint: info.fingerprint,
        serial: info.serial,
        not_before: info.not_before,
        not_after: info.not_after,
        der,
    })
}

/// A 127-bit random positive serial (RFC 5280 §4.1.2.2 allows 20 octets; CA/B asks ≥ 64 bits
/// of entropy). The top byte is pinned to 0x40..0x7f so the encoding never needs a pad byte
/// and is always 16 octets.
pub(crate) fn random_serial() -> SerialNumber {
    SerialNumber::from_slice(&random_serial_bytes())
}

/// The 16 octets of [`random_serial`], exactly as encoded.
fn random_serial_bytes() -> [u8; 16] {
    let mut b = [0u8; 16];
    // The system RNG failing is unrecoverable for a CA; ring reports it as Unspecified.
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
        .unwrap_or_else(|_| panic!("system random number generator failed"));
    b[0] = (b[0] & 0x3f) | 0x40;
    b
}

/// A subject public key given as raw SPKI bit-string contents.
struct SubjectKey<'a> {
    kind: KeyType,
    raw: &'a [u8],
}

impl<'a> SubjectKey<'a> {
    fn raw(kind: KeyType, raw: &'a [u8]) -> Self {
        Self { kind, raw }
    }
}

impl rcgen::PublicKeyData for SubjectKey<'_> {
    fn der_bytes(&self) -> &[u8] {
        self.raw
    }
    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.kind.signature_algorithm()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AuthMethod, SpiffeId};

    fn template(secs: u64, limited_by: Option<LifetimeLimit>) -> LeafTemplate {
        LeafTemplate {
            id: SpiffeId::parse("spiffe://td/a").unwrap(),
            dns_names: Vec::new(),
            ip_addrs: Vec::new(),
            key_type: KeyType::EcP256,
            public_key: Vec::new(),
            lifetime: Duration::from_secs(secs),
            limited_by,
            auth: AuthMethod::Mtls,
        }
    }

    #[test]
    fn the_issuers_end_is_reported_only_when_it_cuts() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_250);
        let end = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_007_200);
        let granted = |secs, limit| granted_lifetime(&template(secs, limit), end, now);
        // Within the issuer's life: the policy's answer, whatever it was.
        assert_eq!(granted(3600, None), (Duration::from_secs(3600), None));
        let max = Some(LifetimeLimit::MaxTtl);
        assert_eq!(granted(3600, max), (Duration::from_secs(3600), max));
        // Past it: cut to the issuer's end, in whole seconds, and that is the reason even
        // when a TTL bound had changed the request first.
        let cut = (Duration::from_secs(7199), Some(LifetimeLimit::IssuerExpiry));
        assert_eq!(granted(86_400, None), cut);
        assert_eq!(granted(86_400, max), cut);
        let expired = granted_lifetime(&template(60, None), now, end);
        assert_eq!(expired, (Duration::ZERO, Some(LifetimeLimit::IssuerExpiry)));
    }
}
