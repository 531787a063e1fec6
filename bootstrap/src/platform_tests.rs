use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use proptest::prelude::*;
use ring::rand::SystemRandom;
use ring::signature::{self as sig, KeyPair};
use serde_json::{Value, json};
use writ_ca::{KeyType, PrivateKey};

use super::*;

const ISS: &str = "https://kubernetes.default.svc.cluster.local";

/// A test issuer's signing key and its public JWK.
enum TestKey {
    Rsa(sig::RsaKeyPair),
    Ec(sig::EcdsaKeyPair),
}

impl TestKey {
    fn rsa() -> Self {
        let k = PrivateKey::generate(KeyType::Rsa2048).unwrap();
        TestKey::Rsa(sig::RsaKeyPair::from_pkcs8(k.pkcs8_der()).unwrap())
    }

    fn ec() -> Self {
        let k = PrivateKey::generate(KeyType::EcP256).unwrap();
        TestKey::Ec(
            sig::EcdsaKeyPair::from_pkcs8(
                &sig::ECDSA_P256_SHA256_FIXED_SIGNING,
                k.pkcs8_der(),
                &SystemRandom::new(),
            )
            .unwrap(),
        )
    }

    fn jwk(&self, kid: &str) -> Value {
        let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
        match self {
            TestKey::Rsa(k) => {
                let c = sig::RsaPublicKeyComponents::<Vec<u8>>::from(k.public());
                json!({"kty": "RSA", "kid": kid, "use": "sig", "n": b64(&c.n), "e": b64(&c.e)})
            }
            TestKey::Ec(k) => {
                let p = &k.public_key().as_ref()[1..];
                json!({"kty": "EC", "kid": kid, "crv": "P-256", "x": b64(&p[..32]), "y": b64(&p[32..])})
            }
        }
    }

    fn alg(&self) -> &'static str {
        match self {
            TestKey::Rsa(_) => "RS256",
            TestKey::Ec(_) => "ES256",
        }
    }

    fn sign(&self, header: &Value, claims: &Value) -> String {
        let msg = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let rng = SystemRandom::new();
        let s = match self {
            TestKey::Rsa(k) => {
                let mut s = vec![0; k.public().modulus_len()];
                k.sign(&sig::RSA_PKCS1_SHA256, &rng, msg.as_bytes(), &mut s)
                    .unwrap();
                s
            }
            TestKey::Ec(k) => k.sign(&rng, msg.as_bytes()).unwrap().as_ref().to_vec(),
        };
        format!("{msg}.{}", URL_SAFE_NO_PAD.encode(s))
    }

    fn token(&self, kid: &str, claims: &Value) -> String {
        self.sign(
            &json!({"alg": self.alg(), "kid": kid, "typ": "JWT"}),
            claims,
        )
    }
}

fn keys(list: &[(&TestKey, &str)]) -> JwkSet {
    let v = json!({"keys": list.iter().map(|(k, kid)| k.jwk(kid)).collect::<Vec<_>>()});
    serde_json::from_value(v).unwrap()
}

fn issuer() -> PlatformIssuer {
    PlatformIssuer {
        issuer: ISS.into(),
        audiences: vec![DEFAULT_AUDIENCE.into()],
        algorithms: DEFAULT_ALGORITHMS.to_vec(),
        mapping: IdentityMapping::Kubernetes,
    }
}

fn td() -> TrustDomain {
    TrustDomain::parse("cluster.local").unwrap()
}

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn k8s_claims(ns: &str, sa: &str) -> Value {
    json!({
        "iss": ISS,
        "sub": format!("system:serviceaccount:{ns}:{sa}"),
        "aud": ["istio-ca"],
        "iat": 1_800_000_000u64 - 10,
        "nbf": 1_800_000_000u64 - 10,
        "exp": 1_800_000_000u64 + 3600,
        "kubernetes.io": {"namespace": ns, "serviceaccount": {"name": sa, "uid": "u"}},
    })
}

fn verify(token: &str, keys: &JwkSet) -> Result<PlatformIdentity> {
    verify_platform_token(token, &issuer(), keys, &td(), now())
}

fn reason(r: Result<PlatformIdentity>) -> String {
    match r {
        Err(e) => e.to_string(),
        Ok(id) => panic!("accepted as {}", id.spiffe_id),
    }
}

