//! Sealed journal segments: when the live journal file passes a size, it is renamed to
//! `audit-<first seq>.jsonl` beside it and a fresh file takes its place.
//!
//! Why: one ever-growing file makes every export, verify and start-up read all of history,
//! and leaves an operator no safe unit to archive. A sealed segment never changes again,
//! so it can be copied, shipped or moved away whole; the hash chain runs on across the
//! boundary (the live file's first record links to the sealed one's last), so the
//! segments concatenated in order are exactly the log `writ audit export` prints.
//!
//! Each sealed segment gets a summary beside it (`audit-<first seq>.summary`, written
//! off the commit path after sealing, or at the next open): its length, last record,
//! issuance count and latest certificate expiry. Opening the journal skips a segment
//! whose certificates have all expired, so start-up reads what may still matter — the
//! live file and recent segments — not all of history. Summaries are derived data: a
//! missing, damaged or stale one only means the segment is read in full.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use writ_ca::Error;

/// Width of the zero-padded sequence number in a sealed name, so names sort in order.
const SEQ_DIGITS: usize = 20;

/// One sealed segment: its first record's sequence number and its file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Sealed {
    /// Sequence number of the first record in the file.
    pub first_seq: u64,
    /// The file, beside the live journal.
    pub path: PathBuf,
}

/// What opening the journal needs of a sealed segment it does not read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Summary {
    /// The segment's length: a summary of a different file is ignored.
    pub bytes: u64,
    /// The last record's sequence number and hash: the chain's head after it.
    pub last_seq: u64,
    /// See `last_seq`.
    pub last_hash: String,
    /// Issuance records carrying certificate facts.
    pub issued: u64,
    /// The latest notAfter among the workload certificates (not the server's own) it
    /// records, 0 when none.
    pub max_not_after: u64,
}

/// Where the summary of the segment at `sealed` lives.
pub(crate) fn summary_path(sealed: &Path) -> PathBuf {
    sealed.with_extension("summary")
}

/// The summary of `sealed`, if one exists, parses and matches the file's length.
pub(crate) fn read_summary(sealed: &Path) -> Option<Summary> {
    let text = std::fs::read(summary_path(sealed)).ok()?;
    let summary: Summary = serde_json::from_slice(&text).ok()?;
    let len = std::fs::metadata(sealed).ok()?.len();
    (summary.bytes == len && summary.last_seq > 0).then_some(summary)
}

/// Writes the summary of `sealed` (mode 0600, replaced atomically). Not synced: a summary
/// lost in a crash is rebuilt by reading the segment.
pub(crate) fn write_summary(sealed: &Path, summary: &Summary) -> std::io::Result<()> {
    replace_json(&summary_path(sealed), summary, false)
}

/// Replaces the file at `path` with `value` as JSON ([`crate::replace::replace`]).
fn replace_json(path: &Path, value: &impl Serialize, sync: bool) -> std::io::Result<()> {
    crate::replace::replace(path, &serde_json::to_vec(value)?, sync)
}

/// The chain's head when the live file was last sealed: its newest record's sequence
/// number, hash and time, kept beside the live file (`audit.head`).
///
/// Why: right after a seal the live file is empty, so a journal whose sealed segments were
/// all moved away would otherwise look new and restart the chain at record 1.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Head {
    /// The newest sealed record's sequence number.
    pub seq: u64,
    /// Its hash.
    pub hash: String,
    /// Its time, Unix seconds.
    pub time: u64,
}

/// Where the head of `live`'s last seal is kept.
pub(crate) fn head_path(live: &Path) -> PathBuf {
    live.with_extension("head")
}

/// Records `head` durably (the directory is synced by the seal that follows).
fn write_head(live: &Path, head: &Head) -> std::io::Result<()> {
    replace_json(&head_path(live), head, true)
}

