//! Recovery through the write-ahead file: what a machine crash can take from the journal
//! (writes never synced to it) comes back at open; stale, torn and forged lines do not,
//! whatever else the write-ahead file holds (property tests).

use std::io::Write;

use crate::embedded::journal::tests::{issue, records};
use crate::embedded::journal::{Journal, leading_seq};
use writ_ca::audit::AuditRecord;

/// Every record of the journal, checked as one chain: (how many, newest seq).
fn chain(j: &Journal) -> (u64, u64) {
    let head = writ_ca::audit::verify(records(j)).unwrap();
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
            Err(writ_ca::Error::SerialReused)
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

#[test]
fn a_write_ahead_file_grown_far_past_its_lap_is_read_only_so_far() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let lap = 1024;
    {
        let j = Journal::open_with_lap(&path, 1 << 30, lap, None, &mut |_| {}).unwrap();
        for s in ["01", "02", "03"] {
            j.append(issue(s), Some(s), 7).unwrap();
            j.sync().unwrap();
        }
    }
    // Sixteen laps of lines that are no records, then the records themselves.
    let wal = super::path_of(&path);
    let mut grown = b"not a record\n".repeat((16 * lap as usize) / 13 + 1);
    grown.extend(std::fs::read(&wal).unwrap());
    let written = std::fs::read(&path).unwrap();
    let reopen = |lap| {
        std::fs::write(&wal, &grown).unwrap();
        lose_tail(&path, lines_len(&written, 1));
        let j = Journal::open_with_lap(&path, 1 << 30, lap, None, &mut |_| {}).unwrap();
        chain(&j)
    };
    assert_eq!(reopen(lap), (1, 1), "nothing past sixteen laps is read");
    assert_eq!(
        reopen(2 * lap),
        (3, 3),
        "within them, the records come back"
    );
}

/// A chain of `n` issuance records from the start, as journal lines, with each record's
/// hash.
fn chain_of(n: u64) -> Vec<(Vec<u8>, String)> {
    let mut prev = writ_ca::audit::GENESIS.to_owned();
    (1..=n)
        .map(|seq| {
            let mut line = Vec::new();
            let r = AuditRecord::chain_into(seq, 7, issue(&format!("{seq:02x}")), &prev, &mut line)
                .unwrap();
            prev = r.hash.clone();
            (line, r.hash)
        })
        .collect()
}

/// The hash of record `head` of `chain` (the genesis value for 0).
fn head_hash(chain: &[(Vec<u8>, String)], head: u64) -> String {
    match head {
        0 => writ_ca::audit::GENESIS.to_owned(),
        h => chain[h as usize - 1].1.clone(),
    }
}

proptest::proptest! {
    /// A lap from any record up to the journal's head on, a torn record after it, the
    /// previous lap's leftovers and noise: exactly the records past the head come back.
    #[test]
    fn exactly_the_records_past_the_head_come_back(
        n in 1u64..10,
        head in 0u64..10,
        lap_from in 1u64..10,
        held in 0u64..10,
        torn in 0usize..400,
        noise in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
    ) {
        let chain = chain_of(n + 1);
        let head = head.min(n);
        let lap_from = lap_from.min(head + 1);
        let upto = (head + held).min(n);
        let mut file = Vec::new();
        for (line, _) in &chain[lap_from as usize - 1..upto as usize] {
            file.extend_from_slice(line);
        }
        // The record after the lap, cut short by the crash; what follows it on disk is
        // not the rest of it.
        let next = &chain[upto as usize].0;
        file.extend_from_slice(&next[..torn.min(next.len() - 1)]);
        file.push(0);
        // What the previous lap left: older records.
        for (line, _) in &chain[..lap_from as usize - 1] {
            file.extend_from_slice(line);
        }
        file.extend_from_slice(&noise);
        let want: Vec<u8> = chain[head as usize..upto as usize]
            .iter()
            .flat_map(|(l, _)| l.clone())
            .collect();
        proptest::prop_assert_eq!(
            super::continuing(&file, head, &head_hash(&chain, head)),
            want
        );
    }

    /// Whatever the file holds, what comes back is a run of records that each verify and
    /// follow the head one after another.
    #[test]
    fn nothing_unverified_comes_back(
        picks in proptest::collection::vec((0usize..8, proptest::prelude::any::<bool>()), 0..16),
        noise in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
        head in 0u64..4,
    ) {
        let chain = chain_of(8);
        let mut file = Vec::new();
        for (i, damage) in picks {
            let mut line = chain[i].0.clone();
            if damage {
                let at = noise.len() % line.len();
                line[at] ^= 0x01;
            }
            file.extend_from_slice(&line);
            file.extend_from_slice(&noise[..noise.len() / 4]);
        }
        let back = super::continuing(&file, head, &head_hash(&chain, head));
        let mut seq = head;
        for line in back.split_inclusive(|b| *b == b'\n') {
            seq += 1;
            proptest::prop_assert_eq!(line, &chain[seq as usize - 1].0[..]);
        }
    }
}
