//! End to end: what the `writ` CLI prints, as a user in a shell meets it. A command piped
//! into `head` ends quietly with exit status 0 once `head` has gone; `audit verify --file`
//! is not refused because WRIT_DATA_DIR is exported; `x509 mint` and `renew` say when the
//! server granted another lifetime than `--ttl` asked for; and lists count one thing in
//! the singular; a one-shot command logs only warnings unless `WRIT_LOG` asks for more.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::SystemTime;

use common::{Server, assert_success, writ, writ_bin};

const ID: &str = "spiffe://cluster.local/ns/default/sa/web";

/// A command's stderr, as text.
fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A command's stdout, as text.
fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `writ ARGS` with stdout a pipe whose reader is closed before the command writes
/// anything, as in `writ ... | head -1` once `head` has exited.
fn into_closed_pipe(args: &[&str]) -> Output {
    let mut child = Command::new(writ_bin())
        .args(args)
        .env("WRIT_LOG", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn writ");
    drop(child.stdout.take());
    child.wait_with_output().expect("wait for writ")
}

/// Asserts `writ ARGS` into a closed pipe ended with status 0 and said nothing.
fn assert_quiet_into_closed_pipe(args: &[&str]) {
    let out = into_closed_pipe(args);
    let err = stderr(&out);
    assert!(
        out.status.success(),
        "writ {args:?} into a closed pipe: {}\n{err}",
        out.status
    );
    assert!(
        !err.contains("panicked") && !err.contains("Broken pipe") && !err.contains("error"),
        "writ {args:?} into a closed pipe complained:\n{err}"
    );
}

/// `n` copies of a self-signed certificate in one PEM file: `writ cert inspect` prints
/// about half a KiB for each.
fn many_certificates(path: &Path, n: usize) {
    let cert = rcgen::generate_simple_self_signed(vec!["web.example.org".to_owned()]).unwrap();
    std::fs::write(path, cert.cert.pem().repeat(n)).unwrap();
}

#[test]
fn cert_inspect_into_a_closed_pipe_exits_0_quietly() {
    let tmp = tempfile::tempdir().unwrap();
    let pem = tmp.path().join("chain.pem");
    // Far beyond a pipe buffer (64 KiB): the writes meet the closed pipe even if the
    // reader were still there when the first ones were made.
    many_certificates(&pem, 400);
    let file = pem.display().to_string();
    let whole = writ(&["cert", "inspect", &file]);
    assert_success(&whole, &["cert", "inspect"]);
    assert!(whole.stdout.len() > 128 * 1024, "{}", whole.stdout.len());

    for _ in 0..3 {
        assert_quiet_into_closed_pipe(&["cert", "inspect", &file]);
        assert_quiet_into_closed_pipe(&["cert", "inspect", &file, "-o", "json"]);
    }
}

#[test]
fn admin_commands_into_a_closed_pipe_exit_0_quietly() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &[]);
    let data = server.data_dir.display().to_string();
    // Each token is an audit record of some 330 bytes: 250 make an export of about
    // 80 KiB, more than a pipe buffer holds.
    for i in 0..250 {
        let id = format!("spiffe://cluster.local/vm/{i}");
        assert_success(
            &server.admin(&["token", "create", "--spiffe-id", &id]),
            &["token", "create"],
        );
    }
    let export = server.admin(&["audit", "export"]);
    assert_success(&export, &["audit", "export"]);
    assert!(export.stdout.len() > 64 * 1024, "{}", export.stdout.len());

    for args in [
        &["audit", "export"][..],
        &["audit", "list", "--limit", "1000"],
        &["audit", "list", "-o", "json"],
        &["token", "list"],
        &["certs", "list"],
        &["bundle", "show"],
    ] {
        let mut all = args.to_vec();
        all.extend(["--data-dir", &data]);
        assert_quiet_into_closed_pipe(&all);
    }
}

#[test]
fn a_verdict_in_the_exit_status_survives_a_closed_pipe() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("server.toml");
    std::fs::write(&bad, "max_ttl = \"1h\"\nmax_tll = \"2h\"\n").unwrap();
    let bad = bad.display().to_string();
    for format in ["text", "json"] {
        let out = into_closed_pipe(&["config", "check", &bad, "-o", format]);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    }

    // A broken audit chain stays a failure though its JSON report went unread.
    let tampered = tmp.path().join("audit.jsonl");
    let first = r#"{"seq":1,"time":1,"event":{"action":"issue","actor":"internal"},"prev":"00","hash":"00"}"#;
    std::fs::write(&tampered, format!("{first}\n")).unwrap();
    let tampered = tampered.display().to_string();
    let out = writ(&["audit", "verify", "--file", &tampered, "-o", "json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let out = into_closed_pipe(&["audit", "verify", "--file", &tampered, "-o", "json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("chain broken"), "{}", stderr(&out));
}

