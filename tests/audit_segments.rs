//! End to end: with `--audit-segment-bytes`, the server seals its journal into segments as
//! it issues; export and verify read them as one chain, a restarted server continues it,
//! and once an operator archives the oldest segment `writ audit verify --data-dir` still
//! passes and says where the checked history begins, while the archive joined with the
//! rest verifies from record 1.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Server, assert_success, wait_until, writ, writ_json};
use writ_store::JOURNAL_FILE;

const SEGMENT: &str = "65536";

/// The sealed segments in `data`, oldest first (their names sort in sequence order).
fn sealed(data: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(data)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with("audit-") && name.ends_with(".jsonl")
        })
        .collect();
    out.sort();
    out
}

/// Runs one-second `writ bench` renewals against `server` until `done` (at most 30).
fn renew_until(server: &Server, mut done: impl FnMut() -> bool) {
    let data = server.data_dir.display().to_string();
    for _ in 0..30 {
        if done() {
            return;
        }
        let args = [
            "bench",
            "--server",
            &server.addr,
            "--data-dir",
            &data,
            "--mode",
            "renew",
            "--concurrency",
            "8",
            "--duration",
            "1s",
        ];
        assert_success(&writ(&args), &args);
    }
}

fn verify_json(args: &[&str]) -> serde_json::Value {
    let mut all = vec!["audit", "verify"];
    all.extend_from_slice(args);
    writ_json(&all)
}

#[test]
fn a_segmented_journal_reads_as_one_chain_and_survives_archiving() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let data_arg = data.display().to_string();
    let mut server = Server::start(&data, &["--audit-segment-bytes", SEGMENT]);

    // Issue until at least three segments are sealed.
    renew_until(&server, || sealed(&data).len() >= 3);
    let segments = sealed(&data);
    assert!(segments.len() >= 3, "{} segments sealed", segments.len());
    for s in &segments {
        let len = std::fs::metadata(s).unwrap().len();
        assert!(len >= 65536, "{} sealed at {len} bytes", s.display());
    }

    // Through the running server: one chain from record 1, exported whole.
    let v = verify_json(&["--data-dir", &data_arg]);
    assert_eq!(
        (v["ok"].as_bool(), v["first_seq"].as_u64()),
        (Some(true), Some(1))
    );
    let records = v["records"].as_u64().unwrap();
    let export = server.admin(&["audit", "export"]);
    assert_success(&export, &["audit", "export"]);
    let mut on_disk = Vec::new();
    for s in &segments {
        on_disk.extend(std::fs::read(s).unwrap());
    }
    on_disk.extend(std::fs::read(data.join(JOURNAL_FILE)).unwrap());
    assert_eq!(
        export.stdout, on_disk,
        "export = segments + live file, in order"
    );
    assert_eq!(
        export.stdout.iter().filter(|b| **b == b'\n').count() as u64,
        records
    );

    // A restarted server reads the segments and chains on.
    server.stop();
    let server = Server::start(&data, &["--audit-segment-bytes", SEGMENT]);
    server.mint_json(
        "spiffe://cluster.local/ns/a/sa/b",
        &tmp.path().join("id"),
        &[],
    );
    let v = verify_json(&["--data-dir", &data_arg]);
    let total = v["records"].as_u64().unwrap();
    assert!(total > records, "{v}");
    drop(server);

    // The operator archives the oldest segment.
    let archive = tmp.path().join("archive");
    std::fs::create_dir(&archive).unwrap();
    let moved = archive.join(segments[0].file_name().unwrap());
    std::fs::rename(&segments[0], &moved).unwrap();
    let second_first: u64 = segments[1]
        .file_stem()
        .unwrap()
        .to_string_lossy()
        .trim_start_matches("audit-")
        .parse()
        .unwrap();
    let v = verify_json(&["--data-dir", &data_arg]);
    assert_eq!(v["ok"].as_bool(), Some(true), "{v}");
    assert_eq!(v["first_seq"].as_u64(), Some(second_first));
    assert_eq!(v["head_seq"].as_u64(), Some(total));
    let text = writ(&["audit", "verify", "--data-dir", &data_arg]);
    assert_success(&text, &["audit", "verify"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains(&format!("records before {second_first} are not here")),
        "{text}"
    );

    // The archive joined with what remains is the whole history again.
    let mut whole = std::fs::read(&moved).unwrap();
    for s in sealed(&data) {
        whole.extend(std::fs::read(s).unwrap());
    }
    whole.extend(std::fs::read(data.join(JOURNAL_FILE)).unwrap());
    let file = tmp.path().join("whole.jsonl");
    std::fs::write(&file, whole).unwrap();
    let v = verify_json(&["--file", &file.display().to_string()]);
    assert_eq!(
        (v["first_seq"].as_u64(), v["records"].as_u64()),
        (Some(1), Some(total))
    );
    // An export file must begin at record 1: without the archive it is refused.
    let mut partial = Vec::new();
    for s in sealed(&data) {
        partial.extend(std::fs::read(s).unwrap());
    }
    let file = tmp.path().join("partial.jsonl");
    std::fs::write(&file, partial).unwrap();
    let out = writ(&["audit", "verify", "--file", &file.display().to_string()]);
    assert!(!out.status.success(), "a log missing its start verified");
}

