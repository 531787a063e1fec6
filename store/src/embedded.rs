//! The embedded default store: a sled database for state, and beside it the journal.
//!
//! Everything here assumes one process owns the data directory (sled's lock enforces it):
//! the journal's tail and sequence counter, the live-leaf index built at open and kept up
//! to date by this process's own writes, and the group commit are all in-process state.
//! A store shared by several servers cannot take those shortcuts.

use std::path::Path;
use std::sync::Mutex;

use writ_ca::Error;
use writ_ca::audit::{AuditEvent, AuditRecord};
use writ_ca::store::{Entries, IssuanceRecord, LiveLeaves, Store};

use journal::Journal;

mod journal;
mod legacy;
mod live;
mod segment;

use legacy::{LEGACY_LOG, LEGACY_SERIALS, Legacy, import_legacy_audit};
use live::LiveIndex;

/// The journal's file name, beside the database directory.
pub const JOURNAL_FILE: &str = "audit.jsonl";

/// The embedded default: a sled database for state, and beside it the journal — the
/// append-only, hash-chained log of every issuance and admin action (`journal.rs`).
pub struct SledStore {
    db: sled::Db,
    commit: GroupCommit,
    journal: Journal,
    /// The issuance log and serial index of an older data directory, when not empty.
    legacy: Option<Legacy>,
    /// Unexpired leaves by expiry, so rotation decisions and `root status` do not read
    /// the whole history.
    live: Mutex<LiveIndex>,
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

/// A sealed segment of the journal (`audit-<first seq>.jsonl`), as an operator deciding
/// what to archive needs to see it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SegmentInfo {
    /// The file.
    pub file: std::path::PathBuf,
    /// Its first and last records' sequence numbers.
    pub first_seq: u64,
    /// See `first_seq`.
    pub last_seq: u64,
    /// Its size.
    pub bytes: u64,
    /// Certificates it records.
    pub certificates: u64,
    /// The latest notAfter among the workload certificates (not the server's own), Unix
    /// seconds (`None` when it records none).
    pub valid_until: Option<u64>,
}

/// The sealed segments of the journal of the database at `db` (a data directory's `db`),
/// oldest first. Reads only the files: works beside a running server.
pub fn sealed_segments(db: &Path) -> Result<Vec<SegmentInfo>, Error> {
    let live = db.with_file_name(JOURNAL_FILE);
    Ok(journal::sealed_segments(&live)?
        .into_iter()
        .map(|(s, summary)| SegmentInfo {
            file: s.path,
            first_seq: s.first_seq,
            last_seq: summary.last_seq,
            bytes: summary.bytes,
            certificates: summary.issued,
            valid_until: (summary.max_not_after > 0).then_some(summary.max_not_after),
        })
        .collect())
}

/// How a [`SledStore`] keeps its files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreOptions {
    /// Size past which the journal's live file is sealed as a segment
    /// (`audit-<first seq>.jsonl`) and a fresh one started.
    pub journal_segment_bytes: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            journal_segment_bytes: journal::DEFAULT_SEGMENT_BYTES,
        }
    }
}

impl SledStore {
    /// Opens (or creates) the database at `path`, and the journal beside it, with the
    /// default [`StoreOptions`].
    pub fn open(path: &Path) -> Result<Self, Error> {
        Self::open_with(path, StoreOptions::default())
    }

    /// Opens (or creates) the database at `path`, and the journal beside it.
    pub fn open_with(path: &Path, options: StoreOptions) -> Result<Self, Error> {
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
        let journal_path = path.with_file_name(JOURNAL_FILE);
        import_legacy_audit(&db, &journal_path)?;
        let now = now_unix().saturating_sub(3600);
        let mut live = LiveIndex::default();
        let segment = options.journal_segment_bytes;
        // Segments whose certificates all expired before `now` hold nothing the live index
        // keeps: start-up skips them.
        let journal = Journal::open_segmented(&journal_path, segment, Some(now), &mut |r| {
            if let Some((not_after, generation, auth)) = r.issued_leaf()
                && not_after > now
            {
                live.add_leaf(not_after, generation, auth);
            }
        })?;
        let legacy = Legacy {
            log: db.open_tree(LEGACY_LOG).map_err(sled_error)?,
            serials: db.open_tree(LEGACY_SERIALS).map_err(sled_error)?,
        };
        let legacy = (!legacy.log.is_empty() || !legacy.serials.is_empty()).then_some(legacy);
        if let Some(legacy) = &legacy {
            for r in legacy.log.iter().values().map(Legacy::record) {
                let r = r?;
                if r.not_after > now {
                    live.add(&r);
                }
            }
        }
        Ok(Self {
            db,
            commit: GroupCommit::default(),
            journal,
            legacy,
            live: Mutex::new(live),
        })
    }