#[test]
fn audit_verify_file_wins_over_a_data_dir_from_the_environment() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &[]);
    let export = server.admin(&["audit", "export"]);
    assert_success(&export, &["audit", "export"]);
    let file = tmp.path().join("audit.jsonl");
    std::fs::write(&file, &export.stdout).unwrap();
    let file = file.display().to_string();
    let cli_toml = tmp.path().join("cli.toml");
    std::fs::write(
        &cli_toml,
        format!("data_dir = {:?}\n", server.data_dir.display().to_string()),
    )
    .unwrap();

    let verify = |envs: &[(&str, &Path)]| {
        let mut cmd = Command::new(writ_bin());
        cmd.args(["audit", "verify", "--file", &file])
            .env("WRIT_LOG", "error")
            .env_remove("WRIT_DATA_DIR")
            .env_remove("WRIT_ADMIN_SOCKET")
            .env_remove("WRIT_CONFIG")
            .stdin(Stdio::null());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };
    for envs in [
        &[("WRIT_DATA_DIR", server.data_dir.as_path())][..],
        &[("WRIT_ADMIN_SOCKET", server.admin_socket.as_path())],
        &[
            ("WRIT_DATA_DIR", server.data_dir.as_path()),
            ("WRIT_ADMIN_SOCKET", server.admin_socket.as_path()),
        ],
        &[("WRIT_CONFIG", cli_toml.as_path())],
    ] {
        let out = verify(envs);
        assert!(
            out.status.success(),
            "audit verify --file with {envs:?}: {}\n{}",
            out.status,
            stderr(&out)
        );
        assert!(
            stdout(&out).starts_with("audit log intact: "),
            "{}",
            stdout(&out)
        );
    }

    // On the command line the two still contradict each other: a usage error.
    let data = server.data_dir.display().to_string();
    let socket = server.admin_socket.display().to_string();
    for (flag, value) in [("--data-dir", &data), ("--admin-socket", &socket)] {
        let out = writ(&["audit", "verify", "--file", &file, flag, value]);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(stderr(&out).contains(flag), "{}", stderr(&out));
    }
}

/// `writ x509 mint --ttl TTL -o json`: its JSON and its stderr.
fn mint_json(server: &Server, dir: &Path, ttl: &str) -> (serde_json::Value, String) {
    let out = server.mint_ttl(ID, dir, ttl, &["-o", "json"]);
    assert_success(&out, &["x509", "mint", "--ttl", ttl]);
    (serde_json::from_slice(&out.stdout).unwrap(), stderr(&out))
}

/// Seconds from now to the notAfter of `dir/cert.pem`'s leaf.
fn seconds_left(dir: &Path) -> i64 {
    let certs = common::read_certs(&dir.join("cert.pem"));
    let leaf = writ_ca::CertInfo::parse(&certs[0]).unwrap();
    leaf.seconds_left(SystemTime::now())
}

#[test]
fn mint_says_when_the_server_grants_another_lifetime_than_asked() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &["--max-ttl", "2h"]);
    let dir = tmp.path().join("web");

    // Above max_ttl: still issued, for max_ttl, and said so on one line of stderr.
    let (v, err) = mint_json(&server, &dir, "48h");
    assert_eq!(
        err.trim_end(),
        "note: asked for 48h, got 2h: the server's max_ttl is 2h (its --max-ttl flag or max_ttl setting)"
    );
    assert_eq!(v["ttl_seconds"], 7200, "{v}");
    assert_eq!(v["requested_ttl_seconds"], 172_800, "{v}");
    assert!(v["serial"].is_string() && v["not_after"].is_string(), "{v}");
    let left = seconds_left(&dir);
    assert!((7200 - 60..=7200).contains(&left), "{left}");

    // Below min_ttl (1m by default).
    let (v, err) = mint_json(&server, &dir, "10s");
    assert!(
        err.starts_with("note: asked for 10s, got 1m: the server's min_ttl is 1m"),
        "{err}"
    );
    assert_eq!(v["ttl_seconds"], 60, "{v}");

    // Within the bounds: nothing to say.
    let (v, err) = mint_json(&server, &dir, "90m");
    assert_eq!(err, "");
    assert_eq!(v["ttl_seconds"], 5400, "{v}");
    let (v, err) = mint_json(&server, &dir, "2h");
    assert_eq!(err, "");
    assert_eq!(v["ttl_seconds"], 7200, "{v}");

    // In text mode stdout is as before, and the note is on stderr.
    let out = server.mint_ttl(ID, &dir, "48h", &[]);
    assert_success(&out, &["x509", "mint"]);
    assert!(stdout(&out).starts_with(&format!("issued {ID} (serial ")));
    assert!(!stdout(&out).contains("note"), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("asked for 48h, got 2h"),
        "{}",
        stderr(&out)
    );
}

