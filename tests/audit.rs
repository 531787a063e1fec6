//! End to end: the hash-chained audit log records issuance and admin actions, `writ audit
//! verify` passes on an intact log, and names the sequence number where a modified,
//! removed or reordered record breaks the chain — in an export file and in a copy of the
//! data directory's journal.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::{Server, assert_success, writ, writ_json};
use writ_store::JOURNAL_FILE;

const ID: &str = "spiffe://cluster.local/ns/default/sa/web";

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// `writ audit verify ARGS -o json`, expecting a break: returns `broken_at`.
fn broken_at(args: &[&str]) -> u64 {
    let mut all = vec!["audit", "verify"];
    all.extend_from_slice(args);
    all.extend(["-o", "json"]);
    let out = writ(&all);
    assert!(!out.status.success(), "tampering not detected: {args:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    let seq = v["broken_at"].as_u64().unwrap();
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains(&format!("record {seq}")),
        "{v}"
    );
    seq
}

#[test]
fn audit_log_records_actions_and_detects_tampering() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut server = Server::start(&data, &[]);
    let out_dir = tmp.path().join("web");
    server.mint_json(ID, &out_dir, &[]);
    let token = server.admin_json(&["token", "create", "--spiffe-id", ID]);
    let jti = token["jti"].as_str().unwrap();
    assert_success(
        &server.admin(&["token", "revoke", jti]),
        &["token", "revoke"],
    );
    server.admin_json(&["identity", "deny", ID, "--reason", "test"]);
    server.admin_json(&["identity", "allow", ID]);
    server.admin_json(&["root", "prepare"]);
    server.mint_json(ID, &out_dir, &[]);

    let list = server.admin_json(&["audit", "list"]);
    let records = list["records"].as_array().unwrap();
    let actions: Vec<&str> = records
        .iter()
        .map(|r| r["event"]["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "issue", // the server's own certificate
            "issue",
            "token_create",
            "token_revoke",
            "identity_deny",
            "identity_allow",
            "root_prepare",
            "issue"
        ]
    );
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r["seq"], i as u64 + 1);
    }
    assert_eq!(records[0]["event"]["actor"], "internal");
    let minted = &records[1]["event"];
    assert_eq!(minted["actor"], "admin");
    assert_eq!(minted["spiffe_id"], ID);
    assert!(minted["serial"].as_str().unwrap().len() > 10);
    assert!(minted["not_after"].as_u64().unwrap() > 0);
    assert!(
        records[2]["event"]["actor"]
            .as_str()
            .unwrap()
            .starts_with("uid:"),
        "{}",
        records[2]
    );
    assert!(
        records[3]["event"]["detail"]
            .as_str()
            .unwrap()
            .contains(jti)
    );
    let since = server.admin_json(&["audit", "list", "--since", "7"]);
    assert_eq!(since["records"].as_array().unwrap().len(), 2);

    // While the server runs it holds the database: verify goes through its socket.
    let data_s = data.display().to_string();
    let live = writ_json(&["audit", "verify", "--data-dir", &data_s]);
    assert_eq!(live["ok"], true);
    assert_eq!(live["head_seq"], 8);

    // Export, then tamper with copies of the file.
    let out = server.admin(&["audit", "export"]);
    assert_success(&out, &["audit", "export"]);
    let export = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = export.lines().collect();
    assert_eq!(lines.len(), 8);
    let write = |name: &str, lines: &[String]| {
        let p = tmp.path().join(name);
        std::fs::write(&p, lines.join("\n") + "\n").unwrap();
        p.display().to_string()
    };
    let owned: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    let intact = write("intact.jsonl", &owned);
    let ok = writ_json(&["audit", "verify", "--file", &intact]);
    assert_eq!(ok["head_seq"], 8);
    assert_eq!(ok["head_hash"], live["head_hash"]);

    let mut modified = owned.clone();
    modified[4] = modified[4].replace("\"test\"", "\"nothing to see\"");
    assert_ne!(modified[4], owned[4]);
    assert_eq!(
        broken_at(&["--file", &write("modified.jsonl", &modified)]),
        5
    );

    let mut removed = owned.clone();
    removed.remove(3);
    assert_eq!(broken_at(&["--file", &write("removed.jsonl", &removed)]), 4);

    let mut reordered = owned.clone();
    reordered.swap(5, 6);
    assert_eq!(
        broken_at(&["--file", &write("reordered.jsonl", &reordered)]),
        6
    );

    // Text output names the record too.
    let out = writ(&["audit", "verify", "--file", &write("m2.jsonl", &modified)]);
    assert!(
        stderr(&out).contains("record 5 was modified"),
        "{}",
        stderr(&out)
    );

    // Offline: stop the server, tamper with copies of the data directory's journal.
    server.stop();
    let offline = writ_json(&["audit", "verify", "--data-dir", &data_s]);
    assert_eq!(offline["head_hash"], live["head_hash"]);
    let journal = std::fs::read_to_string(data.join(JOURNAL_FILE)).unwrap();
    assert_eq!(journal, export, "the journal is the export format");
    let tamper = |name: &str, f: &dyn Fn(&mut Vec<String>)| {
        let copy = tmp.path().join(name);
        copy_dir(&data, &copy);
        let mut lines: Vec<String> = journal.lines().map(str::to_owned).collect();
        f(&mut lines);
        std::fs::write(copy.join(JOURNAL_FILE), lines.join("\n") + "\n").unwrap();
        broken_at(&["--data-dir", &copy.display().to_string()])
    };
    assert_eq!(
        tamper("db-modified", &|l| l[1] =
            l[1].replace("\"admin\"", "\"mtls\"")),
        2
    );
    assert_eq!(
        tamper("db-removed", &|l| {
            l.remove(2);
        }),
        3
    );
    assert_eq!(tamper("db-reordered", &|l| l.swap(3, 4)), 4);

    // The chain continues across a restart.
    let server = Server::start(&data, &[]);
    server.mint_json(ID, &out_dir, &[]);
    let after = writ_json(&["audit", "verify", "--data-dir", &data_s]);
    assert_eq!(after["ok"], true);
    assert!(after["head_seq"].as_u64().unwrap() >= 10, "{after}");
}

/// `audit list --since` past the newest record: nothing on stdout, a sentence on stderr
/// naming where the log ends, exit 0; JSON stays an empty list.
#[test]
fn audit_list_past_the_end_says_where_the_log_ends() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &[]);
    // Record 1 is the server's own certificate, record 2 this one.
    server.mint_json(ID, &tmp.path().join("web"), &[]);

    let out = server.admin(&["audit", "list", "--since", "2"]);
    assert_success(&out, &["audit", "list"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);
    assert_eq!(stderr(&out), "");

    for since in ["3", "100"] {
        let out = server.admin(&["audit", "list", "--since", since]);
        assert_success(&out, &["audit", "list", "--since", since]);
        assert_eq!(String::from_utf8_lossy(&out.stdout), "");
        assert_eq!(
            stderr(&out),
            format!("no audit records from #{since} on; the log ends at #2\n")
        );

        let out = server.admin(&["audit", "list", "--since", since, "-o", "json"]);
        assert_success(&out, &["audit", "list", "-o", "json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v, serde_json::json!({ "records": [] }));
        assert_eq!(stderr(&out), "");
    }
}
