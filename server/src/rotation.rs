//! Root rotation through the admin API, and the driver behind `writ root rotate`: prepare
//! now, activate once the new root has propagated, retire once the old root's leaves have
//! expired. The driver's intent is stored, so a restart resumes the rotation.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;
use tonic::Status;
use writ_ca::{GenerationState, KeyType, RotationAction};
use writ_proto::admin;

use crate::convert::unix;
use crate::error::ca_status;
use crate::renewal::reissue_serving;
use crate::state::Shared;

const TREE: &str = "rotation";
const AUTO: &[u8] = b"auto";

/// The whole rotation state as the admin API reports it.
pub(crate) fn status(shared: &Shared) -> Result<admin::RootStatusResponse, Status> {
    let a = &shared.authority;
    let now = SystemTime::now();
    let generations = a.status(now).map_err(ca_status)?;
    let next = a.next_step(now).map_err(ca_status)?;
    Ok(admin::RootStatusResponse {
        generations: generations
            .into_iter()
            .map(|g| admin::RootGeneration {
                id: g.id,
                state: state_name(g.state).to_owned(),
                key_type: g.key_type.mnemonic().to_owned(),
                root_fingerprint: g.root_fingerprint,
                root_not_after: unix(g.root_not_after),
                intermediate_not_after: unix(g.intermediate_not_after),
                live_leaves: g.live_leaves,
                latest_leaf_not_after: g.latest_leaf_not_after.map(unix).unwrap_or(0),
                since: unix(g.since),
                imported: g.imported,
                cross_signed: g.cross_signed,
            })
            .collect(),
        next_action: next
            .map(|n| match n.action {
                RotationAction::Activate => "activate",
                RotationAction::Retire => "retire",
            })
            .unwrap_or_default()
            .to_owned(),
        next_allowed_at: next.map(|n| unix(n.allowed_at)).unwrap_or(0),
        rotating: rotating(shared),
        bundle_sequence: a.bundle().sequence,
    })
}

/// A one-line account of the generations for the audit log: `G1 retired, G2 active`.
pub(crate) fn summary(status: &admin::RootStatusResponse, force: bool) -> String {
    let mut s = status
        .generations
        .iter()
        .map(|g| format!("G{} {}", g.id, g.state))
        .collect::<Vec<_>>()
        .join(", ");
    if force {
        s.push_str(" (forced)");
    }
    s
}

/// A generation state's name.
pub(crate) fn state_name(s: GenerationState) -> &'static str {
    match s {
        GenerationState::Prepared => "prepared",
        GenerationState::Active => "active",
        GenerationState::Previous => "previous",
        GenerationState::Retired => "retired",
    }
}

/// `root prepare`.
pub(crate) async fn prepare(shared: &Arc<Shared>, key_type: Option<KeyType>) -> Result<(), Status> {
    let a = shared.authority.clone();
    blocking(move || a.prepare(key_type, SystemTime::now())).await?;
    tracing::info!("root prepared; its root is now in the bundle");
    after_change(shared, false);
    Ok(())
}

/// `root activate`.
pub(crate) async fn activate(shared: &Arc<Shared>, force: bool) -> Result<(), Status> {
    let a = shared.authority.clone();
    blocking(move || a.activate(force, SystemTime::now())).await?;
    tracing::info!(force, "new root activated; leaves are now signed under it");
    after_change(shared, true);
    Ok(())
}

/// `root retire`.
pub(crate) async fn retire(shared: &Arc<Shared>, force: bool) -> Result<(), Status> {
    let a = shared.authority.clone();
    blocking(move || a.retire(force, SystemTime::now())).await?;
    tracing::info!(force, "previous root retired; it has left the bundle");
    after_change(shared, true);
    Ok(())
}

/// `root import`.
pub(crate) async fn import(
    shared: &Arc<Shared>,
    r: admin::RootImportRequest,
) -> Result<(), Status> {
    let a = shared.authority.clone();
    blocking(move || a.import(&r.cert, &r.key, &r.chain, &r.root, SystemTime::now())).await?;
    tracing::info!("external CA imported as a prepared generation");
    after_change(shared, false);
    Ok(())
}

