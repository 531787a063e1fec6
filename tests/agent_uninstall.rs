//! `writ agent uninstall` end to end: refused while the agent runs and without
//! confirmation off a terminal; removes exactly what the agent wrote, never a foreign file.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Server, assert_success, wait_until, writ, writ_bin};

const ID: &str = "spiffe://cluster.local/ns/prod/sa/api";

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn uninstall_removes_only_what_the_agent_wrote() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &[]);
    let out = tmp.path().join("id");
    let socket = tmp.path().join("workload.sock");
    let out_s = out.display().to_string();
    server.mint_json(ID, &out, &[]);
    let config = tmp.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "server = \"{}\"\nout_dir = \"{}\"\nworkload_api_socket = \"{}\"\n",
            server.addr,
            out.display(),
            socket.display()
        ),
    )
    .unwrap();
    let config_s = config.display().to_string();
    let mut agent = Command::new(writ_bin())
        .args(["agent", "--config", &config_s])
        .env("WRIT_LOG", "error")
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_until(Duration::from_secs(30), || socket.exists()
        && out.join(".writ-agent-status.json").exists()));
    std::fs::write(out.join("my-notes.txt"), "not the agent's").unwrap();
    let before = entries(&out);
    assert!(
        before.contains(&".writ-agent.lock".to_owned()),
        "{before:?}"
    );

    // While the agent runs: refused, nothing touched.
    let refused = writ(&["agent", "uninstall", "--config", &config_s, "--yes"]);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("still running") && err.contains(&agent.id().to_string()),
        "{err}"
    );
    assert_eq!(entries(&out), before);

    // The agent dies without cleaning up (its socket stays behind).
    agent.kill().unwrap();
    agent.wait().unwrap();
    assert!(socket.exists());

    // No terminal and no --yes: refused, nothing touched.
    let refused = writ(&["agent", "uninstall", "--config", &config_s]);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("not a terminal") && err.contains("--yes"),
        "{err}"
    );
    assert_eq!(entries(&out), before);
    // --purge needs to know which config to remove.
    let refused = writ(&[
        "agent",
        "uninstall",
        "--out-dir",
        &out_s,
        "--purge",
        "--yes",
    ]);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--config"));

    let args = [
        "agent",
        "uninstall",
        "--config",
        &config_s,
        "--yes",
        "--purge",
        "-o",
        "json",
    ];
    let done = writ(&args);
    assert_success(&done, &args);
    let v: serde_json::Value = serde_json::from_slice(&done.stdout).unwrap();
    let removed: Vec<&str> = v["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert!(removed.contains(&socket.to_str().unwrap()), "{removed:?}");
    assert!(removed.contains(&config.to_str().unwrap()), "{removed:?}");
    assert_eq!(entries(&out), ["my-notes.txt"]);
    assert_eq!(
        std::fs::read_to_string(out.join("my-notes.txt")).unwrap(),
        "not the agent's"
    );
    assert!(!socket.exists() && !config.exists());

    // Again: nothing left to remove, and still the foreign file.
    let again = writ(&["agent", "uninstall", "--out-dir", &out_s, "--yes"]);
    assert_success(&again, &["agent", "uninstall"]);
    assert_eq!(entries(&out), ["my-notes.txt"]);
}
