//! A machine's first certificate: redeem a one-time bootstrap token at the CA.
//!
//! The token pins the CA root by fingerprint. The pin is checked inside the TLS handshake,
//! before any request exists, so a server with another root (an impostor, a wrong
//! address) never receives the token.

use std::io::Read;
use std::path::Path;
use std::time::{Duration, SystemTime};

use tonic::Code;
use tonic::metadata::MetadataValue;
use writ_bootstrap::{MAX_TOKEN_LEN, SecretToken, UnverifiedClaims, peek_claims};
use writ_ca::{KeyType, PrivateKey, SpiffeId, build_csr};
use writ_proto::v1;
use zeroize::Zeroizing;

use crate::Error;
use crate::client::{ServerTrust, connect};
use crate::files::{self, Identity};
use crate::lifetime::Granted;
use crate::renew::accept;

/// Slack allowed in a token file beyond the longest token: a trailing newline, an editor's
/// whitespace.
const FILE_SLACK: usize = 64;

/// What [`bootstrap`] did.
pub struct Bootstrapped {
    /// The identity now in the out dir.
    pub identity: Identity,
    /// True when a token was redeemed; false when a still-valid certificate was already
    /// there and the token was not read.
    pub redeemed: bool,
    /// The lifetime the CA granted against the one asked for, when a token was redeemed
    /// (and the CA says).
    pub lifetime: Option<Granted>,
}

/// Makes sure `out_dir` holds a valid identity: if it already has an unexpired
/// certificate, returns it without touching `token_file`; otherwise redeems the token in
/// `token_file` at the CA at `addr` (`host:port`) for a fresh `key_type` key and a
/// certificate of lifetime `ttl` (`None`: the server's default), writes the identity and
/// deletes the spent token file.
pub async fn bootstrap(
    addr: &str,
    token_file: &Path,
    out_dir: &Path,
    key_type: KeyType,
    ttl: Option<Duration>,
) -> Result<Bootstrapped, Error> {
    // Re-running bootstrap (a provisioning script, a reboot) must not need a new token.
    let existing = match files::read_identity(out_dir)? {
        Some(identity) => {
            let leaf = identity.leaf_info()?;
            if leaf.not_after > SystemTime::now() {
                return Ok(Bootstrapped {
                    identity,
                    redeemed: false,
                    lifetime: None,
                });
            }
            Some((leaf.spiffe_id()?, leaf.not_after))
        }
        None => None,
    };
    let token = match read_token_file(token_file, "bootstrap token") {
        Ok(t) => t,
        Err(e) => {
            return Err(match existing {
                Some((id, at)) => Error::NoIdentity(format!(
                    "the certificate for {id} in {} expired at {} and cannot renew, and {e}; ask an admin to mint a new token: writ token create --spiffe-id {id}",
                    out_dir.display(),
                    humantime::format_rfc3339_seconds(at)
                )),
                None => Error::NoIdentity(format!(
                    "{e}; ask an admin to mint one: writ token create --spiffe-id <ID> > FILE"
                )),
            });
        }
    };
    // Decoding goes through jsonwebtoken, which needs its process-wide provider.
    writ_bootstrap::install_crypto_provider();
    let claims = peek_claims(token.expose()).map_err(|e| {
        Error::NoIdentity(format!("bootstrap token in {}: {e}", token_file.display()))
    })?;
    let (identity, lifetime) = redeem(addr, &token, &claims, key_type, ttl).await?;
    files::write_identity(out_dir, &identity)?;
    // The token is spent; leaving it around only invites confusion (and theft of a
    // now-useless secret).
    if let Err(e) = std::fs::remove_file(token_file) {
        tracing::warn!(path = %token_file.display(), error = %e, "could not delete the spent bootstrap token file");
    }
    tracing::info!(spiffe_id = %claims.spiffe_id, jti = %claims.jti, "bootstrapped");
    Ok(Bootstrapped {
        identity,
        redeemed: true,
        lifetime,
    })
}

