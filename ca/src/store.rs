//! Durable state behind a [`Store`] trait, with the embedded sled implementation.
//!
//! The trait is shaped as a handful of named key-value trees with compare-and-swap and an
//! append-only issuance log, so a PostgreSQL backend (one table per tree) can replace sled
//! for multi-replica deployments. Every write returns only once it is durable.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::audit::{AuditAction, AuditEvent, AuditRecord, GENESIS};

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

/// Key-value pairs of one tree, in key order.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// Durable storage for CA state, the issuance log and later features' records.
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
    /// The newest `limit` records, newest first.
    fn recent_issuance(&self, limit: usize) -> Result<Vec<IssuanceRecord>, Error>;
    /// Calls `f` on every record, oldest first.
    fn for_each_issuance(&self, f: &mut dyn FnMut(&IssuanceRecord)) -> Result<(), Error>;
    /// Number of records in the log.
    fn issuance_count(&self) -> Result<u64, Error>;
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
}

const LOG: &str = "issuance_log";
const SERIALS: &str = "issuance_serials";
/// The audit log: big-endian sequence number → JSON [`AuditRecord`].
const AUDIT: &str = "audit";

/// The embedded default: a sled database in the data directory.
pub struct SledStore {
    db: sled::Db,
    commit: GroupCommit,
    /// The audit chain's newest record; held while a record is chained and inserted, so
    /// sequence order and hash order agree. Never held across a flush.
    audit_head: std::sync::Mutex<AuditHead>,
    /// The trees every issuance writes, opened once: `open_tree` takes a lock and
    /// allocates on each call, which the signing path should not pay three times.
    log: sled::Tree,
    serials: sled::Tree,
    audit: sled::Tree,
}

/// Where the next audit record goes.
struct AuditHead {
    next_seq: u64,
    prev_hash: String,
}

/// Group commit: writers that need durability at the same moment share one flush. The
/// first to arrive flushes (covering everything written before it started); those that
/// arrive meanwhile wait and the next flush covers them all.
#[derive(Default)]
struct GroupCommit {
    state: std::sync::Mutex<CommitState>,
    flushed: std::sync::Condvar,
}

impl GroupCommit {
    fn lock(&self) -> std::sync::MutexGuard<'_, CommitState> {
        // The state is three counters updated together under the lock; a panic elsewhere
        // cannot leave them inconsistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Default)]
struct CommitState {
    /// Writes that asked to be durable.
    requested: u64,
    /// Writes known durable.
    durable: u64,
    /// A flush is running.
    flushing: bool,
}

impl SledStore {
    /// Opens (or creates) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, Error> {
        let db = sled::Config::new()
            .path(path)
            .open()
            .map_err(|e| match e {
                // sled reports the held lock as an `Other` error wrapping the WouldBlock.
                sled::Error::Io(io)
                    if io.kind() == std::io::ErrorKind::WouldBlock
                        || io.to_string().contains("could not acquire lock") =>
                {
                    Error::Storage(format!(
                    "{} is locked by another process: is another `writ server` running on this data dir?",
                    path.display()
                    ))
                }
                other => Error::Storage(format!("opening {}: {other}", path.display())),
            })?;
        let audit = db.open_tree(AUDIT)?;
        let audit_head = std::sync::Mutex::new(audit_head(&audit)?);
        Ok(Self {
            log: db.open_tree(LOG)?,
            serials: db.open_tree(SERIALS)?,
            audit,
            db,
            commit: GroupCommit::default(),
            audit_head,
        })
    }

    fn lock_head(&self) -> std::sync::MutexGuard<'_, AuditHead> {
        // The head is replaced as a whole after a successful insert; a panic elsewhere
        // cannot leave it half-written.
        self.audit_head.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn tree(&self, name: &str) -> Result<sled::Tree, Error> {
        Ok(self.db.open_tree(name)?)
    }

    /// Returns once everything this thread wrote before calling is on disk.
    fn durable(&self) -> Result<(), Error> {
        let mut st = self.commit.lock();
        st.requested += 1;
        let mine = st.requested;
        loop {
            if st.durable >= mine {
                return Ok(());
            }
            if !st.flushing {
                st.flushing = true;
                let covers = st.requested;
                drop(st);
                let result = self.db.flush();
                st = self.commit.lock();
                st.flushing = false;
                if result.is_ok() {
                    st.durable = st.durable.max(covers);
                }
                self.commit.flushed.notify_all();
                result?;
                continue;
            }
            st = self
                .commit
                .flushed
                .wait(st)
                .unwrap_or_else(|p| p.into_inner());
        }
    }
}

