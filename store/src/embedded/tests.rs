use super::legacy::LEGACY_AUDIT;
use super::*;
use writ_ca::audit::AuditAction;

/// Opens the store at `path`, waiting a little for the lock: sled's background threads
/// can hold it for a moment after the previous `Db` is dropped.
fn open(path: &Path) -> SledStore {
    let mut attempts = 0;
    loop {
        match SledStore::open(path) {
            Ok(s) => return s,
            Err(Error::Storage(e)) if e.contains("locked") && attempts < 100 => {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(e) => panic!("opening {}: {e}", path.display()),
        }
    }
}

fn rec(serial: &str) -> IssuanceRecord {
    IssuanceRecord {
        serial: serial.into(),
        spiffe_id: "spiffe://td/a".into(),
        not_before: 1,
        not_after: 2,
        fingerprint: "ff".into(),
        key_type: "ec-p256".into(),
        auth: "mtls".into(),
        generation: 1,
    }
}

#[test]
fn log_refuses_reused_serial_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = open(&dir.path().join("db"));
        s.record_issuance(&rec("01")).unwrap();
        s.record_issuance(&rec("02")).unwrap();
        assert!(matches!(
            s.record_issuance(&rec("01")),
            Err(Error::SerialReused)
        ));
        assert_eq!(s.issuance_count().unwrap(), 2);
    }
    let s = open(&dir.path().join("db"));
    let recent = s.recent_issuance(10).unwrap();
    assert_eq!(
        recent.iter().map(|r| r.serial.as_str()).collect::<Vec<_>>(),
        ["02", "01"]
    );
}

#[test]
fn the_last_audit_seq_is_the_head_on_disk_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = open(&dir.path().join("db"));
        assert_eq!(s.last_audit_seq().unwrap(), 0);
        s.record_issuance(&rec("01")).unwrap();
        s.append_audit(&AuditEvent::new(AuditAction::IdentityDeny, "uid:0"))
            .unwrap();
        assert_eq!(s.last_audit_seq().unwrap(), 2);
    }
    assert_eq!(open(&dir.path().join("db")).last_audit_seq().unwrap(), 2);
}

