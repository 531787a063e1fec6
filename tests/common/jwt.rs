//! A test JWT issuer (a stand-in for a Kubernetes API server): an RSA or EC key, its JWKS,
//! and tokens signed with ring directly, so nothing of writ's token code is involved.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{self as sig, KeyPair};
use serde_json::{Value, json};

/// The issuer a test server trusts.
pub const K8S_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

enum Key {
    Rsa(sig::RsaKeyPair),
    Ec(sig::EcdsaKeyPair),
}

/// One signing key of an issuer, with its `kid`.
pub struct TestIssuer {
    /// `iss`.
    pub iss: String,
    /// `kid`.
    pub kid: String,
    key: Key,
}

impl TestIssuer {
    /// An RS256 issuer.
    pub fn rsa(iss: &str, kid: &str) -> Self {
        let pkcs8 = rsa_pkcs8();
        Self {
            iss: iss.into(),
            kid: kid.into(),
            key: Key::Rsa(sig::RsaKeyPair::from_pkcs8(&pkcs8).unwrap()),
        }
    }

    /// An ES256 issuer.
    pub fn ec(iss: &str, kid: &str) -> Self {
        let rng = SystemRandom::new();
        let doc =
            sig::EcdsaKeyPair::generate_pkcs8(&sig::ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = sig::EcdsaKeyPair::from_pkcs8(
            &sig::ECDSA_P256_SHA256_FIXED_SIGNING,
            doc.as_ref(),
            &rng,
        )
        .unwrap();
        Self {
            iss: iss.into(),
            kid: kid.into(),
            key: Key::Ec(pair),
        }
    }

    /// The public key as a JWK.
    pub fn jwk(&self) -> Value {
        let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
        match &self.key {
            Key::Rsa(k) => {
                let c = sig::RsaPublicKeyComponents::<Vec<u8>>::from(k.public());
                json!({"kty": "RSA", "alg": "RS256", "use": "sig", "kid": self.kid, "n": b64(&c.n), "e": b64(&c.e)})
            }
            Key::Ec(k) => {
                let p = &k.public_key().as_ref()[1..];
                json!({"kty": "EC", "crv": "P-256", "use": "sig", "kid": self.kid, "x": b64(&p[..32]), "y": b64(&p[32..])})
            }
        }
    }

    /// The public key's bytes as ring holds them (for the HS256 confusion test).
    pub fn public_key_bytes(&self) -> Vec<u8> {
        match &self.key {
            Key::Rsa(k) => k.public().as_ref().to_vec(),
            Key::Ec(k) => k.public_key().as_ref().to_vec(),
        }
    }

    /// `header.claims.signature` signed with this key whatever `header` says.
    pub fn sign_raw(&self, header: &Value, claims: &Value) -> String {
        let msg = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let rng = SystemRandom::new();
        let s = match &self.key {
            Key::Rsa(k) => {
                let mut s = vec![0; k.public().modulus_len()];
                k.sign(&sig::RSA_PKCS1_SHA256, &rng, msg.as_bytes(), &mut s)
                    .unwrap();
                s
            }
            Key::Ec(k) => k.sign(&rng, msg.as_bytes()).unwrap().as_ref().to_vec(),
        };
        format!("{msg}.{}", URL_SAFE_NO_PAD.encode(s))
    }

    /// A properly signed token with `claims`.
    pub fn token(&self, claims: &Value) -> String {
        let alg = match self.key {
            Key::Rsa(_) => "RS256",
            Key::Ec(_) => "ES256",
        };
        self.sign_raw(&json!({"alg": alg, "kid": self.kid, "typ": "JWT"}), claims)
    }

    /// A Kubernetes service-account token for `ns`/`sa`, audience `aud`, valid for
    /// `valid_for` (negative: already expired that long ago).
    pub fn k8s_token(&self, ns: &str, sa: &str, aud: &str, valid_for: i64) -> String {
        self.token(&k8s_claims(&self.iss, ns, sa, aud, valid_for))
    }
}

/// The claims of a projected service-account token.
pub fn k8s_claims(iss: &str, ns: &str, sa: &str, aud: &str, valid_for: i64) -> Value {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    json!({
        "iss": iss,
        "sub": format!("system:serviceaccount:{ns}:{sa}"),
        "aud": [aud],
        "iat": now - 5,
        "nbf": now - 5,
        "exp": now + valid_for,
        "kubernetes.io": {
            "namespace": ns,
            "pod": {"name": format!("{sa}-0"), "uid": "0d4c7a8e"},
            "serviceaccount": {"name": sa, "uid": "5b1d2c3e"},
        },
    })
}

/// Writes a JWKS with `issuers`' keys, replacing `path` atomically (as a ConfigMap
/// update or a sync job would).
pub fn write_jwks(path: &Path, issuers: &[&TestIssuer]) {
    let keys: Vec<Value> = issuers.iter().map(|i| i.jwk()).collect();
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, json!({"keys": keys}).to_string()).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A server config trusting `K8S_ISSUER` with the JWKS at `jwks`.
pub fn server_config(dir: &Path, jwks: &Path, extra: &str) -> std::path::PathBuf {
    let path = dir.join("server.toml");
    std::fs::write(
        &path,
        format!(
            "{extra}\n[[jwt_issuers]]\nissuer = \"{K8S_ISSUER}\"\njwks_file = \"{}\"\n",
            jwks.display()
        ),
    )
    .unwrap();
    path
}

/// A real `writ server` trusting `issuer` (whose JWKS is written to `dir/jwks.json`, the
/// path returned), with `extra` config lines.
pub fn start_server(
    dir: &Path,
    issuer: &TestIssuer,
    extra: &str,
) -> (crate::common::Server, std::path::PathBuf) {
    let jwks = dir.join("jwks.json");
    write_jwks(&jwks, &[issuer]);
    let config = server_config(dir, &jwks, extra);
    let server =
        crate::common::Server::start(&dir.join("data"), &["--config", config.to_str().unwrap()]);
    (server, jwks)
}

fn rsa_pkcs8() -> Vec<u8> {
    let key = writ_ca::PrivateKey::generate(writ_ca::KeyType::Rsa2048).unwrap();
    key.pkcs8_der().to_vec()
}

/// Seconds, for readability at call sites.
pub const HOUR: i64 = 3600;

/// How long a test waits for a server-side effect.
pub const PATIENCE: Duration = Duration::from_secs(20);