/// `writ renew --dir DIR --ttl TTL -o json` against `server`: its JSON and its stderr.
fn renew_json(server: &Server, dir: &Path, ttl: &str) -> (serde_json::Value, String) {
    let d = dir.display().to_string();
    let args = [
        "renew",
        "--server",
        &server.addr,
        "--dir",
        &d,
        "--ttl",
        ttl,
        "-o",
        "json",
    ];
    let out = writ(&args);
    assert_success(&out, &args);
    (serde_json::from_slice(&out.stdout).unwrap(), stderr(&out))
}

#[test]
fn renew_says_when_the_server_grants_another_lifetime_than_asked() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &["--max-ttl", "2h"]);
    let dir = tmp.path().join("web");
    assert_success(&server.mint_ttl(ID, &dir, "1h", &[]), &["x509", "mint"]);

    // Above max_ttl: renewed for max_ttl, said on stderr, both numbers in the JSON.
    let (v, err) = renew_json(&server, &dir, "48h");
    assert_eq!(
        err.trim_end(),
        "note: asked for 48h, got 2h: the server's max_ttl is 2h (its --max-ttl flag or max_ttl setting)"
    );
    assert_eq!(v["ttl_seconds"], 7200, "{v}");
    assert_eq!(v["requested_ttl_seconds"], 172_800, "{v}");
    let left = seconds_left(&dir);
    assert!((7200 - 60..=7200).contains(&left), "{left}");

    // Within the bounds: nothing to say.
    let (v, err) = renew_json(&server, &dir, "90m");
    assert_eq!(err, "");
    assert_eq!(v["ttl_seconds"], 5400, "{v}");
    assert_eq!(v["requested_ttl_seconds"], 5400, "{v}");
}

#[test]
fn lists_count_one_thing_in_the_singular() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &[]);
    let first_line = |args: &[&str]| {
        let out = server.admin(args);
        assert_success(&out, args);
        stdout(&out).lines().next().unwrap_or_default().to_owned()
    };

    assert_eq!(first_line(&["token", "list"]), "0 tokens:");
    assert_success(
        &server.admin(&["token", "create", "--spiffe-id", ID]),
        &["token", "create"],
    );
    assert_eq!(first_line(&["token", "list"]), "1 token:");
    assert_success(
        &server.admin(&["token", "create", "--spiffe-id", ID]),
        &["token", "create"],
    );
    assert_eq!(first_line(&["token", "list"]), "2 tokens:");

    assert_eq!(first_line(&["identity", "list"]), "0 denied identities:");
    assert_success(
        &server.admin(&["identity", "deny", ID]),
        &["identity", "deny"],
    );
    assert_eq!(first_line(&["identity", "list"]), "1 denied identity:");

    // The server's own certificate is the one issued so far.
    assert_eq!(
        first_line(&["certs", "list"]),
        "1 certificate issued; newest 1:"
    );
}

/// `writ bootstrap` with the log level left to the command (no WRIT_LOG).
fn bootstrap_logging(server: &Server, dir: &Path, log: Option<&str>) -> Output {
    let token = server.admin_json(&["token", "create", "--spiffe-id", ID]);
    let file = dir.join(format!("token-{}", log.unwrap_or("default")));
    std::fs::write(&file, token["token"].as_str().unwrap()).unwrap();
    let out_dir = dir.join(format!("out-{}", log.unwrap_or("default")));
    let mut cmd = Command::new(writ_bin());
    cmd.args(["bootstrap", "--server", &server.addr, "--token-file"])
        .arg(&file)
        .arg("--out-dir")
        .arg(&out_dir)
        .env_remove("WRIT_LOG")
        .stdin(Stdio::null());
    if let Some(level) = log {
        cmd.env("WRIT_LOG", level);
    }
    cmd.output().unwrap()
}

/// A one-shot command prints its result, and only warnings and errors join it on stderr;
/// `WRIT_LOG` still brings the log back.
#[test]
fn one_shot_commands_log_only_warnings_unless_asked() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &[]);
    let quiet = bootstrap_logging(&server, tmp.path(), None);
    assert_success(&quiet, &["bootstrap"]);
    assert!(stdout(&quiet).contains(ID), "{}", stdout(&quiet));
    assert!(
        !stderr(&quiet).contains("INFO"),
        "log lines from a one-shot command: {}",
        stderr(&quiet)
    );
    let logged = bootstrap_logging(&server, tmp.path(), Some("info"));
    assert_success(&logged, &["bootstrap"]);
    assert!(stderr(&logged).contains("INFO"), "{}", stderr(&logged));
}
