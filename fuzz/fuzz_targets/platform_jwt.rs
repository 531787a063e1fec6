//! Platform-JWT verification (`peek_issuer`, `verify_platform_token`) over arbitrary input,
//! two ways: the input as a whole token, and the input as the claims of a token correctly
//! signed by the trusted issuer's key (so the claim checks and the Kubernetes mapping,
//! which only run after the signature, are reached).
//!
//! Invariants: never panics; a raw input never verifies (it cannot carry a signature by a
//! key generated in this process); whatever verifies maps to `ns/NS/sa/SA` in the trust
//! domain, with NS and SA as the token's `sub` names them.
#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use libfuzzer_sys::fuzz_target;
use ring::rand::SystemRandom;
use ring::signature::{self as sig, EcdsaKeyPair, KeyPair};
use writ_bootstrap::{
    DEFAULT_ALGORITHMS, IdentityMapping, JwkSet, PlatformIssuer, peek_issuer, verify_platform_token,
};
use writ_ca::TrustDomain;

const ISS: &str = "https://kubernetes.default.svc";

struct Fixture {
    key: EcdsaKeyPair,
    keys: JwkSet,
    issuer: PlatformIssuer,
    td: TrustDomain,
    now: SystemTime,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let rng = SystemRandom::new();
        let doc = EcdsaKeyPair::generate_pkcs8(&sig::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .expect("generate a P-256 key");
        let key =
            EcdsaKeyPair::from_pkcs8(&sig::ECDSA_P256_SHA256_FIXED_SIGNING, doc.as_ref(), &rng)
                .expect("load the P-256 key");
        let point = &key.public_key().as_ref()[1..];
        let jwks = format!(
            r#"{{"keys":[{{"kty":"EC","crv":"P-256","kid":"k1","x":"{}","y":"{}"}}]}}"#,
            URL_SAFE_NO_PAD.encode(&point[..32]),
            URL_SAFE_NO_PAD.encode(&point[32..])
        );
        Fixture {
            key,
            keys: serde_json::from_str(&jwks).expect("constant JWKS"),
            issuer: PlatformIssuer {
                issuer: ISS.into(),
                audiences: vec!["istio-ca".into()],
                algorithms: DEFAULT_ALGORITHMS.to_vec(),
                mapping: IdentityMapping::Kubernetes,
            },
            td: TrustDomain::parse("cluster.local").expect("constant trust domain"),
            // A fixed instant keeps runs reproducible.
            now: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    if let Ok(raw) = std::str::from_utf8(data) {
        let _ = peek_issuer(raw);
        assert!(
            verify_platform_token(raw, &f.issuer, &f.keys, &f.td, f.now).is_err(),
            "an unsigned input verified"
        );
    }
    // The input as claims, signed by the trusted key.
    let msg = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"ES256","kid":"k1"}"#),
        URL_SAFE_NO_PAD.encode(data)
    );
    let Ok(signature) = f.key.sign(&SystemRandom::new(), msg.as_bytes()) else {
        return;
    };
    let token = format!("{msg}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()));
    if let Ok(id) = verify_platform_token(&token, &f.issuer, &f.keys, &f.td, f.now) {
        let path = id.spiffe_id.path().trim_start_matches('/').to_owned();
        let parts: Vec<&str> = path.split('/').collect();
        assert!(
            parts.len() == 4 && parts[0] == "ns" && parts[2] == "sa",
            "unexpected identity {}",
            id.spiffe_id
        );
        assert!(id.spiffe_id.is_member_of(&f.td));
        if let Some(rest) = id.subject.strip_prefix("system:serviceaccount:") {
            assert_eq!(
                rest,
                format!("{}:{}", parts[1], parts[3]),
                "sub and identity disagree"
            );
        }
    }
});
