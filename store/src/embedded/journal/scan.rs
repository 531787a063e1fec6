//! Reading journal files through: at open (the chain's head, the serials and issuance
//! counts the journal keeps) and to summarise a sealed segment.

use std::borrow::Cow;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use serde::Deserialize;
use serde::de::IgnoredAny;

use super::{Tail, storage};
use crate::embedded::segment;
use writ_ca::Error;
use writ_ca::audit::{AuditAction, AuditRecord};

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

/// Reads the sealed segment at `path` through and writes its summary.
pub(super) fn summarize(path: &Path) {
    let result = summary_of(path).and_then(|summary| segment::write_summary(path, &summary));
    if let Err(e) = result {
        tracing::warn!(segment = %path.display(), error = %e, "could not summarise the sealed segment; the next start reads it in full");
    }
}

/// The summary of the sealed segment at `path`, read through.
fn summary_of(path: &Path) -> std::io::Result<segment::Summary> {
    let mut tail = Tail::new();
    let read = scan(File::open(path)?, &mut tail, &mut Vec::new(), &mut |_| {})?;
    Ok(read.summary(&tail, 0))
}

/// One sealed segment of the journal beside `live`, oldest first, from its summary (or,
/// without a usable one, from reading it): for `writ audit segments`.
pub(crate) fn sealed_segments(
    live: &Path,
) -> Result<Vec<(segment::Sealed, segment::Summary)>, Error> {
    segment::list(live)?
        .into_iter()
        .map(|s| {
            let summary = match segment::read_summary(&s.path) {
                Some(summary) => summary,
                None => summary_of(&s.path).map_err(storage(&s.path))?,
            };
            Ok((s, summary))
        })
        .collect()
}

/// What reading one journal file found.
pub(super) struct FileRead {
    /// Length of its complete lines.
    pub(super) len: u64,
    /// The first record's sequence number.
    pub(super) first: Option<u64>,
    /// The latest notAfter among the workload certificates it records (0 when none).
    max_not_after: u64,
}

impl FileRead {
    /// The summary of a sealed segment just read, `tail` being the head after it and
    /// `issued_before` the issuance count before it.
    pub(super) fn summary(&self, tail: &Tail, issued_before: u64) -> segment::Summary {
        segment::Summary {
            bytes: self.len,
            last_seq: tail.appended,
            last_hash: tail.prev_hash.clone(),
            issued: tail.issued - issued_before,
            max_not_after: self.max_not_after,
        }
    }
}

/// Reads one journal file through at open: each complete line's record goes to `each` and
/// moves the chain's head in `tail`; `newest` ends as the last complete line.
pub(super) fn scan(
    file: impl std::io::Read,
    tail: &mut Tail,
    newest: &mut Vec<u8>,
    each: &mut dyn FnMut(&Scanned<'_>),
) -> std::io::Result<FileRead> {
    let mut read = FileRead {
        len: 0,
        first: None,
        max_not_after: 0,
    };
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)?;
        if n == 0 || line.last() != Some(&b'\n') {
            return Ok(read);
        }
        read.len += n as u64;
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
                // The server's own certificates are reissued under any generation and
                // never hold anything back (as in the store's live index).
                if let Some((not_after, _, auth)) = r.issued_leaf()
                    && auth != writ_ca::AuthMethod::Internal.as_str()
                {
                    read.max_not_after = read.max_not_after.max(not_after);
                }
            }
            read.first.get_or_insert(r.seq);
            tail.next_seq = r.seq + 1;
            tail.appended = r.seq;
            tail.prev_hash = r.hash.into_owned();
        }
        std::mem::swap(&mut line, newest);
    }
}
