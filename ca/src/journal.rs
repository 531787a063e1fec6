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
//! Crash safety: a record is acknowledged only after the flush that wrote it; a crash can
//! leave at most a torn last line, never acknowledged, which is cut off at open.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};

use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::Error;
use crate::audit::{AuditAction, AuditEvent, AuditRecord, GENESIS};

/// How many serials one half of [`RecentSerials`] holds before it is retired.
const SERIALS_PER_HALF: usize = 1 << 20;

/// The append-only log file and the group commit that makes its records durable.
pub(crate) struct Journal {
    path: PathBuf,
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

/// What the flushing writer owns.
struct Commit {
    /// Every record up to this sequence number is on disk.
    durable: u64,
    /// Length of the durable part of the file.
    len: u64,
    /// The append handle; `None` while a writer is flushing with it.
    file: Option<File>,
}

/// Serials of the most recent one to two million issuances, as their first 64 bits.
///
/// Serials carry 127 random bits, so a repeat means a broken random source; this catches
/// one without keeping every serial ever issued in memory. A false match only costs a
/// fresh serial.
#[derive(Default)]
struct RecentSerials {
    current: HashSet<u64>,
    previous: HashSet<u64>,
}

impl RecentSerials {
    fn key(serial: &str) -> u64 {
        let head = serial.get(..16).unwrap_or(serial);
        u64::from_str_radix(head, 16).unwrap_or_else(|_| {
            // Not hex (never written by this CA): fall back to a digest of the text.
            let d = ring::digest::digest(&ring::digest::SHA256, serial.as_bytes());
            u64::from_be_bytes(d.as_ref()[..8].try_into().unwrap_or([0; 8]))
        })
    }

    fn contains(&self, serial: &str) -> bool {
        let k = Self::key(serial);
        self.current.contains(&k) || self.previous.contains(&k)
    }

    fn insert(&mut self, serial: &str) {
        if self.current.len() >= SERIALS_PER_HALF {
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(Self::key(serial));
    }
}

/// What opening the journal reads of a record, without copying its strings: the scan of a
/// million records spent most of its time allocating and freeing them.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Scanned<'a> {
    /// Sequence number.
    pub seq: u64,
    #[serde(rename = "time")]
    _time: IgnoredAny,
    /// What happened.
    #[serde(borrow)]
    pub event: ScannedEvent<'a>,
    #[serde(rename = "prev")]
    _prev: IgnoredAny,
    /// This record's hash.
    #[serde(borrow)]
    pub hash: Cow<'a, str>,
}

/// The fields of an [`AuditEvent`] that opening the journal uses; the others are checked
/// for syntax only.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ScannedEvent<'a> {
    /// The kind of event.
    pub action: AuditAction,
    /// Who: for issuance, the authentication method.
    #[serde(borrow)]
    pub actor: Cow<'a, str>,
    #[serde(default, rename = "spiffe_id")]
    _spiffe_id: Option<IgnoredAny>,
    /// The certificate serial, for issuance (hex: never escaped).
    #[serde(default)]
    pub serial: Option<&'a str>,
    /// notAfter, for issuance.
    #[serde(default)]
    pub not_after: Option<u64>,
    #[serde(default, rename = "detail")]
    _detail: Option<IgnoredAny>,
    #[serde(default, rename = "not_before")]
    _not_before: Option<IgnoredAny>,
    /// Present on issuance records that carry the certificate's facts (hex).
    #[serde(default)]
    pub fingerprint: Option<&'a str>,
    #[serde(default, rename = "key_type")]
    _key_type: Option<IgnoredAny>,
    /// The signing generation, for issuance.
    #[serde(default)]
    pub generation: Option<u64>,
}

impl<'a> Scanned<'a> {
    /// The same view of a record read in full: for a line whose serial or fingerprint
    /// cannot be borrowed (escaped, which this CA never writes).
    fn of(r: &'a AuditRecord) -> Self {
        let e = &r.event;
        Scanned {
            seq: r.seq,
            _time: IgnoredAny,
            event: ScannedEvent {
                action: e.action,
                actor: Cow::Borrowed(&e.actor),
                _spiffe_id: None,
                serial: e.serial.as_deref(),
                not_after: e.not_after,
                _detail: None,
                _not_before: None,
                fingerprint: e.fingerprint.as_deref(),
                _key_type: None,
                generation: e.generation,
            },
            _prev: IgnoredAny,
            hash: Cow::Borrowed(&r.hash),
        }
    }

