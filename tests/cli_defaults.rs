//! End to end: a user's CLI defaults in cli.toml (`$XDG_CONFIG_HOME/writ/cli.toml` or
//! `$WRIT_CONFIG`), overridden by environment variables and flags, and shown with
//! `writ config show-defaults`.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::{Server, writ_bin};

/// Runs `writ ARGS` with only the given CLI-related environment.
fn writ_env(xdg: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut c = Command::new(writ_bin());
    c.args(args)
        .env("WRIT_LOG", "error")
        .env("XDG_CONFIG_HOME", xdg)
        .stdin(Stdio::null());
    for var in [
        "WRIT_CONFIG",
        "WRIT_SERVER",
        "WRIT_DATA_DIR",
        "WRIT_ADMIN_SOCKET",
    ] {
        c.env_remove(var);
    }
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn cli_toml_defaults_lose_to_env_and_flags() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &[]);
    let xdg = tmp.path().join("xdg");
    std::fs::create_dir_all(xdg.join("writ")).unwrap();
    let file = xdg.join("writ/cli.toml");
    std::fs::write(
        &file,
        format!(
            "server = \"{}\"\ndata_dir = {:?}\noutput = \"json\"\n",
            server.addr,
            server.data_dir.display().to_string()
        ),
    )
    .unwrap();

    // No flags at all: the admin socket, the server and JSON output come from the file.
    let v = json(&writ_env(&xdg, &[], &["bundle", "show"]));
    assert_eq!(v["trust_domain"], "cluster.local");
    let v = json(&writ_env(&xdg, &[], &["healthcheck"]));
    assert_eq!(v["status"], "SERVING");
    let v = json(&writ_env(&xdg, &[], &["config", "show-defaults"]));
    let f = file.display().to_string();
    assert_eq!(v["file"], f.as_str());
    assert_eq!(v["server"]["value"], server.addr.as_str());
    assert_eq!(v["server"]["source"], f.as_str());
    assert_eq!(v["data_dir"]["source"], f.as_str());
    assert_eq!(
        v["admin_socket"]["value"],
        server.admin_socket.display().to_string().as_str()
    );
    assert_eq!(v["output"]["value"], "json");

    // A flag wins over the file: text output, another data dir.
    let out = writ_env(&xdg, &[], &["bundle", "show", "-o", "text"]);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("-----BEGIN CERTIFICATE-----"));
    let out = writ_env(&xdg, &[], &["bundle", "show", "--data-dir", "/nonexistent"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/admin.sock"));
    let v = json(&writ_env(
        &xdg,
        &[],
        &["config", "show-defaults", "--data-dir", "/srv/writ"],
    ));
    assert_eq!(v["data_dir"]["source"], "flag");
    assert_eq!(v["admin_socket"]["value"], "/srv/writ/admin.sock");

    // The environment wins over the file, and loses to a flag.
    let env = [("WRIT_SERVER", "10.0.0.1:8443")];
    let v = json(&writ_env(&xdg, &env, &["config", "show-defaults"]));
    assert_eq!(v["server"]["source"], "env WRIT_SERVER");
    assert_eq!(v["server"]["value"], "10.0.0.1:8443");
    let v = json(&writ_env(
        &xdg,
        &env,
        &["config", "show-defaults", "--server", "ca:1"],
    ));
    assert_eq!(
        (
            v["server"]["source"].as_str(),
            v["server"]["value"].as_str()
        ),
        (Some("flag"), Some("ca:1"))
    );

    // Text lists each value with its source.
    let out = writ_env(&xdg, &[], &["config", "show-defaults", "-o", "text"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("defaults file: {f}")), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("server") && l.contains(&f)),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("output") && l.ends_with("(flag)")),
        "{text}"
    );
}

#[test]
fn writ_config_names_the_file_and_bad_files_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let xdg = tmp.path().join("xdg-empty");
    // No file anywhere: built-in defaults.
    let v = json(&writ_env(
        &xdg,
        &[],
        &["config", "show-defaults", "-o", "json"],
    ));
    assert_eq!(v["file_loaded"], false);
    assert_eq!(v["output"]["source"], "flag");
    assert_eq!(v["data_dir"]["source"], "built-in");
    assert_eq!(v["server"]["value"], serde_json::Value::Null);

    // $WRIT_CONFIG names the file explicitly.
    let other = tmp.path().join("mine.toml");
    std::fs::write(
        &other,
        "output = \"json\"\nadmin_socket = \"/run/writ/admin.sock\"\n",
    )
    .unwrap();
    let o = other.display().to_string();
    let v = json(&writ_env(
        &xdg,
        &[("WRIT_CONFIG", &o)],
        &["config", "show-defaults"],
    ));
    assert_eq!(v["admin_socket"]["value"], "/run/writ/admin.sock");
    assert_eq!(v["admin_socket"]["source"], o.as_str());

    // An unknown key is an error naming it; so is a missing explicit file.
    std::fs::write(&other, "sever = \"ca:8443\"\n").unwrap();
    let out = writ_env(&xdg, &[("WRIT_CONFIG", &o)], &["config", "show-defaults"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("sever") && err.contains(&o), "{err}");
    let missing = tmp.path().join("missing.toml").display().to_string();
    let out = writ_env(&xdg, &[("WRIT_CONFIG", &missing)], &["bundle", "show"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("WRIT_CONFIG"));
}
