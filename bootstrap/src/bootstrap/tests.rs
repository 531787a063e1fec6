//! The service end to end over a real sled store in a temporary directory. Every refusal
//! goes through [`Env::reject`], which also proves the store did not change and that the
//! message does not echo the token.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::time::UNIX_EPOCH;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use proptest::prelude::*;
use tempfile::TempDir;
use writ_ca::{CaSigningKey, KeyType, PrivateKey};
use writ_store::SledStore;

use super::*;
use crate::peek_claims;
use crate::registry::TOKEN_TREE;
use crate::signer::{KEY_NAME, KEY_TREE};
use crate::{TokenEntry, TokenState};

const FP: &str = "5f1e3c0b9a8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f";
const T0: u64 = 1_800_000_000;

/// `T0` shifted by `offset` seconds.
fn at(offset: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(T0.saturating_add_signed(offset))
}

fn td() -> TrustDomain {
    TrustDomain::parse("example.org").unwrap()
}

fn web() -> SpiffeId {
    SpiffeId::parse("spiffe://example.org/host/web-1").unwrap()
}

struct Env {
    dir: TempDir,
    store: Arc<dyn Store>,
    b: Bootstrap,
}

impl Env {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (store, b) = open_at(&db_path(&dir));
        Self { dir, store, b }
    }

    /// Drops the store and opens it again, as a server restart does.
    fn restart(self) -> Self {
        let Env { dir, store, b } = self;
        drop((store, b));
        let (store, b) = open_at(&db_path(&dir));
        Self { dir, store, b }
    }

    fn mint(&self) -> MintedToken {
        self.b.mint(&web(), None, vec![], FP, at(0)).unwrap()
    }

    /// Signs arbitrary claims with this CA's real token key.
    fn sign(&self, claims: &Claims) -> String {
        self.b.signer.sign(claims).unwrap().expose().to_owned()
    }

    fn claims(&self, jti: &Jti) -> Claims {
        self.b.registry.load(jti).unwrap().unwrap().record.claims
    }

    fn snapshot(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.store.scan(TOKEN_TREE).unwrap()
    }

    /// `verify` must refuse `token`, change nothing, and not echo it.
    fn reject(&self, token: &str, now: SystemTime) -> Error {
        let before = self.snapshot();
        let err = self.b.verify(token, now).expect_err("token was accepted");
        assert_eq!(
            self.snapshot(),
            before,
            "a refused verify changed the store"
        );
        assert_no_token(&err, token);
        err
    }

    fn state(&self, jti: &Jti, now: SystemTime) -> TokenState {
        let entries = self.b.list(now).unwrap();
        entries.into_iter().find(|e| &e.jti == jti).unwrap().state
    }
}

fn db_path(dir: &TempDir) -> PathBuf {
    dir.path().join("db")
}

fn open_at(path: &Path) -> (Arc<dyn Store>, Bootstrap) {
    let store: Arc<dyn Store> = Arc::new(SledStore::open(path).unwrap());
    let b = Bootstrap::open(store.clone(), td(), BootstrapSettings::default()).unwrap();
    (store, b)
}

