//! The admin API on a local Unix socket: only the server's own user (or root) may connect,
//! checked from the peer's credentials on every connection. The admin CLI reaches the
//! running CA only this way, so admins never need to stop it (sled allows one process).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use tokio::net::{UnixListener, UnixStream};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use writ_bootstrap::Jti;
use writ_ca::audit::AuditAction;
use writ_ca::{AuthMethod, Caller, Rules, SpiffeId, Ttl};
use writ_proto::admin::{self, admin_server::Admin};
use writ_proto::v1;

use crate::Error;
use crate::audit::{self, actor};
use crate::caller::Credential;
use crate::convert;
use crate::error::{bootstrap_status, ca_status};
use crate::issue::IssueRequest;
use crate::state::Shared;

/// The admin service.
pub struct AdminService {
    shared: Arc<Shared>,
}

impl AdminService {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn mint(
        &self,
        req: Request<admin::MintRequest>,
    ) -> Result<Response<v1::SignResponse>, Status> {
        let r = req.into_inner();
        let id = SpiffeId::parse(&r.spiffe_id).map_err(ca_status)?;
        let caller = Caller {
            id: id.clone(),
            dns_allowed: r.dns_names,
            method: AuthMethod::Admin,
        };
        let request = IssueRequest {
            csr: r.csr,
            ttl: (r.ttl_seconds > 0).then(|| Duration::from_secs(r.ttl_seconds)),
            rules: Rules::WRIT,
            peer: None,
        };
        // The admin socket's peer check proved the caller may mint any identity.
        let issuance = self
            .shared
            .issue(Credential::Proven(caller), request)
            .await?;
        tracing::info!(spiffe_id = %id, serial = %issuance.leaf.serial, "minted by admin");
        Ok(Response::new(convert::sign_response(issuance)))
    }

    async fn get_bundle(
        &self,
        _req: Request<v1::GetBundleRequest>,
    ) -> Result<Response<v1::TrustBundle>, Status> {
        Ok(Response::new(convert::bundle(
            &self.shared.bundle_tx.borrow(),
        )))
    }

    async fn list_certificates(
        &self,
        req: Request<admin::ListCertificatesRequest>,
    ) -> Result<Response<admin::ListCertificatesResponse>, Status> {
        let limit = match req.into_inner().limit {
            0 => 100,
            n => n.min(10_000) as usize,
        };
        let store = self.shared.authority.store().clone();
        let (recent, total) = tokio::task::spawn_blocking(move || {
            Ok::<_, writ_ca::Error>((store.recent_issuance(limit)?, store.issuance_count()?))
        })
        .await
        .map_err(|_| Status::internal("listing task failed"))?
        .map_err(ca_status)?;
        Ok(Response::new(admin::ListCertificatesResponse {
            certificates: recent.into_iter().map(convert::issued).collect(),
            total,
        }))
    }

    async fn status(
        &self,
        _req: Request<admin::StatusRequest>,
    ) -> Result<Response<admin::StatusResponse>, Status> {
        let a = &self.shared.authority;
        Ok(Response::new(admin::StatusResponse {
            trust_domain: a.settings().trust_domain.to_string(),
            root_fingerprint: a.root_fingerprint().map_err(ca_status)?,
            listen: self.shared.listen.to_string(),
            data_dir: self.shared.settings.data_dir.display().to_string(),
            intermediate_not_after: convert::unix(a.intermediate_not_after().map_err(ca_status)?),
            token_failures: self.shared.token_failures.load(Ordering::Relaxed),
            pid: std::process::id(),
            ca_key_type: a.settings().ca_key_type.mnemonic().to_owned(),
        }))
    }

