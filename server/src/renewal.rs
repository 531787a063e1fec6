//! Keeping the CA's own certificates fresh: the intermediate (without changing the trust
//! bundle) and the server's serving certificate. Sleeps until the next deadline; no polling.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;
use writ_ca::{AuthMethod, Authority, KeyType, LeafTemplate, PrivateKey};

use crate::state::Shared;
use crate::tls::ServingCert;
use crate::{Error, Settings};

/// The path of the server's own SPIFFE ID, `spiffe://<td>/writ/server`.
pub const SERVER_ID_PATH: &str = "writ/server";

/// Issues a fresh serving certificate; the chain served is leaf, intermediate(s), then every
/// root in the bundle, so a client pinning a root by fingerprint (bootstrap) can check it
/// without a bundle — including a token minted before a root rotation.
pub(crate) fn issue_serving_cert(
    authority: &Authority,
    settings: &Settings,
) -> Result<ServingCert, Error> {
    let (chain, key) = serving_material(authority, settings)?;
    ServingCert::new(chain, key.pkcs8_der())
}

fn serving_material(
    authority: &Authority,
    settings: &Settings,
) -> Result<(Vec<Vec<u8>>, PrivateKey), Error> {
    let key = PrivateKey::generate(KeyType::EcP256)?;
    let template = LeafTemplate {
        id: settings.ca.trust_domain.workload(SERVER_ID_PATH)?,
        dns_names: settings.server_dns.clone(),
        ip_addrs: settings.server_ips.clone(),
        key_type: key.kind(),
        public_key: writ_ca::CaSigningKey::public_key_raw(&key).to_vec(),
        lifetime: settings.ca.ttl.max().duration(),
        limited_by: None,
        auth: AuthMethod::Internal,
    };
    let issuance = authority.issue_template(&template, SystemTime::now())?;
    let mut chain = issuance.chain;
    for root in issuance.bundle.roots {
        if !chain.contains(&root) {
            chain.push(root);
        }
    }
    Ok((chain, key))
}

/// Replaces the serving certificate now (after a root activation, so it chains to the new
/// intermediate).
pub(crate) fn reissue_serving(shared: &Shared) -> Result<(), Error> {
    let (chain, key) = serving_material(&shared.authority, &shared.settings)?;
    shared.serving.replace(chain, key.pkcs8_der())
}

/// Runs until `shutdown`: renews the intermediate when due and the serving certificate at
/// half its life.
pub(crate) async fn run(shared: Arc<Shared>, shutdown: CancellationToken) {
    let mut serving_renew_at = half_life(&shared);
    loop {
        let intermediate_at = shared
            .authority
            .intermediate_renewal_at()
            .unwrap_or_else(|_| SystemTime::now() + Duration::from_secs(60));
        let next = intermediate_at.min(serving_renew_at);
        let wait = next
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO)
            // Wake at least hourly so a suspended machine or clock jump is noticed.
            .min(Duration::from_secs(3600));
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        let now = SystemTime::now();
        let authority = shared.authority.clone();
        match tokio::task::spawn_blocking(move || authority.renew_intermediate_if_due(now)).await {
            Ok(Ok(true)) => {
                tracing::info!("intermediate CA renewed");
                // New leaves, including the serving certificate, chain to the new one.
                serving_renew_at = now;
            }
            Ok(Ok(false)) => {}
            Ok(Err(e)) => {
                tracing::error!(error = %e, "intermediate renewal failed; retrying in a minute")
            }
            Err(_) => tracing::error!("intermediate renewal task failed"),
        }
        if SystemTime::now() >= serving_renew_at {
            match serving_material(&shared.authority, &shared.settings)
                .and_then(|(chain, key)| shared.serving.replace(chain, key.pkcs8_der()))
            {
                Ok(()) => serving_renew_at = half_life(&shared),
                Err(e) => {
                    tracing::error!(error = %e, "serving certificate renewal failed; retrying in a minute");
                    serving_renew_at = SystemTime::now() + Duration::from_secs(60);
                }
            }
        }
    }
}

fn half_life(shared: &Shared) -> SystemTime {
    SystemTime::now() + shared.settings.ca.ttl.max().duration() / 2
}

/// How often spent and expired bootstrap token records are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Runs until `shutdown`: prunes bootstrap token records past their retention at start
/// and hourly, so the store does not grow with every token ever minted.
pub(crate) async fn prune_tokens(shared: Arc<Shared>, shutdown: CancellationToken) {
    let retention = shared.settings.token_retention.duration();
    loop {
        let bootstrap = shared.bootstrap.clone();
        match tokio::task::spawn_blocking(move || bootstrap.prune(retention, SystemTime::now()))
            .await
        {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "pruning bootstrap tokens failed"),
            Err(_) => tracing::error!("bootstrap token pruning task failed"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(PRUNE_EVERY) => {}
        }
    }
}
