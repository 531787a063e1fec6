//! The audit log: every issuance and every admin action, one record each, hash-chained.
//!
//! Record `n` stores `hash_n = SHA-256(hash_{n-1} ‖ canonical(n))`, where `canonical(n)`
//! is the JSON of its sequence number, time and event (fields in declaration order, so the
//! bytes are reproducible from the parsed record) and `hash_0` is 32 zero bytes. Changing,
//! removing or reordering any record therefore breaks the chain at a sequence number
//! [`verify`] names. Truncating the newest records is not detectable from the log alone:
//! compare the head [`verify`] reports with one noted earlier (see SECURITY.md).
//!
//! The log is the issuance log too: an issuance record carries every fact of the
//! certificate (`journal.rs` keeps it, one JSON line per record, group-committed), so
//! auditing costs no write of its own.

use serde::{Deserialize, Serialize};

/// The hash before the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What an audit record is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditAction {
    /// A certificate was issued (any authentication method).
    Issue,
    /// A bootstrap token was minted.
    TokenCreate,
    /// A bootstrap token was revoked.
    TokenRevoke,
    /// A new CA generation was prepared.
    RootPrepare,
    /// The prepared generation was activated.
    RootActivate,
    /// The previous generation was retired.
    RootRetire,
    /// A scheduled rotation was started.
    RootRotate,
    /// An external CA was imported.
    RootImport,
    /// An identity was denied: nothing is issued for it any more.
    IdentityDeny,
    /// A denied identity was allowed again.
    IdentityAllow,
}

impl AuditAction {
    /// The snake_case name used in records and output.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::Issue => "issue",
            AuditAction::TokenCreate => "token_create",
            AuditAction::TokenRevoke => "token_revoke",
            AuditAction::RootPrepare => "root_prepare",
            AuditAction::RootActivate => "root_activate",
            AuditAction::RootRetire => "root_retire",
            AuditAction::RootRotate => "root_rotate",
            AuditAction::RootImport => "root_import",
            AuditAction::IdentityDeny => "identity_deny",
            AuditAction::IdentityAllow => "identity_allow",
        }
    }
}

/// What happened, as the caller describes it; the store adds sequence, time and hashes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditEvent {
    /// The kind of event.
    pub action: AuditAction,
    /// Who: for issuance the authentication method (`mtls`, `token`, `admin`, ...), for
    /// admin actions the admin socket peer (`uid:0`).
    pub actor: String,
    /// The SPIFFE ID concerned, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spiffe_id: Option<String>,
    /// The certificate serial (lowercase hex), for issuance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// The certificate's notAfter (Unix seconds), for issuance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<u64>,
    /// Anything else worth keeping: a token's `jti`, a generation, a deny reason, `force`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    // Issuance facts. Declared after the older fields and skipped when absent, so records
    // written before they existed hash to the same bytes.
    /// The certificate's notBefore (Unix seconds), for issuance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<u64>,
    /// SHA-256 of the certificate's DER (lowercase hex), for issuance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// The subject key type (`ec-p256`, ...), for issuance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_type: Option<String>,
    /// The CA generation that signed the certificate, for issuance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
}

impl AuditEvent {
    /// An event with only an action and an actor; set the other fields as needed.
    pub fn new(action: AuditAction, actor: impl Into<String>) -> Self {
        Self {
            action,
            actor: actor.into(),
            spiffe_id: None,
            serial: None,
            not_after: None,
            detail: None,
            not_before: None,
            fingerprint: None,
            key_type: None,
            generation: None,
        }
    }
}

/// One stored record: an event, its place in the chain and its hashes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditRecord {
    /// Sequence number, from 1, without gaps.
    pub seq: u64,
    /// When it was recorded, Unix seconds.
    pub time: u64,
    /// What happened.
    pub event: AuditEvent,
    /// The previous record's hash (lowercase hex; [`GENESIS`] for record 1).
    pub prev: String,
    /// SHA-256 of `prev` (as bytes) and this record's canonical bytes, lowercase hex.
    pub hash: String,
}

impl AuditRecord {
    /// Builds record `seq` after the record whose hash is `prev` (hex).
    pub fn chain(seq: u64, time: u64, event: AuditEvent, prev: &str) -> Self {
        let hash = link_hash(prev, seq, time, &event);
        Self {
            seq,
            time,
            event,
            prev: prev.to_owned(),
            hash,
        }
    }

