//! A copy of the KDF record beside the database (`kek.json`), so that a start with the
//! wrong passphrase — or with none, for sealed keys — is refused before the database is
//! opened. Opening sled rewrites its own files and opening the journal repairs it; a
//! refused start should change nothing at all.
//!
//! The record in the store stays the authority: the copy is rewritten from it after every
//! successful unlock, and a store without a usable copy (an older data directory, a crash
//! before the copy was written, a damaged file) is checked in the store as before.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use writ_ca::Error;
use writ_ca::seal::{KEK_KEY, KEK_TREE, Kek, KeyProtection, Sealer, open_record, unlock};
use writ_ca::store::Store;

/// File name of the copy, beside the database directory.
pub const KEK_FILE: &str = "kek.json";

/// A copy is a few hundred bytes; anything much larger is not one.
const MAX_COPY_BYTES: u64 = 4096;

/// What checking the passphrase against the copy found, for [`unlock_checked`].
pub struct Precheck {
    path: PathBuf,
    /// The copy's bytes, when it could be read.
    copy: Option<Vec<u8>>,
    /// The key-encryption key the copy's record opened with the passphrase.
    kek: Option<Arc<Kek>>,
}

/// Checks `protection` against the copy of the KDF record beside the database `db`,
/// before the database is opened: [`Error::WrongPassphrase`] when the passphrase does not
/// open the copy's check value, [`Error::KeysSealed`] when there is a copy and no
/// passphrase. A missing, unreadable or damaged copy decides nothing.
pub fn precheck(db: &Path, protection: &KeyProtection) -> Result<Precheck, Error> {
    let path = db.with_file_name(KEK_FILE);
    // Without the database, a copy left behind belongs to no CA: a new one starts.
    let copy = if db.exists() { read_copy(&path) } else { None };
    let mut checked = Precheck {
        path,
        copy,
        kek: None,
    };
    let Some(copy) = &checked.copy else {
        return Ok(checked);
    };
    match protection {
        KeyProtection::Unencrypted => Err(Error::KeysSealed),
        KeyProtection::Passphrase { passphrase, .. } => match open_record(copy, passphrase) {
            Ok(kek) => {
                checked.kek = Some(Arc::new(kek));
                Ok(checked)
            }
            Err(Error::WrongPassphrase) => Err(Error::WrongPassphrase),
            // An empty passphrase is refused as it would be by the store.
            Err(e @ Error::Key(_)) => Err(e),
            Err(e) => {
                tracing::warn!(copy = %checked.path.display(), error = %e, "ignoring the damaged copy of the key-encryption record; the passphrase is checked in the database");
                checked.copy = None;
                Ok(checked)
            }
        },
    }
}

/// [`unlock`], after [`precheck`]: the key derived for the copy is reused when the store
/// holds the same record (Argon2 runs once), and the copy is brought in line with the
/// store's record afterwards.
pub fn unlock_checked(
    store: &dyn Store,
    protection: KeyProtection,
    checked: Precheck,
) -> Result<(Sealer, bool), Error> {
    let record = store.get(KEK_TREE, KEK_KEY)?;
    let (sealer, created) = match (&checked.kek, &record, &protection) {
        (Some(kek), Some(bytes), KeyProtection::Passphrase { .. })
            if checked.copy.as_ref() == Some(bytes) =>
        {
            (Sealer::Kek(kek.clone()), false)
        }
        _ => unlock(store, protection)?,
    };
    let record = if created {
        store.get(KEK_TREE, KEK_KEY)?
    } else {
        record
    };
    if let Err(e) = checked.follow(record.as_deref()) {
        // The store's check still guards every start; only the refusal before opening
        // the database is lost until the copy can be written.
        tracing::warn!(copy = %checked.path.display(), error = %e, "could not update the copy of the key-encryption record");
    }
    Ok((sealer, created))
}

impl Precheck {
    /// Makes the copy say what the store says: `record`'s bytes, or no file.
    fn follow(&self, record: Option<&[u8]>) -> std::io::Result<()> {
        match record {
            Some(bytes) if self.copy.as_deref() != Some(bytes) => write_copy(&self.path, bytes),
            Some(_) => Ok(()),
            None => match std::fs::remove_file(&self.path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            },
        }
    }
}

