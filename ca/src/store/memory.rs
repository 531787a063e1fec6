//! A [`Store`] in memory, for this crate's unit tests: the CA core is tested without a
//! file system (the real implementations and their tests are in `writ-store`).

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;

use super::{Entries, IssuanceRecord, Store};
use crate::Error;
use crate::audit::{AuditEvent, AuditRecord, GENESIS};

/// Every record is stamped with this time: tests that care pass their own `now` elsewhere.
const TIME: u64 = 1_700_000_000;

#[derive(Default)]
pub(crate) struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    trees: BTreeMap<String, BTreeMap<Vec<u8>, Vec<u8>>>,
    serials: HashSet<String>,
    audit: Vec<AuditRecord>,
}

impl MemoryStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Inner {
    fn append(&mut self, event: AuditEvent) -> AuditRecord {
        let prev = self.audit.last().map_or(GENESIS, |r| r.hash.as_str());
        let record = AuditRecord::chain(self.audit.len() as u64 + 1, TIME, event, prev);
        self.audit.push(record.clone());
        record
    }
}

impl Store for MemoryStore {
    fn get(&self, tree: &str, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        Ok(self
            .lock()
            .trees
            .get(tree)
            .and_then(|t| t.get(key))
            .cloned())
    }

    fn put(&self, tree: &str, key: &[u8], value: &[u8]) -> Result<(), Error> {
        let mut inner = self.lock();
        let tree = inner.trees.entry(tree.to_owned()).or_default();
        tree.insert(key.to_vec(), value.to_vec());
        Ok(())
    }

    fn compare_and_swap(
        &self,
        tree: &str,
        key: &[u8],
        old: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool, Error> {
        let mut inner = self.lock();
        let tree = inner.trees.entry(tree.to_owned()).or_default();
        if tree.get(key).map(Vec::as_slice) != old {
            return Ok(false);
        }
        match new {
            Some(v) => tree.insert(key.to_vec(), v.to_vec()),
            None => tree.remove(key),
        };
        Ok(true)
    }

    fn scan(&self, tree: &str) -> Result<Entries, Error> {
        Ok(self.lock().trees.get(tree).map_or_else(Vec::new, |t| {
            t.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        }))
    }

    fn record_issuance_unsynced(&self, record: &IssuanceRecord) -> Result<(), Error> {
        let mut inner = self.lock();
        if !inner.serials.insert(record.serial.clone()) {
            return Err(Error::SerialReused);
        }
        inner.append(record.audit_event());
        Ok(())
    }

    fn sync(&self) -> Result<(), Error> {
        Ok(())
    }

    fn for_each_recent_issuance(
        &self,
        f: &mut dyn FnMut(IssuanceRecord) -> bool,
    ) -> Result<(), Error> {
        let records: Vec<_> = self.lock().audit.clone();
        for r in records.iter().rev().filter_map(IssuanceRecord::from_audit) {
            if !f(r) {
                break;
            }
        }
        Ok(())
    }

    fn for_each_issuance(&self, f: &mut dyn FnMut(&IssuanceRecord)) -> Result<(), Error> {
        let records: Vec<_> = self.lock().audit.clone();
        for r in records.iter().filter_map(IssuanceRecord::from_audit) {
            f(&r);
        }
        Ok(())
    }

    fn issuance_count(&self) -> Result<u64, Error> {
        Ok(self.lock().serials.len() as u64)
    }

    fn append_audit(&self, event: &AuditEvent) -> Result<AuditRecord, Error> {
        Ok(self.lock().append(event.clone()))
    }

    fn for_each_audit(
        &self,
        since: u64,
        f: &mut dyn FnMut(Result<AuditRecord, String>) -> bool,
    ) -> Result<(), Error> {
        let records: Vec<_> = self.lock().audit.clone();
        for r in records.into_iter().filter(|r| r.seq >= since) {
            if !f(Ok(r)) {
                break;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn keeps_one_verifiable_chain_and_refuses_a_reused_serial() {
        let store = MemoryStore::default();
        let record = IssuanceRecord {
            serial: "01".into(),
            spiffe_id: "spiffe://example.org/a".into(),
            not_before: 1,
            not_after: 2,
            fingerprint: "ff".into(),
            key_type: "ec-p256".into(),
            auth: "mtls".into(),
            generation: 1,
        };
        store.record_issuance(&record).unwrap();
        assert!(matches!(
            store.record_issuance(&record),
            Err(Error::SerialReused)
        ));
        assert_eq!(store.recent_issuance(5).unwrap(), vec![record]);
        let mut all = Vec::new();
        store
            .for_each_audit(0, &mut |r| {
                all.push(r);
                true
            })
            .unwrap();
        assert_eq!(crate::audit::verify(all).unwrap().records, 1);
        assert!(store.compare_and_swap("t", b"k", None, Some(b"v")).unwrap());
        assert!(!store.compare_and_swap("t", b"k", None, Some(b"w")).unwrap());
        assert_eq!(store.get("t", b"k").unwrap().unwrap(), b"v");
    }
}
