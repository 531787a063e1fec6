//! The server's Prometheus metrics and its `--metrics-listen` endpoint.
//!
//! Names follow what operators already alert on for Istio's CA (`citadel_server_*`) and
//! step-ca (`step_ca_*`) with a `writ_server_` prefix; docs/metrics.md maps one to the other.
//! Labels are bounded: an authentication method (`writ_ca::AuthMethod::as_str`, so a new
//! method shows up without touching this file), a gRPC result, a key type, a CA
//! certificate's name. Never a SPIFFE ID or serial.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;
use tonic::{Code, Request, Response, Status};
use writ_ca::{AuthMethod, KeyType};
use writ_metrics::prometheus_client::metrics::counter::Counter;
use writ_metrics::prometheus_client::metrics::family::Family;
use writ_metrics::prometheus_client::metrics::gauge::Gauge;
use writ_metrics::prometheus_client::metrics::histogram::Histogram;
use writ_metrics::prometheus_client::registry::{Registry, Unit};
use writ_metrics::{Exposition, Readiness};
use writ_proto::v1::SignResponse;

use crate::Error;
use crate::state::Shared;

/// A label whose value is one of a fixed set: families keyed by arrays of these cost a
/// request no allocation.
type Label = (&'static str, &'static str);

/// Labels with a value known only at run time (CA certificate names).
type Named = Vec<(&'static str, String)>;

/// Signing latency buckets, seconds: an EC signature is tens of microseconds, a durable
/// record waits for an fsync (milliseconds), RSA-4096 keys take tens of milliseconds.
const SIGN_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Records per commit-thread flush: one lone request up to a busy server's whole batch.
const BATCH_BUCKETS: [f64; 9] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// Flush (`write` + `fdatasync`) durations, seconds: tens of µs on a fast SSD to
/// hundreds of ms on a struggling network disk.
const FLUSH_BUCKETS: [f64; 10] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5,
];

/// What became of a client certificate chain presented for renewal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CertCheck {
    /// Verified earlier (on this connection or another) and remembered.
    Cached = 0,
    /// Verified now.
    Verified = 1,
    /// Refused.
    Refused = 2,
    /// Issued by this server, which remembers what it signed.
    Issued = 3,
}

impl CertCheck {
    fn as_str(self) -> &'static str {
        match self {
            CertCheck::Cached => "cached",
            CertCheck::Verified => "verified",
            CertCheck::Refused => "refused",
            CertCheck::Issued => "issued",
        }
    }
}

/// The label for a caller whose credential could not even be classified.
const METHOD_NONE: &str = "none";

/// Every metric the server exports.
pub(crate) struct ServerMetrics {
    sign_requests: Family<[Label; 2], Counter>,
    sign_duration: Family<[Label; 1], Histogram>,
    certs_issued: Family<[Label; 1], Counter>,
    token_exchanges: Family<[Label; 2], Counter>,
    auth_failures: Family<[Label; 1], Counter>,
    client_cert_checks: Family<[Label; 1], Counter>,
    /// The `client_cert_checks` counters, kept so a renewal does not build labels.
    client_cert_counters: [Counter; 4],
    bundle_watchers: Family<[Label; 1], Gauge>,
    /// The `bundle_watchers` gauges, by [`WatchTransport`].
    watcher_gauges: [Gauge; 2],
    commit_flushes: Family<[Label; 1], Counter>,
    commit_batch: Histogram,
    commit_flush_duration: Histogram,
    root_expiry: Family<Named, Gauge>,
    intermediate_expiry: Family<Named, Gauge>,
    ready: Gauge,
    registry: std::sync::Mutex<Option<Registry>>,
}

