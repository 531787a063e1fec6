//! Shared harness for the end-to-end tests: a real `writ server` process on an ephemeral
//! loopback port in a temp dir, and helpers to run the `writ` CLI.
#![allow(dead_code, clippy::unwrap_used)]

pub mod agent;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// The `writ` binary under test.
pub fn writ_bin() -> &'static str {
    env!("CARGO_BIN_EXE_writ")
}

/// A running `writ server`.
pub struct Server {
    child: Option<Child>,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// Its data dir.
    pub data_dir: PathBuf,
    /// Its admin socket.
    pub admin_socket: PathBuf,
    /// Active root fingerprint at start.
    pub root_fingerprint: String,
    /// Trust domain.
    pub trust_domain: String,
    /// The metrics endpoint, when started with `--metrics-listen`.
    pub metrics_addr: Option<String>,
}

impl Server {
    /// Starts `writ server --data-dir DIR --listen 127.0.0.1:0 -o json ARGS...` and waits for
    /// its start-up line.
    pub fn start(data_dir: &Path, args: &[&str]) -> Server {
        Self::start_on(data_dir, "127.0.0.1:0", args)
    }

    /// Like [`Server::start`] on a given listen address (to restart on the same port).
    /// Development mode (unencrypted keys) unless `args` give a passphrase file;
    /// `--allow-root` because CI runs as root.
    pub fn start_on(data_dir: &Path, listen: &str, args: &[&str]) -> Server {
        let dev: &[&str] = if args.contains(&"--passphrase-file") {
            &[]
        } else {
            &["--dev"]
        };
        let mut child = Command::new(writ_bin())
            .args(["server", "-o", "json", "--listen", listen, "--data-dir"])
            .arg(data_dir)
            .args(dev)
            .arg("--allow-root")
            .args(args)
            .env("WRIT_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn writ server");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read start-up line");
        if line.is_empty() {
            let status = child.wait().expect("wait");
            panic!("writ server exited before start-up: {status}");
        }
        let v: serde_json::Value = serde_json::from_str(&line).expect("start-up JSON");
        Server {
            child: Some(child),
            addr: v["listen"].as_str().unwrap().to_owned(),
            data_dir: data_dir.to_owned(),
            admin_socket: PathBuf::from(v["admin_socket"].as_str().unwrap()),
            root_fingerprint: v["root_fingerprint"].as_str().unwrap().to_owned(),
            trust_domain: v["trust_domain"].as_str().unwrap().to_owned(),
            metrics_addr: v["metrics_listen"].as_str().map(str::to_owned),
        }
    }

    /// `--data-dir DIR` for admin commands.
    pub fn admin_args(&self) -> Vec<String> {
        vec!["--data-dir".into(), self.data_dir.display().to_string()]
    }

