//! Plugging in an externally issued CA, in Istio's `cacerts` layout (istio.io, "Plug in
//! CA Certificates"): every check happens before anything changes, and the result is a
//! prepared generation that activates and retires like writ's own.

use std::time::{Duration, SystemTime};

use der::{Decode, Encode};
use x509_cert::Certificate;
use x509_cert::ext::pkix::{BasicConstraints, KeyUsage};
use zeroize::Zeroizing;

use crate::generation::CaCert;
use crate::issuer::{sign_cross, sign_leaf};
use crate::verify::{Usage, verify_chain};
use crate::{
    AuthMethod, CaSettings, CertInfo, Error, Generation, GenerationState, LeafTemplate, PrivateKey,
    SpiffeId,
};

/// The four files of Istio's `cacerts` secret, as read.
pub(crate) struct CaFiles<'a> {
    /// `ca-cert.pem`: the intermediate writ will sign with.
    pub cert_pem: &'a [u8],
    /// `ca-key.pem`: its private key (PKCS#8, PKCS#1 or SEC1; unencrypted).
    pub key_pem: &'a [u8],
    /// `cert-chain.pem`: the chain from it up to the root (it and the root may be
    /// included; they are recognised and skipped).
    pub chain_pem: &'a [u8],
    /// `root-cert.pem`: the root.
    pub root_pem: &'a [u8],
}

