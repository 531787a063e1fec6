//! The audit chain's unit tests: hashing, verification, and the breaks it names.

use super::*;

fn log(n: u64) -> Vec<AuditRecord> {
    let mut prev = GENESIS.to_owned();
    (1..=n)
        .map(|seq| {
            let mut e = AuditEvent::new(AuditAction::Issue, "mtls");
            e.serial = Some(format!("{seq:02x}"));
            let r = AuditRecord::chain(seq, 1000 + seq, e, &prev);
            prev = r.hash.clone();
            r
        })
        .collect()
}

fn check(records: &[AuditRecord]) -> Result<ChainHead, ChainBreak> {
    verify(records.iter().cloned().map(Ok))
}

proptest::proptest! {
    /// The line built around the canonical bytes is byte for byte the record's own
    /// serialisation, whatever the strings hold.
    #[test]
    fn a_record_chained_into_a_line_serialises_as_itself(
        seq in 1u64..u64::MAX,
        time: u64,
        actor in "\\PC{0,20}",
        detail in proptest::option::of("\\PC{0,40}"),
        spiffe_id in proptest::option::of("[a-z/:.\"\\\\]{0,30}"),
        not_after: Option<u64>,
        prev in proptest::prop_oneof![
            "[0-9a-f]{64}",
            "\\PC{0,70}",
        ],
    ) {
        let mut e = AuditEvent::new(AuditAction::Issue, actor);
        e.detail = detail;
        e.spiffe_id = spiffe_id;
        e.not_after = not_after;
        let mut line = b"earlier\n".to_vec();
        let r = AuditRecord::chain_into(seq, time, e.clone(), &prev, &mut line).unwrap();
        let mut want = b"earlier\n".to_vec();
        want.extend(serde_json::to_vec(&AuditRecord::chain(seq, time, e, &prev)).unwrap());
        want.push(b'\n');
        proptest::prop_assert_eq!(String::from_utf8_lossy(&line), String::from_utf8_lossy(&want));
        proptest::prop_assert!(r.hash_matches());
    }
}

#[test]
fn an_intact_log_verifies_and_reports_its_head() {
    let l = log(5);
    let head = check(&l).unwrap();
    assert_eq!((head.records, head.seq), (5, 5));
    assert_eq!(head.hash, l[4].hash);
    assert_eq!(check(&[]).unwrap().hash, GENESIS);
}

#[test]
fn every_tampering_names_the_record() {
    let mut modified = log(5);
    modified[2].event.serial = Some("ff".into());
    assert_eq!(check(&modified), Err(ChainBreak::Modified { seq: 3 }));

    // Modified and re-hashed: the next record's link gives it away.
    let mut rehashed = log(5);
    rehashed[2].event.spiffe_id = Some("spiffe://td/evil".into());
    rehashed[2] = AuditRecord::chain(
        3,
        rehashed[2].time,
        rehashed[2].event.clone(),
        &rehashed[1].hash,
    );
    assert_eq!(check(&rehashed), Err(ChainBreak::Unlinked { seq: 4 }));

    let mut removed = log(5);
    removed.remove(1);
    assert_eq!(
        check(&removed),
        Err(ChainBreak::Missing {
            expected: 2,
            found: 3
        })
    );

    let mut swapped = log(5);
    swapped.swap(2, 3);
    let err = check(&swapped).unwrap_err();
    assert_eq!(
        err,
        ChainBreak::Missing {
            expected: 3,
            found: 4
        }
    );
    assert!(err.to_string().contains("record 3"), "{err}");

    let mut moved_back = log(5);
    let r = moved_back.remove(1);
    moved_back.push(r);
    // 1, 3: record 2 missing where 3 sits.
    assert_eq!(check(&moved_back).unwrap_err().seq(), 2);

    let mut dup = log(3);
    dup.insert(2, dup[1].clone());
    assert_eq!(
        check(&dup),
        Err(ChainBreak::OutOfOrder { found: 2, after: 2 })
    );

    let unreadable = vec![Ok(log(1)[0].clone()), Err("bad json".to_owned())];
    assert_eq!(verify(unreadable).unwrap_err().seq(), 2);
}

#[test]
fn a_log_whose_oldest_segments_were_archived_verifies_from_where_it_starts() {
    let l = log(6);
    let rest = &l[2..];
    assert_eq!(
        check(rest),
        Err(ChainBreak::Missing {
            expected: 1,
            found: 3
        }),
        "the strict check wants record 1"
    );
    let head = verify_continuing(rest.iter().cloned().map(Ok)).unwrap();
    assert_eq!((head.first_seq, head.records, head.seq), (3, 4, 6));
    assert_eq!(head.hash, l[5].hash);
    assert_eq!(check(&l).unwrap().first_seq, 1);

    let mut anchor_modified = rest.to_vec();
    anchor_modified[0].event.serial = Some("ff".into());
    assert_eq!(
        verify_continuing(anchor_modified.into_iter().map(Ok)),
        Err(ChainBreak::Modified { seq: 3 })
    );
    let mut gap = rest.to_vec();
    gap.remove(1);
    assert_eq!(
        verify_continuing(gap.into_iter().map(Ok))
            .unwrap_err()
            .seq(),
        4
    );
}

#[test]
fn canonical_bytes_survive_a_json_round_trip() {
    for r in log(3) {
        let back: AuditRecord = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert!(back.hash_matches());
    }
    let mut unknown = serde_json::to_value(&log(1)[0]).unwrap();
    unknown["event"]["extra"] = "x".into();
    assert!(serde_json::from_value::<AuditRecord>(unknown).is_err());
}