    /// `(notAfter, generation, auth)` when this records an issuance with its facts.
    pub(crate) fn issued_leaf(&self) -> Option<(u64, u64, &str)> {
        let e = &self.event;
        if e.action != AuditAction::Issue || e.fingerprint.is_none() || e.serial.is_none() {
            return None;
        }
        Some((e.not_after?, e.generation?, &e.actor))
    }
}

impl Journal {
    /// Opens (or creates, mode 0600) the journal at `path`: reads it through to find the
    /// chain's head, passing each readable record to `each`, and cuts off a torn last
    /// line left by a crash.
    pub(crate) fn open(path: &Path, each: &mut dyn FnMut(&Scanned<'_>)) -> Result<Self, Error> {
        let io = |e: std::io::Error| Error::Storage(format!("{}: {e}", path.display()));
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        let mut tail = Tail {
            next_seq: 1,
            prev_hash: GENESIS.to_owned(),
            pending: Vec::new(),
            appended: 0,
            issued: 0,
            serials: RecentSerials::default(),
        };
        let mut len = 0u64;
        let mut reader = BufReader::with_capacity(1 << 20, &mut file);
        let (mut line, mut newest) = (Vec::new(), Vec::new());
        loop {
            line.clear();
            let n = reader.read_until(b'\n', &mut line).map_err(io)?;
            if n == 0 || line.last() != Some(&b'\n') {
                break;
            }
            len += n as u64;
            let full;
            let scanned = match serde_json::from_slice::<Scanned<'_>>(&line) {
                Ok(r) => Some(r),
                Err(_) => {
                    full = serde_json::from_slice::<AuditRecord>(&line).ok();
                    full.as_ref().map(Scanned::of)
                }
            };
            if let Some(r) = scanned {
                each(&r);
                if r.event.action == AuditAction::Issue {
                    tail.issued += u64::from(r.event.fingerprint.is_some());
                    if let Some(serial) = &r.event.serial {
                        tail.serials.insert(serial);
                    }
                }
                tail.next_seq = r.seq + 1;
                tail.appended = r.seq;
                tail.prev_hash = r.hash.into_owned();
            }
            std::mem::swap(&mut line, &mut newest);
        }
        drop(reader);
        // The newest complete line must be a whole record: appending after a damaged one
        // would hide the damage.
        let newest_unreadable = (!newest.is_empty())
            .then(|| serde_json::from_slice::<AuditRecord>(&newest).err())
            .flatten();
        if let Some(e) = newest_unreadable {
            // Appending after it would hide the damage.
            return Err(Error::Corrupt(format!(
                "the newest record of {} is unreadable ({e}); run `writ audit verify --data-dir` on a copy to find the damage",
                path.display()
            )));
        }
        if file.metadata().map_err(io)?.len() != len {
            // A torn write from a crash: never acknowledged, so never handed out.
            file.set_len(len).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        Ok(Self {
            path: path.to_owned(),
            commit: Mutex::new(Commit {
                // Everything read back is on disk already.
                durable: tail.appended,
                len,
                file: Some(file),
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
        let mut tail = self.lock_tail();
        if serial.is_some_and(|s| tail.serials.contains(s)) {
            return Err(Error::SerialReused);
        }
        let record = AuditRecord::chain(tail.next_seq, time, event, &tail.prev_hash);
        let mut line =
            serde_json::to_vec(&record).map_err(|e| Error::Storage(format!("journal: {e}")))?;
        line.push(b'\n');
        tail.pending.extend_from_slice(&line);
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
            let Some(mut file) = commit.file.take() else {
                commit = self.flushed.wait(commit).unwrap_or_else(|p| p.into_inner());
                continue;
            };
            drop(commit);
            let (bytes, upto) = {
                let mut tail = self.lock_tail();
                (std::mem::take(&mut tail.pending), tail.appended)
            };
            let result = file.write_all(&bytes).and_then(|()| file.sync_data());
            commit = self.lock_commit();
            match &result {
                Ok(()) => {
                    commit.durable = upto;
                    commit.len += bytes.len() as u64;
                }
                Err(_) => {
                    // Cut what may have been half written and keep the records queued: the
                    // next flush retries them in order, so the chain on disk stays whole.
                    let _ = file.set_len(commit.len);
                    let mut tail = self.lock_tail();
                    let mut retry = bytes;
                    retry.extend_from_slice(&tail.pending);
                    tail.pending = retry;
                }
            }
            commit.file = Some(file);
            self.flushed.notify_all();
            result.map_err(|e| Error::Storage(format!("{}: {e}", self.path.display())))?;
        }
    }

    /// Calls `f` on every durable record, oldest first, until it returns `false`. A line
    /// that does not parse is passed as `Err(reason)` so a verifier can name it.
    pub(crate) fn for_each(
        &self,
        f: &mut dyn FnMut(Result<AuditRecord, String>) -> bool,
    ) -> Result<(), Error> {
        self.sync()?;
        let len = self.lock_commit().len;
        let io = |e: std::io::Error| Error::Storage(format!("{}: {e}", self.path.display()));
        let file = File::open(&self.path).map_err(io)?;
        let mut reader = BufReader::with_capacity(1 << 20, file.take(len));
        let mut line = Vec::new();
        loop {
            line.clear();
            if reader.read_until(b'\n', &mut line).map_err(io)? == 0 {
                return Ok(());
            }
            if !f(serde_json::from_slice(&line).map_err(|e| e.to_string())) {
                return Ok(());
            }
        }
    }
}

impl Journal {
    /// Calls `f` on every durable record, newest first, until it returns `false`; reads
    /// the file backwards, so the cost follows what `f` consumes, not the journal's size.
    pub(crate) fn for_each_newest(
        &self,
        f: &mut dyn FnMut(Result<AuditRecord, String>) -> bool,
    ) -> Result<(), Error> {
        const BLOCK: u64 = 64 * 1024;
        self.sync()?;
        let io = |e: std::io::Error| Error::Storage(format!("{}: {e}", self.path.display()));
        let mut file = File::open(&self.path).map_err(io)?;
        let mut end = self.lock_commit().len;
        // The start of a line whose beginning lies before `end`.
        let mut carry = Vec::new();
        while end > 0 {
            let start = end.saturating_sub(BLOCK);
            let mut buf = vec![0; (end - start) as usize];
            file.seek(SeekFrom::Start(start)).map_err(io)?;
            file.read_exact(&mut buf).map_err(io)?;
            buf.extend_from_slice(&carry);
            // Unless this block starts the file, its first line may be partial.
            let split = match start {
                0 => 0,
                _ => buf
                    .iter()
                    .position(|b| *b == b'\n')
                    .map_or(buf.len(), |i| i + 1),
            };
            for line in buf[split..].rsplit(|b| *b == b'\n') {
                if !line.is_empty() && !f(serde_json::from_slice(line).map_err(|e| e.to_string())) {
                    return Ok(());
                }
            }
            buf.truncate(split);
            carry = buf;
            end = start;
        }
        Ok(())
    }
}

/// Whether an issuance record carries the certificate's facts, as every record written
/// by the journal does; those imported from an older audit log do not.
pub(crate) fn carries_facts(e: &AuditEvent) -> bool {
    e.fingerprint.is_some()
}

/// Writes `lines` (one record each, newline-terminated) as the journal at `path`,
/// atomically: a crash leaves either no journal or all of it.
pub(crate) fn create_from(path: &Path, lines: &[Vec<u8>]) -> Result<(), Error> {
    let io = |e: std::io::Error| Error::Storage(format!("{}: {e}", path.display()));
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
mod tests {
    use super::*;

    fn issue(serial: &str) -> AuditEvent {
        let mut e = AuditEvent::new(AuditAction::Issue, "mtls");
        e.serial = Some(serial.into());
        e.fingerprint = Some("ff".into());
        e
    }

    fn records(j: &Journal) -> Vec<Result<AuditRecord, String>> {
        let mut out = Vec::new();
        j.for_each(&mut |r| {
            out.push(r);
            true
        })
        .unwrap();
        out
    }

    #[test]
    fn appends_chain_and_survive_reopen_and_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        {
            let j = Journal::open(&path, &mut |_| {}).unwrap();
            for s in ["01", "02", "03"] {
                j.append(issue(s), Some(s), 7).unwrap();
            }
            assert!(matches!(
                j.append(issue("02"), Some("02"), 7),
                Err(Error::SerialReused)
            ));
            j.sync().unwrap();
        }
        let mode = std::fs::metadata(&path).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
            0o600
        );
        // A crash in the middle of a write leaves part of a line.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"seq\":4,\"ti").unwrap();
        drop(f);
        let j = Journal::open(&path, &mut |_| {}).unwrap();
        assert_eq!(j.issued(), 3);
        assert!(matches!(
            j.append(issue("03"), Some("03"), 8),
            Err(Error::SerialReused)
        ));
        j.append(AuditEvent::new(AuditAction::IdentityDeny, "uid:0"), None, 8)
            .unwrap();
        let all = records(&j);
        let head = crate::audit::verify(all).unwrap();
        assert_eq!((head.records, head.seq), (4, 4));
    }

    /// The borrowed view opening reads agrees with the full parse, including for text that
    /// JSON escapes (then the record is read in full).
    #[test]
    fn the_open_scan_sees_what_the_full_parse_sees() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        {
            let j = Journal::open(&path, &mut |_| {}).unwrap();
            let mut leaf = issue("0a");
            (leaf.not_after, leaf.generation) = (Some(99), Some(2));
            j.append(leaf, Some("0a"), 1).unwrap();
            let mut odd = issue("0b\"\n\u{e9}");
            (odd.not_after, odd.generation) = (Some(98), Some(1));
            j.append(odd, Some("0b"), 2).unwrap();
            let mut deny = AuditEvent::new(AuditAction::IdentityDeny, "uid:0");
            deny.detail = Some("reason: \"stolen\"\tkey".into());
            j.append(deny, None, 3).unwrap();
            j.append(AuditEvent::new(AuditAction::Issue, "mtls"), None, 4)
                .unwrap();
            j.sync().unwrap();
        }
        let mut seen = Vec::new();
        let j = Journal::open(&path, &mut |r| {
            let serial = r.event.serial.map(str::to_owned);
            seen.push((
                r.seq,
                serial,
                r.hash.to_string(),
                r.issued_leaf().map(|(a, g, _)| (a, g)),
            ));
        })
        .unwrap();
        let full: Vec<_> = records(&j)
            .into_iter()
            .map(|r| {
                let r = r.unwrap();
                let e = &r.event;
                let leaf = (e.fingerprint.is_some() && e.serial.is_some())
                    .then_some(e.not_after.zip(e.generation))
                    .flatten();
                (r.seq, e.serial.clone(), r.hash, leaf)
            })
            .collect();
        assert_eq!(seen, full);
        assert_eq!(seen[0].3, Some((99, 2)));
        assert_eq!(seen[1].1.as_deref(), Some("0b\"\n\u{e9}"));
        assert_eq!((seen[2].3, seen[3].3), (None, None));
        assert_eq!(
            j.issued(),
            2,
            "an issue record without facts is not counted"
        );
    }

    #[test]
    fn an_unreadable_newest_record_refuses_to_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        {
            let j = Journal::open(&path, &mut |_| {}).unwrap();
            j.append(issue("01"), Some("01"), 1).unwrap();
            j.sync().unwrap();
        }
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"not json\n").unwrap();
        drop(f);
        let Err(Error::Corrupt(msg)) = Journal::open(&path, &mut |_| {}) else {
            panic!("opened");
        };
        assert!(msg.contains("audit verify"), "{msg}");
    }

