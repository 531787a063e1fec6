//! Trusted platform-JWT issuers and their JWKS files, reloaded when a file changes.
//!
//! Verification itself is [`writ_bootstrap::verify_platform_token`]; this module owns the
//! I/O: reading each issuer's key set, and noticing when an operator (or a sync job
//! copying the cluster's `/openid/v1/jwks`) replaces it.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use writ_bootstrap::{Error as TokenError, JwkSet, PlatformIdentity, PlatformIssuer};
use writ_ca::TrustDomain;

use crate::Error;

/// The largest JWKS file read; real ones are a few KiB.
const MAX_JWKS_LEN: u64 = 1024 * 1024;

/// An issuer as configured: its rules and where its keys live.
#[derive(Clone, Debug)]
pub struct JwtIssuerSettings {
    /// Who it is and what its tokens must say.
    pub issuer: PlatformIssuer,
    /// Its JWKS, as a file.
    pub jwks_file: PathBuf,
}

/// Every trusted issuer with its current keys.
pub(crate) struct PlatformAuth {
    issuers: Vec<TrustedIssuer>,
    trust_domain: TrustDomain,
}

struct TrustedIssuer {
    rules: PlatformIssuer,
    jwks: JwksFile,
}

impl PlatformAuth {
    /// Loads every issuer's keys; a missing or unreadable JWKS refuses start-up, since
    /// the operator asked for that issuer to work.
    pub(crate) fn load(settings: &[JwtIssuerSettings], td: TrustDomain) -> Result<Self, Error> {
        let issuers = settings
            .iter()
            .map(|s| {
                Ok(TrustedIssuer {
                    rules: s.issuer.clone(),
                    jwks: JwksFile::load(&s.jwks_file).map_err(|e| {
                        Error::Config(format!("jwt issuer {:?}: {e}", s.issuer.issuer))
                    })?,
                })
            })
            .collect::<Result<_, Error>>()?;
        Ok(Self {
            issuers,
            trust_domain: td,
        })
    }

    /// Whether `iss` is a configured issuer.
    pub(crate) fn trusts(&self, iss: &str) -> bool {
        self.issuers.iter().any(|i| i.rules.issuer == iss)
    }

    /// Verifies a token from the issuer it names.
    pub(crate) fn verify(
        &self,
        token: &str,
        now: SystemTime,
    ) -> Result<PlatformIdentity, TokenError> {
        let iss = writ_bootstrap::peek_issuer(token)?;
        let issuer = self
            .issuers
            .iter()
            .find(|i| i.rules.issuer == iss)
            .ok_or_else(|| TokenError::UntrustedIssuer {
                issuer: iss.chars().take(64).collect(),
            })?;
        let keys = issuer.jwks.current();
        writ_bootstrap::verify_platform_token(token, &issuer.rules, &keys, &self.trust_domain, now)
    }
}

/// What identifies one version of a file without reading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

impl Stamp {
    fn of(m: &std::fs::Metadata) -> Self {
        Self {
            modified: m.modified().ok(),
            len: m.len(),
            inode: m.ino(),
        }
    }
}

/// A JWKS file and the keys last read from it.
struct JwksFile {
    path: PathBuf,
    cached: RwLock<(Stamp, Arc<JwkSet>)>,
}

impl JwksFile {
    fn load(path: &Path) -> Result<Self, String> {
        let (stamp, keys) = read_jwks(path)?;
        Ok(Self {
            path: path.to_owned(),
            cached: RwLock::new((stamp, Arc::new(keys))),
        })
    }

    /// The current keys, re-read when the file changed. A stat per verification is
    /// far cheaper than the signature check; a bad new file keeps the last good keys, so
    /// a botched copy cannot lock every workload out.
    fn current(&self) -> Arc<JwkSet> {
        let stamp = std::fs::metadata(&self.path).ok().map(|m| Stamp::of(&m));
        {
            let cached = self.cached.read().unwrap_or_else(|e| e.into_inner());
            if stamp.is_none_or(|s| s == cached.0) {
                if stamp.is_none() {
                    tracing::warn!(path = %self.path.display(), "JWKS file is gone; keeping the keys last read");
                }
                return cached.1.clone();
            }
        }
        let mut cached = self.cached.write().unwrap_or_else(|e| e.into_inner());
        match read_jwks(&self.path) {
            Ok((stamp, keys)) => {
                tracing::info!(path = %self.path.display(), keys = keys.keys.len(), "JWKS reloaded");
                *cached = (stamp, Arc::new(keys));
            }
            Err(e) => {
                tracing::error!(path = %self.path.display(), error = %e, "JWKS file changed but is unusable; keeping the keys last read");
                // Remember the bad version so it is not re-read on every request.
                if let Some(s) = stamp {
                    cached.0 = s;
                }
            }
        }
        cached.1.clone()
    }
}

fn read_jwks(path: &Path) -> Result<(Stamp, JwkSet), String> {
    use std::io::Read;
    let file = std::fs::File::open(path)
        .map_err(|e| format!("reading JWKS file {}: {e}", path.display()))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("reading JWKS file {}: {e}", path.display()))?;
    if meta.len() > MAX_JWKS_LEN {
        return Err(format!(
            "JWKS file {} is {} bytes; at most {MAX_JWKS_LEN} are read",
            path.display(),
            meta.len()
        ));
    }
    let mut text = Vec::new();
    file.take(MAX_JWKS_LEN + 1)
        .read_to_end(&mut text)
        .map_err(|e| format!("reading JWKS file {}: {e}", path.display()))?;
    let keys: JwkSet = serde_json::from_slice(&text).map_err(|e| {
        format!(
            "JWKS file {} is not a JSON Web Key Set ({{\"keys\": [...]}}): {e}",
            path.display()
        )
    })?;
    if keys.keys.is_empty() {
        return Err(format!("JWKS file {} holds no keys", path.display()));
    }
    Ok((Stamp::of(&meta), keys))
}

#[cfg(test)]
mod tests {
    use super::*;

    const JWKS: &str = r#"{"keys":[{"kty":"EC","kid":"a","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}"#;

    #[test]
    fn keys_reload_when_the_file_changes_and_survive_a_bad_copy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        std::fs::write(&path, JWKS).unwrap();
        let f = JwksFile::load(&path).unwrap();
        assert_eq!(f.current().keys[0].common.key_id.as_deref(), Some("a"));

        // A replacement (new inode, as `mv` or a ConfigMap update makes) is picked up.
        let tmp = dir.path().join("new.json");
        std::fs::write(&tmp, JWKS.replace("\"a\"", "\"b2\"")).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        assert_eq!(f.current().keys[0].common.key_id.as_deref(), Some("b2"));

        // A broken replacement keeps the last good keys.
        std::fs::write(&tmp, "{not json").unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        assert_eq!(f.current().keys[0].common.key_id.as_deref(), Some("b2"));
        std::fs::remove_file(&path).unwrap();
        assert_eq!(f.current().keys.len(), 1);
    }

    #[test]
    fn unusable_files_are_refused_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        assert!(JwksFile::load(&path).is_err());
        std::fs::write(&path, r#"{"keys":[]}"#).unwrap();
        assert!(JwksFile::load(&path).err().unwrap().contains("no keys"));
        std::fs::write(&path, "[]").unwrap();
        assert!(
            JwksFile::load(&path)
                .err()
                .unwrap()
                .contains("JSON Web Key Set")
        );
        std::fs::write(&path, vec![b' '; MAX_JWKS_LEN as usize + 1]).unwrap();
        assert!(JwksFile::load(&path).err().unwrap().contains("at most"));
    }
}
