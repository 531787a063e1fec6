//! The bootstrap service: mint, list, revoke, verify, consume, record and prune tokens.
//!
//! The server redeems a token in this order: [`Bootstrap::verify`] → evaluate the CSR →
//! [`Bootstrap::consume`] → issue → [`Bootstrap::record_serial`]. Only `consume` changes
//! state, so a request refused before it leaves the token redeemable.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use writ_ca::store::Store;
use writ_ca::{SpiffeId, TrustDomain, Ttl, is_dns_name};

use crate::claims::{Claims, audience, from_unix, is_expired, is_fingerprint, issuer, unix_secs};
use crate::registry::{Loaded, Record, Registry, Stored};
use crate::signer::TokenSigner;
use crate::{Error, Jti, MAX_TOKEN_LEN, Result, SecretToken, TokenEntry, install_crypto_provider};
use writ_ca::seal::Sealer;

/// The most clock skew tolerated: more would quietly stretch every token's lifetime.
const MAX_LEEWAY: Duration = Duration::from_secs(300);

/// How tokens are minted and checked; fixed for the life of the process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootstrapSettings {
    /// Lifetime when the admin asks for none (default 15 minutes).
    pub default_ttl: Ttl,
    /// The longest lifetime an admin may ask for (default 24 hours).
    pub max_ttl: Ttl,
    /// Clock skew tolerated on `nbf` and `exp` (default 30 seconds).
    pub leeway: Duration,
    /// Trust domains the CA served before a migration: a token-signing key sealed under
    /// one of them is opened and re-sealed under the current trust domain.
    pub previous_trust_domains: Vec<TrustDomain>,
}

impl Default for BootstrapSettings {
    fn default() -> Self {
        Self {
            default_ttl: Ttl::from_secs(15 * 60),
            max_ttl: Ttl::from_secs(24 * 3600),
            leeway: Duration::from_secs(30),
            previous_trust_domains: Vec::new(),
        }
    }
}

/// A freshly minted token and what it grants. `Debug` redacts the token.
#[derive(Debug)]
pub struct MintedToken {
    /// The token, to hand to the machine (once: it is not stored).
    pub token: SecretToken,
    /// Its id, for `list` and `revoke`.
    pub jti: Jti,
    /// The identity it grants.
    pub spiffe_id: SpiffeId,
    /// DNS names the certificate may carry.
    pub dns: Vec<String>,
    /// When it expires.
    pub expires_at: SystemTime,
    /// The CA root fingerprint the machine will pin.
    pub ca_fingerprint: String,
}

/// A token that passed every check at one instant. Only [`Bootstrap::verify`] makes one,
/// so [`Bootstrap::consume`] cannot be handed unchecked claims.
#[derive(Clone, Debug)]
pub struct VerifiedToken {
    claims: Claims,
    spiffe_id: SpiffeId,
}

impl VerifiedToken {
    /// The token's id.
    pub fn jti(&self) -> &Jti {
        &self.claims.jti
    }
    /// The identity the token grants: the only one the CSR may ask for.
    pub fn spiffe_id(&self) -> &SpiffeId {
        &self.spiffe_id
    }
    /// DNS names the certificate may carry.
    pub fn dns(&self) -> &[String] {
        &self.claims.dns
    }
    /// When the token expires.
    pub fn expires_at(&self) -> SystemTime {
        from_unix(self.claims.exp)
    }
    /// The CA root fingerprint the token was minted for.
    pub fn ca_fingerprint(&self) -> &str {
        &self.claims.ca_fingerprint
    }
}

/// One-time bootstrap tokens for one trust domain, over the CA's store.
pub struct Bootstrap {
    registry: Registry,
    signer: TokenSigner,
    trust_domain: TrustDomain,
    settings: BootstrapSettings,
}

impl Bootstrap {
    /// Loads the token-signing key from `store`, creating it on first use, stored
    /// unencrypted (development mode; see [`Bootstrap::open_sealed`]).
    pub fn open(
        store: Arc<dyn Store>,
        trust_domain: TrustDomain,
        settings: BootstrapSettings,
    ) -> Result<Self> {
        Self::open_sealed(store, trust_domain, settings, &Sealer::Plaintext)
    }

