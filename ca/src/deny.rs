//! Denied identities: SPIFFE IDs the CA issues nothing for, whatever the caller proves
//! (a valid client certificate, a bootstrap token, a platform JWT, an admin mint).
//!
//! Kept in memory for the issuance check (a hash lookup per certificate) and in the store
//! tree `denied_identities` (SPIFFE ID → JSON), so a deny survives restarts.

use std::collections::BTreeMap;
use std::sync::RwLock;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::store::Store;
use crate::{Error, SpiffeId};

const TREE: &str = "denied_identities";

/// A denied identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeniedIdentity {
    /// The identity.
    pub id: SpiffeId,
    /// Why, as the admin wrote it (never shown to the denied caller).
    pub reason: String,
    /// When it was denied.
    pub since: SystemTime,
}

#[derive(Serialize, Deserialize)]
struct Stored {
    reason: String,
    since: u64,
}

/// The deny set, loaded once and updated through [`DenyList::deny`]/[`DenyList::allow`].
pub(crate) struct DenyList {
    denied: RwLock<BTreeMap<String, DeniedIdentity>>,
}

impl DenyList {
    /// Loads every denied identity from `store`, once: later changes go through this list
    /// (see the single-process note on [`crate::Authority`]).
    pub(crate) fn load(store: &dyn Store) -> Result<Self, Error> {
        let mut denied = BTreeMap::new();
        for (k, v) in store.scan(TREE)? {
            let id = std::str::from_utf8(&k)
                .ok()
                .and_then(|s| SpiffeId::parse(s).ok())
                .ok_or_else(|| Error::Corrupt("denied identity key is not a SPIFFE ID".into()))?;
            let s: Stored = serde_json::from_slice(&v)
                .map_err(|e| Error::Corrupt(format!("denied identity {id}: {e}")))?;
            denied.insert(
                id.to_string(),
                DeniedIdentity {
                    id,
                    reason: s.reason,
                    since: SystemTime::UNIX_EPOCH + Duration::from_secs(s.since),
                },
            );
        }
        Ok(Self {
            denied: RwLock::new(denied),
        })
    }

    /// Refuses `id` if it is denied.
    pub(crate) fn check(&self, id: &SpiffeId) -> Result<(), Error> {
        if self.read().contains_key(id.as_str()) {
            return Err(Error::IdentityDenied { id: id.to_string() });
        }
        Ok(())
    }

    /// Denies `id` durably (replacing the reason if it was already denied).
    pub(crate) fn deny(
        &self,
        store: &dyn Store,
        id: &SpiffeId,
        reason: &str,
        now: SystemTime,
    ) -> Result<DeniedIdentity, Error> {
        let since = crate::generation::unix(now);
        let value = serde_json::to_vec(&Stored {
            reason: reason.to_owned(),
            since,
        })
        .map_err(|e| Error::Storage(e.to_string()))?;
        // Write lock across the store write: a concurrent allow of the same ID cannot
        // interleave so that memory and store disagree.
        let mut denied = self.write();
        store.put(TREE, id.as_str().as_bytes(), &value)?;
        let entry = DeniedIdentity {
            id: id.clone(),
            reason: reason.to_owned(),
            since: SystemTime::UNIX_EPOCH + Duration::from_secs(since),
        };
        denied.insert(id.to_string(), entry.clone());
        Ok(entry)
    }

    /// Lifts a deny; returns whether `id` was denied.
    pub(crate) fn allow(&self, store: &dyn Store, id: &SpiffeId) -> Result<bool, Error> {
        let mut denied = self.write();
        let Some(old) = store.get(TREE, id.as_str().as_bytes())? else {
            return Ok(false);
        };
        store.compare_and_swap(TREE, id.as_str().as_bytes(), Some(&old), None)?;
        Ok(denied.remove(id.as_str()).is_some())
    }

    /// Every denied identity, by ID.
    pub(crate) fn list(&self) -> Vec<DeniedIdentity> {
        self.read().values().cloned().collect()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, DeniedIdentity>> {
        // Entries are inserted or removed whole; a poisoned lock still holds a valid map.
        self.denied.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, DeniedIdentity>> {
        self.denied.write().unwrap_or_else(|p| p.into_inner())
    }
}