    /// [`AuditRecord::chain`], appending the record's JSON line (newline included) to
    /// `line` as well. The canonical bytes the hash covers are the line's first bytes, so
    /// the event is serialised once. On error `line` is left as it was.
    pub fn chain_into(
        seq: u64,
        time: u64,
        event: AuditEvent,
        prev: &str,
        line: &mut Vec<u8>,
    ) -> Result<Self, serde_json::Error> {
        let start = line.len();
        let written = (|| {
            serde_json::to_writer(
                &mut *line,
                &Canonical {
                    seq,
                    time,
                    event: &event,
                },
            )?;
            let hash = hash_link(prev, &line[start..]);
            // `{"seq":…,"time":…,"event":{…}}` + `,"prev":…,"hash":…}`: the record's own
            // serialisation, its fields being declared in this order.
            line.pop();
            line.extend_from_slice(b",\"prev\":");
            serde_json::to_writer(&mut *line, prev)?;
            line.extend_from_slice(b",\"hash\":");
            serde_json::to_writer(&mut *line, &hash)?;
            line.extend_from_slice(b"}\n");
            Ok(hash)
        })();
        match written {
            Ok(hash) => Ok(Self {
                seq,
                time,
                event,
                prev: prev.to_owned(),
                hash,
            }),
            Err(e) => {
                line.truncate(start);
                Err(e)
            }
        }
    }

    /// Whether `hash` matches `prev` and the contents.
    pub fn hash_matches(&self) -> bool {
        link_hash(&self.prev, self.seq, self.time, &self.event) == self.hash
    }
}

/// The hashed part of a record, in a fixed field order.
#[derive(Serialize)]
struct Canonical<'a> {
    seq: u64,
    time: u64,
    event: &'a AuditEvent,
}

fn link_hash(prev: &str, seq: u64, time: u64, event: &AuditEvent) -> String {
    let body = serde_json::to_vec(&Canonical { seq, time, event })
        // Serialising plain strings and integers cannot fail.
        .unwrap_or_default();
    hash_link(prev, &body)
}

/// SHA-256 of `prev` as bytes and a record's canonical bytes, lowercase hex.
fn hash_link(prev: &str, canonical: &[u8]) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut fixed = [0u8; 32];
    if hex::decode_to_slice(prev, &mut fixed).is_ok() {
        ctx.update(&fixed);
    } else {
        // A `prev` that is not 64 hex digits hashes as its raw text: the result cannot
        // match an honest chain, so the break is still reported at this record.
        match hex::decode(prev) {
            Ok(bytes) => ctx.update(&bytes),
            Err(_) => ctx.update(prev.as_bytes()),
        }
    }
    ctx.update(canonical);
    hex::encode(ctx.finish())
}

/// The outcome of a successful [`verify`]: how many records and the newest one's place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainHead {
    /// The oldest sequence number checked: 1 for a whole log, later when older segments
    /// were archived ([`verify_continuing`]); 0 when the log is empty.
    pub first_seq: u64,
    /// Records checked.
    pub records: u64,
    /// The newest sequence number (0 when the log is empty).
    pub seq: u64,
    /// The newest hash ([`GENESIS`] when the log is empty).
    pub hash: String,
}

/// Where and how the chain breaks.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChainBreak {
    /// The record's hash does not match its contents: it was modified.
    #[error(
        "audit record {seq} was modified: its hash does not match its contents (records before it verify)"
    )]
    Modified {
        /// The record.
        seq: u64,
    },
    /// The record's link to its predecessor does not match: the predecessor was modified
    /// and re-hashed, or replaced.
    #[error(
        "audit record {seq} does not follow record {}: the chain is broken there (a record was replaced or re-hashed)",
        .seq - 1
    )]
    Unlinked {
        /// The record whose `prev` does not match.
        seq: u64,
    },
    /// A sequence number is missing where `found` sits: removed, or moved elsewhere.
    #[error("audit record {expected} is missing or out of order: record {found} is in its place")]
    Missing {
        /// The sequence number expected.
        expected: u64,
        /// The one found instead.
        found: u64,
    },
    /// A record appears after a later one: the log was reordered.
    #[error("audit record {found} is out of order: it appears after record {after}")]
    OutOfOrder {
        /// The record out of place.
        found: u64,
        /// The record it follows.
        after: u64,
    },
    /// A record could not be read at all.
    #[error("audit record at position {position} is unreadable: {reason}")]
    Unreadable {
        /// 1-based position in the input.
        position: u64,
        /// The parse error.
        reason: String,
    },
}