    /// Like [`Bootstrap::open`], with the token-signing key sealed by `sealer` (the CA's,
    /// from [`writ_ca::seal::unlock`]); a key found unencrypted is sealed at once.
    pub fn open_sealed(
        store: Arc<dyn Store>,
        trust_domain: TrustDomain,
        settings: BootstrapSettings,
        sealer: &Sealer,
    ) -> Result<Self> {
        if settings.default_ttl > settings.max_ttl {
            return Err(Error::InvalidInput(format!(
                "bootstrap default TTL {} exceeds the max TTL {}",
                settings.default_ttl, settings.max_ttl
            )));
        }
        if settings.leeway > MAX_LEEWAY {
            return Err(Error::InvalidInput(format!(
                "bootstrap clock-skew leeway {}s is over the {}s allowed: fix the clocks instead",
                settings.leeway.as_secs(),
                MAX_LEEWAY.as_secs()
            )));
        }
        install_crypto_provider();
        let signer = TokenSigner::load_or_create(
            store.as_ref(),
            sealer,
            &trust_domain,
            &settings.previous_trust_domains,
        )?;
        Ok(Self {
            registry: Registry::new(store),
            signer,
            trust_domain,
            settings,
        })
    }

    /// The trust domain tokens are minted for.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The settings in force.
    pub fn settings(&self) -> &BootstrapSettings {
        &self.settings
    }

    /// Mints a token granting `id` (and optionally `dns` names) for `ttl` (default
    /// [`BootstrapSettings::default_ttl`]), pinned to the CA root `ca_fingerprint`.
    pub fn mint(
        &self,
        id: &SpiffeId,
        ttl: Option<Ttl>,
        dns: Vec<String>,
        ca_fingerprint: &str,
        now: SystemTime,
    ) -> Result<MintedToken> {
        let td = &self.trust_domain;
        if !id.is_member_of(td) || !id.is_workload() {
            return Err(Error::InvalidInput(format!(
                "{id} is not a workload identity in trust domain {td}; this CA grants only spiffe://{td}/..."
            )));
        }
        let ttl = ttl.unwrap_or(self.settings.default_ttl);
        if ttl > self.settings.max_ttl {
            return Err(Error::TtlTooLong {
                requested: ttl,
                max: self.settings.max_ttl,
            });
        }
        if let Some(bad) = dns.iter().find(|n| !is_dns_name(n)) {
            return Err(Error::InvalidInput(format!(
                "{:?} is not a DNS name (RFC 1123 labels, optionally starting with *.)",
                bad.chars().take(80).collect::<String>()
            )));
        }
        if !is_fingerprint(ca_fingerprint) {
            return Err(Error::InvalidInput(
                "the CA fingerprint must be the root certificate's SHA-256 as 64 lowercase hex digits".into(),
            ));
        }
        let iat = unix_secs(now);
        let claims = Claims {
            iss: issuer(td),
            aud: audience(td),
            sub: id.to_string(),
            jti: Jti::generate()?,
            iat,
            nbf: iat,
            exp: iat.saturating_add(ttl.secs()),
            ca_fingerprint: ca_fingerprint.to_owned(),
            dns,
        };
        let token = self.signer.sign(&claims)?;
        if token.expose().len() > MAX_TOKEN_LEN {
            return Err(Error::InvalidInput(format!(
                "the token would be {} bytes, over the {MAX_TOKEN_LEN} the CA accepts: grant fewer DNS names",
                token.expose().len()
            )));
        }
        if !self.registry.insert(&Record::pending(claims.clone()))? {
            // 128 random bits collided: astronomically unlikely, and the token was never seen.
            return Err(Error::Corrupt(format!(
                "token id {} already exists",
                claims.jti
            )));
        }
        tracing::info!(jti = %claims.jti, spiffe_id = %id, ttl = %ttl, "minted bootstrap token");
        Ok(MintedToken {
            token,
            jti: claims.jti,
            spiffe_id: id.clone(),
            dns: claims.dns,
            expires_at: from_unix(claims.exp),
            ca_fingerprint: claims.ca_fingerprint,
        })
    }

