//! Recovery through the write-ahead file: what a machine crash can take from the journal
//! (writes never synced to it) comes back at open; stale, torn and forged lines do not.

use std::io::Write;

use crate::audit::{AuditAction, AuditEvent};
use crate::journal::{Journal, leading_seq};

fn issue(serial: &str) -> AuditEvent {
    let mut e = AuditEvent::new(AuditAction::Issue, "mtls");
    e.serial = Some(serial.into());
    e.fingerprint = Some("ff".into());
    e
}

/// Every record of the journal, checked as one chain: (how many, newest seq).
fn chain(j: &Journal) -> (u64, u64) {
    let mut all = Vec::new();
    j.for_each(0, &mut |r| {
        all.push(r);
        true
    })
    .unwrap();
    let head = crate::audit::verify(all).unwrap();
    (head.records, head.seq)
}

/// The byte length of the first `n` lines of `bytes`.
fn lines_len(bytes: &[u8], n: usize) -> usize {
    bytes
        .split_inclusive(|b| *b == b'\n')
        .take(n)
        .map(<[u8]>::len)
        .sum()
}

/// Cuts the journal at `path` back to `keep` bytes followed by half a line: what a
/// machine crash leaves when its newest writes never reached the disk.
fn lose_tail(path: &std::path::Path, keep: usize) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.set_len(keep as u64).unwrap();
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(b"{\"seq\":").unwrap();
}

#[test]
fn records_the_journal_lost_come_back_from_the_write_ahead_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    {
        let j = Journal::open(&path, &mut |_| {}).unwrap();
        for s in ["01", "02", "03", "04", "05"] {
            j.append(issue(s), Some(s), 7).unwrap();
            j.sync().unwrap();
        }
    }
    let wal = super::path_of(&path);
    let mode = std::fs::metadata(&wal).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600
    );
    let written = std::fs::read(&path).unwrap();
    lose_tail(&path, lines_len(&written, 2));

    let mut seen = Vec::new();
    let j = Journal::open(&path, &mut |r| seen.push(r.seq)).unwrap();
    assert_eq!(seen, [1, 2, 3, 4, 5], "every record reaches the indexes");
    assert_eq!(j.issued(), 5);
    assert_eq!(chain(&j), (5, 5));
    assert_eq!(
        std::fs::read(&path).unwrap(),
        written,
        "the journal is whole again"
    );
    assert!(
        matches!(
            j.append(issue("04"), Some("04"), 8),
            Err(crate::Error::SerialReused)
        ),
        "a serial taken back counts as seen"
    );
    j.append(issue("06"), Some("06"), 8).unwrap();
    j.sync().unwrap();
    assert_eq!(chain(&j), (6, 6));
}

#[test]
fn after_laps_only_the_current_one_is_taken_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    {
        // About five records per lap: flushes until two records into the fourth lap, so
        // the file still holds lines of the third beyond them.
        let j = Journal::open_with_lap(&path, 1 << 30, 1024, None, &mut |_| {}).unwrap();
        let mut laps = 0;
        for i in 0u32.. {
            let s = format!("{i:02x}");
            j.append(issue(&s), Some(&s), 7).unwrap();
            j.sync().unwrap();
            let at = j.lock_commit().file.as_ref().unwrap().ahead.at;
            if at == 0 {
                laps += 1;
            } else if laps == 3 && at > 300 {
                break;
            }
        }
    }
    // The current lap started right after a flush that synced the journal itself.
    let held = std::fs::read(super::path_of(&path)).unwrap();
    let first = leading_seq(&held).unwrap();
    let stale = held
        .split_inclusive(|b| *b == b'\n')
        .filter_map(leading_seq)
        .filter(|s| *s < first)
        .count();
    assert!(
        first > 1 && stale > 0,
        "the file holds a lap from {first} and {stale} older lines"
    );
    let written = std::fs::read(&path).unwrap();
    lose_tail(&path, lines_len(&written, first as usize - 1));

    let total = written.iter().filter(|b| **b == b'\n').count() as u64;
    let j = Journal::open(&path, &mut |_| {}).unwrap();
    assert_eq!(chain(&j), (total, total));
    assert_eq!(j.issued(), total);
    assert_eq!(std::fs::read(&path).unwrap(), written);
}

#[test]
fn a_torn_or_forged_line_is_not_taken_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    {
        let j = Journal::open(&path, &mut |_| {}).unwrap();
        for s in ["01", "02", "03", "04"] {
            j.append(issue(s), Some(s), 7).unwrap();
            j.sync().unwrap();
        }
    }
    let wal = super::path_of(&path);
    let held = std::fs::read(&wal).unwrap();
    // Record 3 altered (its hash no longer matches), record 4 torn.
    let (two, three) = (lines_len(&held, 2), lines_len(&held, 3));
    let mut damaged = held[..two].to_vec();
    damaged.extend(
        String::from_utf8_lossy(&held[two..three])
            .replacen("\"time\":7", "\"time\":8", 1)
            .bytes(),
    );
    damaged.extend_from_slice(&held[three..held.len() - 5]);
    assert_ne!(damaged[two..three], held[two..three]);
    std::fs::write(&wal, &damaged).unwrap();
    lose_tail(&path, lines_len(&std::fs::read(&path).unwrap(), 1));

    let j = Journal::open(&path, &mut |_| {}).unwrap();
    assert_eq!(
        chain(&j),
        (2, 2),
        "the chain stops before the altered record"
    );
    assert_eq!(j.issued(), 2);
    // Issuance carries on from there, and a flush keeps working over the old lines.
    j.append(issue("05"), Some("05"), 9).unwrap();
    j.sync().unwrap();
    drop(j);
    let j = Journal::open(&path, &mut |_| {}).unwrap();
    assert_eq!(chain(&j), (3, 3));
}