    #[test]
    fn concurrent_appenders_share_flushes_and_keep_one_chain() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let j = std::sync::Arc::new(Journal::open(&path, &mut |_| {}).unwrap());
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let j = j.clone();
                std::thread::spawn(move || {
                    for i in 0..100 {
                        let s = format!("{t:02x}{i:04x}");
                        j.append(issue(&s), Some(&s), 1).unwrap();
                        j.sync().unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(j);
        let j = Journal::open(&path, &mut |_| {}).unwrap();
        assert_eq!(j.issued(), 800);
        let head = crate::audit::verify(records(&j)).unwrap();
        assert_eq!(head.records, 800);
    }

    #[test]
    fn newest_first_reads_across_blocks_and_stops_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let j = Journal::open(&path, &mut |_| {}).unwrap();
        // Long details make records straddle the 64 KiB blocks read backwards.
        for i in 0..300u64 {
            let mut e = AuditEvent::new(AuditAction::TokenCreate, "uid:0");
            e.detail = Some("x".repeat((i as usize * 37) % 3000));
            j.append(e, None, i).unwrap();
        }
        let mut seqs = Vec::new();
        j.for_each_newest(&mut |r| {
            seqs.push(r.unwrap().seq);
            true
        })
        .unwrap();
        assert_eq!(seqs, (1..=300).rev().collect::<Vec<_>>());
        let mut three = Vec::new();
        j.for_each_newest(&mut |r| {
            three.push(r.unwrap().seq);
            three.len() < 3
        })
        .unwrap();
        assert_eq!(three, [300, 299, 298]);
        let mut seen = 0;
        let mut counted = 0;
        drop(j);
        Journal::open(&path, &mut |r| {
            seen += 1;
            counted += r.seq;
        })
        .unwrap();
        assert_eq!((seen, counted), (300, 300 * 301 / 2));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// Whatever a damaged or hostile file holds after some good records, opening either
        /// refuses with `Corrupt` or succeeds; when it succeeds, reading newest-first is
        /// reading oldest-first reversed, and a new record chains after the newest.
        #[test]
        fn any_file_opens_or_is_refused_and_reads_agree(
            good in 0usize..6,
            junk in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400),
            newline_end in proptest::prelude::any::<bool>(),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("audit.jsonl");
            {
                let j = Journal::open(&path, &mut |_| {}).unwrap();
                for i in 0..good {
                    let s = format!("{i:02x}");
                    j.append(issue(&s), Some(&s), 1).unwrap();
                }
                j.sync().unwrap();
            }
            let mut f = OpenOptions::new().append(true).open(&path).unwrap();
            f.write_all(&junk).unwrap();
            if newline_end {
                f.write_all(b"\n").unwrap();
            }
            drop(f);
            match Journal::open(&path, &mut |_| {}) {
                Err(e) => proptest::prop_assert!(matches!(e, Error::Corrupt(_)), "{e}"),
                Ok(j) => {
                    let mut forward = Vec::new();
                    j.for_each(&mut |r| {
                        forward.push(r);
                        true
                    })
                    .unwrap();
                    let mut backward = Vec::new();
                    j.for_each_newest(&mut |r| {
                        backward.push(r);
                        true
                    })
                    .unwrap();
                    backward.reverse();
                    // Blank lines are skipped newest-first; compare the readable records.
                    let ok = |v: &[Result<AuditRecord, String>]| {
                        v.iter().filter_map(|r| r.as_ref().ok().cloned()).collect::<Vec<_>>()
                    };
                    proptest::prop_assert_eq!(ok(&forward), ok(&backward));
                    let head = forward.iter().rev().find_map(|r| r.as_ref().ok().cloned());
                    let next = j
                        .append(AuditEvent::new(AuditAction::IdentityDeny, "uid:0"), None, 2)
                        .unwrap();
                    proptest::prop_assert_eq!(
                        next.prev,
                        head.map_or_else(|| GENESIS.to_owned(), |h| h.hash)
                    );
                }
            }
        }
    }

    #[test]
    fn recent_serials_forget_only_beyond_two_halves() {
        let mut s = RecentSerials::default();
        for i in 0..(SERIALS_PER_HALF as u64 * 2) {
            s.insert(&format!("{i:016x}"));
        }
        assert!(s.contains(&format!("{:016x}", 0)));
        s.insert("ff");
        // The oldest half is retired once a third begins.
        assert!(!s.contains(&format!("{:016x}", 0)));
        assert!(s.contains(&format!("{:016x}", SERIALS_PER_HALF as u64)));
        assert!(s.contains("ff"));
    }
}
