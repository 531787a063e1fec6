//! Can this server sign? The standard gRPC health service (`grpc.health.v1.Health`) on the
//! TLS port and `/healthz` on the metrics endpoint both answer from one verdict: a signing
//! self-test (`Authority::self_test`: a throwaway leaf signed by the active intermediate
//! and verified against the bundle, never recorded) run at start and then periodically.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use writ_ca::{CaSigningKey, KeyType, PrivateKey};

use crate::Error;
use crate::state::Shared;

/// The gRPC service name whose status follows the self-test, besides "" (the server).
pub const CA_SERVICE: &str = "writ.v1.Ca";

/// How often the self-test runs. A failure is noticed within this long; each run costs
/// one signature and one chain verification.
const EVERY: Duration = Duration::from_secs(10);

/// The last verdict and the reporter behind the gRPC health service.
pub(crate) struct Health {
    reporter: HealthReporter,
    /// `Err(reason)` while the CA cannot sign.
    verdict: Mutex<Result<(), String>>,
    /// The throwaway leaf's public key: generated once, never used for anything else.
    probe_key: Vec<u8>,
}

impl Health {
    /// A verdict of "not yet checked" and the gRPC service to add to the TLS server.
    pub(crate) fn new() -> Result<
        (
            Self,
            tonic_health::pb::health_server::HealthServer<
                impl tonic_health::pb::health_server::Health,
            >,
        ),
        Error,
    > {
        let (reporter, service) = tonic_health::server::health_reporter();
        let key = PrivateKey::generate(KeyType::EcP256)?;
        Ok((
            Health {
                reporter,
                verdict: Mutex::new(Err("the signing self-test has not run yet".into())),
                probe_key: key.public_key_raw().to_vec(),
            },
            service,
        ))
    }

    /// The last verdict.
    pub(crate) fn verdict(&self) -> Result<(), String> {
        self.verdict
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Runs the self-test now and publishes the verdict.
    pub(crate) async fn check(shared: &Arc<Shared>) {
        let s = shared.clone();
        let result = tokio::task::spawn_blocking(move || {
            s.authority
                .self_test(&s.health.probe_key, SystemTime::now())
                .map_err(|e| format!("the CA cannot sign: {e}"))
        })
        .await
        .unwrap_or_else(|_| Err("the signing self-test task failed".into()));
        let health = &shared.health;
        let was_ok = health.verdict().is_ok();
        match &result {
            Ok(()) if !was_ok => tracing::info!("signing self-test passed: serving"),
            Err(why) if was_ok => {
                tracing::error!(reason = %why, "signing self-test failed: not serving")
            }
            _ => {}
        }
        shared.metrics.set_ready(result.is_ok());
        let status = if result.is_ok() {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        *health.verdict.lock().unwrap_or_else(|p| p.into_inner()) = result;
        health.reporter.set_service_status("", status).await;
        health.reporter.set_service_status(CA_SERVICE, status).await;
    }

    /// Reports NOT_SERVING to health watchers (at shutdown).
    async fn stopping(&self) {
        *self.verdict.lock().unwrap_or_else(|p| p.into_inner()) = Err("shutting down".into());
        for name in ["", CA_SERVICE] {
            self.reporter
                .set_service_status(name, ServingStatus::NotServing)
                .await;
        }
    }
}

/// Re-runs the self-test every [`EVERY`] until `shutdown`.
pub(crate) async fn run(shared: Arc<Shared>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => {
                shared.health.stopping().await;
                return;
            }
            _ = tokio::time::sleep(EVERY) => Health::check(&shared).await,
        }
    }
}