/// The head of `live`'s last seal, if it was ever sealed.
pub(crate) fn read_head(live: &Path) -> Result<Option<Head>, Error> {
    let path = head_path(live);
    match std::fs::read(&path) {
        Ok(text) => serde_json::from_slice(&text).map(Some).map_err(|e| {
            Error::Corrupt(format!(
                "{} is unreadable ({e}); it records where the audit chain stood at the last seal",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::Storage(format!("{}: {e}", path.display()))),
    }
}

/// The file name prefix and suffix of `live`'s sealed segments (`audit-`, `.jsonl`).
fn affixes(live: &Path) -> (String, String) {
    let stem = live.file_stem().unwrap_or_default().to_string_lossy();
    let ext = live
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    (format!("{stem}-"), ext)
}

/// Where the segment of `live` starting at `first_seq` is sealed.
pub(crate) fn sealed_path(live: &Path, first_seq: u64) -> PathBuf {
    let (prefix, suffix) = affixes(live);
    live.with_file_name(format!("{prefix}{first_seq:0SEQ_DIGITS$}{suffix}"))
}

/// The sealed segments beside `live`, oldest first. Names that merely resemble one (a
/// copy, an editor's backup) are ignored rather than read as history.
pub(crate) fn list(live: &Path) -> Result<Vec<Sealed>, Error> {
    let dir = match live.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(d) => d.to_path_buf(),
        None => PathBuf::from("."),
    };
    let (prefix, suffix) = affixes(live);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::Storage(format!("listing {}: {e}", dir.display()))),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::Storage(format!("listing {}: {e}", dir.display())))?;
        let name = entry.file_name();
        let Some(digits) = name
            .to_str()
            .and_then(|n| n.strip_prefix(prefix.as_str()))
            .and_then(|n| n.strip_suffix(suffix.as_str()))
        else {
            continue;
        };
        if digits.len() != SEQ_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if let Ok(first_seq) = digits.parse() {
            out.push(Sealed {
                first_seq,
                path: entry.path(),
            });
        }
    }
    out.sort_by_key(|s| s.first_seq);
    Ok(out)
}

/// Seals `live`, whose newest record is `head`, as the segment starting at `first_seq`
/// and opens a fresh, empty live file (mode 0600) for appending. On an error the live
/// file has not moved, and the caller keeps writing where it was.
pub(crate) fn seal(live: &Path, first_seq: u64, head: &Head) -> Result<File, Error> {
    let io = |what: &str, p: &Path, e: std::io::Error| {
        Error::Storage(format!("sealing the journal: {what} {}: {e}", p.display()))
    };
    let sealed = sealed_path(live, first_seq);
    if sealed.exists() {
        return Err(Error::Storage(format!(
            "sealing the journal: {} already exists; move it away",
            sealed.display()
        )));
    }
    // First, so that a live file found empty always has a head to continue from.
    write_head(live, head).map_err(|e| io("recording the head in", &head_path(live), e))?;
    std::fs::rename(live, &sealed).map_err(|e| io("renaming", live, e))?;
    let fresh = OpenOptions::new()
        .read(true)
        .append(true)
        .create_new(true)
        .mode(0o600)
        .open(live);
    let fresh = match fresh {
        Ok(f) => f,
        Err(e) => {
            // Put the segment back: the caller keeps appending to its open handle, which
            // must stay the live file's.
            let _ = std::fs::rename(&sealed, live);
            return Err(io("creating", live, e));
        }
    };
    if let Some(dir) = live.parent().filter(|d| !d.as_os_str().is_empty()) {
        // Both names must survive a crash together with the records that follow.
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io("syncing", dir, e))?;
    }
    Ok(fresh)
}

/// Calls `f` on each line of the first `len` bytes of `file`, oldest first, until it
/// returns `false`; returns whether it always asked for more.
pub(crate) fn read_forward(
    file: File,
    len: u64,
    f: &mut dyn FnMut(&[u8]) -> bool,
) -> std::io::Result<bool> {
    let mut reader = BufReader::with_capacity(1 << 20, file.take(len));
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Ok(true);
        }
        if !f(&line) {
            return Ok(false);
        }
    }
}

