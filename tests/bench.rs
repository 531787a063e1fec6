//! End to end: `writ bench` against a real server in every mode, briefly — a smoke check of
//! the load generator and its report (no threshold: speed is measured, not tested). Every
//! certificate it counts must be in the server's issuance log.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Server, assert_success, http_get, writ};

fn issued_total(server: &Server) -> u64 {
    server.admin_json(&["certs", "list"])["total"]
        .as_u64()
        .unwrap()
}

/// `writ bench` at `server` with `args`.
fn bench_out(server: &Server, args: &[&str]) -> std::process::Output {
    bench_at(&server.addr, server, args)
}

/// `writ bench` with `server`'s data directory, sending its load to `addr`.
fn bench_at(addr: &str, server: &Server, args: &[&str]) -> std::process::Output {
    let data = server.data_dir.display().to_string();
    let mut all = vec!["bench", "--server", addr, "--data-dir", &data];
    all.extend_from_slice(args);
    writ(&all)
}

/// `writ bench ... -o json`, asserting success.
fn bench(server: &Server, args: &[&str]) -> serde_json::Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    let out = bench_out(server, &all);
    assert_success(&out, &all);
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The fields every signing mode reports, consistent with each other and with the log.
fn check_signing_report(server: &Server, r: &serde_json::Value, logged_before: u64) {
    let certs = r["certificates"].as_u64().unwrap();
    assert!(certs > 0, "{r}");
    assert_eq!(r["latency"]["errors"], serde_json::json!({}), "{r}");
    let per_second = r["per_second"].as_f64().unwrap();
    let seconds = r["seconds"].as_f64().unwrap();
    assert!((per_second * seconds - certs as f64).abs() < 1.0, "{r}");
    let p50 = r["latency"]["p50_ms"].as_f64().unwrap();
    let p99 = r["latency"]["p99_ms"].as_f64().unwrap();
    assert!(0.0 < p50 && p50 <= p99, "{r}");
    // The server's pid comes from its admin socket, so its CPU time is measured.
    let server_cpu = r["server_cpu_us_per_cert"].as_f64().unwrap();
    let crypto = r["crypto_us_per_cert"].as_f64().unwrap();
    assert!(server_cpu > 0.0 && crypto > 0.0, "{r}");
    let ratio = r["overhead_ratio"].as_f64().unwrap();
    assert!((ratio - server_cpu / crypto).abs() < 1e-6, "{r}");
    // The crypto cost is the mean of a measurement before and one after the load.
    let before = r["crypto_us_before_load"].as_f64().unwrap();
    let after = r["crypto_us_after_load"].as_f64().unwrap();
    assert!((crypto - (before + after) / 2.0).abs() < 1e-6, "{r}");
    // Both ceilings are the same cores divided by a cost per certificate.
    let server_ceiling = r["server_ceiling_per_second"].as_f64().unwrap();
    let crypto_ceiling = r["crypto_ceiling_per_second"].as_f64().unwrap();
    assert!(
        (server_ceiling * server_cpu - crypto_ceiling * crypto).abs() < 1.0,
        "{r}"
    );
    assert!(r["client_cpu_us_per_cert"].as_f64().unwrap() > 0.0, "{r}");
    // A certificate counted is a certificate issued.
    assert!(issued_total(server) >= logged_before + certs, "{r}");
}

/// `writ_server_client_cert_checks_total` by result, read from one metrics page.
#[derive(Clone, Copy, Debug)]
struct CertChecks {
    verified: u64,
    cached: u64,
    issued: u64,
    refused: u64,
}

impl CertChecks {
    fn now(server: &Server) -> Self {
        let (_, page) = http_get(server.metrics_addr.as_ref().unwrap(), "/metrics").unwrap();
        let count = |result: &str| {
            let prefix = format!("writ_server_client_cert_checks_total{{result=\"{result}\"}} ");
            page.lines()
                .find_map(|l| l.strip_prefix(prefix.as_str()))
                .map_or(0, |v| v.trim().parse().unwrap())
        };
        Self {
            verified: count("verified"),
            cached: count("cached"),
            issued: count("issued"),
            refused: count("refused"),
        }
    }

    /// What was counted since `earlier`.
    fn since(self, earlier: Self) -> Self {
        Self {
            verified: self.verified - earlier.verified,
            cached: self.cached - earlier.cached,
            issued: self.issued - earlier.issued,
            refused: self.refused - earlier.refused,
        }
    }
}

