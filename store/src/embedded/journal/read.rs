//! Reading the journal back: every durable record, oldest first from a sequence number or
//! newest first, across the sealed segments and the live file.

use std::fs::File;

use super::{Journal, leading_seq, storage};
use crate::embedded::segment;
use writ_ca::Error;
use writ_ca::audit::AuditRecord;

impl Journal {
    /// What a reader goes through: the sealed segments, and the live file opened while
    /// no seal can move it, with its durable length.
    fn snapshot(&self) -> Result<(Vec<segment::Sealed>, File, u64), Error> {
        self.sync()?;
        let commit = self.lock_commit();
        let sealed = segment::list(&self.path)?;
        let live = File::open(&self.path).map_err(storage(&self.path))?;
        Ok((sealed, live, commit.len))
    }

    /// Calls `f` on every durable record from sequence number `since` on, oldest first,
    /// until it returns `false`. A line that does not parse is passed as `Err(reason)` so a
    /// verifier can name it, when the record before it is within the range asked for.
    ///
    /// Sealed segments wholly before `since` are not opened, and earlier records in the
    /// others are skipped by their leading `{"seq":N,` without being parsed: paging through
    /// a long log (`audit list --since`, `audit export`) reads each page's segment, not all
    /// of history parsed again.
    pub(crate) fn for_each(
        &self,
        since: u64,
        f: &mut dyn FnMut(Result<AuditRecord, String>) -> bool,
    ) -> Result<(), Error> {
        let (sealed, live, len) = self.snapshot()?;
        // The newest sequence number passed over: an unreadable line after it has none of
        // its own.
        let mut last = 0u64;
        let mut each = |line: &[u8]| {
            if let Some(seq) = leading_seq(line).filter(|s| *s < since) {
                last = seq;
                return true;
            }
            match serde_json::from_slice::<AuditRecord>(line) {
                Ok(r) if r.seq < since => {
                    last = r.seq;
                    true
                }
                Ok(r) => {
                    last = r.seq;
                    f(Ok(r))
                }
                Err(e) if last + 1 >= since => f(Err(e.to_string())),
                Err(_) => true,
            }
        };
        for (i, segment) in sealed.iter().enumerate() {
            if sealed
                .get(i + 1)
                .is_some_and(|next| next.first_seq <= since)
            {
                continue;
            }
            let Some(file) = open_sealed(segment)? else {
                continue;
            };
            // Sealed: complete and never written again.
            if !segment::read_forward(file, u64::MAX, &mut each).map_err(storage(&segment.path))? {
                return Ok(());
            }
        }
        segment::read_forward(live, len, &mut each).map_err(storage(&self.path))?;
        Ok(())
    }

    /// Calls `f` on every durable record, newest first, until it returns `false`; reads
    /// backwards, so the cost follows what `f` consumes, not the journal's size.
    pub(crate) fn for_each_newest(
        &self,
        f: &mut dyn FnMut(Result<AuditRecord, String>) -> bool,
    ) -> Result<(), Error> {
        let (sealed, mut live, len) = self.snapshot()?;
        let mut each = |line: &[u8]| f(serde_json::from_slice(line).map_err(|e| e.to_string()));
        if !segment::read_backward(&mut live, len, &mut each).map_err(storage(&self.path))? {
            return Ok(());
        }
        for segment in sealed.iter().rev() {
            let Some(mut file) = open_sealed(segment)? else {
                continue;
            };
            let len = file.metadata().map_err(storage(&segment.path))?.len();
            if !segment::read_backward(&mut file, len, &mut each).map_err(storage(&segment.path))? {
                return Ok(());
            }
        }
        Ok(())
    }
}

/// Opens a sealed segment for reading; `None` when it was moved away (archived) since it
/// was listed.
fn open_sealed(segment: &segment::Sealed) -> Result<Option<File>, Error> {
    match File::open(&segment.path) {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(storage(&segment.path)(e)),
    }
}
