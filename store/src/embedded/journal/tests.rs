//! The journal's unit tests: chaining, torn tails, damage, concurrency, segments.

use super::*;

/// An issuance event with facts for `serial`.
pub(super) fn issue(serial: &str) -> AuditEvent {
    let mut e = AuditEvent::new(AuditAction::Issue, "mtls");
    e.serial = Some(serial.into());
    e.fingerprint = Some("ff".into());
    e
}

/// Every record of `j`, oldest first.
pub(super) fn records(j: &Journal) -> Vec<Result<AuditRecord, String>> {
    let mut out = Vec::new();
    j.for_each(0, &mut |r| {
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
    let head = writ_ca::audit::verify(all).unwrap();
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
    let head = writ_ca::audit::verify(records(&j)).unwrap();
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

/// Past the segment size the live file is sealed; the segments and the live file read
/// as one chain, forwards, backwards and at open, and a segment moved away leaves a
/// journal that still opens and chains on.
#[test]
fn sealed_segments_read_as_one_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    {
        let j = Journal::open_segmented(&path, 2048, None, &mut |_| {}).unwrap();
        for i in 0..100u64 {
            let s = format!("{i:04x}");
            j.append(issue(&s), Some(&s), i).unwrap();
            j.sync().unwrap();
        }
        assert!(matches!(
            j.append(issue("0001"), Some("0001"), 7),
            Err(Error::SerialReused)
        ));
        let head = writ_ca::audit::verify(records(&j)).unwrap();
        assert_eq!((head.records, head.seq), (100, 100));
        let mut newest = Vec::new();
        j.for_each_newest(&mut |r| {
            newest.push(r.unwrap().seq);
            true
        })
        .unwrap();
        assert_eq!(newest, (1..=100).rev().collect::<Vec<_>>());
    }
    let sealed = segment::list(&path).unwrap();
    assert!(sealed.len() >= 10, "{} segments", sealed.len());
    let mut concatenated = Vec::new();
    for s in &sealed {
        let text = std::fs::read(&s.path).unwrap();
        assert!(text.len() >= 2048, "sealed before the segment size");
        let first: AuditRecord =
            serde_json::from_slice(text.split(|b| *b == b'\n').next().unwrap()).unwrap();
        assert_eq!(first.seq, s.first_seq, "named after its first record");
        concatenated.extend_from_slice(&text);
    }
    concatenated.extend_from_slice(&std::fs::read(&path).unwrap());
    let lines: Vec<_> = concatenated
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice::<AuditRecord>(l).map_err(|e| e.to_string()))
        .collect();
    assert_eq!(writ_ca::audit::verify(lines).unwrap().records, 100);

    let mut seqs = Vec::new();
    let j = Journal::open_segmented(&path, 2048, None, &mut |r| seqs.push(r.seq)).unwrap();
    assert_eq!(seqs, (1..=100).collect::<Vec<_>>());
    assert_eq!(j.issued(), 100);
    assert!(matches!(
        j.append(issue("0002"), Some("0002"), 7),
        Err(Error::SerialReused)
    ));
    // Reading from a sequence number skips the segments wholly before it.
    let mut from = Vec::new();
    j.for_each(90, &mut |r| {
        from.push(r.unwrap().seq);
        true
    })
    .unwrap();
    assert!(
        from.first().is_some_and(|f| *f > 80 && *f <= 90),
        "{from:?}"
    );
    assert_eq!(from.last(), Some(&100));
    drop(j);

    // An operator archives the oldest segment: what remains still opens and chains on.
    std::fs::remove_file(&sealed[0].path).unwrap();
    let j = Journal::open_segmented(&path, 2048, None, &mut |_| {}).unwrap();
    let next = j
        .append(AuditEvent::new(AuditAction::IdentityDeny, "uid:0"), None, 2)
        .unwrap();
    assert_eq!(next.seq, 101);
    let all = records(&j);
    assert_eq!(all[0].as_ref().unwrap().seq, sealed[1].first_seq);
    assert_eq!(all.last().unwrap().as_ref().unwrap().seq, 101);
    assert_eq!(
        writ_ca::audit::verify_continuing(all).unwrap().first_seq,
        sealed[1].first_seq
    );
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
                j.for_each(0, &mut |r| {
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

/// Issuance with facts expiring at `not_after`.
fn leaf(serial: &str, not_after: u64) -> AuditEvent {
    let mut e = issue(serial);
    (e.not_after, e.generation) = (Some(not_after), Some(1));
    e
}

/// A sealed segment whose certificates all expired is summarised and skipped at open:
/// its records reach no callback, yet the head, the count and the chain are whole; a
/// damaged summary only means the segment is read again.
#[test]
fn segments_whose_certificates_expired_are_skipped_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    {
        let j = Journal::open_segmented(&path, 2048, None, &mut |_| {}).unwrap();
        for i in 0..60u64 {
            // The first forty expired long ago; the last twenty are valid.
            let not_after = if i < 40 { 100 } else { 10_000 };
            let s = format!("{i:04x}");
            j.append(leaf(&s, not_after), Some(&s), i).unwrap();
            j.sync().unwrap();
        }
    }
    let sealed = segment::list(&path).unwrap();
    assert!(sealed.len() >= 4, "{} segments", sealed.len());
    // The first open after sealing makes sure every segment has its summary.
    drop(Journal::open_segmented(&path, 2048, Some(1_000), &mut |_| {}).unwrap());
    for s in &sealed {
        let summary = segment::read_summary(&s.path).expect("summary");
        assert!(summary.last_seq >= s.first_seq);
    }

    let mut seen = Vec::new();
    let j = Journal::open_segmented(&path, 2048, Some(1_000), &mut |r| seen.push(r.seq)).unwrap();
    assert!(
        !seen.is_empty() && seen[0] > 1 && seen[0] <= 41,
        "expired segments were read: {seen:?}"
    );
    assert_eq!(seen.last(), Some(&60));
    assert!(
        seen.contains(&41),
        "a segment with a valid certificate is read"
    );
    assert_eq!(j.issued(), 60);
    let next = j
        .append(AuditEvent::new(AuditAction::IdentityDeny, "uid:0"), None, 2)
        .unwrap();
    assert_eq!(next.seq, 61);
    let head = writ_ca::audit::verify(records(&j)).unwrap();
    assert_eq!((head.first_seq, head.records), (1, 61));
    drop(j);

    // Without a cut-off, or with a damaged summary, the segment is read.
    let mut all = 0;
    drop(Journal::open_segmented(&path, 2048, None, &mut |_| all += 1).unwrap());
    assert_eq!(all, 61);
    std::fs::write(segment::summary_path(&sealed[0].path), b"{").unwrap();
    let mut first = None;
    drop(
        Journal::open_segmented(&path, 2048, Some(1_000), &mut |r| {
            first.get_or_insert(r.seq);
        })
        .unwrap(),
    );
    assert_eq!(first, Some(1));
    assert!(
        segment::read_summary(&sealed[0].path).is_some(),
        "the summary is rewritten"
    );
}

#[test]
fn the_leading_sequence_number_is_read_only_when_it_is_plain() {
    assert_eq!(leading_seq(br#"{"seq":12,"time":1}"#), Some(12));
    assert_eq!(leading_seq(br#"{"seq":0,"#), Some(0));
    for odd in [
        &br#"{"seq":,"time":1}"#[..],
        br#"{"seq":12}"#,
        br#"{"time":1,"seq":2,"#,
        br#"{ "seq":3,"#,
        br#"{"seq":-3,"#,
        br#"{"seq":123456789012345678901,"#,
        br#"{"seq":99999999999999999999,"#,
        b"",
    ] {
        assert_eq!(leading_seq(odd), None, "{}", String::from_utf8_lossy(odd));
    }
}

/// Reading from `since` passes exactly the records from `since` on, and an unreadable line
/// only when the record before it is in range, whether earlier lines are skipped by their
/// prefix or parsed.
#[test]
fn reading_from_a_sequence_number_passes_what_follows_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let head = {
        let j = Journal::open(&path, &mut |_| {}).unwrap();
        let mut last = None;
        for i in 0..3u64 {
            last = Some(j.append(AuditEvent::new(AuditAction::IdentityDeny, "uid:0"), None, i));
        }
        j.sync().unwrap();
        last.unwrap().unwrap()
    };
    // Damage after record 3, then records 4 and 5 chained on as the CA would.
    let mut f = OpenOptions::new().append(true).open(&path).unwrap();
    f.write_all(b"{\"seq\":oops\n").unwrap();
    let mut prev = head.hash;
    for seq in 4..=5u64 {
        let r = AuditRecord::chain(
            seq,
            seq,
            AuditEvent::new(AuditAction::IdentityDeny, "uid:0"),
            &prev,
        );
        prev.clone_from(&r.hash);
        f.write_all(&serde_json::to_vec(&r).unwrap()).unwrap();
        f.write_all(b"\n").unwrap();
    }
    drop(f);
    let j = Journal::open(&path, &mut |_| {}).unwrap();
    let read = |since: u64| {
        let mut out = Vec::new();
        j.for_each(since, &mut |r| {
            out.push(r.map(|r| r.seq).map_err(|_| ()));
            true
        })
        .unwrap();
        out
    };
    assert_eq!(read(0), [Ok(1), Ok(2), Ok(3), Err(()), Ok(4), Ok(5)]);
    assert_eq!(read(3), [Ok(3), Err(()), Ok(4), Ok(5)]);
    assert_eq!(read(4), [Err(()), Ok(4), Ok(5)]);
    assert_eq!(read(5), [Ok(5)]);
    assert_eq!(read(6), []);
}

/// Right after a seal the live file is empty: with every sealed segment moved away, the
/// journal continues the chain from the head recorded at the seal, not from record 1, and
/// says that history was archived.
#[test]
fn with_every_segment_archived_the_chain_continues_after_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let newest = {
        let j = Journal::open_segmented(&path, 2048, None, &mut |_| {}).unwrap();
        let mut newest;
        loop {
            newest = j
                .append(
                    AuditEvent::new(AuditAction::IdentityDeny, "uid:0"),
                    None,
                    77,
                )
                .unwrap();
            j.sync().unwrap();
            if std::fs::metadata(&path).unwrap().len() == 0 {
                break newest;
            }
        }
    };
    assert!(j_is_sealed(&path));
    for s in segment::list(&path).unwrap() {
        std::fs::remove_file(&s.path).unwrap();
    }
    let j = Journal::open_segmented(&path, 2048, None, &mut |_| {}).unwrap();
    assert_eq!(j.archived_before(), Some(77));
    let next = j
        .append(
            AuditEvent::new(AuditAction::IdentityDeny, "uid:0"),
            None,
            78,
        )
        .unwrap();
    assert_eq!(next.seq, newest.seq + 1);
    assert_eq!(next.prev, newest.hash);
    let head = writ_ca::audit::verify_continuing(records(&j)).unwrap();
    assert_eq!((head.first_seq, head.records), (newest.seq + 1, 1));

    // A damaged head does not matter while the live file says where the chain stands...
    drop(j);
    std::fs::write(segment::head_path(&path), b"{").unwrap();
    let j = Journal::open_segmented(&path, 2048, None, &mut |_| {}).unwrap();
    assert_eq!(
        j.append(
            AuditEvent::new(AuditAction::IdentityDeny, "uid:0"),
            None,
            79
        )
        .unwrap()
        .seq,
        next.seq + 1
    );
    drop(j);
    // ...and is refused, not guessed at, when it alone could.
    std::fs::write(&path, b"").unwrap();
    assert!(matches!(
        Journal::open_segmented(&path, 2048, None, &mut |_| {}),
        Err(Error::Corrupt(_))
    ));
}

fn j_is_sealed(path: &Path) -> bool {
    !segment::list(path).unwrap().is_empty() && segment::head_path(path).exists()
}

proptest::proptest! {
    /// Every line the journal writes starts with its sequence number in the form the
    /// skip reads, so paging never falls back to parsing what it passes over.
    #[test]
    fn every_written_line_leads_with_its_sequence_number(
        seq in 1u64..u64::MAX,
        time in proptest::prelude::any::<u64>(),
        actor in ".{0,40}",
        detail in proptest::option::of(".{0,80}"),
    ) {
        let mut event = AuditEvent::new(AuditAction::TokenCreate, actor);
        event.detail = detail;
        let record = AuditRecord::chain(seq, time, event, GENESIS);
        let line = serde_json::to_vec(&record).unwrap();
        proptest::prop_assert_eq!(leading_seq(&line), Some(seq));
    }
}