/// `root rotate`: prepare now and let the driver finish.
pub(crate) async fn rotate(shared: &Arc<Shared>, key_type: Option<KeyType>) -> Result<(), Status> {
    if rotating(shared) {
        return Err(Status::failed_precondition(
            "a rotation is already under way; see `writ root status`",
        ));
    }
    prepare(shared, key_type).await?;
    let store = shared.authority.store().clone();
    blocking(move || store.put(TREE, AUTO, b"1")).await?;
    shared.rotation_wake.notify_one();
    Ok(())
}

fn rotating(shared: &Shared) -> bool {
    matches!(shared.authority.store().get(TREE, AUTO), Ok(Some(v)) if v == b"1")
}

fn after_change(shared: &Shared, reissue: bool) {
    shared.refresh_bundle();
    if reissue && let Err(e) = reissue_serving(shared) {
        tracing::error!(error = %e, "could not reissue the serving certificate after a rotation step");
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, writ_ca::Error> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| Status::internal("rotation task failed"))?
        .map_err(ca_status)
}

/// Runs until `shutdown`: takes each step of a `root rotate` as soon as it is allowed, and
/// warns about CA certificates nearing expiry.
pub(crate) async fn drive(shared: Arc<Shared>, shutdown: CancellationToken) {
    let mut next_warning = SystemTime::now();
    loop {
        if SystemTime::now() >= next_warning {
            warn_expiries(&shared);
            next_warning = SystemTime::now() + Duration::from_secs(24 * 3600);
        }
        let mut wait = Duration::from_secs(3600);
        if rotating(&shared) {
            match shared.authority.next_step(SystemTime::now()) {
                Ok(Some(step)) => {
                    let until = step
                        .allowed_at
                        .duration_since(SystemTime::now())
                        .unwrap_or(Duration::ZERO);
                    if until.is_zero() {
                        let (result, audited) = match step.action {
                            RotationAction::Activate => (
                                activate(&shared, false).await,
                                writ_ca::audit::AuditAction::RootActivate,
                            ),
                            RotationAction::Retire => (
                                retire(&shared, false).await,
                                writ_ca::audit::AuditAction::RootRetire,
                            ),
                        };
                        if result.is_ok()
                            && let Ok(s) = status(&shared)
                        {
                            let event = crate::audit::event(
                                audited,
                                "server (root rotate)",
                                None,
                                Some(summary(&s, false)),
                            );
                            // Logged inside on failure; the step itself has been taken.
                            let _ = crate::audit::record(&shared, event).await;
                        }
                        match result {
                            Ok(()) if step.action == RotationAction::Retire => {
                                let store = shared.authority.store().clone();
                                let _ = blocking(move || store.put(TREE, AUTO, b"0")).await;
                                tracing::info!("root rotation complete");
                            }
                            Ok(()) => {}
                            Err(e) => {
                                tracing::warn!(error = %e.message(), "rotation step not yet possible");
                                wait = Duration::from_secs(5);
                            }
                        }
                        continue;
                    }
                    // Wake just after the step becomes allowed.
                    wait = until + Duration::from_millis(100);
                }
                Ok(None) => {
                    let store = shared.authority.store().clone();
                    let _ = blocking(move || store.put(TREE, AUTO, b"0")).await;
                }
                Err(e) => tracing::error!(error = %e, "cannot read the rotation state"),
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = shared.rotation_wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

fn warn_expiries(shared: &Shared) {
    let now = SystemTime::now();
    let max_ttl = shared.settings.ca.ttl.max().duration();
    for (what, at) in shared.authority.expiries() {
        let left = at.duration_since(now).unwrap_or(Duration::ZERO);
        // Intermediates renew themselves; roots (and imported CAs) need an operator.
        let soon = if what.contains("intermediate") {
            max_ttl * 2
        } else {
            Duration::from_secs(90 * 86_400)
        };
        if left < soon {
            tracing::warn!(%what, left = %humantime::format_duration(left), "CA certificate expires soon: rotate with `writ root rotate`");
        } else {
            tracing::info!(%what, left = %humantime::format_duration(Duration::from_secs(left.as_secs())), "CA certificate validity");
        }
    }
}
