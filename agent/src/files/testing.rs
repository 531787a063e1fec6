use std::sync::Arc;
use std::time::{Duration, SystemTime};

use writ_ca::{
    AuthMethod, Authority, CaSettings, CaSigningKey, KeyType, LeafTemplate, TrustDomain,
};
use writ_store::SledStore;

use super::*;

/// A CA in a temporary directory.
pub(crate) struct TestCa {
    pub(crate) authority: Authority,
    _dir: tempfile::TempDir,
}

impl TestCa {
    /// A fresh CA for `example.org`.
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(&dir.path().join("db")).unwrap();
        let td = TrustDomain::parse("example.org").unwrap();
        let (authority, _) =
            Authority::open(CaSettings::new(td), Arc::new(store), SystemTime::now()).unwrap();
        Self {
            authority,
            _dir: dir,
        }
    }

    /// Issues `spiffe://example.org/<path>` for a fresh P-256 key.
    pub(crate) fn issue(&self, path: &str) -> Identity {
        self.issue_at(path, Duration::from_secs(3600), SystemTime::now())
    }

    /// Issues `spiffe://example.org/<path>` valid for `lifetime` from `now`.
    pub(crate) fn issue_at(&self, path: &str, lifetime: Duration, now: SystemTime) -> Identity {
        let key = PrivateKey::generate(KeyType::EcP256).unwrap();
        let template = LeafTemplate {
            id: self
                .authority
                .settings()
                .trust_domain
                .workload(path)
                .unwrap(),
            dns_names: vec![],
            ip_addrs: vec![],
            key_type: KeyType::EcP256,
            public_key: key.public_key_raw().to_vec(),
            lifetime,
            limited_by: None,
            auth: AuthMethod::Admin,
        };
        let issued = self.authority.issue_template(&template, now).unwrap();
        Identity::new(issued.chain, key, issued.bundle.roots).unwrap()
    }
}