/// Neither the message nor the debug form may contain the token or any long part of it.
fn assert_no_token(err: &Error, token: &str) {
    let shown = format!("{err} {err:?}");
    for part in std::iter::once(token).chain(token.split('.')) {
        if part.len() >= 12 {
            assert!(!shown.contains(part), "error echoes the token: {shown}");
        }
    }
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn parts(token: &str) -> (String, String, String) {
    let v: Vec<&str> = token.split('.').collect();
    (v[0].into(), v[1].into(), v[2].into())
}

#[test]
fn mint_verify_consume_record_serial() {
    let env = Env::new();
    let dns = vec!["web-1.example.org".to_owned()];
    let m = env.b.mint(&web(), None, dns.clone(), FP, at(0)).unwrap();
    assert_eq!(m.expires_at, at(15 * 60), "default lifetime is 15 minutes");
    assert_eq!(
        (m.spiffe_id.clone(), m.ca_fingerprint.as_str()),
        (web(), FP)
    );

    let before = env.snapshot();
    let v = env.b.verify(m.token.expose(), at(10)).unwrap();
    assert_eq!(env.snapshot(), before, "verify must not change state");
    assert_eq!(
        (v.jti(), v.spiffe_id(), v.dns()),
        (&m.jti, &web(), &dns[..])
    );
    assert_eq!((v.expires_at(), v.ca_fingerprint()), (m.expires_at, FP));
    assert_eq!(env.state(&m.jti, at(10)), TokenState::Pending);

    env.b.consume(&v, at(11)).unwrap();
    assert_eq!(
        env.state(&m.jti, at(12)),
        TokenState::Used {
            at: at(11),
            serial: None
        }
    );
    env.b.record_serial(&m.jti, "0a1b2c").unwrap();
    env.b.record_serial(&m.jti, "0a1b2c").unwrap();
    let again = env.b.record_serial(&m.jti, "ffff").unwrap_err();
    assert!(matches!(again, Error::WrongState { .. }), "{again}");

    let list = env.b.list(at(12)).unwrap();
    assert_eq!(
        list,
        [TokenEntry {
            jti: m.jti.clone(),
            spiffe_id: web(),
            dns,
            created: at(0),
            expires: at(900),
            state: TokenState::Used {
                at: at(11),
                serial: Some("0a1b2c".into())
            },
        }]
    );
    // The server keeps claims, never the token: its signature appears nowhere.
    let (_, _, sig) = parts(m.token.expose());
    for (_, value) in env.snapshot() {
        assert!(!String::from_utf8_lossy(&value).contains(&sig));
    }
}

#[test]
fn replay_after_consume_is_refused() {
    let env = Env::new();
    let m = env.mint();
    let v = env.b.verify(m.token.expose(), at(1)).unwrap();
    env.b.consume(&v, at(2)).unwrap();
    let err = env.reject(m.token.expose(), at(3));
    assert!(matches!(err, Error::AlreadyUsed { .. }), "{err}");
    assert!(err.to_string().contains("token already used"), "{err}");
    let before = env.snapshot();
    assert!(matches!(
        env.b.consume(&v, at(3)),
        Err(Error::AlreadyUsed { .. })
    ));
    assert_eq!(env.snapshot(), before);
}

#[test]
fn fifty_concurrent_consumers_exactly_one_wins() {
    let env = Env::new();
    let m = env.mint();
    let v = env.b.verify(m.token.expose(), at(1)).unwrap();
    let barrier = Barrier::new(50);
    let results: Vec<Result<()>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..50)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    env.b.consume(&v, at(2))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
    for r in results.iter().filter(|r| r.is_err()) {
        assert!(matches!(r, Err(Error::AlreadyUsed { .. })), "{r:?}");
    }
    assert!(matches!(env.state(&m.jti, at(3)), TokenState::Used { .. }));
}

#[test]
fn revoked_tokens_are_refused() {
    let env = Env::new();
    let m = env.mint();
    let v = env.b.verify(m.token.expose(), at(1)).unwrap();
    env.b.revoke(&m.jti, at(2)).unwrap();
    env.b.revoke(&m.jti, at(3)).unwrap();
    assert_eq!(env.state(&m.jti, at(4)), TokenState::Revoked { at: at(2) });
    let err = env.reject(m.token.expose(), at(4));
    assert!(matches!(err, Error::Revoked { .. }), "{err}");
    assert!(err.to_string().contains("token revoked"), "{err}");
    let before = env.snapshot();
    assert!(matches!(
        env.b.consume(&v, at(4)),
        Err(Error::Revoked { .. })
    ));
    assert_eq!(env.snapshot(), before);
}