impl ServerMetrics {
    /// Creates the families and registers them.
    pub(crate) fn new() -> Self {
        let mut m = ServerMetrics {
            sign_requests: Family::default(),
            sign_duration: Family::new_with_constructor(|| {
                Histogram::new(SIGN_BUCKETS.iter().copied())
            }),
            certs_issued: Family::default(),
            token_exchanges: Family::default(),
            auth_failures: Family::default(),
            client_cert_checks: Family::default(),
            client_cert_counters: Default::default(),
            bundle_watchers: Family::default(),
            watcher_gauges: Default::default(),
            commit_flushes: Family::default(),
            commit_batch: Histogram::new(BATCH_BUCKETS.iter().copied()),
            commit_flush_duration: Histogram::new(FLUSH_BUCKETS.iter().copied()),
            root_expiry: Family::default(),
            intermediate_expiry: Family::default(),
            ready: Gauge::default(),
            registry: std::sync::Mutex::new(None),
        };
        m.watcher_gauges = [WatchTransport::Grpc, WatchTransport::Push].map(|t| {
            m.bundle_watchers
                .get_or_create(&[("transport", t.as_str())])
                .clone()
        });
        m.client_cert_counters = [
            CertCheck::Cached,
            CertCheck::Verified,
            CertCheck::Refused,
            CertCheck::Issued,
        ]
        .map(|c| {
            m.client_cert_checks
                .get_or_create(&[("result", c.as_str())])
                .clone()
        });
        let mut r = Registry::default();
        r.register(
            "writ_server_sign_requests",
            "Sign requests by authentication method and result (ok or the gRPC code)",
            m.sign_requests.clone(),
        );
        r.register_with_unit(
            "writ_server_sign_duration",
            "Time to answer a Sign request, by authentication method",
            Unit::Seconds,
            m.sign_duration.clone(),
        );
        r.register(
            "writ_server_certs_issued",
            "Certificates issued over the Ca service, by subject key type",
            m.certs_issued.clone(),
        );
        r.register(
            "writ_server_token_exchanges",
            "Credential-for-certificate exchanges (bootstrap tokens, JWTs) by method and result",
            m.token_exchanges.clone(),
        );
        r.register(
            "writ_server_authentication_failures",
            "Sign requests refused as UNAUTHENTICATED, by the method presented",
            m.auth_failures.clone(),
        );
        r.register(
            "writ_server_client_cert_checks",
            "Client certificate chains presented to the Ca service, by result: cached (verified earlier on any connection), issued (issued by this server, not verified again), verified, refused",
            m.client_cert_checks.clone(),
        );
        r.register(
            "writ_server_bundle_watchers",
            "Bundle watches currently open, by transport: grpc (the WatchBundle stream) or push (the writ-bundle/1 channel)",
            m.bundle_watchers.clone(),
        );
        r.register(
            "writ_server_commit_flushes",
            "Flushes of the issuance journal by the commit thread, by result (ok or error)",
            m.commit_flushes.clone(),
        );
        r.register(
            "writ_server_commit_batch_size",
            "Certificates (every issuance but the server's own) made durable by one commit-thread flush",
            m.commit_batch.clone(),
        );
        r.register_with_unit(
            "writ_server_commit_flush_duration",
            "Time one commit-thread flush (write + fdatasync) took",
            Unit::Seconds,
            m.commit_flush_duration.clone(),
        );
        r.register_with_unit(
            "writ_server_root_cert_expiry_timestamp",
            "notAfter of each root (and cross-signed root) in the bundle, Unix time",
            Unit::Seconds,
            m.root_expiry.clone(),
        );
        r.register_with_unit(
            "writ_server_intermediate_cert_expiry_timestamp",
            "notAfter of each intermediate and chain CA certificate, Unix time",
            Unit::Seconds,
            m.intermediate_expiry.clone(),
        );
        r.register(
            "writ_server_ready",
            "1 when the last signing self-test passed, else 0",
            m.ready.clone(),
        );
        *m.registry.lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
        m
    }

    /// When a Sign request arrives.
    pub(crate) fn sign_started(&self) -> Instant {
        Instant::now()
    }

    /// Records a finished Sign request: `method` is how the caller authenticated, or
    /// `None` when authentication itself failed (then labelled by what was presented).
    pub(crate) fn sign_finished(
        &self,
        started: Instant,
        method: Option<AuthMethod>,
        key_type: Option<KeyType>,
        presented: &'static str,
        result: &Result<Response<SignResponse>, Status>,
    ) {
        let method = method.map_or(presented, AuthMethod::as_str);
        let outcome = match result {
            Ok(_) => "ok",
            Err(s) => code_label(s.code()),
        };
        let labels = [("method", method), ("result", outcome)];
        self.sign_requests.get_or_create(&labels).inc();
        self.sign_duration
            .get_or_create(&[("method", method)])
            .observe(started.elapsed().as_secs_f64());
        if !matches!(method, "mtls" | "admin" | "internal" | METHOD_NONE) {
            self.token_exchanges.get_or_create(&labels).inc();
        }
        match result {
            Ok(_) => {
                let key_type = key_type.map_or("unknown", |k| k.mnemonic());
                self.certs_issued
                    .get_or_create(&[("key_type", key_type)])
                    .inc();
            }
            Err(s) if s.code() == Code::Unauthenticated => {
                self.auth_failures
                    .get_or_create(&[("method", method)])
                    .inc();
            }
            Err(_) => {}
        }
    }