impl Store for SledStore {
    fn get(&self, tree: &str, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.tree(tree)?.get(key)?.map(|v| v.to_vec()))
    }

    fn put(&self, tree: &str, key: &[u8], value: &[u8]) -> Result<(), Error> {
        self.tree(tree)?.insert(key, value)?;
        self.durable()
    }

    fn compare_and_swap(
        &self,
        tree: &str,
        key: &[u8],
        old: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool, Error> {
        let swapped = self.tree(tree)?.compare_and_swap(key, old, new)?.is_ok();
        if swapped {
            self.durable()?;
        }
        Ok(swapped)
    }

    fn scan(&self, tree: &str) -> Result<Entries, Error> {
        self.tree(tree)?
            .iter()
            .map(|r| {
                r.map(|(k, v)| (k.to_vec(), v.to_vec()))
                    .map_err(Error::from)
            })
            .collect()
    }

    fn sync(&self) -> Result<(), Error> {
        self.durable()
    }

    fn record_issuance_unsynced(&self, record: &IssuanceRecord) -> Result<(), Error> {
        use sled::Transactional;
        use sled::transaction::ConflictableTransactionError as Abort;
        let value = serde_json::to_vec(record).map_err(|e| Error::Storage(e.to_string()))?;
        let (log, serials, audit) = (&self.log, &self.serials, &self.audit);
        let id = self.db.generate_id()?.to_be_bytes();
        let mut event = AuditEvent::new(AuditAction::Issue, record.auth.clone());
        event.spiffe_id = Some(record.spiffe_id.clone());
        event.serial = Some(record.serial.clone());
        event.not_after = Some(record.not_after);
        event.detail = Some(format!("generation {}", record.generation));
        // The log entry, its serial and its audit record commit together, in memory; the
        // caller's next sync (one flush shared with concurrent writers) makes all three
        // durable.
        let mut head = self.lock_head();
        let audited = AuditRecord::chain(head.next_seq, now_unix(), event, &head.prev_hash);
        let audit_value = encode_audit(&audited)?;
        (log, serials, audit)
            .transaction(|(log, serials, audit)| {
                if serials.get(record.serial.as_bytes())?.is_some() {
                    return Err(Abort::Abort(()));
                }
                serials.insert(record.serial.as_bytes(), &id[..])?;
                log.insert(&id[..], value.as_slice())?;
                audit.insert(&audited.seq.to_be_bytes()[..], audit_value.as_slice())?;
                Ok(())
            })
            .map_err(|e| match e {
                sled::transaction::TransactionError::Abort(()) => Error::SerialReused,
                sled::transaction::TransactionError::Storage(e) => Error::from(e),
            })?;
        *head = AuditHead {
            next_seq: audited.seq + 1,
            prev_hash: audited.hash,
        };
        Ok(())
    }

    fn recent_issuance(&self, limit: usize) -> Result<Vec<IssuanceRecord>, Error> {
        self.tree(LOG)?
            .iter()
            .rev()
            .take(limit)
            .map(|r| {
                let (_, v) = r?;
                serde_json::from_slice(&v).map_err(|e| Error::Corrupt(format!("issuance log: {e}")))
            })
            .collect()
    }

    fn for_each_issuance(&self, f: &mut dyn FnMut(&IssuanceRecord)) -> Result<(), Error> {
        for r in self.tree(LOG)?.iter() {
            let (_, v) = r?;
            let rec: IssuanceRecord = serde_json::from_slice(&v)
                .map_err(|e| Error::Corrupt(format!("issuance log: {e}")))?;
            f(&rec);
        }
        Ok(())
    }

    fn issuance_count(&self) -> Result<u64, Error> {
        Ok(self.tree(LOG)?.len() as u64)
    }

    fn append_audit(&self, event: &AuditEvent) -> Result<AuditRecord, Error> {
        let audit = self.tree(AUDIT)?;
        let mut head = self.lock_head();
        let record = AuditRecord::chain(head.next_seq, now_unix(), event.clone(), &head.prev_hash);
        audit.insert(record.seq.to_be_bytes(), encode_audit(&record)?)?;
        *head = AuditHead {
            next_seq: record.seq + 1,
            prev_hash: record.hash.clone(),
        };
        drop(head);
        self.durable()?;
        Ok(record)
    }

    fn for_each_audit(
        &self,
        since: u64,
        f: &mut dyn FnMut(Result<AuditRecord, String>) -> bool,
    ) -> Result<(), Error> {
        for r in self.tree(AUDIT)?.range(since.to_be_bytes()..) {
            let (_, v) = r?;
            if !f(serde_json::from_slice(&v).map_err(|e| e.to_string())) {
                break;
            }
        }
        Ok(())
    }
}