#[test]
fn revoke_refuses_unknown_and_used_tokens() {
    let env = Env::new();
    let unknown = Jti::generate().unwrap();
    assert!(matches!(
        env.b.revoke(&unknown, at(0)),
        Err(Error::NotFound { .. })
    ));
    let m = env.mint();
    let v = env.b.verify(m.token.expose(), at(1)).unwrap();
    env.b.consume(&v, at(2)).unwrap();
    let before = env.snapshot();
    let err = env.b.revoke(&m.jti, at(3)).unwrap_err();
    assert!(matches!(err, Error::WrongState { .. }), "{err}");
    assert!(err.to_string().contains("it is used"), "{err}");
    assert_eq!(env.snapshot(), before);
}

#[test]
fn expired_tokens_are_refused_after_the_leeway() {
    let env = Env::new();
    let m = env.mint();
    env.b.verify(m.token.expose(), at(900 + 30)).unwrap();
    let err = env.reject(m.token.expose(), at(900 + 31));
    assert!(matches!(err, Error::Expired { .. }), "{err}");
    // What `writ bootstrap` shows the operator: which token, that it expired, what to do.
    let shown = err.to_string();
    assert!(shown.contains(&m.jti.to_string()), "{shown}");
    assert!(shown.contains("expired at"), "{shown}");
    assert!(shown.contains("ask an admin to mint a new one"), "{shown}");
    assert_eq!(env.state(&m.jti, at(1000)), TokenState::Expired);
    assert_eq!(TokenState::Expired.to_string(), "expired");
    assert_eq!(env.state(&m.jti, at(10)), TokenState::Pending);

    // Verified in time, but the CSR took too long: consume re-checks and changes nothing.
    let v = env.b.verify(m.token.expose(), at(10)).unwrap();
    let before = env.snapshot();
    assert!(matches!(
        env.b.consume(&v, at(2000)),
        Err(Error::Expired { .. })
    ));
    assert_eq!(env.snapshot(), before);
}

#[test]
fn not_yet_valid_tokens_are_refused_before_the_leeway() {
    let env = Env::new();
    let m = env.mint();
    env.b.verify(m.token.expose(), at(-30)).unwrap();
    let err = env.reject(m.token.expose(), at(-31));
    assert!(matches!(err, Error::NotYetValid { .. }), "{err}");
}

#[test]
fn wrong_audience_and_issuer_are_refused() {
    let env = Env::new();
    let m = env.mint();
    let mut c = env.claims(&m.jti);
    c.aud = "writ-bootstrap:other.org".into();
    let err = env.reject(&env.sign(&c), at(1));
    assert!(matches!(err, Error::WrongAudience { .. }), "{err}");

    let mut c = env.claims(&m.jti);
    c.iss = "writ://other.org".into();
    let err = env.reject(&env.sign(&c), at(1));
    assert!(matches!(err, Error::WrongIssuer { .. }), "{err}");
    assert_eq!(env.state(&m.jti, at(1)), TokenState::Pending);
}

#[test]
fn another_es256_key_is_refused() {
    let env = Env::new();
    let m = env.mint();
    let other = TokenSigner::from_key(&PrivateKey::generate(KeyType::EcP256).unwrap());
    let forged = other.sign(&env.claims(&m.jti)).unwrap();
    let err = env.reject(forged.expose(), at(1));
    assert!(matches!(err, Error::BadSignature), "{err}");
}

