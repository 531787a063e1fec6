//! The server's record of every token, keyed by `jti`: the claims and the state, never
//! the token itself (a copy of the store must not be a stash of usable credentials).
//!
//! State moves only forward (pending → used or revoked), and every move is a
//! compare-and-swap against the exact bytes read, so concurrent movers cannot both win.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use writ_ca::SpiffeId;
use writ_ca::store::Store;

use crate::claims::{Claims, from_unix, is_expired};
use crate::{Error, Jti, Result};

/// Store tree of token records, keyed by `jti` (ASCII).
pub(crate) const TOKEN_TREE: &str = "bootstrap_tokens";
/// Version of the stored record layout.
const RECORD_VERSION: u32 = 1;

/// One stored token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Record {
    v: u32,
    pub claims: Claims,
    pub state: Stored,
}

/// The stored state; "expired" is derived from `exp`, never stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub(crate) enum Stored {
    /// Minted, not yet redeemed.
    Pending,
    /// Redeemed at `at` (Unix seconds); `serial` once the certificate is issued.
    Used { at: u64, serial: Option<String> },
    /// Revoked by an admin at `at` (Unix seconds).
    Revoked { at: u64 },
}

impl Record {
    /// A pending record for freshly minted `claims`.
    pub fn pending(claims: Claims) -> Self {
        Self {
            v: RECORD_VERSION,
            claims,
            state: Stored::Pending,
        }
    }

    /// The same record in state `state`.
    pub fn with_state(&self, state: Stored) -> Self {
        Self {
            state,
            ..self.clone()
        }
    }

    /// The stored state, without deriving expiry.
    pub fn state(&self) -> TokenState {
        match &self.state {
            Stored::Pending => TokenState::Pending,
            Stored::Used { at, serial } => TokenState::Used {
                at: from_unix(*at),
                serial: serial.clone(),
            },
            Stored::Revoked { at } => TokenState::Revoked { at: from_unix(*at) },
        }
    }

    /// The state as reported at `now` (Unix seconds): pending past `exp` is expired.
    pub fn state_at(&self, now: u64, leeway: u64) -> TokenState {
        match self.state {
            Stored::Pending if is_expired(self.claims.exp, now, leeway) => TokenState::Expired,
            _ => self.state(),
        }
    }

    /// When the record stopped mattering (use, revocation or expiry), Unix seconds;
    /// `None` while it can still be redeemed.
    pub fn finished_at(&self, now: u64, leeway: u64) -> Option<u64> {
        match &self.state {
            Stored::Used { at, .. } | Stored::Revoked { at } => Some(*at),
            Stored::Pending if is_expired(self.claims.exp, now, leeway) => Some(self.claims.exp),
            Stored::Pending => None,
        }
    }

    fn encode(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(self)
            .map_err(|e| Error::Corrupt(format!("encoding a token record: {e}")))
    }

    fn decode(key: &[u8], bytes: &[u8]) -> Result<Self> {
        let name = String::from_utf8_lossy(key);
        let rec: Record = serde_json::from_slice(bytes)
            .map_err(|e| Error::Corrupt(format!("token record {name}: {e}")))?;
        if rec.v != RECORD_VERSION || rec.claims.jti.as_str().as_bytes() != key {
            return Err(Error::Corrupt(format!(
                "token record {name}: version {} or jti does not match its key",
                rec.v
            )));
        }
        Ok(rec)
    }
}

/// A token's state as listed for admins.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenState {
    /// Minted, redeemable until it expires.
    Pending,
    /// Redeemed at `at`; `serial` (lowercase hex) once the certificate was issued.
    Used {
        /// When it was redeemed.
        at: SystemTime,
        /// The certificate it bought, once recorded.
        serial: Option<String>,
    },
    /// Revoked by an admin at `at`.
    Revoked {
        /// When it was revoked.
        at: SystemTime,
    },
    /// Never redeemed and past its `exp`.
    Expired,
}

impl fmt::Display for TokenState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TokenState::Pending => "pending",
            TokenState::Used { .. } => "used",
            TokenState::Revoked { .. } => "revoked",
            TokenState::Expired => "expired",
        })
    }
}

/// One token as `list` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenEntry {
    /// The token's id.
    pub jti: Jti,
    /// The identity it grants.
    pub spiffe_id: SpiffeId,
    /// DNS names the certificate may carry.
    pub dns: Vec<String>,
    /// When it was minted.
    pub created: SystemTime,
    /// When it expires.
    pub expires: SystemTime,
    /// Its state now.
    pub state: TokenState,
}

impl TokenEntry {
    pub(crate) fn of(rec: &Record, now: u64, leeway: u64) -> Result<Self> {
        let spiffe_id = SpiffeId::parse(&rec.claims.sub)
            .map_err(|e| Error::Corrupt(format!("token record {}: {e}", rec.claims.jti)))?;
        Ok(Self {
            jti: rec.claims.jti.clone(),
            spiffe_id,
            dns: rec.claims.dns.clone(),
            created: from_unix(rec.claims.iat),
            expires: from_unix(rec.claims.exp),
            state: rec.state_at(now, leeway),
        })
    }
}

/// The stored records over a [`Store`].
pub(crate) struct Registry {
    store: Arc<dyn Store>,
}

/// A record together with the exact bytes it was read from, for compare-and-swap.
pub(crate) struct Loaded {
    pub bytes: Vec<u8>,
    pub record: Record,
}

impl Registry {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    /// Stores a new record; false if the `jti` is taken.
    pub fn insert(&self, rec: &Record) -> Result<bool> {
        let key = rec.claims.jti.as_str().as_bytes();
        Ok(self
            .store
            .compare_and_swap(TOKEN_TREE, key, None, Some(&rec.encode()?))?)
    }

    /// The record for `jti`, if any.
    pub fn load(&self, jti: &Jti) -> Result<Option<Loaded>> {
        let key = jti.as_str().as_bytes();
        match self.store.get(TOKEN_TREE, key)? {
            None => Ok(None),
            Some(bytes) => {
                let record = Record::decode(key, &bytes)?;
                Ok(Some(Loaded { bytes, record }))
            }
        }
    }

    /// Replaces `old` with `new` (`None` deletes), durably; false if `old` changed meanwhile.
    pub fn swap(&self, old: &Loaded, new: Option<&Record>) -> Result<bool> {
        let key = old.record.claims.jti.as_str().as_bytes();
        let new = new.map(Record::encode).transpose()?;
        Ok(self
            .store
            .compare_and_swap(TOKEN_TREE, key, Some(&old.bytes), new.as_deref())?)
    }

    /// Every record, in `jti` order.
    pub fn all(&self) -> Result<Vec<Loaded>> {
        self.store
            .scan(TOKEN_TREE)?
            .into_iter()
            .map(|(key, bytes)| {
                let record = Record::decode(&key, &bytes)?;
                Ok(Loaded { bytes, record })
            })
            .collect()
    }
}
