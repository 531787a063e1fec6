//! Verifying a presented chain against a trust bundle with rustls-webpki, and naming the
//! SPIFFE ID it proves.

use std::time::SystemTime;

use rustls_pki_types::{CertificateDer, SignatureVerificationAlgorithm, UnixTime};
use webpki::{EndEntityCert, KeyUsage};

use crate::{CertInfo, Error, SpiffeId};

/// The signature algorithms writ accepts in chains.
pub static ALGORITHMS: &[&dyn SignatureVerificationAlgorithm] = &[
    webpki::ring::ECDSA_P256_SHA256,
    webpki::ring::ECDSA_P256_SHA384,
    webpki::ring::ECDSA_P384_SHA256,
    webpki::ring::ECDSA_P384_SHA384,
    webpki::ring::RSA_PKCS1_2048_8192_SHA256,
    webpki::ring::RSA_PKCS1_2048_8192_SHA384,
    webpki::ring::RSA_PKCS1_2048_8192_SHA512,
];

/// Which extended key usage the leaf must carry.
#[derive(Clone, Copy, Debug)]
pub enum Usage {
    /// A TLS client (a workload renewing).
    Client,
    /// A TLS server.
    Server,
}

/// A chain that verified: the leaf's SPIFFE ID and facts.
#[derive(Clone, Debug)]
pub struct VerifiedPeer {
    /// The identity the chain proves.
    pub id: SpiffeId,
    /// The leaf's facts.
    pub leaf: CertInfo,
}

/// Verifies `chain` (leaf first) up to one of `roots` at `now` for `usage`, and returns the
/// leaf's SPIFFE ID. Expiry is reported as its own, actionable error.
pub fn verify_chain(
    chain: &[Vec<u8>],
    roots: &[Vec<u8>],
    now: SystemTime,
    usage: Usage,
) -> Result<VerifiedPeer, Error> {
    let (leaf_der, rest) = chain
        .split_first()
        .ok_or_else(|| Error::BadCertificate("no certificate presented".into()))?;
    let leaf = CertInfo::parse(leaf_der)?;
    check_not_expired(&leaf, now)?;
    let anchors: Vec<_> = roots
        .iter()
        .filter_map(|r| {
            webpki::anchor_from_trusted_cert(&CertificateDer::from(r.as_slice()))
                .ok()
                .map(|a| a.to_owned())
        })
        .collect();
    verify_with(leaf, leaf_der, rest, &anchors, now, usage)
}

/// Verifies a leaf `leaf_der` signed directly by `issuer`, a CA certificate the caller
/// already trusts (one of this CA's own current intermediates, whose root is in the
/// bundle): the leaf's signature, validity and usage, under the issuer's name constraints.
/// One signature check instead of one per chain link; the issuer's own validity is the
/// caller's to check.
pub(crate) fn verify_issued_by(
    leaf_der: &[u8],
    issuer: &[u8],
    now: SystemTime,
    usage: Usage,
) -> Result<VerifiedPeer, Error> {
    let leaf = CertInfo::parse(leaf_der)?;
    check_not_expired(&leaf, now)?;
    let anchor = webpki::anchor_from_trusted_cert(&CertificateDer::from(issuer))
        .map_err(|e| Error::BadCertificate(format!("issuer: {e:?}")))?
        .to_owned();
    verify_with(leaf, leaf_der, &[], &[anchor], now, usage)
}

fn check_not_expired(leaf: &CertInfo, now: SystemTime) -> Result<(), Error> {
    if leaf.not_after < now {
        return Err(Error::BadCertificate(format!(
            "certificate for {} expired at {}; an expired certificate cannot renew: obtain a new one (for a VM, ask an admin for a new bootstrap token)",
            leaf.uris.first().map(String::as_str).unwrap_or("?"),
            humantime::format_rfc3339_seconds(leaf.not_after)
        )));
    }
    Ok(())
}

fn verify_with(
    leaf: CertInfo,
    leaf_der: &[u8],
    rest: &[Vec<u8>],
    anchors: &[rustls_pki_types::TrustAnchor<'_>],
    now: SystemTime,
    usage: Usage,
) -> Result<VerifiedPeer, Error> {
    let intermediates: Vec<CertificateDer<'_>> = rest
        .iter()
        .map(|c| CertificateDer::from(c.as_slice()))
        .collect();
    let leaf_cert = CertificateDer::from(leaf_der);
    let ee = EndEntityCert::try_from(&leaf_cert)
        .map_err(|e| Error::BadCertificate(format!("leaf: {e}")))?;
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_err(|_| Error::BadCertificate("clock before 1970".into()))?;
    let usage = match usage {
        Usage::Client => KeyUsage::client_auth(),
        Usage::Server => KeyUsage::server_auth(),
    };
    ee.verify_for_usage(
        ALGORITHMS,
        anchors,
        &intermediates,
        UnixTime::since_unix_epoch(secs),
        usage,
        None,
        None,
    )
    .map_err(|e| {
        Error::BadCertificate(format!(
            "chain does not verify against this trust domain's bundle: {e:?}"
        ))
    })?;
    let id = leaf.spiffe_id()?;
    Ok(VerifiedPeer { id, leaf })
}