/// Handshake mode is a fleet of distinct agents: each connection presents the certificate
/// the worker's previous renewal returned — one the server issued and remembers, so it is
/// counted `issued`, not verified again. Renew mode's long-lived connections present one
/// chain, verified once.
#[test]
fn handshake_mode_presents_a_new_certificate_on_every_connection() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(
        &tmp.path().join("data"),
        &["--metrics-listen", "127.0.0.1:0"],
    );
    let before = CertChecks::now(&server);
    let r = bench(
        &server,
        &[
            "--mode",
            "handshake",
            "--concurrency",
            "2",
            "--duration",
            "1s",
        ],
    );
    let certs = r["certificates"].as_u64().unwrap();
    assert!(certs >= 4, "{r}");
    let checks = CertChecks::now(&server).since(before);
    // Only the workers' first connections present the bench's initial identity, which
    // the server verifies (and then remembers); a bench that kept presenting it would
    // show up as `cached` here.
    assert!(
        checks.issued + 2 >= certs,
        "{} of {certs} connections presented a certificate this server issued",
        checks.issued
    );
    assert!(checks.verified <= 2, "{checks:?}");
    assert!(checks.cached <= 2, "{checks:?}");
    assert_eq!(checks.refused, 0);

    let before = CertChecks::now(&server);
    let r = bench(
        &server,
        &[
            "--mode",
            "renew",
            "--connections",
            "1",
            "--concurrency",
            "2",
            "--duration",
            "1s",
        ],
    );
    let certs = r["certificates"].as_u64().unwrap();
    let checks = CertChecks::now(&server).since(before);
    // The first requests in flight may each verify the chain before one remembers it.
    assert!(checks.verified <= 2, "{checks:?}");
    assert!(checks.verified + checks.cached >= certs, "{checks:?}");
}

#[test]
fn every_mode_runs_against_a_real_server_and_reports_what_it_measured() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &[]);

    let before = issued_total(&server);
    let renew = bench(
        &server,
        &[
            "--mode",
            "renew",
            "--connections",
            "2",
            "--concurrency",
            "4",
            "--duration",
            "1s",
        ],
    );
    assert_eq!(
        (renew["mode"].as_str(), renew["connections"].as_u64()),
        (Some("renew"), Some(2))
    );
    check_signing_report(&server, &renew, before);

    let before = issued_total(&server);
    let handshake = bench(
        &server,
        &[
            "--mode",
            "handshake",
            "--concurrency",
            "2",
            "--duration",
            "1s",
        ],
    );
    check_signing_report(&server, &handshake, before);

    let before = issued_total(&server);
    let bootstrap = bench(
        &server,
        &[
            "--mode",
            "bootstrap",
            "--tokens",
            "20",
            "--concurrency",
            "2",
            "--duration",
            "1s",
        ],
    );
    check_signing_report(&server, &bootstrap, before);
    assert!(
        bootstrap["certificates"].as_u64().unwrap() <= 20,
        "{bootstrap}"
    );

    let watch = bench(&server, &["--mode", "watch", "--watchers", "10"]);
    assert_eq!(watch["connected"], 10, "{watch}");
    assert_eq!(watch["transport"], "push", "{watch}");
    assert_eq!(watch["reached"], 10, "{watch}");
    assert!(
        watch["server_rss_with_watchers_mib"].as_f64().unwrap() > 0.0,
        "{watch}"
    );

    // The text report carries the same figures for a person.
    let out = bench_out(
        &server,
        &["--mode", "renew", "--concurrency", "2", "--duration", "1s"],
    );
    assert_success(&out, &["bench"]);
    let text = String::from_utf8_lossy(&out.stdout);
    for line in [
        "certificates:",
        "server CPU:",
        "client CPU:",
        "crypto cost:",
        "server alone:",
    ] {
        assert!(text.contains(line), "{line} missing from:\n{text}");
    }
}

#[test]
fn impossible_options_are_refused_with_a_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &[]);
    let out = bench_out(
        &server,
        &["--mode", "renew", "--concurrency", "0", "--duration", "1s"],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("concurrency"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A renewal load whose connections cannot be made stops at once with the reason; no
/// load thread waits for the others forever.
#[test]
fn an_unreachable_server_is_reported_not_waited_for() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &[]);
    // A loopback port nothing listens on: bound, then released.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let out = bench_at(
        &closed,
        &server,
        &["--mode", "renew", "--connections", "2", "--duration", "1s"],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot reach the writ server") && stderr.contains(&closed),
        "{stderr}"
    );
}
