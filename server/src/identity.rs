//! `writ identity deny|allow|list` through the admin API. The deny list itself lives in
//! the CA core (`Authority::deny`), where every issuance path is checked; here the admin
//! actions are audited and the verified-certificate cache forgets the identity.

use std::sync::Arc;
use std::time::SystemTime;

use tonic::Status;
use writ_ca::audit::AuditAction;
use writ_ca::{DeniedIdentity, SpiffeId};
use writ_proto::admin;

use crate::audit;
use crate::convert::unix;
use crate::error::ca_status;
use crate::renewal::SERVER_ID_PATH;
use crate::state::Shared;

/// Denies an identity: nothing is issued for it from now on.
pub(crate) async fn deny(
    shared: &Arc<Shared>,
    actor: &str,
    r: admin::IdentityDenyRequest,
) -> Result<admin::DeniedIdentity, Status> {
    let id = SpiffeId::parse(&r.spiffe_id).map_err(ca_status)?;
    let own = shared
        .settings
        .ca
        .trust_domain
        .workload(SERVER_ID_PATH)
        .map_err(ca_status)?;
    if id == own {
        return Err(Status::invalid_argument(format!(
            "{id} is the CA server's own identity; to stop this CA, stop the server"
        )));
    }
    let authority = shared.authority.clone();
    let (id2, reason) = (id.clone(), r.reason.clone());
    let denied =
        tokio::task::spawn_blocking(move || authority.deny(&id2, &reason, SystemTime::now()))
            .await
            .map_err(|_| Status::internal("deny task failed"))?
            .map_err(ca_status)?;
    // Issuance already checks the deny list on every request; dropping the cached
    // verification as well means nothing downstream of authentication can act on it.
    shared.peers.forget(&id);
    tracing::warn!(spiffe_id = %id, reason = %r.reason, %actor, "identity denied");
    audit::record(
        shared,
        audit::event(
            AuditAction::IdentityDeny,
            actor,
            Some(id.to_string()),
            (!r.reason.is_empty()).then_some(r.reason),
        ),
    )
    .await?;
    Ok(message(denied))
}

/// Lifts a deny.
pub(crate) async fn allow(
    shared: &Arc<Shared>,
    actor: &str,
    r: admin::IdentityAllowRequest,
) -> Result<admin::IdentityAllowResponse, Status> {
    let id = SpiffeId::parse(&r.spiffe_id).map_err(ca_status)?;
    let authority = shared.authority.clone();
    let id2 = id.clone();
    let was_denied = tokio::task::spawn_blocking(move || authority.allow(&id2))
        .await
        .map_err(|_| Status::internal("allow task failed"))?
        .map_err(ca_status)?;
    if was_denied {
        tracing::info!(spiffe_id = %id, %actor, "identity allowed again");
        audit::record(
            shared,
            audit::event(
                AuditAction::IdentityAllow,
                actor,
                Some(id.to_string()),
                None,
            ),
        )
        .await?;
    }
    Ok(admin::IdentityAllowResponse { was_denied })
}

/// Every denied identity.
pub(crate) fn list(shared: &Shared) -> admin::IdentityListResponse {
    admin::IdentityListResponse {
        denied: shared.authority.denied().into_iter().map(message).collect(),
    }
}

fn message(d: DeniedIdentity) -> admin::DeniedIdentity {
    admin::DeniedIdentity {
        spiffe_id: d.id.to_string(),
        reason: d.reason,
        since: unix(d.since),
    }
}