fn read_copy(path: &Path) -> Option<Vec<u8>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(copy = %path.display(), error = %e, "cannot read the copy of the key-encryption record; the passphrase is checked in the database");
            return None;
        }
    };
    let mut bytes = Vec::new();
    match file.take(MAX_COPY_BYTES + 1).read_to_end(&mut bytes) {
        Ok(n) if n as u64 <= MAX_COPY_BYTES => Some(bytes),
        _ => None,
    }
}

/// Replaces the copy atomically (mode 0600), durably: a crash leaves the old copy or the
/// new one.
fn write_copy(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    crate::replace::replace(path, bytes, true)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::SledStore;
    use writ_ca::seal::KdfParams;

    /// A passphrase at a cheap Argon2 cost: these tests exercise the copy, not the KDF.
    fn pass(p: &str) -> KeyProtection {
        KeyProtection::Passphrase {
            passphrase: zeroize::Zeroizing::new(p.as_bytes().to_vec()),
            params: KdfParams {
                m_kib: 64,
                t: 1,
                p: 1,
            },
        }
    }

    /// Opens the store at `db` the way the server does: check first, then open, unlock.
    fn start(db: &Path, protection: KeyProtection) -> Result<(Sealer, bool), Error> {
        let checked = precheck(db, &protection)?;
        let store = SledStore::open(db)?;
        unlock_checked(&store, protection, checked)
    }

    #[test]
    fn a_wrong_or_missing_passphrase_is_refused_before_the_database_opens() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db");
        let (_, created) = start(&db, pass("right")).unwrap();
        assert!(created);
        let copy = std::fs::read(dir.path().join(KEK_FILE)).unwrap();
        {
            let store = SledStore::open(&db).unwrap();
            assert_eq!(store.get(KEK_TREE, KEK_KEY).unwrap(), Some(copy.clone()));
        }
        // Refused without opening the database: with sled's lock held by another
        // opener, an attempt to open it would fail with a different error.
        let held = SledStore::open(&db).unwrap();
        assert!(matches!(
            precheck(&db, &pass("wrong")),
            Err(Error::WrongPassphrase)
        ));
        assert!(matches!(
            precheck(&db, &KeyProtection::Unencrypted),
            Err(Error::KeysSealed)
        ));
        assert!(matches!(precheck(&db, &pass("")), Err(Error::Key(_))));
        drop(held);
        let (sealer, created) = start(&db, pass("right")).unwrap();
        assert!(!created && sealer.kek().is_some());
        assert_eq!(std::fs::read(dir.path().join(KEK_FILE)).unwrap(), copy);
    }

    #[test]
    fn the_store_stays_the_authority_over_a_missing_or_damaged_copy() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db");
        let path = dir.path().join(KEK_FILE);
        start(&db, pass("right")).unwrap();
        let copy = std::fs::read(&path).unwrap();

        // An older data directory has no copy: the store refuses, and a good start
        // writes the copy.
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(
            start(&db, pass("wrong")),
            Err(Error::WrongPassphrase)
        ));
        assert!(!path.exists(), "a refused start writes no copy");
        start(&db, pass("right")).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), copy);

        // A damaged or oversized copy decides nothing and is rewritten.
        for junk in [b"{not json".to_vec(), vec![b' '; 5000]] {
            std::fs::write(&path, &junk).unwrap();
            assert!(matches!(
                start(&db, pass("wrong")),
                Err(Error::WrongPassphrase)
            ));
            start(&db, pass("right")).unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), copy);
        }
    }

    #[test]
    fn a_copy_without_its_database_belongs_to_no_ca() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db");
        let path = dir.path().join(KEK_FILE);
        start(&db, pass("old")).unwrap();
        let old = std::fs::read(&path).unwrap();
        std::fs::remove_dir_all(&db).unwrap();
        // A new, unencrypted CA: the stale copy neither refuses it nor outlives it.
        let (sealer, _) = start(&db, KeyProtection::Unencrypted).unwrap();
        assert!(sealer.kek().is_none());
        assert!(!path.exists());
        std::fs::remove_dir_all(&db).unwrap();
        std::fs::write(&path, &old).unwrap();
        // A new CA under another passphrase: the copy follows its record.
        let (_, created) = start(&db, pass("new")).unwrap();
        assert!(created);
        assert_ne!(std::fs::read(&path).unwrap(), old);
        assert!(matches!(
            precheck(&db, &pass("old")),
            Err(Error::WrongPassphrase)
        ));
    }
}