/// Calls `f` on each non-empty line of the first `len` bytes of `file`, newest first,
/// until it returns `false`; reads backwards in blocks, so the cost follows what `f`
/// consumes, not the file's size. Returns whether it always asked for more.
pub(crate) fn read_backward(
    file: &mut File,
    len: u64,
    f: &mut dyn FnMut(&[u8]) -> bool,
) -> std::io::Result<bool> {
    const BLOCK: u64 = 64 * 1024;
    let mut end = len;
    // The start of a line whose beginning lies before `end`.
    let mut carry = Vec::new();
    while end > 0 {
        let start = end.saturating_sub(BLOCK);
        let mut buf = vec![0; (end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut buf)?;
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
            if !line.is_empty() && !f(line) {
                return Ok(false);
            }
        }
        buf.truncate(split);
        carry = buf;
        end = start;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_names_sort_and_strangers_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("audit.jsonl");
        for seq in [530_001u64, 1, 17] {
            std::fs::write(sealed_path(&live, seq), b"").unwrap();
        }
        for stranger in [
            "audit-1.jsonl",
            "audit-00000000000000000001.jsonl.bak",
            "audit-0000000000000000000x.jsonl",
            "audit.jsonl.import",
            "other-00000000000000000002.jsonl",
        ] {
            std::fs::write(dir.path().join(stranger), b"").unwrap();
        }
        let firsts: Vec<u64> = list(&live).unwrap().iter().map(|s| s.first_seq).collect();
        assert_eq!(firsts, [1, 17, 530_001]);
        assert_eq!(
            sealed_path(&live, 17).file_name().unwrap(),
            "audit-00000000000000000017.jsonl"
        );
    }

    #[test]
    fn a_summary_counts_only_for_the_file_it_describes() {
        let dir = tempfile::tempdir().unwrap();
        let sealed = sealed_path(&dir.path().join("audit.jsonl"), 1);
        std::fs::write(&sealed, b"0123456789").unwrap();
        assert_eq!(read_summary(&sealed), None);
        let summary = Summary {
            bytes: 10,
            last_seq: 3,
            last_hash: "ab".into(),
            issued: 2,
            max_not_after: 99,
        };
        write_summary(&sealed, &summary).unwrap();
        assert_eq!(read_summary(&sealed), Some(summary.clone()));
        assert_eq!(
            summary_path(&sealed).file_name().unwrap(),
            "audit-00000000000000000001.summary"
        );
        // The segment changed (restored from elsewhere, say): the summary no longer holds.
        std::fs::write(&sealed, b"01234567890").unwrap();
        assert_eq!(read_summary(&sealed), None);
        std::fs::write(summary_path(&sealed), b"{\"bytes\":").unwrap();
        assert_eq!(read_summary(&sealed), None);
    }

    #[test]
    fn sealing_moves_the_file_and_leaves_a_fresh_private_one() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("audit.jsonl");
        std::fs::write(&live, b"one\n").unwrap();
        let head = Head {
            seq: 1,
            hash: "ab".into(),
            time: 7,
        };
        let fresh = seal(&live, 1, &head).unwrap();
        assert_eq!(read_head(&live).unwrap(), Some(head.clone()));
        assert_eq!(fresh.metadata().unwrap().len(), 0);
        assert_eq!(std::fs::read(sealed_path(&live, 1)).unwrap(), b"one\n");
        let mode = std::fs::metadata(&live).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
            0o600
        );
        // A second seal at the same place would overwrite history: refused, nothing moved.
        std::fs::write(&live, b"two\n").unwrap();
        let Err(Error::Storage(msg)) = seal(&live, 1, &head) else {
            panic!("sealed over an existing segment");
        };
        assert!(msg.contains("already exists"), "{msg}");
        assert_eq!(std::fs::read(&live).unwrap(), b"two\n");
        assert_eq!(std::fs::read(sealed_path(&live, 1)).unwrap(), b"one\n");
    }
}
