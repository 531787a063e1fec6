//! Shared helpers for the CA's integration tests: opening a CA on a temporary sled store,
//! issuing through the real policy path, and the independent checkers the issued
//! certificates are held against (x509-cert profile checks, the `openssl` CLI, pkilint).
//!
//! The external tools are required, not optional: a missing tool fails the test with the
//! command that installs it, so CI can never pass by silently skipping a checker.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use writ_ca::{
    AuthMethod, Authority, CaSettings, Caller, GenerationSummary, Issuance, KeyType, LeafRequest,
    PrivateKey, Rules, SpiffeId, TrustDomain, build_csr,
};
use writ_store::{SledStore, StoreOptions};

mod openssl;
mod pkilint;
mod profile;

// Not every test binary uses every checker.
#[allow(unused_imports)]
pub use openssl::*;
#[allow(unused_imports)]
pub use pkilint::*;
#[allow(unused_imports)]
pub use profile::*;

/// The workload identity every test issues.
pub const ID: &str = "spiffe://example.org/ns/default/sa/web";

/// Environment variable naming the Python interpreter that has pkilint installed (for a
/// virtualenv or pipx install whose interpreter is not `python3` on PATH).
pub const PKILINT_ENV: &str = "WRIT_PKILINT";

/// A CA on a sled store in its own temporary directory.
pub struct TestCa {
    /// The CA (an `Option` so tests can close it and reopen the same store).
    pub authority: Option<Authority>,
    settings: CaSettings,
    dir: tempfile::TempDir,
    store_options: StoreOptions,
}

impl TestCa {
    /// Creates a CA with `settings` in a fresh directory.
    pub fn create(settings: CaSettings) -> Self {
        Self::create_with(settings, StoreOptions::default())
    }

    /// Like [`Self::create`], with the store's options (small journal segments, say).
    pub fn create_with(settings: CaSettings, store_options: StoreOptions) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut ca = Self {
            authority: None,
            settings,
            dir,
            store_options,
        };
        let created = ca.open();
        assert!(created, "a fresh store must create a CA");
        ca
    }

    /// The directory the store lives in (`db` and the journal beside it).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// The open CA.
    pub fn ca(&self) -> &Authority {
        self.authority.as_ref().expect("the CA is open")
    }

    /// Closes the CA (releasing sled's lock) and opens it again on the same store.
    /// Returns whether opening created a new CA (it never should).
    pub fn reopen(&mut self) -> bool {
        self.authority = None;
        self.open()
    }

    /// Reopens the store and checks the CA comes back exactly as it was.
    pub fn reopen_same(&mut self) {
        let before = status(self.ca());
        let bundle = self.ca().bundle();
        let expiries = self.ca().expiries();
        assert!(!self.reopen(), "reopening must not create a CA");
        assert_eq!(status(self.ca()), before, "status changed across a restart");
        assert_eq!(
            self.ca().bundle(),
            bundle,
            "bundle changed across a restart"
        );
        assert_eq!(self.ca().expiries(), expiries);
    }

    /// Like [`Self::reopen`], with new settings (a changed trust domain, say); the error
    /// when the CA refuses them.
    #[allow(dead_code)]
    pub fn reopen_with(&mut self, settings: CaSettings) -> Result<bool, writ_ca::Error> {
        self.authority = None;
        self.settings = settings;
        let store = self.store();
        let (authority, created) =
            Authority::open(self.settings.clone(), Arc::new(store), SystemTime::now())?;
        self.authority = Some(authority);
        Ok(created)
    }

    fn open(&mut self) -> bool {
        let store = self.store();
        let (authority, created) =
            Authority::open(self.settings.clone(), Arc::new(store), SystemTime::now())
                .expect("open authority");
        self.authority = Some(authority);
        created
    }

    fn store(&self) -> SledStore {
        let path = self.dir.path().join("db");
        // sled's background threads can hold the database's file lock for a moment after
        // the `Db` is dropped (sled's own tests block on it for the same reason), so a
        // reopen waits a little for the lock rather than failing at once.
        let mut attempts = 0;
        loop {
            match SledStore::open_with(&path, self.store_options) {
                Ok(store) => break store,
                Err(e) if attempts < 100 && e.to_string().contains("lock") => {
                    attempts += 1;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("open sled store: {e:?}"),
            }
        }
    }
}

/// The CA's generations, now.
pub fn status(ca: &Authority) -> Vec<GenerationSummary> {
    ca.status(SystemTime::now()).expect("status")
}

/// Default settings for `example.org` with `ca_key_type`.
pub fn settings(ca_key_type: KeyType) -> CaSettings {
    let mut s = CaSettings::new(TrustDomain::parse("example.org").expect("trust domain"));
    s.ca_key_type = ca_key_type;
    s
}

/// The workload identity as a `SpiffeId`.
pub fn id() -> SpiffeId {
    SpiffeId::parse(ID).expect("SPIFFE ID")
}

/// A caller that proved [`ID`] with its client certificate.
pub fn caller() -> Caller {
    Caller {
        id: id(),
        dns_allowed: Vec::new(),
        method: AuthMethod::Mtls,
    }
}

/// One issuance and the wall-clock window it happened in.
pub struct Issued {
    /// What the CA returned.
    pub issuance: Issuance,
    /// Just before the call.
    pub before: SystemTime,
    /// Just after the call.
    pub after: SystemTime,
}

/// Issues a leaf for [`ID`] with `key` through the full CSR → policy → sign path.
pub fn issue(ca: &Authority, key: &PrivateKey, ttl: Duration) -> Issued {
    let csr = build_csr(key, &id(), &[]).expect("build CSR");
    let before = SystemTime::now();
    let issuance = ca
        .issue(
            &csr,
            &LeafRequest::new(&caller(), Some(ttl), Rules::WRIT),
            SystemTime::now(),
        )
        .expect("issue");
    let after = SystemTime::now();
    Issued {
        issuance,
        before,
        after,
    }
}
