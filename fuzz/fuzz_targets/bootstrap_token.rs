//! `Bootstrap::verify` and `peek_claims` over arbitrary strings, against a real token
//! service (a fresh signing key in a sled store in a temporary directory).
//!
//! Invariants: never panics; arbitrary input never verifies (the signing key is created
//! by this process, so no input can carry a valid signature); an edit of a genuine token
//! verifies only if it still carries exactly the genuine claims (no forgery); claims that
//! peek cleanly name a workload identity and a well-formed root fingerprint.
#![no_main]

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use libfuzzer_sys::fuzz_target;
use writ_bootstrap::{Bootstrap, BootstrapSettings, peek_claims};
use writ_ca::{SpiffeId, TrustDomain};
use writ_store::SledStore;

/// A token service and one genuine, pending token it minted at `now`.
struct Fixture {
    bootstrap: Bootstrap,
    genuine: String,
    id: SpiffeId,
    now: SystemTime,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        writ_bootstrap::install_crypto_provider();
        let dir = scratch_dir();
        let store = SledStore::open(&dir.join("db")).expect("open the sled store");
        let td = TrustDomain::parse("example.org").expect("constant trust domain");
        let bootstrap = Bootstrap::open(Arc::new(store), td.clone(), BootstrapSettings::default())
            .expect("open the token service");
        let id = td.workload("vm/fuzz").expect("constant workload path");
        // A fixed instant keeps runs reproducible.
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_737_600);
        let minted = bootstrap
            .mint(
                &id,
                None,
                vec!["vm.example.org".into()],
                &"ab".repeat(32),
                now,
            )
            .expect("mint a token");
        let genuine = minted.token.expose().to_owned();
        // The harness is only meaningful if the genuine token does verify.
        let ok = bootstrap
            .verify(&genuine, now)
            .expect("the genuine token verifies");
        assert_eq!(ok.jti(), &minted.jti);
        Fixture {
            bootstrap,
            genuine,
            id,
            now,
        }
    })
}

/// A directory of our own under the system temp dir. sled has no public "temporary"
/// mode here and statics are never dropped, so directories left by earlier runs whose
/// process is gone are removed first.
fn scratch_dir() -> PathBuf {
    const PREFIX: &str = "writ-fuzz-bootstrap-";
    let tmp = std::env::temp_dir();
    if let Ok(entries) = std::fs::read_dir(&tmp) {
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(PREFIX)) else {
                continue;
            };
            if pid.parse::<u32>().is_ok() && !PathBuf::from("/proc").join(pid).exists() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    let dir = tmp.join(format!("{PREFIX}{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the scratch directory");
    dir
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();

    // 1. The input itself, as a token.
    if let Ok(token) = std::str::from_utf8(data) {
        check(token);
        assert!(
            f.bootstrap.verify(token, f.now).is_err(),
            "arbitrary input verified as a bootstrap token: {token:?}"
        );
    }

    // 2. The genuine token with the input's edits applied: (big-endian u16 position,
    // byte) triples overwrite (or, one past the end, append); a 1- or 2-byte remainder
    // truncates proportionally.
    let mut edited = f.genuine.clone().into_bytes();
    let mut edits = data.chunks_exact(3);
    for e in &mut edits {
        let i = usize::from(u16::from_be_bytes([e[0], e[1]])) % (edited.len() + 1);
        if i == edited.len() {
            edited.push(e[2]);
        } else {
            edited[i] = e[2];
        }
    }
    if let Some(cut) = edits.remainder().first() {
        edited.truncate(edited.len() * usize::from(*cut) / 256);
    }
    let Ok(edited) = String::from_utf8(edited) else {
        return;
    };
    check(&edited);
    if let Ok(v) = f.bootstrap.verify(&edited, f.now) {
        // ECDSA signatures are malleable, so another string may verify, but never with
        // claims the CA did not sign.
        let genuine = f
            .bootstrap
            .verify(&f.genuine, f.now)
            .expect("still verifies");
        assert_eq!(v.jti(), genuine.jti(), "forged jti verified: {edited:?}");
        assert_eq!(v.spiffe_id(), &f.id, "forged identity verified: {edited:?}");
        assert_eq!(
            v.dns(),
            genuine.dns(),
            "forged DNS names verified: {edited:?}"
        );
        assert_eq!(v.expires_at(), genuine.expires_at());
        assert_eq!(v.ca_fingerprint(), genuine.ca_fingerprint());
    }
});

/// `peek_claims` never panics, and what it returns is well-formed.
fn check(token: &str) {
    if let Ok(c) = peek_claims(token) {
        assert!(token.len() <= writ_bootstrap::MAX_TOKEN_LEN);
        assert!(c.spiffe_id.is_workload(), "peeked a non-workload identity");
        assert_eq!(c.ca_fingerprint.len(), 64);
        assert!(
            c.ca_fingerprint
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
    }
}