#[test]
fn concurrent_writers_share_flushes_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = std::sync::Arc::new(open(&dir.path().join("db")));
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let s = s.clone();
            std::thread::spawn(move || {
                for i in 0..50 {
                    s.record_issuance(&rec(&format!("{t:02x}{i:04x}"))).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(s.issuance_count().unwrap(), 800);
    drop(s);
    let reopened = open(&dir.path().join("db"));
    assert_eq!(reopened.issuance_count().unwrap(), 800);
    // Every issuance is audited once, in one unbroken chain, and appending after a
    // reopen continues it.
    reopened
        .append_audit(&AuditEvent::new(AuditAction::IdentityDeny, "uid:0"))
        .unwrap();
    let mut records = Vec::new();
    reopened
        .for_each_audit(0, &mut |r| {
            records.push(r);
            true
        })
        .unwrap();
    let head = writ_ca::audit::verify(records).unwrap();
    assert_eq!((head.records, head.seq), (801, 801));
    // The log gives back every fact it was given.
    let mut all = Vec::new();
    reopened
        .for_each_issuance(&mut |r| all.push(r.clone()))
        .unwrap();
    assert_eq!(all.len(), 800);
    assert!(all.iter().all(|r| *r == rec(&r.serial)));
}

#[test]
fn an_older_data_dir_keeps_its_log_and_moves_its_audit_chain_into_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let old_head = {
        // What a data directory looked like before the journal: three sled trees.
        let db = sled::open(&path).unwrap();
        let (log, serials, audit) = (
            db.open_tree(LEGACY_LOG).unwrap(),
            db.open_tree(LEGACY_SERIALS).unwrap(),
            db.open_tree(LEGACY_AUDIT).unwrap(),
        );
        let mut prev = writ_ca::audit::GENESIS.to_owned();
        for (i, serial) in ["0a", "0b"].into_iter().enumerate() {
            let id = (i as u64).to_be_bytes();
            log.insert(id, serde_json::to_vec(&rec(serial)).unwrap())
                .unwrap();
            serials.insert(serial, &id[..]).unwrap();
            let mut e = AuditEvent::new(AuditAction::Issue, "mtls");
            e.serial = Some(serial.into());
            e.detail = Some("generation 1".into());
            let r = AuditRecord::chain(i as u64 + 1, 5, e, &prev);
            audit
                .insert(r.seq.to_be_bytes(), serde_json::to_vec(&r).unwrap())
                .unwrap();
            prev = r.hash;
        }
        db.flush().unwrap();
        prev
    };
    for _ in 0..2 {
        let s = open(&path);
        assert!(matches!(
            s.record_issuance(&rec("0a")),
            Err(Error::SerialReused)
        ));
        let mut audit = Vec::new();
        s.for_each_audit(0, &mut |r| {
            audit.push(r);
            true
        })
        .unwrap();
        assert_eq!(audit[1].as_ref().unwrap().hash, old_head);
        writ_ca::audit::verify(audit).unwrap();
        assert!(s.db.open_tree(LEGACY_AUDIT).unwrap().is_empty());
    }
    let s = open(&path);
    s.record_issuance(&rec("0c")).unwrap();
    assert_eq!(s.issuance_count().unwrap(), 3);
    let recent: Vec<String> = s
        .recent_issuance(10)
        .unwrap()
        .into_iter()
        .map(|r| r.serial)
        .collect();
    assert_eq!(recent, ["0c", "0b", "0a"]);
    assert_eq!(s.recent_issuance(1).unwrap()[0].serial, "0c");
    let mut oldest_first = Vec::new();
    s.for_each_issuance(&mut |r| oldest_first.push(r.serial.clone()))
        .unwrap();
    assert_eq!(oldest_first, ["0a", "0b", "0c"]);
}

#[test]
fn a_refused_serial_consumes_no_audit_record() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir.path().join("db"));
    s.record_issuance(&rec("01")).unwrap();
    assert!(s.record_issuance(&rec("01")).is_err());
    s.record_issuance(&rec("02")).unwrap();
    let mut seqs = Vec::new();
    s.for_each_audit(2, &mut |r| {
        seqs.push(r.unwrap().seq);
        true
    })
    .unwrap();
    assert_eq!(seqs, [2]);
}

#[test]
fn live_leaves_follow_expiry_and_generation_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let now = now_unix();
    let leaf = |serial: &str, generation: u64, not_after: u64, auth: &str| IssuanceRecord {
        generation,
        not_after,
        auth: auth.into(),
        ..rec(serial)
    };
    {
        let s = open(&path);
        s.record_issuance(&leaf("01", 1, now - 10, "mtls")).unwrap();
        s.record_issuance(&leaf("02", 1, now + 100, "mtls"))
            .unwrap();
        s.record_issuance(&leaf("03", 1, now + 50, "token"))
            .unwrap();
        s.record_issuance(&leaf("04", 2, now + 200, "jwt")).unwrap();
        s.record_issuance(&leaf("05", 1, now + 900, "internal"))
            .unwrap();
        let expect = LiveLeaves::from([(1, (2, now + 100)), (2, (1, now + 200))]);
        assert_eq!(s.live_leaves(now).unwrap(), expect);
        assert_eq!(
            s.live_leaves(now + 60).unwrap(),
            LiveLeaves::from([(1, (1, now + 100)), (2, (1, now + 200))])
        );
    }
    let s = open(&path);
    assert_eq!(
        s.live_leaves(now + 150).unwrap(),
        LiveLeaves::from([(2, (1, now + 200))])
    );
    assert!(s.live_leaves(now + 200).unwrap().is_empty());
}

#[test]
fn compare_and_swap_is_exclusive() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir.path().join("db"));
    assert!(
        s.compare_and_swap("t", b"k", None, Some(b"pending"))
            .unwrap()
    );
    assert!(
        s.compare_and_swap("t", b"k", Some(b"pending"), Some(b"used"))
            .unwrap()
    );
    assert!(
        !s.compare_and_swap("t", b"k", Some(b"pending"), Some(b"used"))
            .unwrap()
    );
    assert_eq!(s.get("t", b"k").unwrap().as_deref(), Some(&b"used"[..]));
}