#[test]
fn a_segment_size_too_small_is_refused_with_the_minimum() {
    let tmp = tempfile::tempdir().unwrap();
    let out = writ(&[
        "server",
        "--dev",
        "--allow-root",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        &tmp.path().join("data").display().to_string(),
        "--audit-segment-bytes",
        "1000",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("audit_segment_bytes = 1000") && err.contains("65536"),
        "{err}"
    );
}

/// `writ audit segments` lists what was sealed, record ranges joined end to end, and marks
/// a segment archivable once every certificate in it has expired.
#[test]
fn segments_are_listed_and_become_archivable_when_their_certificates_expire() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let data_arg = data.display().to_string();
    let server = Server::start(
        &data,
        &[
            "--audit-segment-bytes",
            SEGMENT,
            "--min-ttl",
            "1s",
            "--default-ttl",
            "2s",
        ],
    );
    let none = writ(&["audit", "segments", "--data-dir", &data_arg]);
    assert_success(&none, &["audit", "segments"]);
    assert!(String::from_utf8_lossy(&none.stdout).contains("no sealed segments"));

    let list = || {
        writ_json(&["audit", "segments", "--data-dir", &data_arg])["segments"]
            .as_array()
            .unwrap()
            .clone()
    };
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    // Until two segments are sealed and one of them holds renewals only (each bench run
    // also mints itself an hour-long identity, into whichever segment is live).
    let renewals_only = || {
        list()
            .iter()
            .any(|s| s["valid_until"].as_u64().is_some_and(|t| t < now() + 60))
    };
    renew_until(&server, || sealed(&data).len() >= 2 && renewals_only());
    let files = sealed(&data);
    assert!(files.len() >= 2, "{} segments sealed", files.len());

    let segments = list();
    let listed: Vec<PathBuf> = segments
        .iter()
        .map(|s| PathBuf::from(s["file"].as_str().unwrap()))
        .collect();
    assert_eq!(listed, files[..listed.len()]);
    assert!(segments[0]["first_seq"] == 1, "{segments:?}");
    for pair in segments.windows(2) {
        assert_eq!(
            pair[0]["last_seq"].as_u64().unwrap() + 1,
            pair[1]["first_seq"].as_u64().unwrap()
        );
    }
    for s in &segments {
        assert!(s["certificates"].as_u64().unwrap() > 0, "{s}");
        assert!(s["bytes"].as_u64().unwrap() >= 65536, "{s}");
    }

    // Renewals get two-second certificates: segments holding only those soon qualify. The
    // first also records the bench's own identity, minted for an hour: it stays.
    let archivable = || list().iter().filter(|s| s["archivable"] == true).count();
    assert!(
        wait_until(Duration::from_secs(30), || archivable() > 0),
        "{:?}",
        list()
    );
    let first = &list()[0];
    assert_eq!(first["archivable"], false, "{first}");
    assert!(
        first["valid_until"].as_u64().unwrap() > now() + 1800,
        "{first}"
    );
    let text = writ(&["audit", "segments", "--data-dir", &data_arg]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("archivable (move it with its .summary)"),
        "{text}"
    );
}