impl ChainBreak {
    /// The sequence number where the chain breaks (for an unreadable record, its position).
    pub fn seq(&self) -> u64 {
        match self {
            ChainBreak::Modified { seq } | ChainBreak::Unlinked { seq } => *seq,
            ChainBreak::Missing { expected, .. } => *expected,
            ChainBreak::OutOfOrder { found, .. } => *found,
            ChainBreak::Unreadable { position, .. } => *position,
        }
    }
}

/// Checks a whole log, oldest first, from record 1: every record in sequence, every hash
/// matching its contents and its predecessor. Streams: memory stays flat however long the
/// log. `Err(text)` items are records that failed to parse.
pub fn verify<I>(records: I) -> Result<ChainHead, ChainBreak>
where
    I: IntoIterator<Item = Result<AuditRecord, String>>,
{
    walk(records, false)
}

/// Like [`verify`], but the log may begin after record 1 — its older segments archived —
/// and is then checked from its first record on, whose own hash must match. The result's
/// `first_seq` says where the checked history starts: removing the oldest records is
/// detectable only against an archive or a count noted earlier.
pub fn verify_continuing<I>(records: I) -> Result<ChainHead, ChainBreak>
where
    I: IntoIterator<Item = Result<AuditRecord, String>>,
{
    walk(records, true)
}

fn walk<I>(records: I, continuing: bool) -> Result<ChainHead, ChainBreak>
where
    I: IntoIterator<Item = Result<AuditRecord, String>>,
{
    let mut check = ChainCheck::new(continuing);
    for r in records {
        check.push(r)?;
    }
    Ok(check.finish())
}

/// [`verify`] one record at a time, for logs read through a callback: memory stays flat
/// however long the log.
#[derive(Debug)]
pub struct ChainCheck {
    head: ChainHead,
    continuing: bool,
    position: u64,
}

impl ChainCheck {
    /// A check from record 1, or with `continuing` from wherever the log starts (as
    /// [`verify_continuing`]).
    pub fn new(continuing: bool) -> Self {
        Self {
            head: ChainHead {
                first_seq: 0,
                records: 0,
                seq: 0,
                hash: GENESIS.to_owned(),
            },
            continuing,
            position: 0,
        }
    }

    /// Checks the next record (`Err(text)`: a line that failed to parse).
    pub fn push(&mut self, record: Result<AuditRecord, String>) -> Result<(), ChainBreak> {
        self.position += 1;
        let r = record.map_err(|reason| ChainBreak::Unreadable {
            position: self.position,
            reason,
        })?;
        let head = &mut self.head;
        if self.continuing && head.records == 0 && r.seq > 1 {
            // The anchor: what preceded it is elsewhere.
            head.seq = r.seq - 1;
            head.hash.clone_from(&r.prev);
        }
        let expected = head.seq + 1;
        if r.seq < expected {
            return Err(ChainBreak::OutOfOrder {
                found: r.seq,
                after: head.seq,
            });
        }
        if r.seq > expected {
            return Err(ChainBreak::Missing {
                expected,
                found: r.seq,
            });
        }
        if !r.hash_matches() {
            return Err(ChainBreak::Modified { seq: r.seq });
        }
        if r.prev != head.hash {
            return Err(ChainBreak::Unlinked { seq: r.seq });
        }
        if head.records == 0 {
            head.first_seq = r.seq;
        }
        head.records += 1;
        head.seq = r.seq;
        head.hash = r.hash;
        Ok(())
    }

    /// The head after every record pushed.
    pub fn finish(self) -> ChainHead {
        self.head
    }
}

#[cfg(test)]
mod tests {
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
            let back: AuditRecord =
                serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
            assert!(back.hash_matches());
        }
        let mut unknown = serde_json::to_value(&log(1)[0]).unwrap();
        unknown["event"]["extra"] = "x".into();
        assert!(serde_json::from_value::<AuditRecord>(unknown).is_err());
    }
}
