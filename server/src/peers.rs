//! A cache of verified client certificates. The TLS handshake proves a client holds the key
//! of the leaf it presents; whether that leaf chains to the bundle depends only on the leaf
//! and the bundle, so the answer is reused until the leaf expires or the bundle changes,
//! instead of re-verifying the chain (two signature checks) on every request.
//!
//! Leaves this server has just issued enter the cache at issuance: the CA knows what it
//! signed, so an agent that reconnects with the certificate its renewal returned (as
//! every agent does at its next rotation) is not verified again. That is one ECDSA
//! verification and a certificate parse less per new connection, about a tenth of the
//! server's work for a renewal on a fresh connection.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::SystemTime;

use writ_ca::SpiffeId;

/// Entries kept at most; the cache is emptied when full (a crude bound that keeps memory
/// flat under a flood of distinct certificates).
const MAX_ENTRIES: usize = 16_384;

/// Verified leaves by SHA-256 of their DER.
#[derive(Default)]
pub(crate) struct PeerCache {
    map: Mutex<HashMap<[u8; 32], Verified>>,
}

/// What a verified leaf proved.
#[derive(Clone)]
pub(crate) struct Verified {
    pub id: SpiffeId,
    pub dns_names: Vec<String>,
    /// How the leaf became known.
    pub origin: Origin,
    not_after: SystemTime,
    bundle_sequence: u64,
}

/// How a leaf in the cache became known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    /// Its chain was verified when a client presented it.
    Verified,
    /// This server issued it.
    Issued,
}

impl PeerCache {
    /// The cached result for `leaf`, if it was verified under this bundle and has not expired.
    pub(crate) fn get(
        &self,
        leaf: &[u8],
        bundle_sequence: u64,
        now: SystemTime,
    ) -> Option<Verified> {
        let key = digest(leaf);
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&key)
            .filter(|v| v.bundle_sequence == bundle_sequence && v.not_after > now)
            .cloned()
    }

    /// Remembers that `leaf` proves `id` under the bundle with `bundle_sequence`.
    pub(crate) fn put(
        &self,
        leaf: &[u8],
        id: SpiffeId,
        dns_names: Vec<String>,
        not_after: SystemTime,
        bundle_sequence: u64,
        origin: Origin,
    ) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
        map.insert(
            digest(leaf),
            Verified {
                id,
                dns_names,
                origin,
                not_after,
                bundle_sequence,
            },
        );
    }
}

impl PeerCache {
    /// Drops every entry proving `id` (after it is denied).
    pub(crate) fn forget(&self, id: &SpiffeId) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, v| &v.id != id);
    }
}

fn digest(leaf: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, leaf);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn entries_expire_and_follow_the_bundle() {
        let c = PeerCache::default();
        let id = SpiffeId::parse("spiffe://td/a").unwrap();
        let now = SystemTime::now();
        c.put(
            b"leaf",
            id.clone(),
            vec![],
            now + Duration::from_secs(60),
            7,
            Origin::Issued,
        );
        let hit = c.get(b"leaf", 7, now).unwrap();
        assert_eq!((hit.id.clone(), hit.origin), (id.clone(), Origin::Issued));
        assert!(
            c.get(b"leaf", 8, now).is_none(),
            "a new bundle must re-verify"
        );
        assert!(
            c.get(b"leaf", 7, now + Duration::from_secs(61)).is_none(),
            "expired"
        );
        assert!(c.get(b"other", 7, now).is_none());
        c.forget(&id);
        assert!(c.get(b"leaf", 7, now).is_none(), "forgotten after a deny");
    }
}
