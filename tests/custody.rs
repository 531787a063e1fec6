//! Key custody end to end: the real `writ server` with a passphrase from a file or the
//! environment, a wrong or missing passphrase, the move from an unencrypted CA to a
//! sealed one, and the refusals to run as root or over paths others can read.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{LoggedServer, Server, wait_until, writ_bin};
use writ_ca::store::{Entries, Store};
use writ_store::SledStore;

/// A started server (killed on drop) or what it said before exiting.
enum Started {
    Up(Child, serde_json::Value),
    Refused(String),
}

impl Drop for Started {
    fn drop(&mut self) {
        if let Started::Up(c, _) = self {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Started {
    fn fingerprint(&self) -> String {
        match self {
            Started::Up(_, v) => v["root_fingerprint"].as_str().unwrap().to_owned(),
            Started::Refused(e) => panic!("server refused to start: {e}"),
        }
    }

    fn refusal(&self) -> &str {
        match self {
            Started::Up(..) => panic!("server started but should have refused"),
            Started::Refused(e) => e,
        }
    }
}

/// Runs `writ server` on `data` with exactly `args` (no `--dev` or `--allow-root` added)
/// and the passphrase environment variable set to `env` (or removed).
fn server(data: &Path, args: &[&str], env: Option<&str>) -> Started {
    let mut cmd = Command::new(writ_bin());
    cmd.args([
        "server",
        "-o",
        "json",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
    ])
    .arg(data)
    .args(args)
    .env("WRIT_LOG", "warn")
    .env_remove("WRIT_PASSPHRASE")
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    if let Some(p) = env {
        cmd.env("WRIT_PASSPHRASE", p);
    }
    let mut child = cmd.spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    if line.is_empty() {
        // Exited before its start-up line: collect why.
        assert!(wait_until(Duration::from_secs(30), || child
            .try_wait()
            .unwrap()
            .is_some()));
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        assert!(!child.wait().unwrap().success());
        return Started::Refused(err);
    }
    // Drain stderr so the server never blocks on a full pipe.
    let mut stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    Started::Up(child, serde_json::from_str(&line).unwrap())
}

fn passphrase_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

/// Every record of the store in `data` (sled rewrites its files on each open, so the
/// comparison is of what it holds, not of its bytes on disk).
fn snapshot(data: &Path) -> Vec<(String, Entries)> {
    let store = SledStore::open(&data.join("db")).unwrap();
    let mut out: Vec<(String, Entries)> = [
        "ca",
        "bootstrap",
        "bootstrap_tokens",
        "rotation",
        "issuance_serials",
    ]
    .iter()
    .map(|t| (t.to_string(), store.scan(t).unwrap()))
    .collect();
    out.push((
        "issuance_log".into(),
        vec![(
            store.issuance_count().unwrap().to_be_bytes().to_vec(),
            vec![],
        )],
    ));
    out.push((
        "journal".into(),
        vec![(
            std::fs::read(data.join(writ_store::JOURNAL_FILE)).unwrap(),
            vec![],
        )],
    ));
    out
}

/// Every file of the data directory `data`, its sled database included, with its bytes:
/// what a refused start must leave as it was.
fn every_file(data: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let path = e.unwrap().path();
            let key = path.strip_prefix(root).unwrap().to_owned();
            if path.is_dir() {
                out.insert(key, Vec::new());
                walk(&path, root, out);
            } else {
                out.insert(key, std::fs::read(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(data, data, &mut out);
    out
}

#[test]
fn passphrase_file_seals_and_reopens_wrong_one_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let good = passphrase_file(tmp.path(), "good", "correct horse battery staple\n");
    let good_s = good.display().to_string();
    let bad = passphrase_file(tmp.path(), "bad", "incorrect horse\n");
    let bad_s = bad.display().to_string();

    let mut first = Server::start(&data, &["--passphrase-file", &good_s]);
    let fp = first.root_fingerprint.clone();
    // The harness's server is fully usable: it issues a token with the sealed key.
    first.admin_json(&["token", "create", "--spiffe-id", "spiffe://cluster.local/a"]);
    first.stop();
    // As the server left it: sled rewrites its own files at the first open after a clean
    // stop, so any opening of the database would show here.
    let files = every_file(&data);
    assert!(files.contains_key(Path::new(writ_store::JOURNAL_FILE)));
    assert!(files.contains_key(Path::new(writ_store::kek_file::KEK_FILE)));

    let refused = server(&data, &["--allow-root", "--passphrase-file", &bad_s], None);
    let err = refused.refusal();
    assert!(err.contains("does not open this CA"), "{err}");
    assert!(err.contains("--passphrase-file"), "{err}");
    // Refused on the copy of the check value beside the database, before sled or the
    // journal is opened: not a byte changes.
    assert!(
        every_file(&data) == files,
        "a refused start changed the data directory"
    );

    // Without a passphrase: refused even in development mode, also unchanged.
    let err = server(&data, &["--allow-root", "--dev"], None);
    assert!(
        err.refusal().contains("encrypted with a passphrase"),
        "{}",
        err.refusal()
    );
    assert!(
        every_file(&data) == files,
        "a refused start changed the data directory"
    );
    let (_, ca) = &snapshot(&data)[0];
    assert!(
        ca.iter()
            .any(|(k, v)| k == b"state" && v.windows(10).any(|w| w == b"sealed_key")),
        "no sealed key in the store"
    );

    // The right passphrase then opens the same CA, which issues and chains on its log.
    let again = Server::start(&data, &["--passphrase-file", &good_s]);
    assert_eq!(again.root_fingerprint, fp);
    let dir = tmp.path().join("b");
    let minted = again.mint_json("spiffe://cluster.local/b", &dir, &[]);
    assert_eq!(minted["spiffe_id"], "spiffe://cluster.local/b");
    assert!(common::openssl_verify(
        &dir.join("bundle.pem"),
        &dir.join("cert.pem")
    ));
    let audit = again.admin_json(&["audit", "verify"]);
    assert_eq!(audit["ok"], true, "{audit}");
}

#[test]
fn passphrase_from_the_environment() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let fp = server(&data, &["--allow-root"], Some("env secret")).fingerprint();
    // The same passphrase from a file opens it too; another in the environment does not.
    let file = passphrase_file(tmp.path(), "p", "env secret");
    let file_s = file.display().to_string();
    assert_eq!(
        server(&data, &["--allow-root", "--passphrase-file", &file_s], None).fingerprint(),
        fp
    );
    let err = server(&data, &["--allow-root"], Some("other"));
    assert!(
        err.refusal().contains("does not open this CA"),
        "{}",
        err.refusal()
    );
}

#[test]
fn no_passphrase_without_dev_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let err = server(&data, &["--allow-root"], None);
    let err = err.refusal();
    assert!(
        err.contains("--passphrase-file")
            && err.contains("WRIT_PASSPHRASE")
            && err.contains("--dev"),
        "{err}"
    );
    assert!(!data.exists(), "a refused start created the data dir");
}

#[test]
fn dev_ca_is_encrypted_on_first_start_with_a_passphrase() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let fp = {
        let s = server(&data, &["--allow-root", "--dev"], None);
        s.fingerprint()
    };
    let file = passphrase_file(tmp.path(), "p", "from now on");
    let file_s = file.display().to_string();
    let s = server(&data, &["--allow-root", "--passphrase-file", &file_s], None);
    assert_eq!(s.fingerprint(), fp);
    drop(s);
    let err = server(&data, &["--allow-root", "--dev"], None);
    assert!(
        err.refusal().contains("encrypted with a passphrase"),
        "{}",
        err.refusal()
    );
    assert!(
        !err.refusal().contains("UNENCRYPTED"),
        "no warning about unencrypted keys before refusing to open encrypted ones: {}",
        err.refusal()
    );
}

#[test]
fn root_is_refused_without_allow_root() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: the refusal to run as root needs the test to run as root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let err = server(&data, &["--dev"], None);
    let err = err.refusal();
    assert!(
        err.contains("refuses to run as root") && err.contains("--allow-root"),
        "{err}"
    );
    assert!(!data.exists(), "a refused start created the data dir");
}

#[test]
fn paths_others_can_read_are_refused_with_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let err = server(&data, &["--allow-root", "--dev"], None);
    let err = err.refusal();
    assert!(
        err.contains(&format!("chmod 700 '{}'", data.display())),
        "{err}"
    );
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();