#[test]
fn kubernetes_tokens_map_to_namespace_and_service_account() {
    let rsa = TestKey::rsa();
    let ec = TestKey::ec();
    let set = keys(&[(&rsa, "r1"), (&ec, "e1")]);
    let id = verify(&rsa.token("r1", &k8s_claims("prod", "web")), &set).unwrap();
    assert_eq!(
        id.spiffe_id.as_str(),
        "spiffe://cluster.local/ns/prod/sa/web"
    );
    assert_eq!(id.subject, "system:serviceaccount:prod:web");
    let id = verify(&ec.token("e1", &k8s_claims("dev", "db")), &set).unwrap();
    assert_eq!(id.spiffe_id.as_str(), "spiffe://cluster.local/ns/dev/sa/db");

    // `sub` alone is enough; a single `aud` string is accepted.
    let mut c = k8s_claims("a", "b");
    c.as_object_mut().unwrap().remove("kubernetes.io");
    c["aud"] = json!("istio-ca");
    let id = verify(&rsa.token("r1", &c), &set).unwrap();
    assert_eq!(id.spiffe_id.as_str(), "spiffe://cluster.local/ns/a/sa/b");
}

#[test]
fn a_token_without_kid_uses_the_only_fitting_key() {
    let rsa = TestKey::rsa();
    let set = keys(&[(&rsa, "r1")]);
    let t = rsa.sign(&json!({"alg": "RS256"}), &k8s_claims("a", "b"));
    assert!(verify(&t, &set).is_ok());
    let other = TestKey::rsa();
    let two = keys(&[(&rsa, "r1"), (&other, "r2")]);
    assert!(reason(verify(&t, &two)).contains("names no `kid`"));
}

#[test]
fn rejections_name_what_was_wrong() {
    let rsa = TestKey::rsa();
    let set = keys(&[(&rsa, "r1")]);
    let claims = k8s_claims("prod", "web");

    let mut c = claims.clone();
    c["aud"] = json!(["api"]);
    assert!(reason(verify(&rsa.token("r1", &c), &set)).contains("audience"));

    let mut c = claims.clone();
    c["exp"] = json!(1_800_000_000u64 - 61);
    assert!(reason(verify(&rsa.token("r1", &c), &set)).contains("expired"));
    // Within the leeway: accepted.
    c["exp"] = json!(1_800_000_000u64 - 30);
    assert!(verify(&rsa.token("r1", &c), &set).is_ok());

    let mut c = claims.clone();
    c["nbf"] = json!(1_800_000_000u64 + 600);
    assert!(reason(verify(&rsa.token("r1", &c), &set)).contains("not valid before"));
    // Times past year 9999 (once a panic while printing the message), and up to u64::MAX
    // (once an overflow of the clock), are refused or accepted like any other.
    for far in [1_799_799_999_990u64, u64::MAX] {
        let mut c = claims.clone();
        c["nbf"] = json!(far);
        let why = reason(verify(&rsa.token("r1", &c), &set));
        assert!(
            why.contains("not valid before 9999-12-31T23:59:59Z"),
            "{why}"
        );
        let mut c = claims.clone();
        c["exp"] = json!(far);
        assert!(verify(&rsa.token("r1", &c), &set).is_ok(), "exp {far}");
    }

    let mut c = claims.clone();
    c.as_object_mut().unwrap().remove("exp");
    assert!(reason(verify(&rsa.token("r1", &c), &set)).contains("no `exp`"));

    let mut c = claims.clone();
    c["iss"] = json!("https://other.example");
    assert!(reason(verify(&rsa.token("r1", &c), &set)).contains("`iss`"));

    assert!(reason(verify(&rsa.token("r9", &claims), &set)).contains("no key \"r9\""));

    let other = TestKey::rsa();
    let forged = other.token("r1", &claims);
    assert!(reason(verify(&forged, &set)).contains("signature does not verify"));
}

#[test]
fn a_tampered_payload_does_not_verify() {
    let rsa = TestKey::rsa();
    let set = keys(&[(&rsa, "r1")]);
    let t = rsa.token("r1", &k8s_claims("prod", "web"));
    let mut parts: Vec<String> = t.split('.').map(str::to_owned).collect();
    let evil = k8s_claims("kube-system", "admin");
    parts[1] = URL_SAFE_NO_PAD.encode(evil.to_string());
    let tampered = parts.join(".");
    assert!(reason(verify(&tampered, &set)).contains("signature does not verify"));
}

#[test]
fn algorithm_confusion_is_refused() {
    let rsa = TestKey::rsa();
    let set = keys(&[(&rsa, "r1")]);
    let claims = k8s_claims("prod", "web");
    let body = |h: Value| {
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(h.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        )
    };
    // `alg: none` with an empty signature.
    let none = format!("{}.", body(json!({"alg": "none", "kid": "r1"})));
    assert!(matches!(verify(&none, &set), Err(Error::WrongAlgorithm(a)) if a == "none"));
    // HS256 keyed with the issuer's public key (the classic confusion).
    let msg = body(json!({"alg": "HS256", "kid": "r1"}));
    let TestKey::Rsa(pair) = &rsa else {
        unreachable!()
    };
    let mac = ring::hmac::sign(
        &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, pair.public().as_ref()),
        msg.as_bytes(),
    );
    let hs = format!("{msg}.{}", URL_SAFE_NO_PAD.encode(mac.as_ref()));
    assert!(matches!(verify(&hs, &set), Err(Error::WrongAlgorithm(a)) if a == "HS256"));
    // An allowed algorithm the key was not made for: an RS256 key under ES256.
    let es = format!("{}.AAAA", body(json!({"alg": "ES256", "kid": "r1"})));
    assert!(verify(&es, &set).is_err());
    // A key pinned to another algorithm by its JWK is not used.
    let mut pinned = rsa.jwk("r1");
    pinned["alg"] = json!("RS512");
    let set: JwkSet = serde_json::from_value(json!({"keys": [pinned]})).unwrap();
    assert!(reason(verify(&rsa.token("r1", &claims), &set)).contains("no key"));
}