    /// Every stored token and its state at `now`, oldest first.
    pub fn list(&self, now: SystemTime) -> Result<Vec<TokenEntry>> {
        let (now, leeway) = (unix_secs(now), self.settings.leeway.as_secs());
        let mut entries = self
            .registry
            .all()?
            .iter()
            .map(|l| TokenEntry::of(&l.record, now, leeway))
            .collect::<Result<Vec<_>>>()?;
        entries.sort_by(|a, b| (a.created, &a.jti).cmp(&(b.created, &b.jti)));
        Ok(entries)
    }

    /// Revokes a pending (or expired) token; revoking a revoked token is a no-op.
    pub fn revoke(&self, jti: &Jti, now: SystemTime) -> Result<()> {
        // State only moves forward, so this settles within two rounds; the bound only
        // guards against a misbehaving store.
        for _ in 0..MAX_ROUNDS {
            let loaded = self
                .registry
                .load(jti)?
                .ok_or_else(|| Error::NotFound { jti: jti.clone() })?;
            match &loaded.record.state {
                Stored::Revoked { .. } => return Ok(()),
                Stored::Used { .. } => {
                    return Err(Error::WrongState {
                        jti: jti.clone(),
                        state: loaded.record.state(),
                        action: "revoke",
                    });
                }
                Stored::Pending => {
                    let revoked = loaded
                        .record
                        .with_state(Stored::Revoked { at: unix_secs(now) });
                    if self.registry.swap(&loaded, Some(&revoked))? {
                        tracing::info!(jti = %jti, "revoked bootstrap token");
                        return Ok(());
                    }
                }
            }
        }
        Err(unsettled(jti))
    }

    /// Checks `token` completely at `now` without changing any state: size, shape, ES256
    /// signature by this CA's key, issuer, audience, validity window, a stored record
    /// equal to its claims, and that it is still pending.
    pub fn verify(&self, token: &str, now: SystemTime) -> Result<VerifiedToken> {
        self.verify_inner(token, now).inspect_err(log_rejection)
    }

    fn verify_inner(&self, token: &str, now: SystemTime) -> Result<VerifiedToken> {
        let claims = self.signer.verify(token)?;
        claims.check(&self.trust_domain, now, self.settings.leeway)?;
        let spiffe_id = SpiffeId::parse(&claims.sub)
            .ok()
            .filter(|id| id.is_member_of(&self.trust_domain))
            .ok_or(Error::Malformed(
                "`sub` is not a workload in this trust domain",
            ))?;
        let loaded = self
            .registry
            .load(&claims.jti)?
            .ok_or_else(|| Error::UnknownToken {
                jti: claims.jti.clone(),
            })?;
        require_pending(&loaded, &claims)?;
        Ok(VerifiedToken { claims, spiffe_id })
    }

    /// Marks a verified token used at `now`, durably and atomically: of any number of
    /// concurrent callers exactly one succeeds, the rest get [`Error::AlreadyUsed`].
    pub fn consume(&self, verified: &VerifiedToken, now: SystemTime) -> Result<()> {
        self.consume_inner(verified, now).inspect_err(log_rejection)
    }

    fn consume_inner(&self, verified: &VerifiedToken, now: SystemTime) -> Result<()> {
        let claims = &verified.claims;
        let jti = &claims.jti;
        let now = unix_secs(now);
        // Evaluating the CSR takes time; the token may have expired since `verify`.
        if is_expired(claims.exp, now, self.settings.leeway.as_secs()) {
            return Err(Error::Expired {
                jti: jti.clone(),
                expired_at: from_unix(claims.exp),
            });
        }
        let unknown = || Error::UnknownToken { jti: jti.clone() };
        let loaded = self.registry.load(jti)?.ok_or_else(unknown)?;
        require_pending(&loaded, claims)?;
        let used = loaded.record.with_state(Stored::Used {
            at: now,
            serial: None,
        });
        if self.registry.swap(&loaded, Some(&used))? {
            tracing::info!(jti = %jti, spiffe_id = %verified.spiffe_id, "consumed bootstrap token");
            return Ok(());
        }
        // Another caller moved it first: report what it became.
        let now_stored = self.registry.load(jti)?.ok_or_else(unknown)?;
        require_pending(&now_stored, claims)?;
        Err(Error::AlreadyUsed { jti: jti.clone() })
    }