#[test]
fn alg_none_is_refused() {
    let env = Env::new();
    let m = env.mint();
    let (_, payload, _) = parts(m.token.expose());
    for alg in ["none", "None", "NONE"] {
        let header = b64(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#).as_bytes());
        for sig in ["", "AAAA"] {
            let err = env.reject(&format!("{header}.{payload}.{sig}"), at(1));
            assert!(
                matches!(&err, Error::WrongAlgorithm(a) if a == alg),
                "{err}"
            );
        }
    }
}

#[test]
fn hs256_keyed_with_the_public_key_is_refused() {
    let env = Env::new();
    let m = env.mint();
    let pkcs8 = env.store.get(KEY_TREE, KEY_NAME).unwrap().unwrap();
    let key = PrivateKey::from_pkcs8_der(&pkcs8).unwrap();
    let (_, payload, _) = parts(m.token.expose());
    let header = b64(br#"{"alg":"HS256","typ":"JWT"}"#);
    let message = format!("{header}.{payload}");
    for secret in [key.public_key_raw().to_vec(), key.public_key_spki()] {
        let mac = ring::hmac::sign(
            &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret),
            message.as_bytes(),
        );
        let err = env.reject(&format!("{message}.{}", b64(mac.as_ref())), at(1));
        assert!(
            matches!(&err, Error::WrongAlgorithm(a) if a == "HS256"),
            "{err}"
        );
    }
}

#[test]
fn other_algorithms_are_refused() {
    let env = Env::new();
    let m = env.mint();
    let (_, payload, sig) = parts(m.token.expose());
    for alg in ["RS256", "ES384", "PS256", "EdDSA", "HS512", "es256"] {
        let header = b64(format!(r#"{{"alg":"{alg}"}}"#).as_bytes());
        let err = env.reject(&format!("{header}.{payload}.{sig}"), at(1));
        assert!(
            matches!(&err, Error::WrongAlgorithm(a) if a == alg),
            "{err}"
        );
    }
}

#[test]
fn tampered_tokens_are_refused() {
    let env = Env::new();
    let m = env.mint();
    let (header, payload, sig) = parts(m.token.expose());
    let mut claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&payload).unwrap()).unwrap();
    claims["sub"] = "spiffe://example.org/host/admin".into();
    let forged = format!(
        "{header}.{}.{sig}",
        b64(&serde_json::to_vec(&claims).unwrap())
    );
    assert!(matches!(env.reject(&forged, at(1)), Error::BadSignature));

    let mut flipped = sig.into_bytes();
    flipped[10] = if flipped[10] == b'A' { b'B' } else { b'A' };
    let forged = format!("{header}.{payload}.{}", String::from_utf8(flipped).unwrap());
    assert!(matches!(env.reject(&forged, at(1)), Error::BadSignature));
    assert_eq!(env.state(&m.jti, at(1)), TokenState::Pending);
}

#[test]
fn garbage_is_malformed() {
    let env = Env::new();
    let es256 = b64(br#"{"alg":"ES256"}"#);
    let cases = [
        String::new(),
        ".".into(),
        "..".into(),
        "a.b.c".into(),
        "not a token".into(),
        "é.é.é".into(),
        "\0".into(),
        format!("{es256}.e30"),
        format!("{es256}.e30.AA.AA"),
        format!("{es256}.e30.not*base64"),
        format!("{}.e30.AAAA", b64(b"[1,2]")),
    ];
    for token in &cases {
        let err = env.reject(token, at(0));
        assert!(matches!(err, Error::Malformed(_)), "{token:?}: {err}");
    }
    // The signature is checked before the payload is parsed at all.
    for token in [format!("{es256}.e30.AAAA"), format!("{es256}.!!!.AAAA")] {
        let err = env.reject(&token, at(0));
        assert!(matches!(err, Error::BadSignature), "{token:?}: {err}");
    }
}

#[test]
fn oversized_tokens_are_refused_before_parsing() {
    let env = Env::new();
    let m = env.mint();
    let long = format!("{}{}", m.token.expose(), "A".repeat(MAX_TOKEN_LEN));
    let err = env.reject(&long, at(1));
    assert!(
        matches!(
            err,
            Error::TooLarge {
                max: MAX_TOKEN_LEN,
                ..
            }
        ),
        "{err}"
    );
    let huge = "x".repeat(1 << 20);
    assert!(matches!(env.reject(&huge, at(1)), Error::TooLarge { .. }));
    let edge = "x".repeat(MAX_TOKEN_LEN);
    assert!(matches!(env.reject(&edge, at(1)), Error::Malformed(_)));
}

#[test]
fn unknown_or_mismatched_records_are_refused() {
    let env = Env::new();
    let m = env.mint();
    let mut c = env.claims(&m.jti);
    c.jti = Jti::generate().unwrap();
    let err = env.reject(&env.sign(&c), at(1));
    assert!(matches!(err, Error::UnknownToken { .. }), "{err}");

    let mut c = env.claims(&m.jti);
    c.dns = vec!["extra.example.org".into()];
    let err = env.reject(&env.sign(&c), at(1));
    assert!(matches!(err, Error::ClaimsMismatch { .. }), "{err}");
}

#[test]
fn restart_between_mint_and_use() {
    let env = Env::new();
    let m = env.mint();
    let env = env.restart();
    let v = env.b.verify(m.token.expose(), at(60)).unwrap();
    env.b.consume(&v, at(61)).unwrap();
}

#[test]
fn used_state_survives_restart() {
    let env = Env::new();
    let m = env.mint();
    let v = env.b.verify(m.token.expose(), at(1)).unwrap();
    env.b.consume(&v, at(2)).unwrap();
    env.b.record_serial(&m.jti, "01").unwrap();
    let env = env.restart();
    assert!(matches!(
        env.reject(m.token.expose(), at(3)),
        Error::AlreadyUsed { .. }
    ));
    assert_eq!(
        env.state(&m.jti, at(3)),
        TokenState::Used {
            at: at(2),
            serial: Some("01".into())
        }
    );
}

#[test]
fn prune_removes_only_finished_records_past_retention() {
    let env = Env::new();
    let short = Some(Ttl::from_secs(60));
    let used = env.mint();
    let revoked = env.mint();
    let expired = env.b.mint(&web(), short, vec![], FP, at(0)).unwrap();
    let pending = env
        .b
        .mint(&web(), Some(Ttl::from_secs(7200)), vec![], FP, at(0))
        .unwrap();
    let v = env.b.verify(used.token.expose(), at(100)).unwrap();
    env.b.consume(&v, at(100)).unwrap();
    env.b.revoke(&revoked.jti, at(200)).unwrap();

    let retention = Duration::from_secs(1000);
    assert_eq!(env.b.prune(retention, at(500)).unwrap(), 0);
    assert_eq!(env.b.list(at(500)).unwrap().len(), 4);
    // expired at 60 (+30 leeway), used at 100, revoked at 200: all 1000 s ago by 1200.
    assert_eq!(env.b.prune(retention, at(1200)).unwrap(), 3);
    let left: Vec<Jti> = env
        .b
        .list(at(1200))
        .unwrap()
        .into_iter()
        .map(|e| e.jti)
        .collect();
    assert_eq!(left, [pending.jti]);
    assert!(matches!(
        env.b.revoke(&expired.jti, at(1200)),
        Err(Error::NotFound { .. })
    ));
    // A pending token is never pruned, however old the retention makes it look.
    assert_eq!(env.b.prune(Duration::ZERO, at(1200)).unwrap(), 0);
}

#[test]
fn peek_claims_reads_without_verifying() {
    let env = Env::new();
    let m = env
        .b
        .mint(&web(), None, vec!["a.example.org".into()], FP, at(0))
        .unwrap();
    let p = peek_claims(m.token.expose()).unwrap();
    assert_eq!(p.spiffe_id, web());
    assert_eq!(p.expires_at, m.expires_at);
    assert_eq!(p.ca_fingerprint, FP);
    assert_eq!(p.audience, "writ-bootstrap:example.org");
    assert_eq!(p.jti, m.jti);
    assert_eq!(p.dns, ["a.example.org"]);

    let (header, _, sig) = parts(m.token.expose());
    let mut c = serde_json::to_value(env.claims(&m.jti)).unwrap();
    c["ca_fingerprint"] = "NOT-HEX".into();
    let bad = format!("{header}.{}.{sig}", b64(&serde_json::to_vec(&c).unwrap()));
    assert!(matches!(peek_claims(&bad), Err(Error::Malformed(_))));
    assert!(matches!(peek_claims("a.b.c"), Err(Error::Malformed(_))));
    let long = "a".repeat(MAX_TOKEN_LEN + 1);
    assert!(matches!(peek_claims(&long), Err(Error::TooLarge { .. })));
}

#[test]
fn mint_validates_its_input_and_stores_nothing_on_refusal() {
    let env = Env::new();
    let day = Ttl::from_secs(24 * 3600);
    let err = env
        .b
        .mint(
            &web(),
            Some(Ttl::from_secs(day.secs() + 1)),
            vec![],
            FP,
            at(0),
        )
        .unwrap_err();
    assert!(matches!(err, Error::TtlTooLong { .. }), "{err}");
    assert!(err.to_string().contains("ceiling of 1day"), "{err}");

    let foreign = SpiffeId::parse("spiffe://other.org/host/web").unwrap();
    let domain = SpiffeId::parse_any("spiffe://example.org").unwrap();
    let refusals = [
        env.b.mint(&foreign, None, vec![], FP, at(0)),
        env.b.mint(&domain, None, vec![], FP, at(0)),
        env.b.mint(&web(), None, vec!["bad name".into()], FP, at(0)),
        env.b.mint(&web(), None, vec![], &FP.to_uppercase(), at(0)),
        env.b.mint(&web(), None, vec![], "abc", at(0)),
        env.b
            .mint(&web(), None, vec!["a.example.org".into(); 400], FP, at(0)),
    ];
    for r in refusals {
        assert!(matches!(r, Err(Error::InvalidInput(_))), "{r:?}");
    }
    assert!(env.snapshot().is_empty());
    let m = env.b.mint(&web(), Some(day), vec![], FP, at(0)).unwrap();
    assert_eq!(m.expires_at, at(24 * 3600));
}

#[test]
fn settings_are_checked_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SledStore::open(&db_path(&dir)).unwrap());
    let settings = BootstrapSettings {
        default_ttl: Ttl::from_secs(7200),
        max_ttl: Ttl::from_secs(3600),
        ..BootstrapSettings::default()
    };
    let err = Bootstrap::open(store.clone(), td(), settings)
        .err()
        .unwrap();
    assert!(matches!(err, Error::InvalidInput(_)), "{err}");
    let settings = BootstrapSettings {
        leeway: Duration::from_secs(3600),
        ..BootstrapSettings::default()
    };
    let err = Bootstrap::open(store, td(), settings).err().unwrap();
    assert!(matches!(err, Error::InvalidInput(_)), "{err}");
}

