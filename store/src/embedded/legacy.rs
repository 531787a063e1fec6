//! Data directories from before the journal: their issuance log and serial index stay in
//! sled (read, never written), and their audit tree moves into the journal once.

use std::path::Path;

use super::IssuanceRecord;
use writ_ca::Error;

/// The issuance log of data directories written before the journal: read, never written.
pub(super) const LEGACY_LOG: &str = "issuance_log";
/// Their serial index, still checked so an old serial is never reissued.
pub(super) const LEGACY_SERIALS: &str = "issuance_serials";
/// Their audit log (big-endian sequence number → JSON record), moved into the journal.
pub(super) const LEGACY_AUDIT: &str = "audit";
/// Issuance records kept in sled before the journal existed.
pub(super) struct Legacy {
    pub(super) log: sled::Tree,
    pub(super) serials: sled::Tree,
}

impl Legacy {
    /// Decodes one value of the legacy log.
    pub(super) fn record(value: sled::Result<sled::IVec>) -> Result<IssuanceRecord, Error> {
        serde_json::from_slice(&value.map_err(super::sled_error)?)
            .map_err(|e| Error::Corrupt(format!("issuance log: {e}")))
    }
}

/// Moves the audit tree of an older data directory into a new journal, once: the journal
/// is written whole (temporary file, then rename) before the tree is dropped, so a crash
/// in between repeats nothing and loses nothing.
pub(super) fn import_legacy_audit(db: &sled::Db, journal: &Path) -> Result<(), Error> {
    let tree = db.open_tree(LEGACY_AUDIT).map_err(super::sled_error)?;
    if !journal.exists() && !tree.is_empty() {
        let lines = tree
            .iter()
            .values()
            .map(|v| v.map(|v| v.to_vec()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(super::sled_error)?;
        crate::embedded::journal::create_from(journal, &lines)?;
    }
    if !tree.is_empty() {
        db.drop_tree(LEGACY_AUDIT).map_err(super::sled_error)?;
        db.flush().map_err(super::sled_error)?;
    }
    Ok(())
}