/// Checks `files` and builds prepared generation `id` from them.
pub(crate) fn import_generation(
    id: u64,
    files: CaFiles<'_>,
    settings: &CaSettings,
    now: SystemTime,
) -> Result<Generation, Error> {
    let refuse = |m: String| Error::Import(m);
    let cert_der = one_cert(files.cert_pem, "ca-cert.pem")?;
    let root_der = one_cert(files.root_pem, "root-cert.pem")?;
    let key = key_from_pem(files.key_pem)?;

    let cert = parse(&cert_der, "ca-cert.pem")?;
    let root = parse(&root_der, "root-cert.pem")?;
    let cert_key = cert
        .tbs_certificate()
        .subject_public_key_info()
        .subject_public_key
        .raw_bytes();
    if cert_key != crate::CaSigningKey::public_key_raw(&key) {
        return Err(refuse(
            "ca-key.pem is not the key of ca-cert.pem (their public keys differ)".into(),
        ));
    }
    check_ca(&cert, "ca-cert.pem")?;
    check_ca(&root, "root-cert.pem")?;
    if root.tbs_certificate().issuer() != root.tbs_certificate().subject() {
        return Err(refuse(format!(
            "root-cert.pem is not self-issued (issuer {} ≠ subject {}): it must be the root",
            root.tbs_certificate().issuer(),
            root.tbs_certificate().subject()
        )));
    }
    let cert_info = CertInfo::parse(&cert_der)?;
    for (what, der) in [("ca-cert.pem", &cert_der), ("root-cert.pem", &root_der)] {
        check_validity(what, &CertInfo::parse(der)?, now)?;
    }
    let max_ttl = settings.ttl.max().duration();
    if cert_info.not_after < now + max_ttl {
        return Err(refuse(format!(
            "ca-cert.pem expires at {}, sooner than a leaf of the maximum TTL ({}) issued now would; import a CA that outlives it",
            humantime::format_rfc3339_seconds(cert_info.not_after),
            humantime::format_duration(max_ttl)
        )));
    }

    // The CA certificates between ca-cert.pem and the root, in the order given.
    let between: Vec<Vec<u8>> = if files.chain_pem.iter().all(u8::is_ascii_whitespace) {
        Vec::new()
    } else {
        crate::x509::certs_from_pem(files.chain_pem)
            .map_err(|e| refuse(format!("cert-chain.pem: {e}")))?
            .into_iter()
            .filter(|c| *c != cert_der && *c != root_der)
            .collect()
    };
    for (i, der) in between.iter().enumerate() {
        let what = format!("cert-chain.pem certificate {}", i + 1);
        check_ca(&parse(der, &what)?, &what)?;
        check_validity(&what, &CertInfo::parse(der)?, now)?;
    }

    let within = |what: &'static str| {
        move |e: Error| match e {
            Error::Import(m) => Error::Import(format!("{what}: {m}")),
            other => Error::Import(format!("{what}: {other}")),
        }
    };
    let intermediate =
        CaCert::imported(cert_der.clone(), Some(key)).map_err(within("ca-cert.pem"))?;
    let root_cert = CaCert::imported(root_der.clone(), None).map_err(within("root-cert.pem"))?;
    let issuer = intermediate
        .signing_ref()
        .ok_or_else(|| Error::Corrupt("imported intermediate lost its key".into()))?;

    // A trial leaf proves three things at once: the key signs, writ reproduces the
    // intermediate's subject byte for byte as the leaf's issuer (rcgen rebuilds names,
    // it does not copy them), and rustls-webpki builds a path from it to the root
    // through the given chain (signatures, CA constraints, path length, validity and
    // name constraints against this trust domain).
    let probe = SpiffeId::parse(&format!(
        "spiffe://{}/writ/import-check",
        settings.trust_domain
    ))?;
    let template = LeafTemplate {
        id: probe,
        dns_names: Vec::new(),
        ip_addrs: Vec::new(),
        key_type: issuer.key.key_type(),
        public_key: issuer.key.public_key_raw().to_vec(),
        lifetime: Duration::from_secs(60),
        limited_by: None,
        auth: AuthMethod::Internal,
    };
    let trial = sign_leaf(&template, &issuer, now, settings.backdate)?;
    let trial_cert = parse(&trial.der, "trial leaf")?;
    if name_der(trial_cert.tbs_certificate().issuer())?
        != name_der(cert.tbs_certificate().subject())?
    {
        return Err(refuse(format!(
            "ca-cert.pem's subject {} cannot be reproduced exactly by writ's certificate builder",
            cert.tbs_certificate().subject()
        )));
    }
    let mut chain = vec![trial.der.clone(), cert_der.clone()];
    chain.extend(between.iter().cloned());
    verify_chain(&chain, std::slice::from_ref(&root_der), now, Usage::Client).map_err(|e| {
        refuse(format!(
            "cert-chain.pem does not lead from ca-cert.pem to root-cert.pem: {e}"
        ))
    })?;

    // The root must also be reproducible, to be cross-signed by the current root when
    // this generation activates.
    let (root_kind, root_key) = root_cert.public_key();
    let trial_cross = sign_cross(
        root_cert.rcgen_subject(),
        (root_kind, root_key),
        &root_cert.key_id,
        now,
        now + Duration::from_secs(60),
        &issuer,
    )?;
    let trial_cross = parse(&trial_cross.der, "trial cross-signed root")?;
    if name_der(trial_cross.tbs_certificate().subject())?
        != name_der(root.tbs_certificate().subject())?
    {
        return Err(refuse(format!(
            "root-cert.pem's subject {} cannot be reproduced exactly by writ's certificate builder",
            root.tbs_certificate().subject()
        )));
    }
    Ok(Generation {
        id,
        state: GenerationState::Prepared,
        root: root_cert,
        intermediate,
        intermediates_issued: 1,
        since: crate::generation::whole_seconds(now),
        imported: true,
        chain: between,
        cross_signed: None,
    })
}