    /// Counts an open bundle watch for as long as the guard lives.
    pub(crate) fn watcher(&self, transport: WatchTransport) -> WatcherGuard {
        let gauge = self.watcher_gauges[transport as usize].clone();
        gauge.inc();
        WatcherGuard(gauge)
    }

    /// Counts one client certificate chain checked.
    pub(crate) fn client_cert(&self, check: CertCheck) {
        self.client_cert_counters[check as usize].inc();
    }

    /// Records one commit-thread flush of `records` issuance records that took `took`.
    pub(crate) fn flushed(&self, records: u64, took: Duration, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.commit_flushes
            .get_or_create(&[("result", result)])
            .inc();
        self.commit_flush_duration.observe(took.as_secs_f64());
        if ok {
            self.commit_batch.observe(records as f64);
        }
    }

    /// Flushes counted with `result` (`ok` or `error`).
    #[cfg(test)]
    pub(crate) fn commit_flushes_count(&self, result: &'static str) -> u64 {
        self.commit_flushes
            .get_or_create(&[("result", result)])
            .get()
    }

    /// Publishes the signing self-test's verdict.
    pub(crate) fn set_ready(&self, ready: bool) {
        self.ready.set(i64::from(ready));
    }

    /// Sets the expiry gauges from the CA's certificates now, dropping retired ones.
    fn refresh_expiries(&self, shared: &Shared) {
        self.root_expiry.clear();
        self.intermediate_expiry.clear();
        for (name, not_after) in shared.authority.expiries() {
            let family = if name.contains(" root") {
                &self.root_expiry
            } else {
                &self.intermediate_expiry
            };
            family
                .get_or_create(&vec![("cert", name)])
                .set(unix_seconds(not_after));
        }
    }
}

/// What a request presented, for labelling requests that failed to authenticate.
pub(crate) fn presented<T>(req: &Request<T>) -> &'static str {
    if req.metadata().get("authorization").is_some() {
        "bearer"
    } else if req.peer_certs().is_some_and(|c| !c.is_empty()) {
        "mtls"
    } else {
        METHOD_NONE
    }
}

/// How a client watches the bundle.
#[derive(Clone, Copy, Debug)]
pub(crate) enum WatchTransport {
    /// gRPC's `WatchBundle` stream.
    Grpc = 0,
    /// The `writ-bundle/1` push channel.
    Push = 1,
}

impl WatchTransport {
    fn as_str(self) -> &'static str {
        match self {
            WatchTransport::Grpc => "grpc",
            WatchTransport::Push => "push",
        }
    }
}

/// Decrements its watcher gauge when the watch ends.
pub(crate) struct WatcherGuard(Gauge);

impl Drop for WatcherGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Starts the metrics endpoint on `shared.settings.metrics_listen`, if set; returns the
/// bound address.
pub(crate) async fn start(
    shared: &Arc<Shared>,
    shutdown: CancellationToken,
) -> Result<Option<std::net::SocketAddr>, Error> {
    let Some(addr) = shared.settings.metrics_listen else {
        return Ok(None);
    };
    let listener = writ_metrics::bind(addr)
        .await
        .map_err(|e| Error::io(format!("binding --metrics-listen {addr}"), e))?;
    let bound = listener
        .local_addr()
        .map_err(|e| Error::io("reading the metrics address", e))?;
    let registry = shared
        .metrics
        .registry
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
        .ok_or_else(|| Error::Config("the metrics endpoint was started twice".into()))?;
    let for_ready = shared.clone();
    let ready: Readiness = Box::new(move || for_ready.health.verdict());
    let for_scrape = shared.clone();
    let exposition = Exposition::new(registry, ready).before_scrape(Box::new(move || {
        for_scrape.metrics.refresh_expiries(&for_scrape)
    }));
    tokio::spawn(writ_metrics::serve(
        listener,
        Arc::new(exposition),
        shutdown,
    ));
    tracing::info!(%bound, "metrics and readiness on http://{bound}/metrics, /healthz");
    Ok(Some(bound))
}

/// gRPC codes as Prometheus label values (`permission_denied`).
fn code_label(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

/// Seconds since the epoch, for gauges.
fn unix_seconds(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
