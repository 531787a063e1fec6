//! Writes the seed corpus under `fuzz/corpus/<target>/`. Run from `fuzz/`:
//!
//!     cargo run --release --example gen_corpus
//!
//! Keys, serials and tokens are random, so every run rewrites the binary seeds; commit
//! the result only when the seeds need to change (new message types, new key types).

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use prost::Message;
use writ_bootstrap::{Bootstrap, BootstrapSettings};
use writ_ca::{
    AuthMethod, Authority, CaSettings, Caller, KeyType, LeafRequest, PrivateKey, Rules, SpiffeId,
    TrustDomain, build_csr,
};
use writ_proto::{admin, v1, workload};
use writ_store::SledStore;

/// The identity the `csr` target's fixed caller has proven.
const ID: &str = "spiffe://example.org/ns/default/sa/web";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let id = SpiffeId::parse(ID)?;
    let td = TrustDomain::parse("example.org")?;

    // csr: every key type, DER and PEM, plus a granted DNS name and a foreign identity.
    let dir = target_dir(&corpus, "csr")?;
    let mut p256_csr = Vec::new();
    for kind in KeyType::ALL {
        let key = PrivateKey::generate(kind)?;
        let der = build_csr(&key, &id, &[])?;
        fs::write(dir.join(format!("{kind}.der")), &der)?;
        fs::write(
            dir.join(format!("{kind}.pem")),
            pem("CERTIFICATE REQUEST", &der)?,
        )?;
        if kind == KeyType::EcP256 {
            p256_csr = der;
            let dns = build_csr(&key, &id, &["web.example.org".into()])?;
            fs::write(dir.join("ec-p256-dns.der"), dns)?;
            let other = SpiffeId::parse("spiffe://example.org/ns/other/sa/db")?;
            fs::write(
                dir.join("ec-p256-other-id.der"),
                build_csr(&key, &other, &[])?,
            )?;
            let foreign = SpiffeId::parse("spiffe://evil.example/ns/default/sa/web")?;
            fs::write(
                dir.join("ec-p256-foreign-td.der"),
                build_csr(&key, &foreign, &[])?,
            )?;
        }
    }

    // spiffe_id: valid and invalid, IDs and bare trust domains.
    let dir = target_dir(&corpus, "spiffe_id")?;
    for (i, s) in [
        ID,
        "spiffe://example.org",
        "spiffe://cluster.local/writ/server",
        "spiffe://a-b_c.0/x/y.z/-_",
        "example.org",
        "spiffe://Example.org/x",
        "spiffe://example.org/a/../b",
        "spiffe://example.org/a//b",
        "spiffe://example.org/a/",
        "spiffe://example.org:8443/a",
        "spiffe://user@example.org/a",
        "spiffe://example.org/a?q#f",
        "spiffe://example.org/a%20b",
        "https://example.org/a",
    ]
    .iter()
    .enumerate()
    {
        fs::write(dir.join(format!("{i:02}.txt")), s)?;
    }

    // A real CA for chains and tokens.
    let tmp = tempfile::tempdir()?;
    let store = Arc::new(SledStore::open(&tmp.path().join("db"))?);
    let (ca, _) = Authority::open(
        CaSettings::new(td.clone()),
        store.clone(),
        SystemTime::now(),
    )?;
    let caller = Caller {
        id: id.clone(),
        dns_allowed: vec!["web.example.org".into()],
        method: AuthMethod::Mtls,
    };

    // pem_bundle: leaf + intermediate + root, the chain alone, the bundle, and an RSA CA's
    // chain with a DNS name.
    let dir = target_dir(&corpus, "pem_bundle")?;
    let issued = ca.issue(
        &p256_csr,
        &LeafRequest::new(&caller, Some(Duration::from_secs(3600)), Rules::WRIT),
        SystemTime::now(),
    )?;
    let bundle = issued.bundle.to_pem();
    let chain = writ_ca::x509::certs_to_pem(&issued.chain);
    fs::write(dir.join("chain-and-root.pem"), format!("{chain}{bundle}"))?;
    fs::write(dir.join("chain.pem"), &chain)?;
    fs::write(dir.join("bundle.pem"), &bundle)?;
    {
        let tmp = tempfile::tempdir()?;
        let mut settings = CaSettings::new(td.clone());
        settings.ca_key_type = KeyType::Rsa2048;
        let store = Arc::new(SledStore::open(&tmp.path().join("db"))?);
        let (rsa_ca, _) = Authority::open(settings, store, SystemTime::now())?;
        let key = PrivateKey::generate(KeyType::Rsa2048)?;
        let csr = build_csr(&key, &id, &["web.example.org".into()])?;
        let issued = rsa_ca.issue(
            &csr,
            &LeafRequest::new(&caller, None, Rules::WRIT),
            SystemTime::now(),
        )?;
        let chain = writ_ca::x509::certs_to_pem(&issued.chain);
        fs::write(
            dir.join("rsa-chain-and-root.pem"),
            format!("{chain}{}", issued.bundle.to_pem()),
        )?;
    }

    // bootstrap_token: real tokens (signed by this throwaway CA's key, so the fuzz target's
    // own key never verifies them) and near misses.
    let dir = target_dir(&corpus, "bootstrap_token")?;
    let bootstrap = Bootstrap::open(store.clone(), td.clone(), BootstrapSettings::default())?;
    let fp = ca.root_fingerprint()?;
    let now = SystemTime::now();
    let plain = bootstrap.mint(&td.workload("vm/db-1")?, None, vec![], &fp, now)?;
    fs::write(dir.join("token.txt"), plain.token.expose())?;
    let dns = bootstrap.mint(
        &id,
        None,
        vec!["web.example.org".into(), "*.web.example.org".into()],
        &fp,
        now,
    )?;
    fs::write(dir.join("token-dns.txt"), dns.token.expose())?;
    let t = plain.token.expose();
    let (head, _) = t.split_once('.').ok_or("a token has three parts")?;
    fs::write(
        dir.join("alg-none.txt"),
        format!(
            "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.",
            &t[head.len() + 1..t.rfind('.').ok_or("parts")?]
        ),
    )?;
    fs::write(dir.join("edits.bin"), [0x01, 0x40, b'A', 0x00, 0x10, b'x'])?;
    fs::write(dir.join("short.txt"), "a.b.c")?;

    // grpc_messages: one of each request, with realistic contents.
    let dir = target_dir(&corpus, "grpc_messages")?;
    let msgs: Vec<(&str, Vec<u8>)> = vec![
        (
            "sign",
            v1::SignRequest {
                csr: p256_csr.clone(),
                ttl_seconds: 3600,
            }
            .encode_to_vec(),
        ),
        (
            "mint",
            admin::MintRequest {
                spiffe_id: ID.into(),
                csr: p256_csr.clone(),
                ttl_seconds: 600,
                dns_names: vec!["web.example.org".into()],
            }
            .encode_to_vec(),
        ),
        (
            "list-certificates",
            admin::ListCertificatesRequest { limit: 10 }.encode_to_vec(),
        ),
        (
            "create-token",
            admin::CreateTokenRequest {
                spiffe_id: "spiffe://example.org/vm/db-1".into(),
                ttl_seconds: 900,
                dns_names: vec!["db-1.example.org".into()],
            }
            .encode_to_vec(),
        ),
        (
            "revoke-token",
            admin::RevokeTokenRequest {
                jti: plain.jti.to_string(),
            }
            .encode_to_vec(),
        ),
        (
            "jwtsvid",
            workload::JwtsvidRequest {
                audience: vec!["payments".into(), "ledger".into()],
                spiffe_id: ID.into(),
            }
            .encode_to_vec(),
        ),
        (
            "validate-jwtsvid",
            workload::ValidateJwtsvidRequest {
                audience: "payments".into(),
                svid: "eyJhbGciOiJFUzI1NiJ9.e30.sig".into(),
            }
            .encode_to_vec(),
        ),
    ];
    for (name, bytes) in msgs {
        fs::write(dir.join(format!("{name}.bin")), bytes)?;
    }

    // push_frames: the bundle push channel as an agent reads it — one frame, a bundle
    // and its change back to back, and a frame cut short.
    let dir = target_dir(&corpus, "push_frames")?;
    let current = v1::TrustBundle {
        trust_domain: "example.org".into(),
        roots: issued.bundle.roots.clone(),
        sequence: 1,
        refresh_hint_seconds: 300,
    };
    let mut changed = current.clone();
    changed
        .roots
        .push(issued.chain[issued.chain.len() - 1].clone());
    changed.sequence = 2;
    let one = writ_proto::push::encode(&current);
    let mut two = one.clone();
    two.extend(writ_proto::push::encode(&changed));
    fs::write(dir.join("one.bin"), &one)?;
    fs::write(dir.join("two.bin"), &two)?;
    fs::write(dir.join("cut.bin"), &two[..one.len() + 7])?;

    // server_config: example TOML files.
    let dir = target_dir(&corpus, "server_config")?;
    fs::write(dir.join("minimal.toml"), "trust_domain = \"example.org\"\n")?;
    fs::write(
        dir.join("full.toml"),
        r#"data_dir = "/var/lib/writ"
listen = "0.0.0.0:8443"
trust_domain = "prod.example.org"
ca_key_type = "ec-p384"
default_ttl = "1h"
min_ttl = "5m"
max_ttl = "24h"
root_ttl = "3650d"
intermediate_ttl = "30d"
backdate = "10s"
admin_socket = "/run/writ/admin.sock"
server_dns = ["ca.example.org", "localhost"]
server_ips = ["127.0.0.1", "::1"]
token_ttl = "15m"
token_max_ttl = "24h"
token_retention = "7d"
audit_segment_bytes = 268435456
shutdown_grace = "10s"
"#,
    )?;
    fs::write(
        dir.join("rsa.toml"),
        "ca_key_type = \"rsa-3072\"\nmax_ttl = \"2h\"\nintermediate_ttl = \"7d\"\n",
    )?;
    fs::write(
        dir.join("inconsistent.toml"),
        "min_ttl = \"10m\"\ndefault_ttl = \"1m\"\n",
    )?;
    fs::write(dir.join("unknown-key.toml"), "lisen = \"127.0.0.1:1\"\n")?;
    fs::write(
        dir.join("long-max-ttl.toml"),
        "max_ttl = \"100y\"\nintermediate_ttl = \"300y\"\nroot_ttl = \"1000y\"\n",
    )?;
    println!("wrote {}", corpus.display());
    Ok(())
}

fn target_dir(corpus: &Path, target: &str) -> std::io::Result<std::path::PathBuf> {
    let d = corpus.join(target);
    fs::create_dir_all(&d)?;
    Ok(d)
}

fn pem(label: &str, der: &[u8]) -> Result<String, Box<dyn std::error::Error>> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line)?);
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    Ok(out)
}
