//! writ's unix sockets served to gRPC stacks no one here wrote: py-spiffe over grpcio
//! (gRPC C-core) on the agent's Workload API socket, plain grpcio on the server's admin
//! socket. C-core sends the socket's percent-encoded path as `:authority`, which the
//! HTTP/2 layer used to answer with `RST_STREAM(PROTOCOL_ERROR)` (vendor/README.md).
//!
//! Needs a Python with py-spiffe (`pip install spiffe`, which brings grpcio): `WRIT_PYTHON`
//! names it, else `python3`; `./test.sh` makes one in `target/test-venv`.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::agent::Agent;
use common::{Server, wait_until};
use writ_agent::status::AgentStatus;

const ID: &str = "spiffe://cluster.local/ns/py/sa/client";
const PYTHON_ENV: &str = "WRIT_PYTHON";

/// The Python interpreter that can `import spiffe, grpc`; panics with how to get one.
fn python() -> PathBuf {
    let python = std::env::var_os(PYTHON_ENV).map_or_else(|| "python3".into(), PathBuf::from);
    let ok = Command::new(&python)
        .args(["-c", "import spiffe, grpc"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "{} cannot `import spiffe, grpc`: py-spiffe is required by these tests. Run ./test.sh \
         (it makes target/test-venv), or `pip install spiffe` and point {PYTHON_ENV} at that \
         Python",
        python.display()
    );
    python
}

fn client_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/clients")
        .join(name)
}

fn run_python(script: &str, args: &[&str]) -> Output {
    let out = Command::new(python())
        .arg("-W")
        .arg("ignore")
        .arg(client_script(script))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn py_spiffe_fetches_streams_and_is_refused_without_the_security_header() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(
        &tmp.path().join("data"),
        &["--min-ttl", "1s", "--default-ttl", "4s"],
    );
    let out = tmp.path().join("id");
    common::assert_success(&server.mint_ttl(ID, &out, "4s", &[]), &["x509", "mint"]);
    let socket = tmp.path().join("workload.sock");
    let socket_arg = socket.display().to_string();
    let _agent = Agent::start(&server, &out, &["--workload-api-socket", &socket_arg]);
    assert!(wait_until(Duration::from_secs(10), || socket.exists()));

    // Three distinct SVIDs on one FetchX509SVID stream: two rotations pushed (4 s
    // certificates renew at about half their life).
    let out = run_python(
        "py_spiffe_workload.py",
        &[socket.to_str().unwrap(), &server.trust_domain, "3"],
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let find = |kind: &str| {
        lines
            .iter()
            .find_map(|l| l.get(kind))
            .unwrap_or_else(|| panic!("no {kind:?} line in {lines:?}"))
    };

    let fetch = find("fetch");
    assert_eq!(fetch["spiffe_id"], ID);
    assert_eq!(fetch["chain"], 2, "leaf and intermediate: {fetch}");
    assert_eq!(fetch["bundle_roots"], 1, "{fetch}");
    let bundles = find("bundles");
    assert_eq!(bundles, &serde_json::json!({ "cluster.local": 1 }));

    let updates: Vec<&serde_json::Value> = lines.iter().filter_map(|l| l.get("update")).collect();
    assert!(updates.iter().all(|u| u["spiffe_id"] == ID), "{updates:?}");
    let serials: BTreeSet<&str> = updates
        .iter()
        .map(|u| u["serial"].as_str().unwrap())
        .collect();
    assert!(
        serials.len() >= 3,
        "rotation not seen on the stream: {updates:?}"
    );

    // Workload API §5.3: no `workload.spiffe.io: true` header, InvalidArgument.
    assert_eq!(find("no_header"), "INVALID_ARGUMENT");
}

#[test]
fn grpcio_calls_the_admin_socket() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &[]);
    let out = run_python("grpcio_admin.py", &[server.admin_socket.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["trust_domain"], server.trust_domain);
    assert!(v["bytes"].as_u64().unwrap() > 100, "no roots in {v}");
}

/// A caller whose uid the agent does not allow gets `PermissionDenied` naming its uid,
/// through grpcio and through py-spiffe, and the refusals are counted.
#[test]
fn a_caller_the_agent_does_not_allow_is_refused_by_uid() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &[]);
    let out = tmp.path().join("id");
    server.mint_json(ID, &out, &[]);
    let socket = tmp.path().join("workload.sock");
    let socket_arg = socket.display().to_string();
    // Not this test's uid: the allow list replaces the default (the agent's uid and root).
    let me = nix::unistd::getuid().as_raw();
    let other = (me + 4242).to_string();
    let _agent = Agent::start(
        &server,
        &out,
        &[
            "--workload-api-socket",
            &socket_arg,
            "--workload-uid",
            &other,
            "--metrics-listen",
            "127.0.0.1:0",
        ],
    );
    assert!(wait_until(Duration::from_secs(10), || socket.exists()
        && AgentStatus::read(&out)
            .is_some_and(|s| s.metrics_listen.is_some())));
    let got = run_python("py_spiffe_refused.py", &[&socket_arg]);
    let v: serde_json::Value = serde_json::from_slice(&got.stdout).unwrap();
    assert_eq!(v["code"], "PERMISSION_DENIED", "{v}");
    let details = v["details"].as_str().unwrap();
    assert!(details.contains(&format!("uid {me} ")), "{details}");
    assert!(details.contains("--workload-uid"), "{details}");
    assert!(
        v["py_spiffe"].as_str().is_some_and(|e| !e.is_empty()),
        "{v}"
    );

    let metrics = AgentStatus::read(&out).unwrap().metrics_listen.unwrap();
    let (status, page) = common::http_get(&metrics, "/metrics").unwrap();
    assert_eq!(status, 200);
    let refused = common::metric(&page, "writ_agent_workload_api_refused_total", "").unwrap();
    assert!(refused >= 2.0, "{page}");
}
