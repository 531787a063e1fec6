//! The journal: the append-only, hash-chained audit log — which is also the issuance log —
//! as one JSON line per record in a file beside the database.
//!
//! Why a file and not sled trees: every certificate appends a record, and a sled
//! transaction over a log tree, a serial index and an audit tree cost ~150 µs of CPU per
//! certificate (its log-structured pages are rewritten as they grow), more than signing.
//! Appending a line and sharing one `fdatasync` with every concurrent writer costs a few
//! µs, and does not slow down as the log grows. The file has the format `writ audit
//! export` prints, so it can be shipped or tailed as it is.
//!
//! Crash safety: a record is acknowledged only after the flush that made it durable —
//! in the write-ahead file (`ahead.rs`), which spares the journal an `fdatasync` per
//! flush; at open the journal takes back whatever it lacks from there. A crash can leave
//! at most a torn last line, never acknowledged, which is cut off at open.
//!
//! Past a size the file is sealed as a segment and a fresh one started (`segment.rs`);
//! reading goes through the sealed segments, oldest first, then the live file.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};

use crate::embedded::segment;
use writ_ca::Error;
use writ_ca::audit::{AuditAction, AuditEvent, AuditRecord, GENESIS};

mod ahead;
mod read;
mod scan;
mod serials;

use ahead::WriteAhead;
pub(crate) use scan::sealed_segments;
use scan::{Scanned, scan, summarize};
use serials::RecentSerials;

/// Size past which the live journal file is sealed as a segment (~500,000 issuances).
pub const DEFAULT_SEGMENT_BYTES: u64 = 256 << 20;

/// The largest flush buffer kept for reuse: after a burst, a larger one is freed.
const MAX_SPARE: usize = 1 << 20;

/// The append-only log file and the group commit that makes its records durable.
pub(crate) struct Journal {
    path: PathBuf,
    segment_bytes: u64,
    /// When the oldest segments were moved away: the time of the oldest record left.
    archived_before: Option<u64>,
    tail: Mutex<Tail>,
    commit: Mutex<Commit>,
    flushed: Condvar,
}

/// What appenders share: the chain's head and the records not yet written.
struct Tail {
    next_seq: u64,
    prev_hash: String,
    /// Lines appended but not yet written, in sequence order.
    pending: Vec<u8>,
    /// The newest sequence number appended (pending or written); 0 when empty.
    appended: u64,
    /// Issuance records appended.
    issued: u64,
    serials: RecentSerials,
}

impl Tail {
    /// The head of an empty journal.
    fn new() -> Self {
        Tail {
            next_seq: 1,
            prev_hash: GENESIS.to_owned(),
            pending: Vec::new(),
            appended: 0,
            issued: 0,
            serials: RecentSerials::default(),
        }
    }
}

/// What the flushing writer owns.
struct Commit {
    /// Every record up to this sequence number is on disk.
    durable: u64,
    /// Length of the durable part of the live file.
    len: u64,
    /// The files a flush writes; `None` while a writer is flushing with them.
    file: Option<Live>,
    /// Sequence number of the live file's first record (of the next one when empty).
    live_first: u64,
    /// Length at which the live file is next sealed.
    seal_at: u64,
    /// The buffer the last flush wrote, emptied: it becomes the next `Tail::pending`, so
    /// appends do not grow a fresh buffer by reallocation after every flush.
    spare: Vec<u8>,
}

/// The live file's append handle and the write-ahead file that makes its appends durable.
struct Live {
    file: File,
    ahead: WriteAhead,
}

