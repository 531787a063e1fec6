//! `istio.v1.auth.IstioCertificateService`: Istio's CA protocol on writ's public port, so
//! istio-agent and ztunnel pointed at writ (`CA_ADDR`) need no change.
//!
//! Istio's rules, not writ's, apply here: the certificate names the caller's
//! authenticated identity whatever the CSR's SANs say (they are never issued), and a
//! lifetime above the maximum is refused rather than clamped.

use std::sync::Arc;
use std::time::Duration;

use tonic::{Request, Response, Status};
use writ_ca::x509::certs_to_pem;
use writ_ca::{Issuance, Rules};
use writ_proto::istio::v1::auth::{
    IstioCertificateRequest, IstioCertificateResponse,
    istio_certificate_service_server::IstioCertificateService,
};

use crate::issue::IssueRequest;
use crate::state::Shared;

/// The metadata key Istio uses to ask for another workload's certificate (istiod acting
/// for a node agent). writ never signs for an identity the caller did not prove.
const IMPERSONATION_KEY: &str = "ImpersonatedIdentity";

/// The Istio-compatible CA service.
pub struct IstioService {
    shared: Arc<Shared>,
}

impl IstioService {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

#[tonic::async_trait]
impl IstioCertificateService for IstioService {
    async fn create_certificate(
        &self,
        req: Request<IstioCertificateRequest>,
    ) -> Result<Response<IstioCertificateResponse>, Status> {
        let peer = crate::limits::peer_ip(&req);
        let credential = self
            .shared
            .auth_limit
            .guard(peer, None, || self.shared.authenticate(&req))?;
        // Multi-cluster Istio names the caller's cluster; writ serves one trust domain and
        // accepts it for compatibility, recording it for the operator.
        let cluster = req
            .metadata()
            .get("clusterid")
            .and_then(|v| v.to_str().ok())
            .map(|c| c.chars().take(64).collect::<String>());
        let r = req.into_inner();
        if r.metadata
            .as_ref()
            .is_some_and(|m| m.fields.contains_key(IMPERSONATION_KEY))
        {
            return Err(Status::permission_denied(
                "impersonation (metadata ImpersonatedIdentity) is not supported: each workload must authenticate as itself",
            ));
        }
        let request = IssueRequest {
            ttl: ttl(r.validity_duration),
            csr: r.csr.into_bytes(),
            rules: Rules::ISTIO,
            peer,
        };
        let auth = credential.method().as_str();
        let issuance = self.shared.issue(credential, request).await?;
        // At debug for the reason `sign`'s line is: the audit log has every issuance.
        tracing::debug!(
            spiffe_id = %issuance.id,
            serial = %issuance.leaf.serial,
            auth,
            cluster = cluster.as_deref().unwrap_or(""),
            "issued over the Istio API"
        );
        Ok(Response::new(IstioCertificateResponse {
            cert_chain: cert_chain(&issuance),
        }))
    }
}

/// Istio's `validity_duration`: seconds, and zero or less means the default TTL.
fn ttl(seconds: i64) -> Option<Duration> {
    u64::try_from(seconds)
        .ok()
        .filter(|s| *s > 0)
        .map(Duration::from_secs)
}

/// Istio's layout: the leaf, each intermediate as its own element, then every root of the
/// bundle together as one final element (clients take the last element as their roots).
fn cert_chain(issuance: &Issuance) -> Vec<String> {
    let mut chain: Vec<String> = issuance.chain.iter().map(|c| certs_to_pem([c])).collect();
    chain.push(certs_to_pem(&issuance.bundle.roots));
    chain
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validity_duration_follows_istio() {
        assert_eq!(ttl(0), None);
        assert_eq!(ttl(-5), None);
        assert_eq!(ttl(i64::MIN), None);
        assert_eq!(ttl(3600), Some(Duration::from_secs(3600)));
    }
}
