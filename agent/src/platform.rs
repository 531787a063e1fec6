//! Identity from a platform JWT (a Kubernetes projected service-account token, an OIDC
//! token): the CA maps the token to an identity and signs over Istio's protocol, which
//! issues the authenticated identity whatever the CSR says, so the agent need not know
//! its SPIFFE ID in advance.
//!
//! The token file is read afresh for every request: projected tokens are rotated by the
//! kubelet, and a cached copy would expire.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tonic::metadata::MetadataValue;
use writ_ca::x509::{certs_from_pem, der_to_pem};
use writ_ca::{KeyType, PrivateKey, TrustDomain, Usage, build_bare_csr, verify_chain};
use writ_proto::istio::v1::auth::IstioCertificateRequest;
use writ_proto::istio::v1::auth::istio_certificate_service_client::IstioCertificateServiceClient;
use zeroize::Zeroizing;

use crate::Error;
use crate::bootstrap::read_token_file;
use crate::client::{ServerTrust, channel, client_config};
use crate::files::Identity;

/// Where the JWT is and how to trust the CA before the agent holds a bundle.
#[derive(Clone, Debug)]
pub struct JwtSource {
    /// The token file, re-read for every request.
    pub jwt_file: PathBuf,
    /// The CA's trust domain (the server is `spiffe://<td>/writ/server`).
    pub trust_domain: TrustDomain,
    /// How to recognise the CA on first contact.
    pub first_trust: FirstTrust,
}

/// What the agent trusts before it has a bundle of its own.
#[derive(Clone, Debug)]
pub enum FirstTrust {
    /// A PEM bundle file (the CA's roots, as Istio mounts `root-cert.pem`).
    BundleFile(PathBuf),
    /// The root's SHA-256 fingerprint, lowercase hex (`writ bundle show`, `writ server`).
    Fingerprint(String),
}

impl JwtSource {
    /// How to verify the server: the current bundle once there is an identity, else the
    /// configured first-contact trust.
    fn trust(&self, current: Option<&Identity>) -> Result<ServerTrust, Error> {
        let trust_domain = self.trust_domain.clone();
        if let Some(id) = current {
            return Ok(ServerTrust::Bundle {
                trust_domain,
                roots: id.bundle.clone(),
            });
        }
        Ok(match &self.first_trust {
            FirstTrust::BundleFile(path) => ServerTrust::Bundle {
                trust_domain,
                roots: read_bundle(path)?,
            },
            FirstTrust::Fingerprint(f) => ServerTrust::PinnedRoot {
                trust_domain,
                fingerprint: f.clone(),
            },
        })
    }
}

fn read_bundle(path: &Path) -> Result<Vec<Vec<u8>>, Error> {
    let pem = std::fs::read(path)
        .map_err(|e| Error::NoIdentity(format!("reading the CA bundle {}: {e}", path.display())))?;
    let roots = certs_from_pem(&pem)
        .map_err(|e| Error::NoIdentity(format!("CA bundle {}: {e}", path.display())))?;
    if roots.is_empty() {
        return Err(Error::NoIdentity(format!(
            "CA bundle {} holds no certificate; export it with `writ bundle show`",
            path.display()
        )));
    }
    Ok(roots)
}

/// Obtains a certificate for a fresh `key_type` key from the CA at `addr`, authenticated
/// by the JWT in `source`; presents `current`'s certificate too when there is one.
/// Nothing is written.
pub async fn obtain(
    addr: &str,
    source: &JwtSource,
    current: Option<&Identity>,
    key_type: KeyType,
    ttl: Option<Duration>,
) -> Result<Identity, Error> {
    crate::servers::each(addr, |one| async move {
        obtain_at(&one, source, current, key_type, ttl).await
    })
    .await
}

/// [`obtain`] from the server `addr`.
async fn obtain_at(
    addr: &str,
    source: &JwtSource,
    current: Option<&Identity>,
    key_type: KeyType,
    ttl: Option<Duration>,
) -> Result<Identity, Error> {
    let token = read_token_file(&source.jwt_file, "JWT").map_err(Error::NoIdentity)?;
    let trust = source.trust(current)?;
    let config = client_config(trust, current)?;
    let mut client = IstioCertificateServiceClient::new(channel(addr, config).await?);
    let key = PrivateKey::generate(key_type)?;
    let csr = build_bare_csr(&key)?;
    let pem = der_to_pem("CERTIFICATE REQUEST", &csr);
    let mut req = tonic::Request::new(IstioCertificateRequest {
        csr: pem,
        validity_duration: ttl.map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
        metadata: None,
    });
    let header = Zeroizing::new(format!("Bearer {}", token.expose()));
    let value = MetadataValue::try_from(header.as_str()).map_err(|_| {
        Error::NoIdentity(format!(
            "the JWT in {} contains characters a request header cannot carry",
            source.jwt_file.display()
        ))
    })?;
    req.metadata_mut().insert("authorization", value);
    let resp = client
        .create_certificate(req)
        .await
        .map_err(Error::from_status)?
        .into_inner();
    accept(resp.cert_chain, &source.trust_domain, key)
}

/// Checks Istio's response layout (leaf, intermediates, then all roots as one element)
/// and that the chain verifies, names an identity in `td` and certifies `key`.
fn accept(mut elements: Vec<String>, td: &TrustDomain, key: PrivateKey) -> Result<Identity, Error> {
    let bad = |m: String| Error::InvalidResponse(m);
    if elements.len() < 2 {
        return Err(bad(format!(
            "expected the leaf, intermediates and roots; got {} element(s)",
            elements.len()
        )));
    }
    let roots_pem = elements.pop().unwrap_or_default();
    let roots = certs_from_pem(roots_pem.as_bytes()).map_err(|e| bad(format!("roots: {e}")))?;
    let mut chain = Vec::with_capacity(elements.len());
    for (i, e) in elements.iter().enumerate() {
        match certs_from_pem(e.as_bytes()).map_err(|e| bad(format!("element {i}: {e}")))?[..] {
            [ref one] => chain.push(one.clone()),
            ref many => {
                return Err(bad(format!(
                    "element {i} holds {} certificates, not one",
                    many.len()
                )));
            }
        }
    }
    let peer = verify_chain(&chain, &roots, SystemTime::now(), Usage::Client)
        .map_err(|e| bad(format!("issued chain: {e}")))?;
    if !peer.id.is_member_of(td) {
        return Err(bad(format!(
            "the CA issued {}, outside trust domain {td}",
            peer.id
        )));
    }
    Ok(Identity::new(chain, key, roots)?)
}