#[test]
fn record_serial_needs_a_consumed_token_and_a_hex_serial() {
    let env = Env::new();
    let m = env.mint();
    let err = env.b.record_serial(&m.jti, "01").unwrap_err();
    assert!(matches!(err, Error::WrongState { .. }), "{err}");
    for bad in ["", "0A", "xyz", &"0".repeat(41)] {
        assert!(matches!(
            env.b.record_serial(&m.jti, bad),
            Err(Error::InvalidInput(_))
        ));
    }
    let unknown = Jti::generate().unwrap();
    assert!(matches!(
        env.b.record_serial(&unknown, "01"),
        Err(Error::NotFound { .. })
    ));
    assert_eq!(env.state(&m.jti, at(1)), TokenState::Pending);
}

#[test]
fn debug_output_never_shows_the_token() {
    let env = Env::new();
    let m = env.mint();
    let v = env.b.verify(m.token.expose(), at(1)).unwrap();
    for shown in [format!("{m:?}"), format!("{v:?}")] {
        let (_, payload, sig) = parts(m.token.expose());
        assert!(
            !shown.contains(&payload) && !shown.contains(&sig),
            "{shown}"
        );
    }
}

#[test]
fn the_signing_key_is_created_once_and_kept() {
    let env = Env::new();
    let key = env.store.get(KEY_TREE, KEY_NAME).unwrap().unwrap();
    assert_eq!(
        PrivateKey::from_pkcs8_der(&key).unwrap().kind(),
        KeyType::EcP256
    );
    let env = env.restart();
    assert_eq!(env.store.get(KEY_TREE, KEY_NAME).unwrap().unwrap(), key);
    // A second service over the same store shares the key rather than replacing it.
    let again = Bootstrap::open(env.store.clone(), td(), BootstrapSettings::default()).unwrap();
    let m = env.mint();
    again.verify(m.token.expose(), at(1)).unwrap();
}

