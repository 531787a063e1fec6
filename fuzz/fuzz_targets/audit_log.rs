//! `writ audit verify --file` over arbitrary text: JSON lines parsed as audit records and
//! the hash chain checked.
//!
//! Invariants: never panics; a log that verifies has every line readable, in sequence from
//! 1, its head the last record's hash, and still verifies after a JSON round trip (the
//! hashed bytes are reproducible from the parsed record); changing any verified record's
//! time breaks the chain exactly at that record.
#![no_main]

use libfuzzer_sys::fuzz_target;
use writ_ca::audit::{AuditRecord, ChainBreak, verify};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parsed: Vec<Result<AuditRecord, String>> = text
        .lines()
        .map(|l| serde_json::from_str(l).map_err(|e| e.to_string()))
        .collect();
    let Ok(head) = verify(parsed.clone()) else {
        return;
    };
    let records: Vec<AuditRecord> = parsed.into_iter().flatten().collect();
    assert_eq!(
        head.records as usize,
        records.len(),
        "an unreadable line verified"
    );
    assert_eq!(head.seq, head.records, "sequence numbers skip");
    if let Some(last) = records.last() {
        assert_eq!(last.hash, head.hash);
    }
    let again = records
        .iter()
        .map(|r| serde_json::to_string(r).expect("serialise"))
        .map(|l| serde_json::from_str::<AuditRecord>(&l).map_err(|e| e.to_string()));
    assert_eq!(verify(again).expect("round trip verifies"), head);
    for i in 0..records.len() {
        let mut tampered = records.clone();
        tampered[i].time ^= 1;
        assert_eq!(
            verify(tampered.into_iter().map(Ok)),
            Err(ChainBreak::Modified { seq: i as u64 + 1 })
        );
    }
});