/// The head of an existing audit log, or the genesis of an empty one. A newest record that
/// does not parse stops the store from opening: appending after it would hide the damage.
fn audit_head(tree: &sled::Tree) -> Result<AuditHead, Error> {
    match tree.last()? {
        None => Ok(AuditHead {
            next_seq: 1,
            prev_hash: GENESIS.to_owned(),
        }),
        Some((_, v)) => {
            let last: AuditRecord = serde_json::from_slice(&v).map_err(|e| {
                Error::Corrupt(format!(
                    "the newest audit record is unreadable ({e}); run `writ audit verify --data-dir` on a copy to find the damage"
                ))
            })?;
            Ok(AuditHead {
                next_seq: last.seq + 1,
                prev_hash: last.hash,
            })
        }
    }
}

fn encode_audit(record: &AuditRecord) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(record).map_err(|e| Error::Storage(e.to_string()))
}

/// The store stamps audit records with the time they are written.
fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(serial: &str) -> IssuanceRecord {
        IssuanceRecord {
            serial: serial.into(),
            spiffe_id: "spiffe://td/a".into(),
            not_before: 1,
            not_after: 2,
            fingerprint: "ff".into(),
            key_type: "ec-p256".into(),
            auth: "mtls".into(),
            generation: 1,
        }
    }

    #[test]
    fn log_refuses_reused_serial_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SledStore::open(&dir.path().join("db")).unwrap();
            s.record_issuance(&rec("01")).unwrap();
            s.record_issuance(&rec("02")).unwrap();
            assert!(matches!(
                s.record_issuance(&rec("01")),
                Err(Error::SerialReused)
            ));
            assert_eq!(s.issuance_count().unwrap(), 2);
        }
        let s = SledStore::open(&dir.path().join("db")).unwrap();
        let recent = s.recent_issuance(10).unwrap();
        assert_eq!(
            recent.iter().map(|r| r.serial.as_str()).collect::<Vec<_>>(),
            ["02", "01"]
        );
    }

    #[test]
    fn concurrent_writers_share_flushes_and_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = std::sync::Arc::new(SledStore::open(&dir.path().join("db")).unwrap());
        let threads: Vec<_> = (0..16)
            .map(|t| {
                let s = s.clone();
                std::thread::spawn(move || {
                    for i in 0..50 {
                        s.record_issuance(&rec(&format!("{t:02x}{i:04x}"))).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(s.issuance_count().unwrap(), 800);
        let st = s.commit.state.lock().unwrap();
        assert_eq!(st.durable, st.requested);
        drop(st);
        drop(s);
        let reopened = SledStore::open(&dir.path().join("db")).unwrap();
        assert_eq!(reopened.issuance_count().unwrap(), 800);
        // Every issuance is audited once, in one unbroken chain, and appending after a
        // reopen continues it.
        reopened
            .append_audit(&AuditEvent::new(AuditAction::IdentityDeny, "uid:0"))
            .unwrap();
        let mut records = Vec::new();
        reopened
            .for_each_audit(0, &mut |r| {
                records.push(r);
                true
            })
            .unwrap();
        let head = crate::audit::verify(records).unwrap();
        assert_eq!((head.records, head.seq), (801, 801));
    }

    #[test]
    fn a_refused_serial_consumes_no_audit_record() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(&dir.path().join("db")).unwrap();
        s.record_issuance(&rec("01")).unwrap();
        assert!(s.record_issuance(&rec("01")).is_err());
        s.record_issuance(&rec("02")).unwrap();
        let mut seqs = Vec::new();
        s.for_each_audit(2, &mut |r| {
            seqs.push(r.unwrap().seq);
            true
        })
        .unwrap();
        assert_eq!(seqs, [2]);
    }

    #[test]
    fn compare_and_swap_is_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(&dir.path().join("db")).unwrap();
        assert!(
            s.compare_and_swap("t", b"k", None, Some(b"pending"))
                .unwrap()
        );
        assert!(
            s.compare_and_swap("t", b"k", Some(b"pending"), Some(b"used"))
                .unwrap()
        );
        assert!(
            !s.compare_and_swap("t", b"k", Some(b"pending"), Some(b"used"))
                .unwrap()
        );
        assert_eq!(s.get("t", b"k").unwrap().as_deref(), Some(&b"used"[..]));
    }
}