/// Under a KEK the token-signing key is stored sealed, bound to the trust domain; a key
/// stored unencrypted is sealed on the first sealed open; without the passphrase the
/// service refuses to start.
#[test]
fn the_signing_key_is_sealed_under_a_kek() {
    use writ_ca::seal::{KdfParams, Kek, SEALED_PREFIX, Sealer};
    let env = Env::new();
    let plain = env.store.get(KEY_TREE, KEY_NAME).unwrap().unwrap();
    let fast = KdfParams {
        m_kib: 64,
        t: 1,
        p: 1,
    };
    let sealer = Sealer::Kek(Arc::new(
        Kek::derive(b"pw", &fast, b"0123456789abcdef").unwrap(),
    ));
    let open = |td: TrustDomain, sealer: &Sealer| {
        Bootstrap::open_sealed(env.store.clone(), td, BootstrapSettings::default(), sealer)
    };
    let sealed_service = open(td(), &sealer).unwrap();
    let sealed = env.store.get(KEY_TREE, KEY_NAME).unwrap().unwrap();
    assert!(sealed.starts_with(SEALED_PREFIX));
    assert!(!sealed.windows(plain.len()).any(|w| w == plain.as_slice()));
    // Same key as before: a token minted before sealing still verifies.
    let m = env.mint();
    sealed_service.verify(m.token.expose(), at(1)).unwrap();
    // Reopening does not re-seal (the record is stable) and still works.
    open(td(), &sealer).unwrap();
    assert_eq!(env.store.get(KEY_TREE, KEY_NAME).unwrap().unwrap(), sealed);

    let err = open(td(), &Sealer::Plaintext).err().unwrap();
    assert!(
        matches!(err, Error::Sealing(writ_ca::Error::KeysSealed)),
        "{err}"
    );
    let other = TrustDomain::parse("other.org").unwrap();
    let err = open(other, &sealer).err().unwrap();
    assert!(
        matches!(err, Error::Sealing(writ_ca::Error::WrongPassphrase)),
        "{err}"
    );
    assert_eq!(env.store.get(KEY_TREE, KEY_NAME).unwrap().unwrap(), sealed);
}