    /// Records the serial (lowercase hex) of the certificate a consumed token bought.
    /// Recording the same serial again is a no-op.
    pub fn record_serial(&self, jti: &Jti, serial: &str) -> Result<()> {
        let hex = serial
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        // RFC 5280 §4.1.2.2: at most 20 octets.
        if serial.is_empty() || serial.len() > 40 || !hex {
            return Err(Error::InvalidInput(format!(
                "certificate serial {:?} is not 1-40 lowercase hex digits",
                serial.chars().take(48).collect::<String>()
            )));
        }
        // State only moves forward, so this settles within two rounds; the bound only
        // guards against a misbehaving store.
        for _ in 0..MAX_ROUNDS {
            let loaded = self
                .registry
                .load(jti)?
                .ok_or_else(|| Error::NotFound { jti: jti.clone() })?;
            match &loaded.record.state {
                Stored::Used {
                    serial: Some(s), ..
                } if s == serial => return Ok(()),
                Stored::Used { serial: None, at } => {
                    let state = Stored::Used {
                        at: *at,
                        serial: Some(serial.to_owned()),
                    };
                    if self
                        .registry
                        .swap(&loaded, Some(&loaded.record.with_state(state)))?
                    {
                        tracing::info!(jti = %jti, serial, "bootstrap token bought a certificate");
                        return Ok(());
                    }
                }
                _ => {
                    return Err(Error::WrongState {
                        jti: jti.clone(),
                        state: loaded.record.state(),
                        action: "record a certificate serial for",
                    });
                }
            }
        }
        Err(unsettled(jti))
    }

    /// Deletes used, revoked and expired records whose use, revocation or expiry is at
    /// least `retention` before `now`; returns how many. Pending tokens are never pruned.
    /// A pruned token stays unusable: its `jti` is then unknown.
    pub fn prune(&self, retention: Duration, now: SystemTime) -> Result<usize> {
        let (now, leeway) = (unix_secs(now), self.settings.leeway.as_secs());
        let mut removed = 0;
        for loaded in self.registry.all()? {
            let Some(done) = loaded.record.finished_at(now, leeway) else {
                continue;
            };
            // Compare-and-swap on the bytes read: a record that moved meanwhile waits for
            // the next prune.
            if done.saturating_add(retention.as_secs()) <= now
                && self.registry.swap(&loaded, None)?
            {
                removed += 1;
            }
        }
        if removed > 0 {
            tracing::info!(removed, "pruned bootstrap token records");
        }
        Ok(removed)
    }
}

/// Rounds of read-then-swap before giving up on a record that keeps changing.
const MAX_ROUNDS: usize = 4;

/// The error for a record that changed under every compare-and-swap attempt.
fn unsettled(jti: &Jti) -> Error {
    Error::Corrupt(format!(
        "token record {jti} changed under every update attempt; is another writer using this store?"
    ))
}

/// The stored record must be exactly what was minted, and still pending.
fn require_pending(loaded: &Loaded, claims: &Claims) -> Result<()> {
    let jti = claims.jti.clone();
    if loaded.record.claims != *claims {
        return Err(Error::ClaimsMismatch { jti });
    }
    match loaded.record.state {
        Stored::Pending => Ok(()),
        Stored::Used { .. } => Err(Error::AlreadyUsed { jti }),
        Stored::Revoked { .. } => Err(Error::Revoked { jti }),
    }
}

/// Logs a refusal; the error names the `jti` when one is known, never the token.
fn log_rejection(e: &Error) {
    match e.jti() {
        Some(jti) => tracing::warn!(jti = %jti, error = %e, "bootstrap token rejected"),
        None => tracing::info!(error = %e, "bootstrap token rejected"),
    }
}

#[cfg(test)]
mod tests;