/// Reads `ca-key.pem` in any of the unencrypted forms Istio's tooling and openssl write:
/// PKCS#8 `PRIVATE KEY`, PKCS#1 `RSA PRIVATE KEY` or SEC1 `EC PRIVATE KEY` (the latter two
/// wrapped into PKCS#8, RFC 5208 §5, without decoding the key).
fn key_from_pem(pem: &[u8]) -> Result<PrivateKey, Error> {
    use rustls_pki_types::PrivateKeyDer;
    use rustls_pki_types::pem::PemObject;
    // rsaEncryption with NULL parameters; id-ecPublicKey with prime256v1 / secp384r1.
    const RSA: &[u8] = &[
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    const P256: &[u8] = &[
        0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86,
        0x48, 0xce, 0x3d, 0x03, 0x01, 0x07,
    ];
    const P384: &[u8] = &[
        0x30, 0x10, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x05, 0x2b, 0x81,
        0x04, 0x00, 0x22,
    ];
    let refuse = |m: String| Error::Import(format!("ca-key.pem: {m}"));
    let der = PrivateKeyDer::from_pem_slice(pem).map_err(|_| {
        refuse(
            "expected an unencrypted PEM PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY block"
                .into(),
        )
    })?;
    let wrapped = |alg: &[u8], key: &[u8]| {
        let mut body = Zeroizing::new(vec![0x02, 0x01, 0x00]);
        body.extend_from_slice(alg);
        body.extend_from_slice(&tlv(0x04, key));
        tlv(0x30, &body)
    };
    let parsed = match &der {
        PrivateKeyDer::Pkcs8(k) => PrivateKey::from_pkcs8_der(k.secret_pkcs8_der()),
        PrivateKeyDer::Pkcs1(k) => PrivateKey::from_pkcs8_der(&wrapped(RSA, k.secret_pkcs1_der())),
        PrivateKeyDer::Sec1(k) => PrivateKey::from_pkcs8_der(&wrapped(P256, k.secret_sec1_der()))
            .or_else(|_| PrivateKey::from_pkcs8_der(&wrapped(P384, k.secret_sec1_der()))),
        _ => Err(Error::Key("unsupported private key format".into())),
    };
    parsed.map_err(|e| refuse(e.to_string()))
}

/// One DER TLV with a definite length (X.690 §8.1.3).
fn tlv(tag: u8, content: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(vec![tag]);
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

fn one_cert(pem: &[u8], what: &str) -> Result<Vec<u8>, Error> {
    let certs =
        crate::x509::certs_from_pem(pem).map_err(|e| Error::Import(format!("{what}: {e}")))?;
    match <[Vec<u8>; 1]>::try_from(certs) {
        Ok([one]) => Ok(one),
        Err(certs) => Err(Error::Import(format!(
            "{what} holds {} certificates; expected exactly one",
            certs.len()
        ))),
    }
}

fn parse(der: &[u8], what: &str) -> Result<Certificate, Error> {
    Certificate::from_der(der)
        .map_err(|e| Error::Import(format!("{what}: not a DER certificate: {e}")))
}

fn name_der(name: &x509_cert::name::Name) -> Result<Vec<u8>, Error> {
    name.to_der()
        .map_err(|e| Error::BadCertificate(format!("name does not encode: {e}")))
}

/// RFC 5280 §4.2.1.9 and §4.2.1.3: a CA certificate has basicConstraints cA=true and, when
/// it has keyUsage, keyCertSign.
fn check_ca(cert: &Certificate, what: &str) -> Result<(), Error> {
    let tbs = cert.tbs_certificate();
    let bc = tbs
        .get_extension::<BasicConstraints>()
        .map_err(|e| Error::Import(format!("{what}: basicConstraints: {e}")))?;
    if !bc.is_some_and(|(_, bc)| bc.ca) {
        return Err(Error::Import(format!(
            "{what} ({}) is not a CA certificate: basicConstraints cA is not true",
            tbs.subject()
        )));
    }
    let ku = tbs
        .get_extension::<KeyUsage>()
        .map_err(|e| Error::Import(format!("{what}: keyUsage: {e}")))?;
    if let Some((_, ku)) = ku
        && !ku.key_cert_sign()
    {
        return Err(Error::Import(format!(
            "{what} ({}) may not sign certificates: its keyUsage lacks keyCertSign",
            tbs.subject()
        )));
    }
    Ok(())
}

fn check_validity(what: &str, info: &CertInfo, now: SystemTime) -> Result<(), Error> {
    if info.not_after <= now {
        return Err(Error::Import(format!(
            "{what} ({}) expired at {}",
            info.subject,
            humantime::format_rfc3339_seconds(info.not_after)
        )));
    }
    if info.not_before > now {
        return Err(Error::Import(format!(
            "{what} ({}) is not valid before {}",
            info.subject,
            humantime::format_rfc3339_seconds(info.not_before)
        )));
    }
    Ok(())
}
