//! Recording admin actions in the CA's hash-chained audit log (issuance is recorded by
//! the store itself, atomically with the issuance log), and reading the log back.

use tonic::transport::server::UdsConnectInfo;
use tonic::{Request, Status};
use writ_ca::audit::{AuditAction, AuditEvent};
use writ_proto::admin;

use crate::state::Shared;

/// Records at most this many per `AuditList` call.
const MAX_PAGE: usize = 10_000;

/// Who sent an admin request: the admin socket peer's uid, from the kernel.
pub(crate) fn actor<T>(req: &Request<T>) -> String {
    req.extensions()
        .get::<UdsConnectInfo>()
        .and_then(|c| c.peer_cred)
        .map_or_else(|| "admin".to_owned(), |c| format!("uid:{}", c.uid()))
}

/// An event for `action` by `actor` about `spiffe_id`, with `detail`.
pub(crate) fn event(
    action: AuditAction,
    actor: &str,
    spiffe_id: Option<String>,
    detail: Option<String>,
) -> AuditEvent {
    let mut e = AuditEvent::new(action, actor);
    e.spiffe_id = spiffe_id;
    e.detail = detail;
    e
}

/// Appends `event` durably. The action it describes has already taken effect; if the log
/// cannot be written, the admin is told so instead of a silent gap.
pub(crate) async fn record(shared: &Shared, event: AuditEvent) -> Result<(), Status> {
    let store = shared.authority.store().clone();
    let action = event.action;
    let result = tokio::task::spawn_blocking(move || store.append_audit(&event))
        .await
        .map_err(|_| Status::internal("audit task failed"))?;
    match result {
        Ok(r) => {
            tracing::info!(seq = r.seq, action = action.as_str(), actor = %r.event.actor, "audited");
            Ok(())
        }
        Err(e) => {
            tracing::error!(error = %e, action = action.as_str(), "writing the audit log failed");
            Err(Status::internal(format!(
                "the {} took effect but could not be written to the audit log; see the server log",
                action.as_str()
            )))
        }
    }
}

/// `AuditList`: records from `since`, as stored, and the newest record's sequence number.
pub(crate) async fn list(
    shared: &Shared,
    r: admin::AuditListRequest,
) -> Result<admin::AuditListResponse, Status> {
    let limit = match r.limit {
        0 => 1000,
        n => (n as usize).min(MAX_PAGE),
    };
    let store = shared.authority.store().clone();
    let (records, last_seq) = tokio::task::spawn_blocking(move || {
        // Read before the page, so it never names a record the page could have held.
        let last_seq = store.last_audit_seq()?;
        let mut out = Vec::new();
        store.for_each_audit(r.since, &mut |rec| {
            // Unreadable records are passed on as they are so the verifier names them;
            // here they can only be reported, not re-serialised.
            out.push(match rec {
                Ok(rec) => serde_json::to_string(&rec).unwrap_or_default(),
                Err(e) => format!("unreadable audit record: {e}"),
            });
            out.len() < limit
        })?;
        Ok::<_, writ_ca::Error>((out, last_seq))
    })
    .await
    .map_err(|_| Status::internal("audit listing task failed"))?
    .map_err(crate::error::ca_status)?;
    Ok(admin::AuditListResponse { records, last_seq })
}
