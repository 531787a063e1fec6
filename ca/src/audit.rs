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
mod tests;
