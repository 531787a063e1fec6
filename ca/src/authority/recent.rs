//! Leaves this CA issued lately, read back from the issuance log, so a server that has
//! just restarted recognises the certificates its agents reconnect with as it would have
//! before the restart.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::Authority;
use crate::generation::unix;
use crate::store::IssuanceRecord;
use crate::{Error, GenerationState, SpiffeId};

/// Recently issued, unexpired leaves and the bundle they chain under.
#[derive(Clone, Debug)]
pub struct RecentLeaves {
    /// The bundle sequence read before the log: if the bundle changes while the log is
    /// read, the leaves carry the older sequence and a cache keyed on it ignores them.
    pub bundle_sequence: u64,
    /// Newest first.
    pub leaves: Vec<RecentLeaf>,
}

/// One issued leaf as the issuance log records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecentLeaf {
    /// SHA-256 of the certificate's DER.
    pub fingerprint: [u8; 32],
    /// The identity it was issued for.
    pub id: SpiffeId,
    /// Its notAfter.
    pub not_after: SystemTime,
}

fn recent_leaf(r: &IssuanceRecord) -> Option<RecentLeaf> {
    let mut fingerprint = [0u8; 32];
    hex::decode_to_slice(&r.fingerprint, &mut fingerprint).ok()?;
    Some(RecentLeaf {
        fingerprint,
        id: SpiffeId::parse(&r.spiffe_id).ok()?,
        not_after: UNIX_EPOCH + Duration::from_secs(r.not_after),
    })
}

impl Authority {
    /// Of the newest `limit` issuance records, the leaves unexpired at `now` that chain
    /// to a root of this CA's own that is still in the bundle: signed by the active or the
    /// previous generation, not an imported one (its external root may constrain names
    /// the log does not record), for an identity in the CA's trust domain that is not
    /// denied. The server's own serving certificates are left out.
    pub fn recent_leaves(&self, limit: usize, now: SystemTime) -> Result<RecentLeaves, Error> {
        let (bundle_sequence, signers) = {
            let state = self.read();
            let signers: Vec<u64> = state
                .generations
                .iter()
                .filter(|g| {
                    !g.imported
                        && matches!(g.state, GenerationState::Active | GenerationState::Previous)
                })
                .map(|g| g.id)
                .collect();
            (state.bundle_sequence, signers)
        };
        let now = unix(now);
        // Streamed rather than collected: the log's records are several times the size of
        // what is kept from them.
        let (mut leaves, mut read) = (Vec::new(), 0);
        self.store.for_each_recent_issuance(&mut |r| {
            if read >= limit {
                return false;
            }
            read += 1;
            let wanted =
                r.not_after > now && r.auth != "internal" && signers.contains(&r.generation);
            if let Some(leaf) = wanted.then(|| recent_leaf(&r)).flatten() {
                // Issuance refuses a denied identity anyway; its leaves are not taken on
                // trust either, as a deny drops them from a running server's cache. A
                // leaf of another trust domain (one the CA has since moved from, kept as
                // an alias) must go through `verify_client`, which maps its identity.
                let ours = leaf.id.is_member_of(&self.settings.trust_domain);
                if ours && self.denied.check(&leaf.id).is_ok() {
                    leaves.push(leaf);
                }
            }
            read < limit
        })?;
        Ok(RecentLeaves {
            bundle_sequence,
            leaves,
        })
    }
}