    let file = passphrase_file(tmp.path(), "p", "pw");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let file_s = file.display().to_string();
    let err = server(&data, &["--allow-root", "--passphrase-file", &file_s], None);
    let err = err.refusal();
    assert!(
        err.contains(&format!("chmod 600 '{}'", file.display())),
        "{err}"
    );

    let sock = tmp.path().join("sock");
    std::fs::create_dir(&sock).unwrap();
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o750)).unwrap();
    let sock_s = sock.join("admin.sock").display().to_string();
    let err = server(
        &data,
        &["--allow-root", "--dev", "--admin-socket", &sock_s],
        None,
    );
    let err = err.refusal();
    assert!(err.contains("admin socket directory"), "{err}");
    assert!(
        err.contains(&format!("chmod 700 '{}'", sock.display())),
        "{err}"
    );
    assert!(!data.join("db").exists(), "a refused start created a CA");
}

#[test]
fn dev_mode_logs_a_warning_that_keys_are_unencrypted() {
    let tmp = tempfile::tempdir().unwrap();
    let server = LoggedServer::start(
        &tmp.path().join("data"),
        &tmp.path().join("server.log"),
        "warn",
    );
    assert!(server.started["root_fingerprint"].is_string());
    let log = server.stop();
    assert!(
        log.contains("WARNING") && log.contains("UNENCRYPTED") && log.contains("--passphrase-file"),
        "{log}"
    );
}
