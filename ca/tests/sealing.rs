//! CA private keys sealed at rest under a passphrase-derived KEK: nothing secret in the
//! store, migration of an unencrypted CA, refusals that change nothing.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::SystemTime;

use writ_ca::seal::{KdfParams, KeyProtection, Sealer, unlock};
use writ_ca::store::Store;
use writ_ca::{Authority, CaSettings, Error, TrustDomain};
use writ_store::SledStore;
use zeroize::Zeroizing;

/// Cheap Argon2 cost: these tests are about sealing, not the KDF's price.
const FAST: KdfParams = KdfParams {
    m_kib: 256,
    t: 1,
    p: 1,
};

fn pass(p: &str) -> KeyProtection {
    KeyProtection::Passphrase {
        passphrase: Zeroizing::new(p.as_bytes().to_vec()),
        params: FAST,
    }
}

fn settings() -> CaSettings {
    CaSettings::new(TrustDomain::parse("example.org").unwrap())
}

fn state(store: &dyn Store) -> Vec<u8> {
    store.get("ca", b"state").unwrap().unwrap()
}

fn state_json(store: &dyn Store) -> serde_json::Value {
    serde_json::from_slice(&state(store)).unwrap()
}

/// Every generation's root and intermediate carry a sealed key and no plaintext one.
fn assert_all_sealed(store: &dyn Store) {
    let v = state_json(store);
    for g in v["generations"].as_array().unwrap() {
        for cert in ["root", "intermediate"] {
            assert!(g[cert]["key"].is_null(), "{cert} key stored in the clear");
            assert!(g[cert]["sealed_key"].is_string(), "{cert} key not sealed");
        }
    }
}

fn open(store: &Arc<SledStore>, protection: KeyProtection) -> Result<Authority, Error> {
    let (sealer, _) = unlock(store.as_ref(), protection)?;
    Authority::open_sealed(settings(), store.clone(), sealer, SystemTime::now()).map(|(a, _)| a)
}

#[test]
fn sealed_ca_stores_no_plaintext_key_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SledStore::open(&dir.path().join("db")).unwrap());
    let ca = open(&store, pass("correct horse")).unwrap();
    let fp = ca.root_fingerprint().unwrap();
    assert_all_sealed(store.as_ref());
    // Renewal writes the state again: still sealed.
    drop(ca);
    let ca = open(&store, pass("correct horse")).unwrap();
    assert_eq!(ca.root_fingerprint().unwrap(), fp);
    assert!(
        ca.renew_intermediate_if_due(
            SystemTime::now() + std::time::Duration::from_secs(29 * 86400)
        )
        .unwrap()
    );
    assert_all_sealed(store.as_ref());
}

#[test]
fn wrong_passphrase_and_missing_passphrase_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SledStore::open(&dir.path().join("db")).unwrap());
    drop(open(&store, pass("right")).unwrap());
    let before = (state(store.as_ref()), store.get("ca", b"kek").unwrap());

    let err = open(&store, pass("wrong")).err().unwrap();
    assert!(matches!(err, Error::WrongPassphrase), "{err}");
    assert!(err.to_string().contains("does not open this CA"), "{err}");
    let err = open(&store, KeyProtection::Unencrypted).err().unwrap();
    assert!(matches!(err, Error::KeysSealed), "{err}");
    // Bypassing unlock: a plaintext sealer cannot read sealed keys either.
    let err = Authority::open_sealed(
        settings(),
        store.clone(),
        Sealer::Plaintext,
        SystemTime::now(),
    )
    .err()
    .unwrap();
    assert!(matches!(err, Error::KeysSealed), "{err}");

    assert_eq!(
        (state(store.as_ref()), store.get("ca", b"kek").unwrap()),
        before
    );
}

#[test]
fn unencrypted_ca_is_sealed_on_first_start_with_a_passphrase() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SledStore::open(&dir.path().join("db")).unwrap());
    let fp = open(&store, KeyProtection::Unencrypted)
        .unwrap()
        .root_fingerprint()
        .unwrap();
    assert!(state_json(store.as_ref())["generations"][0]["root"]["key"].is_string());

    let ca = open(&store, pass("now sealed")).unwrap();
    assert_eq!(ca.root_fingerprint().unwrap(), fp);
    assert_all_sealed(store.as_ref());
    drop(ca);
    assert!(matches!(
        open(&store, KeyProtection::Unencrypted),
        Err(Error::KeysSealed)
    ));
    assert_eq!(
        open(&store, pass("now sealed"))
            .unwrap()
            .root_fingerprint()
            .unwrap(),
        fp
    );
}

/// A sealed key is bound to its record: swapped between root and intermediate, it does
/// not open.
#[test]
fn sealed_key_moved_to_another_certificate_does_not_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SledStore::open(&dir.path().join("db")).unwrap());
    drop(open(&store, pass("pw")).unwrap());
    let mut v = state_json(store.as_ref());
    let g = &mut v["generations"][0];
    let root = g["root"]["sealed_key"].take();
    let intermediate = g["intermediate"]["sealed_key"].take();
    g["root"]["sealed_key"] = intermediate;
    g["intermediate"]["sealed_key"] = root;
    store
        .put("ca", b"state", &serde_json::to_vec(&v).unwrap())
        .unwrap();
    assert!(matches!(
        open(&store, pass("pw")),
        Err(Error::WrongPassphrase)
    ));
}