/// Presents `token` to one of the CA servers `addr` lists with a CSR for a new key, asking
/// for lifetime `ttl`, and checks the answer: the identity and what lifetime was granted.
/// Nothing is written. A replica that cannot be reached or answers `UNAVAILABLE` gave
/// nothing away (the token is only sent after the pinned handshake), so the next is tried;
/// one that consumed the token answers, and a replay elsewhere is refused as used.
pub async fn redeem(
    addr: &str,
    token: &SecretToken,
    claims: &UnverifiedClaims,
    key_type: KeyType,
    ttl: Option<Duration>,
) -> Result<(Identity, Option<Granted>), Error> {
    crate::servers::each(addr, |one| async move {
        redeem_at(&one, token, claims, key_type, ttl).await
    })
    .await
}

async fn redeem_at(
    addr: &str,
    token: &SecretToken,
    claims: &UnverifiedClaims,
    key_type: KeyType,
    ttl: Option<Duration>,
) -> Result<(Identity, Option<Granted>), Error> {
    let id = &claims.spiffe_id;
    let trust = ServerTrust::PinnedRoot {
        trust_domain: id.trust_domain(),
        fingerprint: claims.ca_fingerprint.clone(),
    };
    // No client certificate: the token is the credential. The pin is enforced by the
    // handshake inside `connect`, before the token is attached to anything.
    let mut client = connect(addr, trust, None).await?;
    let key = PrivateKey::generate(key_type)?;
    let csr = build_csr(&key, id, &claims.dns)?;
    let mut req = tonic::Request::new(v1::SignRequest {
        csr,
        ttl_seconds: ttl.map_or(0, |d| d.as_secs()),
    });
    let header = Zeroizing::new(format!("Bearer {}", token.expose()));
    let value = MetadataValue::try_from(header.as_str()).map_err(|_| {
        Error::NoIdentity(
            "the bootstrap token contains characters a request header cannot carry; paste the token exactly as minted".into(),
        )
    })?;
    req.metadata_mut().insert("authorization", value);
    let resp = client
        .sign(req)
        .await
        .map_err(|s| refused(s, id))?
        .into_inner();
    let lifetime = Granted::from_response(ttl, &resp);
    Ok((accept(resp, id, key)?, lifetime))
}

/// A refusal, with what the admin can do about a token that cannot work. A denied identity
/// already says what to do (a new token would be refused too), so it gets no hint.
fn refused(status: tonic::Status, id: &SpiffeId) -> Error {
    match Error::from_status(status) {
        Error::Rejected { code, message }
            if matches!(code, Code::PermissionDenied | Code::Unauthenticated)
                && !message.contains("writ identity allow") =>
        {
            Error::Rejected {
                code,
                message: format!("{message} (admin: writ token create --spiffe-id {id})"),
            }
        }
        other => other,
    }
}

/// Reads a token file (`kind` names it in errors: "bootstrap token", "JWT"): bounded,
/// trimmed, never echoed. The error is a clause to embed.
pub(crate) fn read_token_file(path: &Path, kind: &str) -> Result<SecretToken, String> {
    let file = std::fs::File::open(path)
        .map_err(|e| format!("no {kind} could be read from {}: {e}", path.display()))?;
    let mut buf = Zeroizing::new(Vec::new());
    let limit = MAX_TOKEN_LEN + FILE_SLACK;
    file.take(limit as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| format!("reading the {kind} {}: {e}", path.display()))?;
    if buf.len() > limit {
        return Err(format!(
            "{} is larger than any {kind} ({MAX_TOKEN_LEN} bytes at most); is it the right file?",
            path.display()
        ));
    }
    let text = std::str::from_utf8(&buf)
        .map_err(|_| format!("{} is not a {kind} (not text)", path.display()))?
        .trim();
    if text.is_empty() {
        return Err(format!("the {kind} file {} is empty", path.display()));
    }
    Ok(SecretToken::new(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_files_are_bounded_and_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t");
        let read = |p: &Path| read_token_file(p, "bootstrap token");
        std::fs::write(&p, "  abc.def.ghi\n").unwrap();
        assert_eq!(read(&p).unwrap().expose(), "abc.def.ghi");
        std::fs::write(&p, "\n").unwrap();
        assert!(read(&p).unwrap_err().contains("empty"));
        std::fs::write(&p, vec![b'a'; MAX_TOKEN_LEN + FILE_SLACK + 1]).unwrap();
        let e = read(&p).unwrap_err();
        assert!(e.contains("larger"));
        assert!(!e.contains("aaaa"));
        assert!(read(&dir.path().join("missing")).is_err());
    }
}
