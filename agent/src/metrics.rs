//! The agent's Prometheus metrics and its `--metrics-listen` endpoint: the current
//! certificate's expiry and the next planned renewal (alert when expiry nears and renewal
//! keeps slipping), rotations and their failures, bundle updates, Workload API clients.
//! Readiness (`/healthz`) is "holds a valid, unexpired certificate".

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use writ_metrics::prometheus_client::metrics::counter::Counter;
use writ_metrics::prometheus_client::metrics::gauge::Gauge;
use writ_metrics::prometheus_client::registry::{Registry, Unit};
use writ_metrics::{Exposition, Readiness};

use crate::Error;
use crate::files::Identity;

/// Every metric the agent exports.
#[derive(Default)]
pub(crate) struct AgentMetrics {
    cert_expiry: Gauge,
    next_renewal: Gauge,
    rotations: Counter,
    rotation_failures: Counter,
    bundle_updates: Counter,
    workload_clients: Gauge,
    /// Workload API callers refused by the peer-credential check.
    pub(crate) workload_refused: Counter,
    /// Open Workload API streams, counted by the Workload API itself.
    open_streams: Mutex<Option<Arc<AtomicUsize>>>,
}

impl AgentMetrics {
    /// The current certificate changed.
    pub(crate) fn identity(&self, identity: &Identity) {
        if let Ok(leaf) = identity.leaf_info() {
            self.cert_expiry.set(unix_seconds(leaf.not_after));
        }
    }

    /// A renewal is planned for `at`.
    pub(crate) fn next_renewal(&self, at: SystemTime) {
        self.next_renewal.set(unix_seconds(at));
    }

    /// A renewal succeeded.
    pub(crate) fn rotated(&self) {
        self.rotations.inc();
    }

    /// A renewal attempt failed (retried or refused).
    pub(crate) fn rotation_failed(&self) {
        self.rotation_failures.inc();
    }

    /// A new trust bundle was applied.
    pub(crate) fn bundle_updated(&self) {
        self.bundle_updates.inc();
    }

    /// Counts Workload API clients from the service's own stream counter.
    pub(crate) fn workload_streams(&self, open: Arc<AtomicUsize>) {
        *self.open_streams.lock().unwrap_or_else(|p| p.into_inner()) = Some(open);
    }

    fn registry(&self) -> Registry {
        let mut r = Registry::default();
        r.register_with_unit(
            "writ_agent_cert_expiry_timestamp",
            "notAfter of the certificate the agent holds, Unix time",
            Unit::Seconds,
            self.cert_expiry.clone(),
        );
        r.register_with_unit(
            "writ_agent_next_renewal_timestamp",
            "When the agent next plans to renew, Unix time",
            Unit::Seconds,
            self.next_renewal.clone(),
        );
        r.register(
            "writ_agent_rotations",
            "Certificates renewed and published since start",
            self.rotations.clone(),
        );
        r.register(
            "writ_agent_rotation_failures",
            "Renewal attempts that failed (each retry counts)",
            self.rotation_failures.clone(),
        );
        r.register(
            "writ_agent_bundle_updates",
            "Trust bundle changes applied since start",
            self.bundle_updates.clone(),
        );
        r.register(
            "writ_agent_workload_api_refused",
            "Workload API calls refused because the caller's uid and gid are not allowed",
            self.workload_refused.clone(),
        );
        r.register(
            "writ_agent_workload_api_clients",
            "Open Workload API streams (connected workloads)",
            self.workload_clients.clone(),
        );
        r
    }
}

/// Starts the endpoint on `addr`; returns the bound address.
pub(crate) async fn start(
    addr: SocketAddr,
    metrics: Arc<AgentMetrics>,
    identity: watch::Receiver<Option<Arc<Identity>>>,
    shutdown: CancellationToken,
) -> Result<SocketAddr, Error> {
    let listener = writ_metrics::bind(addr)
        .await
        .map_err(|e| Error::Metrics(e.to_string()))?;
    let bound = listener
        .local_addr()
        .map_err(|e| Error::Metrics(format!("reading the metrics address: {e}")))?;
    let ready: Readiness = Box::new(move || ready(&identity.borrow(), SystemTime::now()));
    let m = metrics.clone();
    let exposition =
        Exposition::new(metrics.registry(), ready).before_scrape(Box::new(move || {
            let open = m
                .open_streams
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            if let Some(open) = open {
                m.workload_clients
                    .set(i64::try_from(open.load(Ordering::Relaxed)).unwrap_or(i64::MAX));
            }
        }));
    tokio::spawn(writ_metrics::serve(
        listener,
        Arc::new(exposition),
        shutdown,
    ));
    tracing::info!(%bound, "metrics and readiness on http://{bound}/metrics, /healthz");
    Ok(bound)
}

/// Ready when the agent holds a certificate that is valid now.
fn ready(identity: &Option<Arc<Identity>>, now: SystemTime) -> Result<(), String> {
    let Some(identity) = identity else {
        return Err("no certificate yet".into());
    };
    let leaf = identity.leaf_info().map_err(|e| e.to_string())?;
    if leaf.not_after <= now {
        return Err(format!(
            "the certificate expired at {}",
            crate::status::rfc3339(leaf.not_after)
        ));
    }
    if leaf.not_before > now {
        return Err("the certificate is not valid yet".into());
    }
    Ok(())
}

fn unix_seconds(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::files::testing::TestCa;

    #[test]
    fn ready_only_with_a_certificate_valid_now() {
        let id = Some(Arc::new(TestCa::new().issue("ns/a")));
        let now = SystemTime::now();
        assert_eq!(ready(&id, now), Ok(()));
        let later = now + Duration::from_secs(2 * 3600);
        assert!(ready(&id, later).unwrap_err().contains("expired"));
        assert!(ready(&id, now - Duration::from_secs(3600)).is_err());
        assert!(ready(&None, now).is_err());
    }

    #[test]
    fn gauges_follow_the_identity_and_encode() {
        let m = AgentMetrics::default();
        let id = TestCa::new().issue("ns/a");
        m.identity(&id);
        m.rotated();
        m.rotation_failed();
        let mut page = String::new();
        writ_metrics::prometheus_client::encoding::text::encode(&mut page, &m.registry()).unwrap();
        let expiry = unix_seconds(id.leaf_info().unwrap().not_after);
        assert!(
            page.contains(&format!(
                "writ_agent_cert_expiry_timestamp_seconds {expiry}"
            )),
            "{page}"
        );
        assert!(page.contains("writ_agent_rotations_total 1"));
        assert!(page.contains("writ_agent_rotation_failures_total 1"));
    }
}