    async fn create_token(
        &self,
        req: Request<admin::CreateTokenRequest>,
    ) -> Result<Response<admin::CreateTokenResponse>, Status> {
        let who = actor(&req);
        let r = req.into_inner();
        let id = SpiffeId::parse(&r.spiffe_id).map_err(ca_status)?;
        // A token for a denied identity could never be redeemed; say so now.
        self.shared
            .authority
            .check_allowed(&id)
            .map_err(ca_status)?;
        let ttl = (r.ttl_seconds > 0).then(|| Ttl::from_secs(r.ttl_seconds));
        // The machine pins this root; a token for any other CA would be refused by it.
        let fingerprint = self
            .shared
            .authority
            .root_fingerprint()
            .map_err(ca_status)?;
        let bootstrap = self.shared.bootstrap.clone();
        let minted = tokio::task::spawn_blocking(move || {
            bootstrap.mint(&id, ttl, r.dns_names, &fingerprint, SystemTime::now())
        })
        .await
        .map_err(|_| Status::internal("token minting task failed"))?
        .map_err(bootstrap_status)?;
        audit::record(
            &self.shared,
            audit::event(
                AuditAction::TokenCreate,
                &who,
                Some(minted.spiffe_id.to_string()),
                Some(format!("jti {}", minted.jti)),
            ),
        )
        .await?;
        Ok(Response::new(admin::CreateTokenResponse {
            token: minted.token.expose().to_owned(),
            jti: minted.jti.to_string(),
            spiffe_id: minted.spiffe_id.to_string(),
            expires_at: convert::unix(minted.expires_at),
            ca_fingerprint: minted.ca_fingerprint,
        }))
    }

    async fn list_tokens(
        &self,
        _req: Request<admin::ListTokensRequest>,
    ) -> Result<Response<admin::ListTokensResponse>, Status> {
        let bootstrap = self.shared.bootstrap.clone();
        let entries = tokio::task::spawn_blocking(move || bootstrap.list(SystemTime::now()))
            .await
            .map_err(|_| Status::internal("token listing task failed"))?
            .map_err(bootstrap_status)?;
        Ok(Response::new(admin::ListTokensResponse {
            tokens: entries.into_iter().map(convert::token).collect(),
        }))
    }

    async fn revoke_token(
        &self,
        req: Request<admin::RevokeTokenRequest>,
    ) -> Result<Response<admin::RevokeTokenResponse>, Status> {
        let who = actor(&req);
        let jti = Jti::parse(&req.into_inner().jti).map_err(bootstrap_status)?;
        let bootstrap = self.shared.bootstrap.clone();
        let detail = format!("jti {jti}");
        tokio::task::spawn_blocking(move || bootstrap.revoke(&jti, SystemTime::now()))
            .await
            .map_err(|_| Status::internal("token revocation task failed"))?
            .map_err(bootstrap_status)?;
        audit::record(
            &self.shared,
            audit::event(AuditAction::TokenRevoke, &who, None, Some(detail)),
        )
        .await?;
        Ok(Response::new(admin::RevokeTokenResponse {}))
    }

    async fn root_status(
        &self,
        _req: Request<admin::RootStatusRequest>,
    ) -> Result<Response<admin::RootStatusResponse>, Status> {
        Ok(Response::new(crate::rotation::status(&self.shared)?))
    }

    async fn root_prepare(
        &self,
        req: Request<admin::RootPrepareRequest>,
    ) -> Result<Response<admin::RootStatusResponse>, Status> {
        let who = actor(&req);
        let key_type = key_type(&req.into_inner().key_type)?;
        crate::rotation::prepare(&self.shared, key_type).await?;
        self.root_audited(AuditAction::RootPrepare, &who, false)
            .await
    }

    async fn root_activate(
        &self,
        req: Request<admin::RootStepRequest>,
    ) -> Result<Response<admin::RootStatusResponse>, Status> {
        let (who, force) = (actor(&req), req.get_ref().force);
        crate::rotation::activate(&self.shared, force).await?;
        self.root_audited(AuditAction::RootActivate, &who, force)
            .await
    }

    async fn root_retire(
        &self,
        req: Request<admin::RootStepRequest>,
    ) -> Result<Response<admin::RootStatusResponse>, Status> {
        let (who, force) = (actor(&req), req.get_ref().force);
        crate::rotation::retire(&self.shared, force).await?;
        self.root_audited(AuditAction::RootRetire, &who, force)
            .await
    }

    async fn root_rotate(
        &self,
        req: Request<admin::RootPrepareRequest>,
    ) -> Result<Response<admin::RootStatusResponse>, Status> {
        let who = actor(&req);
        let key_type = key_type(&req.into_inner().key_type)?;
        crate::rotation::rotate(&self.shared, key_type).await?;
        self.root_audited(AuditAction::RootRotate, &who, false)
            .await
    }

