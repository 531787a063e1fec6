//! The write-ahead file (`audit.wal` beside `audit.jsonl`): where a flush makes records
//! durable, so the journal file that operators tail and ship needs no `fdatasync` of its
//! own on every flush.
//!
//! Why: an `fdatasync` after an append must also write the file's new size — on ext4 a
//! second synchronous write (the inode) before the cache flush. Overwriting blocks a file
//! already has changes no metadata. So each flush appends its records to the journal
//! without a sync, writes the same bytes at the current offset of this file and syncs only
//! this one. The file is reused in laps: when a flush would run past [`LAP_BYTES`], the
//! journal itself is synced instead and the next lap starts at offset 0. From the second
//! lap on, every flush overwrites blocks the file already has.
//!
//! After a crash the journal may lack the newest records this file holds. At open, the
//! lines that continue the journal's chain — the next sequence number, `prev` equal to the
//! head's hash, a hash that matches the record — are copied back. A line left from an
//! earlier lap is never the next one (the journal was synced past it before its lap
//! ended), and a torn line does not parse.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use writ_ca::audit::AuditRecord;

/// Bytes written per lap (~15,000 issuance records): the journal is synced once per lap.
pub(super) const LAP_BYTES: u64 = 4 << 20;

/// How many laps' worth is read back at most at open: a lap holds no more than its size,
/// and a file grown far past it (damage, a stranger's file) must not exhaust memory.
const READ_LAPS: u64 = 16;

/// The write-ahead file and the offset of the next flush within the current lap.
pub(super) struct WriteAhead {
    file: File,
    at: u64,
    lap_bytes: u64,
}

/// Where the write-ahead file of the journal at `journal` lives.
pub(super) fn path_of(journal: &Path) -> PathBuf {
    journal.with_extension("wal")
}

impl WriteAhead {
    /// Opens the write-ahead file at `path`, creating it (mode 0600, its directory entry
    /// synced) when missing.
    pub(super) fn open(path: &Path, lap_bytes: u64) -> std::io::Result<Self> {
        let existed = path.exists();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)?;
        if !existed && let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir)?.sync_all()?;
        }
        Ok(Self {
            file,
            at: 0,
            lap_bytes,
        })
    }

    /// The lines this file holds that continue a chain whose newest record is `seq` with
    /// hash `hash`, in order, each with its newline; empty when the journal has them all.
    pub(super) fn continuation(&self, seq: u64, hash: &str) -> std::io::Result<Vec<u8>> {
        let mut held = Vec::new();
        (&self.file)
            .take(READ_LAPS * self.lap_bytes)
            .read_to_end(&mut held)?;
        Ok(continuing(&held, seq, hash))
    }

    /// Makes `bytes`, just appended to `journal` without a sync, durable.
    pub(super) fn commit(&mut self, journal: &File, bytes: &[u8]) -> std::io::Result<()> {
        let len = bytes.len() as u64;
        if self.at + len > self.lap_bytes {
            // The lap is over: the journal itself is synced, so nothing written in this
            // lap is needed any more.
            journal.sync_data()?;
            self.at = 0;
            return Ok(());
        }
        self.file.write_all_at(bytes, self.at)?;
        self.file.sync_data()?;
        self.at += len;
        Ok(())
    }

    /// Starts a new lap: the journal was synced by other means (sealed, or completed at
    /// open), so what this file holds is no longer needed.
    pub(super) fn restart(&mut self) {
        self.at = 0;
    }
}

/// The lines of `held` that continue a chain whose newest record is `seq` with hash
/// `hash`: from the line numbered `seq + 1`, as long as each is the next record, chained
/// and hashed right. Anything else in `held` (older lines, a torn or altered one) is
/// passed over or ends the run; nothing in it can make a line count that does not verify.
fn continuing(held: &[u8], seq: u64, hash: &str) -> Vec<u8> {
    let (mut seq, mut hash) = (seq, hash.to_owned());
    let mut out = Vec::new();
    for line in held.split_inclusive(|b| *b == b'\n') {
        if line.last() != Some(&b'\n') {
            break;
        }
        if super::leading_seq(line) != Some(seq + 1) {
            if out.is_empty() {
                // Older records (or an earlier lap's): keep looking for the next one.
                continue;
            }
            break;
        }
        match serde_json::from_slice::<AuditRecord>(line) {
            Ok(r) if r.prev == hash && r.hash_matches() => {
                seq = r.seq;
                hash = r.hash;
                out.extend_from_slice(line);
            }
            _ => break,
        }
    }
    out
}

#[cfg(test)]
mod tests;