#[test]
fn identities_come_only_from_consistent_valid_claims() {
    let rsa = TestKey::rsa();
    let set = keys(&[(&rsa, "r1")]);
    let mut c = k8s_claims("prod", "web");
    c["sub"] = json!("system:serviceaccount:prod:admin");
    assert!(reason(verify(&rsa.token("r1", &c), &set)).contains("different service accounts"));
    // Found by the platform_jwt fuzz target: a malformed `sub` beside valid claims.
    for sub in ["system:serviceaccount:prod7web", "user:alice"] {
        let mut c = k8s_claims("prod", "web");
        c["sub"] = json!(sub);
        assert!(
            reason(verify(&rsa.token("r1", &c), &set))
                .contains("is not system:serviceaccount:NS:SA")
        );
    }
    let mut c = k8s_claims("prod", "web");
    c["sub"] = json!("user:alice");
    c.as_object_mut().unwrap().remove("kubernetes.io");
    assert!(reason(verify(&rsa.token("r1", &c), &set)).contains("system:serviceaccount"));
    let c = k8s_claims("Prod", "web");
    assert!(reason(verify(&rsa.token("r1", &c), &set)).contains("not a Kubernetes name"));
    let c = k8s_claims("a/../b", "web");
    assert!(reason(verify(&rsa.token("r1", &c), &set)).contains("not a Kubernetes name"));
}

#[test]
fn subject_mapping_puts_sub_under_a_prefix() {
    let ec = TestKey::ec();
    let set = keys(&[(&ec, "e1")]);
    let iss = PlatformIssuer {
        issuer: "https://ci.example".into(),
        audiences: vec!["writ".into()],
        algorithms: vec![Algorithm::ES256],
        mapping: IdentityMapping::Subject {
            prefix: "oidc/ci".into(),
        },
    };
    iss.validate().unwrap();
    let c = json!({"iss": "https://ci.example", "sub": "job-42", "aud": "writ", "exp": 1_800_000_100u64});
    let id = verify_platform_token(&ec.token("e1", &c), &iss, &set, &td(), now()).unwrap();
    assert_eq!(
        id.spiffe_id.as_str(),
        "spiffe://cluster.local/oidc/ci/job-42"
    );
    let c =
        json!({"iss": "https://ci.example", "sub": "a/b", "aud": "writ", "exp": 1_800_000_100u64});
    assert!(verify_platform_token(&ec.token("e1", &c), &iss, &set, &td(), now()).is_err());
}

#[test]
fn issuer_settings_are_checked() {
    let mut i = issuer();
    assert!(i.validate().is_ok());
    i.algorithms = vec![Algorithm::HS256];
    assert!(i.validate().unwrap_err().to_string().contains("public-key"));
    let mut i = issuer();
    i.audiences.clear();
    assert!(i.validate().is_err());
    let mut i = issuer();
    i.issuer.clear();
    assert!(i.validate().is_err());
    let mut i = issuer();
    i.mapping = IdentityMapping::Subject {
        prefix: "a//b".into(),
    };
    assert!(i.validate().is_err());
}

#[test]
fn oversized_and_malformed_tokens_are_refused_before_parsing() {
    let set = keys(&[]);
    let big = "a".repeat(crate::MAX_TOKEN_LEN + 1);
    assert!(matches!(verify(&big, &set), Err(Error::TooLarge { .. })));
    assert!(matches!(peek_issuer(&big), Err(Error::TooLarge { .. })));
    assert!(matches!(verify("a.b", &set), Err(Error::Malformed(_))));
    assert!(peek_issuer("a.b.c").is_err());
    let rsa = TestKey::rsa();
    assert_eq!(
        peek_issuer(&rsa.token("r1", &k8s_claims("a", "b"))).unwrap(),
        ISS
    );
}

proptest! {
    #[test]
    fn arbitrary_input_never_panics(s in "\\PC{0,300}", dots in "[a-zA-Z0-9_-]{0,40}\\.[a-zA-Z0-9_-]{0,80}\\.[a-zA-Z0-9_-]{0,40}") {
        let set = keys(&[]);
        let _ = verify(&s, &set);
        let _ = verify(&dots, &set);
        let _ = peek_issuer(&s);
    }
}
