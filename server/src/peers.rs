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
//!
//! After a restart the cache is filled from the issuance log ([`PeerCache::restore`]), so
//! a fleet reconnecting after an outage costs what it did before it. The log records a
//! leaf's fingerprint, identity and expiry but not its DNS names, so such an entry is
//! completed from the certificate itself the first time it is presented.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use writ_ca::{RecentLeaves, SpiffeId};

/// Entries in one half of the cache. When the newer half fills it replaces the older,
/// so the cache holds the latest 16,384 to 32,768 leaves (a few MiB) however many distinct
/// certificates arrive, and a fleet of that many agents per server keeps hitting it.
const HALF: usize = 16_384;

/// The most leaves the cache holds: how many a restart reads back from the log.
pub(crate) const CAPACITY: usize = 2 * HALF;

/// Verified leaves by SHA-256 of their DER, newest half first.
#[derive(Default)]
pub(crate) struct PeerCache {
    halves: Mutex<Halves>,
    /// A retired half, emptied off the lock and kept allocated for the next rotation:
    /// every issuance lands in the cache, and writing into freshly mapped pages cost more
    /// than the insertion itself.
    spare: Arc<Mutex<Option<Half>>>,
}

#[derive(Default)]
struct Halves {
    newer: Half,
    older: Half,
}

/// One half of the cache. Entries are shared, so a hit costs a reference count, and a
/// slot is the key and a pointer (40 bytes) rather than the whole entry.
type Half = HashMap<[u8; 32], Arc<Verified>>;

impl Halves {
    /// Inserts, and hands back the older half when a full newer half replaces it: the
    /// caller empties it after letting go of the lock (see [`PeerCache::retire`]).
    /// `spare` supplies the new newer half.
    #[must_use = "a retired half should be emptied off the lock"]
    fn insert(
        &mut self,
        key: [u8; 32],
        value: Arc<Verified>,
        spare: impl FnOnce() -> Option<Half>,
    ) -> Option<Half> {
        let retired = (self.newer.len() >= HALF).then(|| {
            // Sized once: growing by doubling would rehash under the lock on the way.
            let fresh = spare()
                .filter(|h| h.is_empty() && h.capacity() >= HALF)
                .unwrap_or_else(|| Half::with_capacity(HALF));
            let newer = std::mem::replace(&mut self.newer, fresh);
            std::mem::replace(&mut self.older, newer)
        });
        self.newer.insert(key, value);
        retired
    }
}

/// What a verified leaf proved.
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
    /// This server's issuance log says it issued it, before the last restart; its DNS
    /// names are not known yet (see [`Verified::completed`]).
    Restored,
}

impl Verified {
    /// A restored entry made whole with the DNS names of the certificate presented,
    /// whose fingerprint matched the log's: the same bytes the server signed.
    pub(crate) fn completed(&self, dns_names: Vec<String>) -> Self {
        Verified {
            id: self.id.clone(),
            dns_names,
            origin: Origin::Issued,
            ..*self
        }
    }
}

impl PeerCache {
    /// The cached result for `leaf`, if it was verified under this bundle and has not expired.
    pub(crate) fn get(
        &self,
        leaf: &[u8],
        bundle_sequence: u64,
        now: SystemTime,
    ) -> Option<Arc<Verified>> {
        let key = digest(leaf);
        let mut halves = self.halves.lock().unwrap_or_else(|p| p.into_inner());
        let valid = |v: &Verified| v.bundle_sequence == bundle_sequence && v.not_after > now;
        if let Some(v) = halves.newer.get(&key) {
            return valid(v).then(|| v.clone());
        }
        // A leaf still in use moves to the newer half, so a long-lived connection's
        // certificate is not pushed out by a stream of newer ones.
        let v = halves.older.remove(&key).filter(|v| valid(v))?;
        let retired = halves.insert(key, v.clone(), || self.take_spare());
        drop(halves);
        self.retire(retired);
        Some(v)
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
        self.put_verified(
            leaf,
            Arc::new(Verified {
                id,
                dns_names,
                origin,
                not_after,
                bundle_sequence,
            }),
        );
    }

    /// Remembers what `leaf` proves.
    pub(crate) fn put_verified(&self, leaf: &[u8], verified: Arc<Verified>) {
        let key = digest(leaf);
        let retired = {
            let mut halves = self.halves.lock().unwrap_or_else(|p| p.into_inner());
            halves.insert(key, verified, || self.take_spare())
        };
        self.retire(retired);
    }