    fn lock_live(&self) -> std::sync::MutexGuard<'_, LiveIndex> {
        // Counts are updated one entry at a time; a panic elsewhere leaves them usable.
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn tree(&self, name: &str) -> Result<sled::Tree, Error> {
        self.db.open_tree(name).map_err(sled_error)
    }

    /// Returns once everything this thread wrote to sled before calling is on disk.
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
                result.map_err(sled_error)?;
                continue;
            }
            st = self
                .commit
                .flushed
                .wait(st)
                .unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Every issuance record of the journal, oldest first, until `f` returns `false`.
    fn journal_issuance(&self, f: &mut dyn FnMut(IssuanceRecord) -> bool) -> Result<(), Error> {
        let mut failure = None;
        self.journal.for_each(0, &mut |r| match r {
            Ok(r) => IssuanceRecord::from_audit(&r).is_none_or(&mut *f),
            Err(e) => {
                failure = Some(e);
                false
            }
        })?;
        match failure {
            Some(e) => Err(Error::Corrupt(format!("issuance log: {e}"))),
            None => Ok(()),
        }
    }
}

impl Store for SledStore {
    fn get(&self, tree: &str, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        Ok(self
            .tree(tree)?
            .get(key)
            .map_err(sled_error)?
            .map(|v| v.to_vec()))
    }

    fn put(&self, tree: &str, key: &[u8], value: &[u8]) -> Result<(), Error> {
        self.tree(tree)?.insert(key, value).map_err(sled_error)?;
        self.durable()
    }

    fn compare_and_swap(
        &self,
        tree: &str,
        key: &[u8],
        old: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool, Error> {
        let swapped = self
            .tree(tree)?
            .compare_and_swap(key, old, new)
            .map_err(sled_error)?
            .is_ok();
        if swapped {
            self.durable()?;
        }
        Ok(swapped)
    }

    fn scan(&self, tree: &str) -> Result<Entries, Error> {
        self.tree(tree)?
            .iter()
            .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(sled_error))
            .collect()
    }

    fn sync(&self) -> Result<(), Error> {
        // State writes (`put`, `compare_and_swap`) are durable on return; only the journal
        // holds writes that wait for a flush.
        self.journal.sync()
    }

    fn record_issuance_unsynced(&self, record: &IssuanceRecord) -> Result<(), Error> {
        if let Some(legacy) = &self.legacy
            && legacy
                .serials
                .contains_key(record.serial.as_bytes())
                .map_err(sled_error)?
        {
            return Err(Error::SerialReused);
        }
        self.journal
            .append(record.audit_event(), Some(&record.serial), now_unix())?;
        self.lock_live().add(record);
        Ok(())
    }

    fn live_leaves(&self, now: u64) -> Result<LiveLeaves, Error> {
        Ok(self.lock_live().at(now))
    }

    fn archived_before(&self) -> Option<u64> {
        self.journal.archived_before()
    }

    fn for_each_recent_issuance(
        &self,
        f: &mut dyn FnMut(IssuanceRecord) -> bool,
    ) -> Result<(), Error> {
        let mut failure = None;
        let mut more = true;
        self.journal.for_each_newest(&mut |r| {
            match r {
                Ok(r) => more = IssuanceRecord::from_audit(&r).is_none_or(&mut *f),
                Err(e) => failure = Some(e),
            }
            failure.is_none() && more
        })?;
        if let Some(e) = failure {
            return Err(Error::Corrupt(format!("issuance log: {e}")));
        }
        if let Some(legacy) = &self.legacy {
            for r in legacy.log.iter().values().rev().map(Legacy::record) {
                if !more {
                    break;
                }
                more = f(r?);
            }
        }
        Ok(())
    }

    fn for_each_issuance(&self, f: &mut dyn FnMut(&IssuanceRecord)) -> Result<(), Error> {
        if let Some(legacy) = &self.legacy {
            for r in legacy.log.iter().values().map(Legacy::record) {
                f(&r?);
            }
        }
        self.journal_issuance(&mut |r| {
            f(&r);
            true
        })
    }

    fn issuance_count(&self) -> Result<u64, Error> {
        let legacy = self.legacy.as_ref().map_or(0, |l| l.log.len() as u64);
        Ok(legacy + self.journal.issued())
    }

    fn append_audit(&self, event: &AuditEvent) -> Result<AuditRecord, Error> {
        let record = self.journal.append(event.clone(), None, now_unix())?;
        self.journal.sync()?;
        Ok(record)
    }

    fn for_each_audit(
        &self,
        since: u64,
        f: &mut dyn FnMut(Result<AuditRecord, String>) -> bool,
    ) -> Result<(), Error> {
        self.journal.for_each(since, f)
    }

    fn last_audit_seq(&self) -> Result<u64, Error> {
        Ok(self.journal.durable_seq())
    }
}

/// The store stamps audit records with the time they are written.
fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;

/// sled's errors, as the trait's: the message names the I/O or corruption sled met.
fn sled_error(e: sled::Error) -> Error {
    Error::Storage(e.to_string())
}