fn shared() -> &'static Env {
    static ENV: std::sync::OnceLock<Env> = std::sync::OnceLock::new();
    ENV.get_or_init(Env::new)
}

proptest! {
    #[test]
    fn arbitrary_strings_never_panic(s in ".{0,400}") {
        let _ = shared().b.verify(&s, at(0));
        let _ = peek_claims(&s);
    }

    #[test]
    fn arbitrary_jwt_shapes_never_panic(
        header in proptest::option::of("[A-Za-z0-9_-]{0,40}"),
        payload in proptest::collection::vec(any::<u8>(), 0..200),
        sig in "[A-Za-z0-9_-]{0,100}",
    ) {
        // Half the cases carry a valid ES256 header, to reach signature and claim parsing.
        let header = header.unwrap_or_else(|| b64(br#"{"alg":"ES256","typ":"JWT"}"#));
        let token = format!("{header}.{}.{sig}", b64(&payload));
        let err = shared().b.verify(&token, at(0)).unwrap_err();
        assert_no_token(&err, &token);
        let _ = peek_claims(&token);
    }

    #[test]
    fn arbitrary_claims_json_never_panics(claims in any::<std::collections::BTreeMap<String, i64>>()) {
        let header = b64(br#"{"alg":"ES256"}"#);
        let token = format!("{header}.{}.AAAA", b64(&serde_json::to_vec(&claims).unwrap()));
        prop_assert!(shared().b.verify(&token, at(0)).is_err());
        prop_assert!(peek_claims(&token).is_err());
    }
}