    /// Runs an admin CLI command against this server (adds `--data-dir`).
    pub fn admin(&self, args: &[&str]) -> Output {
        let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        all.extend(self.admin_args());
        writ(&all.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// `writ x509 mint --spiffe-id ID --out-dir DIR EXTRA...` against this server.
    pub fn mint(&self, id: &str, dir: &Path, extra: &[&str]) -> Output {
        let d = dir.display().to_string();
        let mut args = vec!["x509", "mint", "--spiffe-id", id, "--out-dir", &d];
        args.extend(extra);
        self.admin(&args)
    }

    /// Like [`Server::mint`] with `-o json`, asserting success: its answer.
    pub fn mint_json(&self, id: &str, dir: &Path, extra: &[&str]) -> serde_json::Value {
        let mut all = extra.to_vec();
        all.extend(["-o", "json"]);
        let out = self.mint(id, dir, &all);
        assert_success(&out, &["x509", "mint", "--spiffe-id", id]);
        serde_json::from_slice(&out.stdout).expect("JSON output")
    }

    /// [`Server::mint`] with `--ttl TTL`.
    pub fn mint_ttl(&self, id: &str, dir: &Path, ttl: &str, extra: &[&str]) -> Output {
        let mut all = vec!["--ttl", ttl];
        all.extend(extra);
        self.mint(id, dir, &all)
    }

    /// Like [`Server::admin`], asserting success and parsing stdout as JSON.
    pub fn admin_json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let out = self.admin(&all);
        assert_success(&out, args);
        serde_json::from_slice(&out.stdout).expect("JSON output")
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the server with SIGKILL (a crash) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the server with SIGTERM and waits for it; its exit status, unless it had
    /// been stopped already.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        c.wait().ok()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A `writ server --dev` on an ephemeral port whose log (stderr, at `level`) goes to
/// `log`, for tests that read what the server logs. The harness's [`Server`] inherits
/// stderr instead.
pub struct LoggedServer {
    child: Child,
    /// The start-up line (`-o json`).
    pub started: serde_json::Value,
    log: PathBuf,
}

impl LoggedServer {
    /// Starts it on `data_dir`, with no passphrase and no `NO_COLOR` in its environment.
    pub fn start(data_dir: &Path, log: &Path, level: &str) -> LoggedServer {
        let mut child = Command::new(writ_bin())
            .args([
                "server",
                "-o",
                "json",
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(data_dir)
            .args(["--dev", "--allow-root"])
            .env("WRIT_LOG", level)
            .env_remove("WRIT_PASSPHRASE")
            .env_remove("NO_COLOR")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .expect("spawn writ server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .unwrap();
        let started =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("start-up line {line:?}: {e}"));
        LoggedServer {
            child,
            started,
            log: log.to_owned(),
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        self.started["listen"].as_str().unwrap().to_owned()
    }

    /// Stops the server as a service manager would (SIGTERM) and returns everything it
    /// logged.
    pub fn stop(mut self) -> String {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
        std::fs::read_to_string(&self.log).unwrap()
    }
}

impl Drop for LoggedServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `writ ARGS` and returns its output.
pub fn writ(args: &[&str]) -> Output {
    Command::new(writ_bin())
        .args(args)
        .env("WRIT_LOG", "error")
        .stdin(Stdio::null())
        .output()
        .expect("run writ")
}

/// Asserts a command succeeded, showing its stderr otherwise.
pub fn assert_success(out: &Output, what: &[&str]) {
    assert!(
        out.status.success(),
        "writ {what:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `writ ARGS -o json`, asserting success.
pub fn writ_json(args: &[&str]) -> serde_json::Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    let out = writ(&all);
    assert_success(&out, args);
    serde_json::from_slice(&out.stdout).expect("JSON output")
}

/// Polls `cond` every 20 ms for up to `timeout`. For waiting on another process's files,
/// where there is no event to wait on.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

/// Reads a PEM file into DER certificates.
pub fn read_certs(path: &Path) -> Vec<Vec<u8>> {
    writ_ca::x509::certs_from_pem(&std::fs::read(path).expect("read PEM")).expect("PEM certs")
}

/// Runs `openssl verify -CAfile bundle -untrusted chain chain` and returns whether it passed.
pub fn openssl_verify(bundle: &Path, chain: &Path) -> bool {
    let out = Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(bundle)
        .arg("-untrusted")
        .arg(chain)
        .arg(chain)
        .output()
        .expect("openssl is required for these tests (apt-get install openssl)");
    if !out.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&out.stdout));
        eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    }
    out.status.success()
}

/// `GET path` over plain HTTP/1.1 on `addr`: the status code and the body.
pub fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((code, body.to_owned()))
}

/// Mints `id` through `server`'s admin socket into `dir` (`writ x509 mint`) and reads it
/// back as an agent would.
pub fn mint_identity(server: &Server, dir: &Path, id: &str) -> writ_agent::files::Identity {
    assert_success(&server.mint(id, dir, &[]), &["x509", "mint"]);
    writ_agent::files::read_identity(dir).unwrap().unwrap()
}

/// The serial of the certificate in the identity dir `dir` (lowercase hex).
pub fn serial(dir: &Path) -> String {
    writ_agent::files::read_identity(dir)
        .unwrap()
        .unwrap()
        .leaf_info()
        .unwrap()
        .serial
}

/// Serials of every certificate the server's log holds for `spiffe_id` (not the server's
/// own certificates, one per start).
pub fn logged_serials(server: &Server, spiffe_id: &str) -> std::collections::HashSet<String> {
    let log = server.admin_json(&["certs", "list", "--limit", "10000"]);
    log["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["spiffe_id"] == spiffe_id)
        .map(|c| c["serial"].as_str().unwrap().to_owned())
        .collect()
}

/// The server's `/metrics` page (it must run with `--metrics-listen`).
pub fn scrape(server: &Server) -> String {
    let (code, page) = http_get(server.metrics_addr.as_ref().unwrap(), "/metrics").unwrap();
    assert_eq!(code, 200, "{page}");
    page
}

/// The value of the sample `name{labels}` (labels exactly as printed, e.g.
/// `method="mtls",result="ok"`; empty for none) in a Prometheus text page.
pub fn metric(page: &str, name: &str, labels: &str) -> Option<f64> {
    let want = if labels.is_empty() {
        name.to_owned()
    } else {
        format!("{name}{{{labels}}}")
    };
    page.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (key, value) = l.rsplit_once(' ')?;
        (key == want).then(|| value.parse().ok())?
    })
}
