//! End to end: `writ config check` findings and exit codes.
#![allow(clippy::unwrap_used)]

mod common;

use common::writ;

fn check(text: &str, extra: &[&str]) -> (i32, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("c.toml");
    std::fs::write(&f, text).unwrap();
    let mut args = vec!["config", "check", f.to_str().unwrap(), "-o", "json"];
    args.extend_from_slice(extra);
    let out = writ(&args);
    (
        out.status.code().unwrap(),
        serde_json::from_slice(&out.stdout).unwrap(),
    )
}

#[test]
fn exit_codes_follow_the_worst_finding() {
    let (code, v) = check("trust_domain = \"example.org\"\n", &[]);
    assert_eq!((code, v.as_array().unwrap().len()), (0, 0));

    let (code, v) = check("max_ttl = \"72h\"\n", &[]);
    assert_eq!(code, 1);
    assert_eq!(v[0]["subject"], "max_ttl");
    assert_eq!(v[0]["severity"], "warning");
    assert!(!v[0]["fix"].as_str().unwrap().is_empty());

    let (code, v) = check("max_ttl = \"1h\"\nmax_tll = \"2h\"\n", &[]);
    assert_eq!(code, 2, "an unknown key must be an error, not silence");
    assert_eq!(v[0]["subject"], "config");

    let (code, v) = check(
        "server = \"ca:8443\"\nout_dir = \"/nonexistent\"\nrenew_at = 0.95\n",
        &[],
    );
    assert_eq!(code, 1);
    assert_eq!(v[0]["subject"], "renew_at");

    let (code, _) = check("renew_at = 0.5\n", &["--kind", "agent"]);
    assert_eq!(code, 2, "agent config without server/out_dir");
}

#[test]
fn metrics_on_a_non_loopback_address_is_a_warning() {
    let (code, v) = check("metrics_listen = \"0.0.0.0:9090\"\n", &[]);
    assert_eq!(code, 1);
    assert_eq!(v[0]["subject"], "metrics_listen");
    assert!(v[0]["fix"].as_str().unwrap().contains("127.0.0.1:9090"));
    let (code, _) = check("metrics_listen = \"127.0.0.1:9090\"\n", &[]);
    assert_eq!(code, 0);

    let (code, v) = check(
        "server = \"ca:8443\"\nout_dir = \"/nonexistent\"\nmetrics_listen = \"10.1.2.3:9091\"\n",
        &[],
    );
    assert_eq!(code, 1);
    assert_eq!(v[0]["subject"], "metrics_listen");
}