impl Journal {
    /// [`Journal::open_segmented`] with the default segment size.
    #[cfg(test)]
    pub(crate) fn open(path: &Path, each: &mut dyn FnMut(&Scanned<'_>)) -> Result<Self, Error> {
        Self::open_segmented(path, DEFAULT_SEGMENT_BYTES, None, each)
    }

    /// Opens (or creates, mode 0600) the journal whose live file is `path`: reads its
    /// sealed segments and then the live file through to find the chain's head, passing
    /// each readable record to `each`, and cuts off a torn last line left by a crash. The
    /// live file is sealed once it holds `segment_bytes`.
    ///
    /// With `expired_by`, a sealed segment whose summary says every certificate in it
    /// expired by then is not read: its records do not reach `each`, nor its serials the
    /// recent-serial check; the chain's head and the issuance count come from the summary.
    pub(crate) fn open_segmented(
        path: &Path,
        segment_bytes: u64,
        expired_by: Option<u64>,
        each: &mut dyn FnMut(&Scanned<'_>),
    ) -> Result<Self, Error> {
        Self::open_with_lap(path, segment_bytes, ahead::LAP_BYTES, expired_by, each)
    }

    /// [`Journal::open_segmented`] with laps of `lap_bytes` in the write-ahead file.
    fn open_with_lap(
        path: &Path,
        segment_bytes: u64,
        lap_bytes: u64,
        expired_by: Option<u64>,
        each: &mut dyn FnMut(&Scanned<'_>),
    ) -> Result<Self, Error> {
        let io = storage(path);
        let mut tail = Tail::new();
        let mut newest = Vec::new();
        let sealed = segment::list(path)?;
        for segment in &sealed {
            let summary = segment::read_summary(&segment.path);
            if let (Some(summary), Some(cutoff)) = (&summary, expired_by)
                && summary.max_not_after <= cutoff
                && summary.last_seq >= tail.appended
            {
                tail.issued += summary.issued;
                tail.next_seq = summary.last_seq + 1;
                tail.appended = summary.last_seq;
                tail.prev_hash.clone_from(&summary.last_hash);
                // Its last record was read when the summary was made.
                newest.clear();
                continue;
            }
            let issued_before = tail.issued;
            let file = File::open(&segment.path).map_err(storage(&segment.path))?;
            let read = scan(file, &mut tail, &mut newest, each).map_err(storage(&segment.path))?;
            if summary.is_none() {
                let summary = read.summary(&tail, issued_before);
                if let Err(e) = segment::write_summary(&segment.path, &summary) {
                    tracing::warn!(segment = %segment.path.display(), error = %e, "could not write the segment's summary; it is read in full at each start");
                }
            }
        }
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        let read = scan(&mut file, &mut tail, &mut newest, each).map_err(io)?;
        let oldest = sealed.first().map_or(path, |s| s.path.as_path());
        let mut archived_before = match first_record(oldest)? {
            Some(r) if r.seq > 1 => Some(r.time),
            _ => None,
        };
        let head = match segment::read_head(path) {
            // Records in the live file already say where the chain stands.
            Err(e) if read.first.is_some() => {
                tracing::warn!(error = %e, "ignoring the journal's damaged seal head");
                None
            }
            other => other?,
        };
        if let Some(head) = head
            && head.seq > tail.appended
        {
            // Sealed since everything present was written, and those segments moved away:
            // the chain continues after them, not from record 1.
            tail.next_seq = head.seq + 1;
            tail.appended = head.seq;
            tail.prev_hash = head.hash;
            archived_before = Some(head.time);
        }
        let (mut len, live_first) = (read.len, read.first.unwrap_or(tail.appended + 1));
        // The newest complete line must be a whole record: appending after a damaged one
        // would hide the damage.
        let newest_unreadable = (!newest.is_empty())
            .then(|| serde_json::from_slice::<AuditRecord>(&newest).err())
            .flatten();
        if let Some(e) = newest_unreadable {
            return Err(Error::Corrupt(format!(
                "the newest record of {} is unreadable ({e}); run `writ audit verify --data-dir` on a copy to find the damage",
                path.display()
            )));
        }
        if file.metadata().map_err(io)?.len() != len {
            // A torn write from a crash: never acknowledged, so never handed out.
            file.set_len(len).map_err(io)?;
        }
        let ahead_path = ahead::path_of(path);
        let mut ahead = WriteAhead::open(&ahead_path, lap_bytes).map_err(storage(&ahead_path))?;
        let lost = ahead
            .continuation(tail.appended, &tail.prev_hash)
            .map_err(storage(&ahead_path))?;
        if !lost.is_empty() {
            // Acknowledged records a crash kept from the journal: take them back.
            file.write_all(&lost).map_err(io)?;
            len += scan(lost.as_slice(), &mut tail, &mut newest, each)
                .map_err(io)?
                .len;
            tracing::info!(
                records = lost.iter().filter(|b| **b == b'\n').count(),
                "journal completed from its write-ahead file after a crash"
            );
        }
        // Everything read back was possibly only in the page cache (a crashed process):
        // durable before the write-ahead file's next lap overwrites its copy.
        file.sync_all().map_err(io)?;
        ahead.restart();
        Ok(Self {
            path: path.to_owned(),
            segment_bytes,
            archived_before,
            commit: Mutex::new(Commit {
                // Everything read back is on disk already.
                durable: tail.appended,
                len,
                file: Some(Live { file, ahead }),
                live_first,
                seal_at: segment_bytes,
                spare: Vec::new(),
            }),
            tail: Mutex::new(tail),
            flushed: Condvar::new(),
        })
    }

    fn lock_tail(&self) -> MutexGuard<'_, Tail> {
        // Every field is replaced only after the new record is complete: a panic elsewhere
        // cannot leave the head half-updated.
        self.tail.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_commit(&self) -> MutexGuard<'_, Commit> {
        self.commit.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Chains `event` after the newest record and queues it for the next flush. With a
    /// `serial`, refuses one seen among recent issuances ([`Error::SerialReused`]) and
    /// appends nothing.
    pub(crate) fn append(
        &self,
        event: AuditEvent,
        serial: Option<&str>,
        time: u64,
    ) -> Result<AuditRecord, Error> {
        let mut guard = self.lock_tail();
        let tail = &mut *guard;
        if serial.is_some_and(|s| tail.serials.contains(s)) {
            return Err(Error::SerialReused);
        }
        let record = AuditRecord::chain_into(
            tail.next_seq,
            time,
            event,
            &tail.prev_hash,
            &mut tail.pending,
        )
        .map_err(|e| Error::Storage(format!("journal: {e}")))?;
        tail.appended = record.seq;
        tail.next_seq = record.seq + 1;
        tail.prev_hash.clone_from(&record.hash);
        if record.event.action == AuditAction::Issue {
            tail.issued += u64::from(carries_facts(&record.event));
        }
        if let Some(s) = serial {
            tail.serials.insert(s);
        }
        Ok(record)
    }

    /// When records before the oldest one present were archived (moved away with their
    /// segments): that record's time. Certificates they record may still be valid.
    pub(crate) fn archived_before(&self) -> Option<u64> {
        self.archived_before
    }

    /// The newest record on disk (0 when there is none). Records of archived segments
    /// count: the chain's head stays where they left it.
    pub(crate) fn durable_seq(&self) -> u64 {
        self.lock_commit().durable
    }

    /// Issuance records appended so far (durable or about to be), not counting those
    /// imported from an older audit log, which the older issuance log counts.
    pub(crate) fn issued(&self) -> u64 {
        self.lock_tail().issued
    }

    /// Returns once every record appended before the call is on disk. Concurrent callers
    /// share flushes: one writes and syncs everything queued, the others wait for it.
    pub(crate) fn sync(&self) -> Result<(), Error> {
        let target = self.lock_tail().appended;
        let mut commit = self.lock_commit();
        loop {
            if commit.durable >= target {
                return Ok(());
            }
            let Some(mut live) = commit.file.take() else {
                commit = self.flushed.wait(commit).unwrap_or_else(|p| p.into_inner());
                continue;
            };
            let mut bytes = std::mem::take(&mut commit.spare);
            drop(commit);
            let upto = {
                let mut tail = self.lock_tail();
                std::mem::swap(&mut tail.pending, &mut bytes);
                tail.appended
            };
            let result = live
                .file
                .write_all(&bytes)
                .and_then(|()| live.ahead.commit(&live.file, &bytes));
            commit = self.lock_commit();
            match &result {
                Ok(()) => {
                    commit.durable = upto;
                    commit.len += bytes.len() as u64;
                    if commit.len >= commit.seal_at {
                        self.seal(&mut commit, &mut live, &bytes);
                    }
                    if bytes.capacity() <= MAX_SPARE {
                        bytes.clear();
                        commit.spare = bytes;
                    }
                }
                Err(_) => {
                    // Cut what may have been half written and keep the records queued: the
                    // next flush retries them in order, so the chain on disk stays whole.
                    let _ = live.file.set_len(commit.len);
                    let mut tail = self.lock_tail();
                    let mut retry = bytes;
                    retry.extend_from_slice(&tail.pending);
                    tail.pending = retry;
                }
            }
            commit.file = Some(live);
            self.flushed.notify_all();
            result.map_err(storage(&self.path))?;
        }
    }

    /// Seals the live file (just flushed with `flushed`) as a segment; the records are
    /// durable either way, so a failure only postpones sealing.
    fn seal(&self, commit: &mut Commit, live: &mut Live, flushed: &[u8]) {
        let newest = flushed
            .strip_suffix(b"\n")
            .and_then(|b| b.rsplit(|c| *c == b'\n').next())
            .and_then(|line| serde_json::from_slice::<AuditRecord>(line).ok());
        let Some(newest) = newest else {
            // Never so for lines this journal wrote; try again after the next flush.
            return;
        };
        let head = segment::Head {
            seq: newest.seq,
            hash: newest.hash,
            time: newest.time,
        };
        // A sealed segment is complete on disk by itself: the write-ahead file's next lap
        // may overwrite its newest records.
        let sealed = live
            .file
            .sync_data()
            .map_err(storage(&self.path))
            .and_then(|()| segment::seal(&self.path, commit.live_first, &head));
        match sealed {
            Ok(fresh) => {
                live.file = fresh;
                live.ahead.restart();
                let sealed = segment::sealed_path(&self.path, commit.live_first);
                commit.len = 0;
                commit.live_first = commit.durable + 1;
                commit.seal_at = self.segment_bytes;
                // Reading a whole segment takes a while: not on the commit path. Should the
                // thread not run, the next open writes the summary.
                let _ = std::thread::Builder::new()
                    .name("journal-summary".into())
                    .spawn(move || summarize(&sealed));
            }
            Err(e) => {
                // Retried after another eighth of a segment, not on every flush.
                commit.seal_at = commit.len + (self.segment_bytes / 8).max(1);
                tracing::warn!(error = %e, "the journal could not be sealed; retrying later");
            }
        }
    }
}

impl Drop for Journal {
    /// A clean stop leaves the journal complete on disk by itself, as a backup or an
    /// offline `writ audit verify` expects; a crash leaves the rest to the write-ahead file.
    fn drop(&mut self) {
        let commit = self.commit.get_mut().unwrap_or_else(|p| p.into_inner());
        if let Some(live) = &commit.file {
            let _ = live.file.sync_data();
        }
    }
}

/// The sequence number a journal line starts with (`{"seq":N,`, as this CA writes every
/// record), without parsing the rest.
fn leading_seq(line: &[u8]) -> Option<u64> {
    let rest = line.strip_prefix(b"{\"seq\":")?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 20 || rest.get(digits) != Some(&b',') {
        return None;
    }
    std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
}

/// The first record of a journal file, if it has a readable one.
fn first_record(path: &Path) -> Result<Option<AuditRecord>, Error> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(storage(path)(e)),
    };
    let mut line = Vec::new();
    BufReader::new(file)
        .read_until(b'\n', &mut line)
        .map_err(storage(path))?;
    Ok(serde_json::from_slice(&line).ok())
}

/// Maps an I/O error on `path` to a storage error that names the file.
fn storage(path: &Path) -> impl Fn(std::io::Error) -> Error + Copy + '_ {
    move |e| Error::Storage(format!("{}: {e}", path.display()))
}

/// Whether an issuance record carries the certificate's facts, as every record written
/// by the journal does; those imported from an older audit log do not.
pub(crate) fn carries_facts(e: &AuditEvent) -> bool {
    e.fingerprint.is_some()
}

/// Writes `lines` (one record each, newline-terminated) as the journal at `path`,
/// atomically: a crash leaves either no journal or all of it.
pub(crate) fn create_from(path: &Path, lines: &[Vec<u8>]) -> Result<(), Error> {
    let io = storage(path);
    let tmp = path.with_extension("import");
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    for line in lines {
        file.write_all(line).map_err(io)?;
        if line.last() != Some(&b'\n') {
            file.write_all(b"\n").map_err(io)?;
        }
    }
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
