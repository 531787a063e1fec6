//! The seam to durable state: the [`Store`] trait and the records that cross it.
//!
//! The trait is shaped as a handful of named key-value trees with compare-and-swap and an
//! append-only issuance log, so a PostgreSQL backend (one table per tree) can stand where
//! the embedded sled store (crate `writ-store`) stands. Every write returns only once it
//! is durable, except [`Store::record_issuance_unsynced`], whose caller syncs.
//!
//! Implementations live outside this crate: the CA core reads and writes through the trait
//! and never touches a file.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::audit::{AuditAction, AuditEvent, AuditRecord};

/// One issued certificate in the issuance log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuanceRecord {
    /// Serial, lowercase hex.
    pub serial: String,
    /// The SPIFFE ID issued.
    pub spiffe_id: String,
    /// notBefore, Unix seconds.
    pub not_before: u64,
    /// notAfter, Unix seconds.
    pub not_after: u64,
    /// SHA-256 of the DER, lowercase hex.
    pub fingerprint: String,
    /// Subject key type mnemonic.
    pub key_type: String,
    /// How the caller authenticated (`admin`, `mtls`, `token`, `jwt`, `internal`).
    pub auth: String,
    /// The CA generation that signed it.
    pub generation: u64,
}

impl IssuanceRecord {
    /// The audit event that records this issuance: the issuance log is the audit log's
    /// `issue` records, so a store keeps one chain, not two logs.
    pub fn audit_event(&self) -> AuditEvent {
        let mut event = AuditEvent::new(AuditAction::Issue, self.auth.clone());
        event.spiffe_id = Some(self.spiffe_id.clone());
        event.serial = Some(self.serial.clone());
        event.not_before = Some(self.not_before);
        event.not_after = Some(self.not_after);
        event.fingerprint = Some(self.fingerprint.clone());
        event.key_type = Some(self.key_type.clone());
        event.generation = Some(self.generation);
        event
    }

    /// The issuance an audit record describes, if it is a complete `issue` record.
    pub fn from_audit(r: &AuditRecord) -> Option<Self> {
        let e = &r.event;
        if e.action != AuditAction::Issue {
            return None;
        }
        Some(Self {
            serial: e.serial.clone()?,
            spiffe_id: e.spiffe_id.clone()?,
            not_before: e.not_before?,
            not_after: e.not_after?,
            fingerprint: e.fingerprint.clone()?,
            key_type: e.key_type.clone()?,
            auth: e.actor.clone(),
            generation: e.generation?,
        })
    }
}

/// Key-value pairs of one tree, in key order.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// Generation → (unexpired leaves, latest notAfter in Unix seconds).
pub type LiveLeaves = BTreeMap<u64, (u64, u64)>;

/// Durable storage for CA state, the issuance log and later features' records.
///
/// The trait itself assumes nothing about processes; its users and its embedded
/// implementation do, each where it is made: [`crate::Authority`] reads its state once at
/// open, and `writ-store`'s embedded store keeps the audit chain's tail, the live-leaf
/// index and the group commit in its own memory.
pub trait Store: Send + Sync {
    /// Reads `key` from `tree`.
    fn get(&self, tree: &str, key: &[u8]) -> Result<Option<Vec<u8>>, Error>;
    /// Writes `key` in `tree`, durably.
    fn put(&self, tree: &str, key: &[u8], value: &[u8]) -> Result<(), Error>;
    /// Replaces `key`'s value when it currently equals `old` (`None`: absent), durably;
    /// returns whether it swapped. This is the primitive one-time use is built on.
    fn compare_and_swap(
        &self,
        tree: &str,
        key: &[u8],
        old: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool, Error>;
    /// Every entry of `tree`, in key order.
    fn scan(&self, tree: &str) -> Result<Entries, Error>;
    /// Appends an issuance record; refuses a serial already in the log. Durable on return.
    fn record_issuance(&self, record: &IssuanceRecord) -> Result<(), Error> {
        self.record_issuance_unsynced(record)?;
        self.sync()
    }
    /// Like [`Store::record_issuance`], but returns before the record is durable: the
    /// caller must not hand out the certificate until a later [`Store::sync`] returns.
    /// Lets a server batch many issuances into one flush without a thread per waiter.
    fn record_issuance_unsynced(&self, record: &IssuanceRecord) -> Result<(), Error>;
    /// Returns once everything written before the call is durable (group-committed with
    /// concurrent callers).
    fn sync(&self) -> Result<(), Error>;
    /// Calls `f` on the records newest first, until it returns `false`.
    fn for_each_recent_issuance(
        &self,
        f: &mut dyn FnMut(IssuanceRecord) -> bool,
    ) -> Result<(), Error>;
    /// The newest `limit` records, newest first.
    fn recent_issuance(&self, limit: usize) -> Result<Vec<IssuanceRecord>, Error> {
        let mut out = Vec::with_capacity(limit.min(4096));
        if limit > 0 {
            self.for_each_recent_issuance(&mut |r| {
                out.push(r);
                out.len() < limit
            })?;
        }
        Ok(out)
    }
    /// Calls `f` on every record, oldest first.
    fn for_each_issuance(&self, f: &mut dyn FnMut(&IssuanceRecord)) -> Result<(), Error>;
    /// Number of records in the log.
    fn issuance_count(&self) -> Result<u64, Error>;
    /// Leaves unexpired at `now` (Unix seconds) per CA generation, as (count, latest
    /// notAfter), leaving out the server's own certificates (`internal`), which are
    /// reissued under a new generation and never hold an old one back. `now` may lie in
    /// the future, or up to an hour in the past.
    fn live_leaves(&self, now: u64) -> Result<LiveLeaves, Error> {
        let mut live = LiveLeaves::new();
        self.for_each_issuance(&mut |r| {
            if r.not_after > now && r.auth != crate::AuthMethod::Internal.as_str() {
                let e = live.entry(r.generation).or_insert((0, 0));
                e.0 += 1;
                e.1 = e.1.max(r.not_after);
            }
        })?;
        Ok(live)
    }
    /// When the log's oldest records were archived (moved out of the store), the time of
    /// the oldest record left: certificates issued before it may still be valid though
    /// [`Store::live_leaves`] cannot count them.
    fn archived_before(&self) -> Option<u64> {
        None
    }
    /// Appends `event` to the hash-chained audit log, durably, and returns the record.
    /// [`Store::record_issuance`] audits issuance itself, atomically with the log entry.
    fn append_audit(&self, event: &AuditEvent) -> Result<AuditRecord, Error>;
    /// Calls `f` on every audit record with `seq >= since`, oldest first, until it
    /// returns `false`. A record that does not parse is passed as `Err(reason)`, so a
    /// verifier can report it rather than stop.
    fn for_each_audit(
        &self,
        since: u64,
        f: &mut dyn FnMut(Result<AuditRecord, String>) -> bool,
    ) -> Result<(), Error>;
    /// The sequence number of the newest durable audit record; 0 when the log holds none.
    /// Reads the whole log unless a store knows its head.
    fn last_audit_seq(&self) -> Result<u64, Error> {
        let mut last = 0;
        self.for_each_audit(0, &mut |r| {
            if let Ok(r) = r {
                last = r.seq;
            }
            true
        })?;
        Ok(last)
    }
}

#[cfg(test)]
pub(crate) mod memory;
