//! One renewal over mTLS with the current certificate and a fresh key: what `writ renew`
//! does once and the agent's rotation loop does forever.

use std::path::Path;
use std::time::{Duration, SystemTime};

use writ_ca::{KeyType, PrivateKey, SpiffeId, TrustDomain, Usage, build_csr, verify_chain};
use writ_proto::v1;

use crate::Error;
use crate::client::{ServerTrust, connect_for_renewal};
use crate::files::{self, Identity};
use crate::lifetime::Granted;

/// What to ask for when renewing.
#[derive(Clone, Copy, Debug)]
pub struct RenewOptions {
    /// Key type of the new key (a new key every renewal).
    pub key_type: KeyType,
    /// Requested TTL; `None` for the server's default.
    pub ttl: Option<Duration>,
}

impl Default for RenewOptions {
    fn default() -> Self {
        Self {
            key_type: KeyType::EcP256,
            ttl: None,
        }
    }
}

/// A renewal's outcome.
pub struct Renewed {
    /// The new identity.
    pub identity: Identity,
    /// The lifetime the CA granted against the one asked for; `None` from a CA that does
    /// not say.
    pub lifetime: Option<Granted>,
}

/// Renews `current` at one of the servers `servers` lists (`host:port`, comma-separated;
/// see [`crate::servers`]), returning the new identity (not yet written).
pub async fn renew(
    servers: &str,
    current: &Identity,
    opts: RenewOptions,
) -> Result<Renewed, Error> {
    crate::servers::each(servers, |addr| async move {
        renew_at(&addr, current, opts).await
    })
    .await
}

/// [`renew`] at the server `addr`.
async fn renew_at(addr: &str, current: &Identity, opts: RenewOptions) -> Result<Renewed, Error> {
    let leaf = current.leaf_info()?;
    let id = leaf.spiffe_id()?;
    if leaf.not_after <= SystemTime::now() {
        return Err(Error::Expired {
            id: id.to_string(),
            at: humantime::format_rfc3339_seconds(leaf.not_after).to_string(),
        });
    }
    let trust = ServerTrust::Bundle {
        trust_domain: id.trust_domain(),
        roots: current.bundle.clone(),
    };
    let mut client = connect_for_renewal(addr, trust, current).await?;
    let key = PrivateKey::generate(opts.key_type)?;
    let csr = build_csr(&key, &id, &leaf.dns_names)?;
    let resp = client
        .sign(v1::SignRequest {
            csr,
            ttl_seconds: opts.ttl.map(|d| d.as_secs()).unwrap_or(0),
        })
        .await
        .map_err(Error::from_status)?
        .into_inner();
    // A CA adopted into a new trust domain renews `spiffe://<old>/P` as
    // `spiffe://<new>/P`: the bundle it answers with names the trust domain to expect.
    // The CA keeps its roots when it moves, so the new chain must also verify under the
    // bundle this workload already trusts: a server under some other root cannot move it.
    let expected = match resp
        .bundle
        .as_ref()
        .map(|b| TrustDomain::parse(&b.trust_domain))
    {
        Some(Ok(td)) if !id.is_member_of(&td) => {
            verify_chain(
                &resp.chain,
                &current.bundle,
                SystemTime::now(),
                Usage::Client,
            )
            .map_err(|e| {
                Error::InvalidResponse(format!(
                    "the CA moved this identity to trust domain {td} with a chain this \
                         workload's bundle does not verify: {e}"
                ))
            })?;
            id.with_trust_domain(&td)
        }
        _ => id,
    };
    let lifetime = Granted::from_response(opts.ttl, &resp);
    Ok(Renewed {
        identity: accept(resp, &expected, key)?,
        lifetime,
    })
}

/// Renews the identity stored in `dir` at one of `addr`'s servers and replaces the files
/// as a set.
pub async fn renew_dir(addr: &str, dir: &Path, opts: RenewOptions) -> Result<Renewed, Error> {
    let current = files::read_identity(dir)?.ok_or_else(|| {
        Error::NoIdentity(format!(
            "no certificate in {}: obtain one first (writ bootstrap, or writ x509 mint)",
            dir.display()
        ))
    })?;
    let new = renew(addr, &current, opts).await?;
    files::write_identity(dir, &new.identity)?;
    Ok(new)
}

/// Checks a signing response before anything is written: the chain verifies under the
/// bundle it came with, names `expected`, and certifies `key`.
pub(crate) fn accept(
    resp: v1::SignResponse,
    expected: &SpiffeId,
    key: PrivateKey,
) -> Result<Identity, Error> {
    let bundle = resp
        .bundle
        .ok_or_else(|| Error::InvalidResponse("no trust bundle in the response".into()))?;
    let td = TrustDomain::parse(&bundle.trust_domain)
        .map_err(|e| Error::InvalidResponse(format!("bundle trust domain: {e}")))?;
    if !expected.is_member_of(&td) {
        return Err(Error::InvalidResponse(format!(
            "bundle is for trust domain {td}, not {}",
            expected.trust_domain()
        )));
    }
    let peer = verify_chain(&resp.chain, &bundle.roots, SystemTime::now(), Usage::Client)
        .map_err(|e| Error::InvalidResponse(format!("issued chain: {e}")))?;
    if peer.id != *expected {
        return Err(Error::InvalidResponse(format!(
            "the CA issued {} but {expected} was requested",
            peer.id
        )));
    }
    let identity = Identity {
        chain: resp.chain,
        key,
        bundle: bundle.roots,
    };
    identity.validate()?;
    Ok(identity)
}
