//! `writ bench`: a load generator a user points at a running writ server. It reports
//! certificates per second, latency percentiles, errors by status code and the server's
//! CPU time per certificate next to the bare crypto cost of one certificate measured in the
//! same run. Every response is checked, so a fast wrong answer cannot count.
#![forbid(unsafe_code)]

mod cpu;
mod crypto;
mod load;
mod rotating;
mod shard;
mod stats;
mod transport;
pub mod watch;

use std::time::Duration;

use serde::Serialize;
use writ_agent::files::Identity;
use writ_ca::KeyType;

pub use cpu::process_cpu;
pub use crypto::bare_cost;
pub use stats::{Latency, Samples};

/// What each request costs the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Long-lived mTLS connections; requests cycle through 1,024 distinct pre-signed CSRs
    /// (4 for RSA keys): steady-state signing.
    Renew,
    /// A new TLS 1.3 mTLS connection for every renewal: what a fleet of agents costs.
    Handshake,
    /// One-time tokens exchanged on fresh connections: VM fleet onboarding.
    Bootstrap,
}

/// A load to generate.
pub struct BenchOptions {
    /// The server, `host:port`.
    pub server: String,
    /// The mode.
    pub mode: Mode,
    /// Long-lived connections (renew mode).
    pub connections: usize,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// How long to run.
    pub duration: Duration,
    /// Key type of the CSRs (keys are generated before the clock starts).
    pub key_type: KeyType,
    /// The client identity (renew, handshake).
    pub identity: Option<Identity>,
    /// Bootstrap tokens, one per exchange (bootstrap mode).
    pub tokens: Vec<String>,
    /// The server's process id, to read its CPU time.
    pub server_pid: Option<u32>,
    /// The CA's key type, for the crypto ceiling.
    pub ca_key_type: KeyType,
    /// Print a progress line to stderr every second.
    pub progress: bool,
}

/// The outcome of a run.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The mode.
    pub mode: Mode,
    /// Connections used.
    pub connections: usize,
    /// Requests in flight.
    pub concurrency: usize,
    /// Wall-clock seconds measured.
    pub seconds: f64,
    /// Certificates issued and checked.
    pub certificates: u64,
    /// Certificates per second.
    pub per_second: f64,
    /// Latency and errors.
    pub latency: Latency,
    /// Server CPU time per certificate, µs (needs the server's pid).
    pub server_cpu_us_per_cert: Option<f64>,
    /// This load generator's own CPU time per certificate, µs: what the load costs the
    /// machine besides the server (it shares the cores when run on the same host).
    pub client_cpu_us_per_cert: Option<f64>,
    /// Bare parse + verify + sign of one certificate on one core, µs: the mean of the
    /// measurements before and after the load.
    pub crypto_us_per_cert: f64,
    /// The bare cost measured just before the load, µs.
    pub crypto_us_before_load: f64,
    /// The bare cost measured just after the load, µs. Far from the one before, the
    /// machine's speed drifted during the run (a shared or throttled host) and its ratios
    /// are less telling.
    pub crypto_us_after_load: f64,
    /// Server CPU per certificate over the crypto cost.
    pub overhead_ratio: Option<f64>,
    /// Certificates per second the machine's cores could sign at the crypto cost alone.
    pub crypto_ceiling_per_second: f64,
    /// Certificates per second the machine's cores could serve at the server's measured
    /// CPU per certificate, were the load generator elsewhere (needs the server's pid).
    pub server_ceiling_per_second: Option<f64>,
}

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The options do not describe a runnable load.
    #[error("{0}")]
    Options(String),
    /// Connecting or preparing failed.
    #[error(transparent)]
    Agent(#[from] writ_agent::Error),
    /// Key generation or signing failed.
    #[error(transparent)]
    Ca(#[from] writ_ca::Error),
}

/// Runs the load and measures it.
pub async fn run(opts: BenchOptions) -> Result<Report, Error> {
    let ca_key = opts.ca_key_type;
    let csr_key = opts.key_type;
    let measure_crypto = || async move {
        let cost = tokio::task::spawn_blocking(move || {
            bare_cost(ca_key, csr_key, Duration::from_millis(500))
        })
        .await
        .map_err(|_| Error::Options("crypto measurement task failed".into()))??;
        Ok::<_, Error>(cost)
    };
    let crypto_before = measure_crypto().await?;
    let own = std::process::id();
    let cpu_before = opts.server_pid.and_then(process_cpu);
    let own_before = process_cpu(own);
    let outcome = load::generate(&opts).await?;
    let cpu_after = opts.server_pid.and_then(process_cpu);
    let own_after = process_cpu(own);
    // Measured again once the load is over: one 500 ms sample before it swung by ±10%
    // between runs on a shared host, and the ratio divides by it.
    let crypto_after = measure_crypto().await?;
    let certificates = outcome.samples.successes();
    let seconds = outcome.elapsed.as_secs_f64();
    let per_cert = |before: Option<Duration>, after: Option<Duration>| match (before, after) {
        (Some(a), Some(b)) if certificates > 0 => {
            Some(b.saturating_sub(a).as_secs_f64() * 1e6 / certificates as f64)
        }
        _ => None,
    };
    let server_cpu = per_cert(cpu_before, cpu_after);
    let crypto_us_before = crypto_before.as_secs_f64() * 1e6;
    let crypto_us_after = crypto_after.as_secs_f64() * 1e6;
    let crypto_us = (crypto_us_before + crypto_us_after) / 2.0;
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1) as f64;
    Ok(Report {
        mode: opts.mode,
        connections: opts.connections,
        concurrency: opts.concurrency,
        seconds,
        certificates,
        per_second: certificates as f64 / seconds.max(1e-9),
        latency: outcome.samples.summary(),
        server_cpu_us_per_cert: server_cpu,
        client_cpu_us_per_cert: per_cert(own_before, own_after),
        crypto_us_per_cert: crypto_us,
        crypto_us_before_load: crypto_us_before,
        crypto_us_after_load: crypto_us_after,
        overhead_ratio: server_cpu.map(|s| s / crypto_us),
        crypto_ceiling_per_second: cores * 1e6 / crypto_us,
        server_ceiling_per_second: server_cpu.map(|s| cores * 1e6 / s),
    })
}