    fn take_spare(&self) -> Option<Half> {
        self.spare.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// Empties a retired half on a thread of its own and keeps it as the spare. Its 16,384
    /// entries each hold heap strings, and freeing them takes milliseconds: on an async
    /// worker that would hold up every request queued behind it, and under the lock every
    /// other worker too.
    fn retire(&self, half: Option<Half>) {
        // The empty half the cache starts with has nothing to free or to keep.
        let Some(half) = half.filter(|h| h.capacity() >= HALF) else {
            return;
        };
        let spare = self.spare.clone();
        // Should the thread not start, the closure and the half are freed right here.
        let _ = std::thread::Builder::new()
            .name("writ-peers-free".into())
            .spawn(move || recycle(half, &spare));
    }

    /// Enters leaves read back from the issuance log, oldest first so the newest end up
    /// in the newer half. Returns how many.
    pub(crate) fn restore(&self, recent: RecentLeaves) -> usize {
        let mut halves = self.halves.lock().unwrap_or_else(|p| p.into_inner());
        let count = recent.leaves.len();
        for leaf in recent.leaves.into_iter().rev() {
            // At start-up, with nothing waiting: freed in place.
            let _ = halves.insert(
                leaf.fingerprint,
                Arc::new(Verified {
                    id: leaf.id,
                    dns_names: Vec::new(),
                    origin: Origin::Restored,
                    not_after: leaf.not_after,
                    bundle_sequence: recent.bundle_sequence,
                }),
                || None,
            );
        }
        count
    }
}

impl PeerCache {
    /// Drops every entry proving `id` (after it is denied).
    pub(crate) fn forget(&self, id: &SpiffeId) {
        let mut halves = self.halves.lock().unwrap_or_else(|p| p.into_inner());
        halves.newer.retain(|_, v| &v.id != id);
        halves.older.retain(|_, v| &v.id != id);
    }
}

/// Empties `half`, keeping its allocation, and makes it the spare.
fn recycle(mut half: Half, spare: &Mutex<Option<Half>>) {
    half.clear();
    *spare.lock().unwrap_or_else(|p| p.into_inner()) = Some(half);
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

    #[test]
    fn restored_leaves_are_found_by_fingerprint_until_completed() {
        let c = PeerCache::default();
        let id = SpiffeId::parse("spiffe://td/a").unwrap();
        let now = SystemTime::now();
        let leaf = |der: &[u8]| writ_ca::RecentLeaf {
            fingerprint: digest(der),
            id: id.clone(),
            not_after: now + Duration::from_secs(60),
        };
        let restored = c.restore(RecentLeaves {
            bundle_sequence: 3,
            leaves: vec![leaf(b"newer"), leaf(b"older")],
        });
        assert_eq!(restored, 2);
        let hit = c.get(b"older", 3, now).unwrap();
        assert_eq!((&hit.id, hit.origin), (&id, Origin::Restored));
        assert!(hit.dns_names.is_empty());
        assert!(c.get(b"newer", 4, now).is_none(), "another bundle");
        assert!(c.get(b"stranger", 3, now).is_none());

        let dns = vec!["web.internal".to_owned()];
        c.put_verified(b"older", Arc::new(hit.completed(dns.clone())));
        let hit = c.get(b"older", 3, now).unwrap();
        assert_eq!((hit.origin, hit.dns_names.clone()), (Origin::Issued, dns));
        assert!(c.get(b"older", 3, now + Duration::from_secs(61)).is_none());
    }

    #[test]
    fn the_latest_leaves_stay_and_a_leaf_in_use_is_kept() {
        let c = PeerCache::default();
        let id = SpiffeId::parse("spiffe://td/a").unwrap();
        let now = SystemTime::now();
        let later = now + Duration::from_secs(60);
        let put = |n: usize| {
            c.put(
                &n.to_be_bytes(),
                id.clone(),
                vec![],
                later,
                1,
                Origin::Issued,
            )
        };
        let hit = |n: usize| c.get(&n.to_be_bytes(), 1, now).is_some();
        for n in 0..=HALF {
            put(n);
        }
        // The first half is now the older one, still found; a hit moves a leaf back to
        // the newer half, as for a long-lived connection's certificate.
        assert!(hit(0));
        // Filling the newer half again retires the older one, except the leaf in use.
        for n in HALF + 1..2 * HALF {
            put(n);
        }
        assert!(!hit(1), "the oldest unused leaf is gone");
        assert!(hit(0), "a leaf in use survives");
        assert!(hit(HALF + 1) && hit(2 * HALF - 1));
        c.forget(&id);
        assert!(!hit(0) && !hit(2 * HALF - 1), "a deny empties both halves");
    }

    #[test]
    fn a_full_newer_half_hands_back_the_older_one_and_reuses_a_spare() {
        let id = SpiffeId::parse("spiffe://td/a").unwrap();
        let entry = || {
            Arc::new(Verified {
                id: id.clone(),
                dns_names: vec![],
                origin: Origin::Issued,
                not_after: SystemTime::now(),
                bundle_sequence: 1,
            })
        };
        let key = |n: usize| digest(&n.to_be_bytes());
        let mut halves = Halves::default();
        for n in 0..HALF {
            assert!(halves.insert(key(n), entry(), || None).is_none());
        }
        // The first rotation retires the (empty) older half; the second, the first HALF.
        let first = halves.insert(key(HALF), entry(), || None);
        assert_eq!(first.map(|h| h.len()), Some(0));
        for n in HALF + 1..2 * HALF {
            assert!(halves.insert(key(n), entry(), || None).is_none());
        }
        let retired = halves
            .insert(key(2 * HALF), entry(), || None)
            .expect("a retired half");
        assert_eq!(retired.len(), HALF);
        assert!(retired.contains_key(&key(0)) && !halves.older.contains_key(&key(0)));
        assert!(halves.older.contains_key(&key(HALF)) && halves.newer.contains_key(&key(2 * HALF)));

        // Emptied, the retired half becomes the next newer one, allocation and all.
        let spare = Mutex::new(None);
        let capacity = retired.capacity();
        recycle(retired, &spare);
        for n in 2 * HALF + 1..3 * HALF {
            assert!(halves.insert(key(n), entry(), || None).is_none());
        }
        let spare = spare.into_inner().unwrap();
        assert!(spare.as_ref().is_some_and(Half::is_empty));
        let again = halves.insert(key(3 * HALF), entry(), || spare);
        assert_eq!(again.map(|h| h.len()), Some(HALF));
        assert_eq!(halves.newer.capacity(), capacity);
        assert_eq!(halves.newer.len(), 1);
        // A spare too small to hold a half is not used.
        for n in 3 * HALF + 1..4 * HALF {
            assert!(halves.insert(key(n), entry(), || None).is_none());
        }
        let _ = halves.insert(key(4 * HALF), entry(), || Some(Half::new()));
        assert!(halves.newer.capacity() >= HALF);
    }
}
