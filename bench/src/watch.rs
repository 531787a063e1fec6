//! `writ bench --mode watch`: many agents holding bundle watches at once (over the push
//! channel or gRPC's `WatchBundle`), what they cost the server in resident memory, and how
//! fast a bundle change reaches all of them.

use std::future::Future;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::mpsc;
use writ_agent::client::ServerTrust;
use writ_agent::files::Identity;
use writ_agent::watch::{BundleWatch, Transport};

use crate::Error;

/// The watchers to hold.
pub struct WatchOptions {
    /// The server, `host:port`.
    pub server: String,
    /// Watches to hold, each on its own connection (one per agent).
    pub watchers: usize,
    /// The protocol they watch over.
    pub transport: Transport,
    /// The identity every watcher presents.
    pub identity: Identity,
    /// The server's pid, to read its resident memory.
    pub server_pid: Option<u32>,
    /// How long to wait for the change to reach everyone.
    pub timeout: Duration,
    /// Print progress to stderr.
    pub progress: bool,
}

/// What holding the watchers cost and how fast the change arrived.
#[derive(Clone, Debug, Serialize)]
pub struct WatchReport {
    /// Streams asked for.
    pub watchers: usize,
    /// What the first watch ran on: `push` or `grpc`.
    pub transport: &'static str,
    /// Streams that were open and had their first bundle when the change was made.
    pub connected: usize,
    /// Seconds to open them all.
    pub connect_seconds: f64,
    /// Server resident memory before the first watcher, MiB.
    pub server_rss_before_mib: Option<f64>,
    /// Server resident memory with every watcher open, MiB.
    pub server_rss_with_watchers_mib: Option<f64>,
    /// The difference per watcher, KiB.
    pub server_kib_per_watcher: Option<f64>,
    /// Watchers that saw the change before the timeout.
    pub reached: usize,
    /// Watchers that saw it within 2 s.
    pub reached_within_2s: usize,
    /// Milliseconds from the change to its arrival: median.
    pub propagation_p50_ms: f64,
    /// 99th percentile.
    pub propagation_p99_ms: f64,
    /// Slowest.
    pub propagation_max_ms: f64,
}

/// Resident memory of `pid` in MiB, from `/proc/<pid>/status`.
pub fn process_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

/// Lets this process hold as many sockets as its hard limit allows.
fn raise_fd_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut l = getrlimit(Resource::Nofile);
    if l.current < l.maximum {
        l.current = l.maximum;
        let _ = setrlimit(Resource::Nofile, l);
    }
}

/// Opens the watchers, runs `change` (a root `prepare`, say) once all are open, and
/// measures how long the new bundle takes to reach each.
pub async fn run<F, Fut>(opts: WatchOptions, change: F) -> Result<WatchReport, Error>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<(), Error>>,
{
    if opts.watchers == 0 {
        return Err(Error::Options("--watchers must be at least 1".into()));
    }
    raise_fd_limit();
    let rss_before = opts.server_pid.and_then(process_rss_mib);
    let trust = ServerTrust::Bundle {
        trust_domain: opts
            .identity
            .leaf_info()
            .map_err(writ_agent::Error::from)?
            .spiffe_id()?
            .trust_domain(),
        roots: opts.identity.bundle.clone(),
    };
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel::<Result<&'static str, String>>();
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel::<Instant>();
    let started = Instant::now();
    // Opening 10,000 TLS connections at once would only measure the accept queue; a
    // bounded number of handshakes in flight keeps the set-up quick and quiet.
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(64));
    let mut tasks = Vec::with_capacity(opts.watchers);
    for _ in 0..opts.watchers {
        let (server, trust, ready, seen, gate) = (
            opts.server.clone(),
            trust.clone(),
            ready_tx.clone(),
            seen_tx.clone(),
            gate.clone(),
        );
        let identity = opts.identity.try_clone().map_err(writ_agent::Error::from)?;
        let transport = opts.transport;
        tasks.push(tokio::spawn(async move {
            let stream = {
                let _permit = gate.acquire().await;
                let opened = async {
                    let mut watch = BundleWatch::open(&server, trust, Some(&identity), transport)
                        .await
                        .map_err(|e| e.to_string())?;
                    let first = watch
                        .next()
                        .await
                        .map_err(|e| e.to_string())?
                        .ok_or("stream ended")?;
                    Ok::<_, String>((watch, first.sequence))
                };
                opened.await
            };
            let (mut watch, first) = match stream {
                Ok(s) => s,
                Err(e) => {
                    let _ = ready.send(Err(e));
                    return;
                }
            };
            let _ = ready.send(Ok(watch.transport().as_str()));
            while let Ok(Some(b)) = watch.next().await {
                if b.sequence > first {
                    let _ = seen.send(Instant::now());
                    break;
                }
            }
            // Hold the connection until the run ends, as an agent would.
            std::future::pending::<()>().await;
        }));
    }
    drop(ready_tx);
    drop(seen_tx);
    let mut connected = 0;
    let mut used = None;
    let mut failures = 0;
    let mut first_error = None;
    while let Some(r) = ready_rx.recv().await {
        match r {
            Ok(t) => {
                connected += 1;
                used.get_or_insert(t);
            }
            Err(e) => {
                failures += 1;
                first_error.get_or_insert(e);
            }
        }
        if opts.progress && (connected + failures) % 500 == 0 {
            eprint!("\r{connected:>6} watchers open, {failures} failed");
        }
        if connected + failures == opts.watchers {
            break;
        }
    }
    let connect_seconds = started.elapsed().as_secs_f64();
    if opts.progress {
        eprintln!("\r{connected:>6} watchers open, {failures} failed ({connect_seconds:.1}s)");
    }
    if let Some(e) = first_error {
        tracing::warn!(failures, error = %e, "some watchers could not open");
    }
    // Let the server settle (accept-side buffers, allocator) before reading its memory.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_with = opts.server_pid.and_then(process_rss_mib);

    let changed_at = Instant::now();
    change().await?;
    let mut delays = Vec::with_capacity(connected);
    let deadline = tokio::time::Instant::now() + opts.timeout;
    while delays.len() < connected {
        match tokio::time::timeout_at(deadline, seen_rx.recv()).await {
            Ok(Some(at)) => delays.push(at.saturating_duration_since(changed_at)),
            _ => break,
        }
    }
    for t in tasks {
        t.abort();
    }
    delays.sort();
    let ms = |d: Option<&Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64() * 1e3);
    let pct = |p: f64| {
        let i = ((delays.len() as f64 * p).ceil() as usize).saturating_sub(1);
        ms(delays.get(i))
    };
    Ok(WatchReport {
        watchers: opts.watchers,
        transport: used.unwrap_or("none"),
        connected,
        connect_seconds,
        server_rss_before_mib: rss_before,
        server_rss_with_watchers_mib: rss_with,
        server_kib_per_watcher: match (rss_before, rss_with) {
            (Some(a), Some(b)) if connected > 0 => Some((b - a) * 1024.0 / connected as f64),
            _ => None,
        },
        reached: delays.len(),
        reached_within_2s: delays
            .iter()
            .filter(|d| **d <= Duration::from_secs(2))
            .count(),
        propagation_p50_ms: pct(0.5),
        propagation_p99_ms: pct(0.99),
        propagation_max_ms: ms(delays.last()),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_own_rss() {
        let mib = super::process_rss_mib(std::process::id()).unwrap();
        assert!(mib > 0.1 && mib < 10_000.0, "{mib}");
        assert!(super::process_rss_mib(u32::MAX).is_none());
    }
}