    async fn root_import(
        &self,
        req: Request<admin::RootImportRequest>,
    ) -> Result<Response<admin::RootStatusResponse>, Status> {
        let who = actor(&req);
        crate::rotation::import(&self.shared, req.into_inner()).await?;
        self.root_audited(AuditAction::RootImport, &who, false)
            .await
    }

    async fn identity_deny(
        &self,
        req: Request<admin::IdentityDenyRequest>,
    ) -> Result<Response<admin::DeniedIdentity>, Status> {
        let who = actor(&req);
        crate::identity::deny(&self.shared, &who, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn identity_allow(
        &self,
        req: Request<admin::IdentityAllowRequest>,
    ) -> Result<Response<admin::IdentityAllowResponse>, Status> {
        let who = actor(&req);
        crate::identity::allow(&self.shared, &who, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn identity_list(
        &self,
        _req: Request<admin::IdentityListRequest>,
    ) -> Result<Response<admin::IdentityListResponse>, Status> {
        Ok(Response::new(crate::identity::list(&self.shared)))
    }

    async fn audit_list(
        &self,
        req: Request<admin::AuditListRequest>,
    ) -> Result<Response<admin::AuditListResponse>, Status> {
        audit::list(&self.shared, req.into_inner())
            .await
            .map(Response::new)
    }
}

impl AdminService {
    /// Audits a root step that succeeded (naming the generations it left) and returns
    /// the rotation status.
    async fn root_audited(
        &self,
        action: AuditAction,
        who: &str,
        force: bool,
    ) -> Result<Response<admin::RootStatusResponse>, Status> {
        let status = crate::rotation::status(&self.shared)?;
        audit::record(
            &self.shared,
            audit::event(
                action,
                who,
                None,
                Some(crate::rotation::summary(&status, force)),
            ),
        )
        .await?;
        Ok(Response::new(status))
    }
}

/// Binds the admin socket (mode 0600) and yields only connections from this process's
/// user or root. Any gRPC client may call it, grpcio and grpc-java included, whose
/// `:authority` on a unix socket is the percent-encoded path: the workspace's patched h2
/// ignores it (vendor/README.md).
pub(crate) fn listen(
    path: &Path,
) -> Result<ReceiverStream<Result<UnixStream, std::io::Error>>, Error> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| Error::io(format!("creating {}", parent.display()), e))?;
    }
    // A stale socket from a crashed server; a live server would hold the data dir's lock,
    // and we only get here after taking it.
    if path.exists() {
        std::fs::remove_file(path)
            .map_err(|e| Error::io(format!("removing stale socket {}", path.display()), e))?;
    }
    let listener = UnixListener::bind(path)
        .map_err(|e| Error::io(format!("binding admin socket {}", path.display()), e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::io(format!("chmod 0600 {}", path.display()), e))?;
    let own_uid = rustix::process::geteuid().as_raw();
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "admin socket accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            match stream.peer_cred() {
                Ok(cred) if peer_allowed(cred.uid(), own_uid) => {
                    if tx.send(Ok(stream)).await.is_err() {
                        return;
                    }
                }
                Ok(cred) => tracing::warn!(
                    uid = cred.uid(),
                    "admin socket: refused a connection from another user"
                ),
                Err(e) => tracing::warn!(error = %e, "admin socket: no peer credentials; refused"),
            }
        }
    });
    Ok(ReceiverStream::new(rx))
}

/// An optional key type mnemonic from the admin API.
fn key_type(s: &str) -> Result<Option<writ_ca::KeyType>, Status> {
    if s.is_empty() {
        return Ok(None);
    }
    s.parse()
        .map(Some)
        .map_err(|e: writ_ca::Error| Status::invalid_argument(e.to_string()))
}

/// The server's own user and root may administer it; nobody else.
fn peer_allowed(peer_uid: u32, own_uid: u32) -> bool {
    peer_uid == own_uid || peer_uid == 0
}

#[cfg(test)]
mod tests {
    use super::peer_allowed;

    #[test]
    fn only_own_user_or_root() {
        assert!(peer_allowed(1000, 1000));
        assert!(peer_allowed(0, 1000));
        assert!(!peer_allowed(1001, 1000));
        assert!(!peer_allowed(65534, 0));
    }
}
