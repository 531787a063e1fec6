//! `writ healthcheck`: asks a running server's gRPC health service (`grpc.health.v1.Health`)
//! whether it can sign, over the same verified TLS as every writ client (the server must
//! prove `spiffe://<td>/writ/server` under the trust bundle). Exit 0 when SERVING.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args as ClapArgs;
use serde_json::json;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use writ_agent::client::{ServerTrust, channel, client_config};
use writ_ca::{TrustDomain, Ttl};

use crate::admin_client::AdminTarget;
use crate::output::{self, Format, OutputArg, outln};

/// `writ healthcheck` flags.
#[derive(ClapArgs)]
pub struct Args {
    /// The writ server, host:port.
    #[arg(long, env = "WRIT_SERVER", default_value = crate::cli_defaults::server())]
    server: String,
    /// Trust the roots in this PEM file (e.g. `writ bundle show > bundle.pem`); needs
    /// --trust-domain unless it is cluster.local.
    #[arg(long, conflicts_with = "out_dir")]
    ca_bundle: Option<PathBuf>,
    /// Trust domain of --ca-bundle [default: cluster.local].
    #[arg(long, requires = "ca_bundle")]
    trust_domain: Option<TrustDomain>,
    /// Trust the bundle in an agent's out dir (bundle.pem; the trust domain from its certificate).
    #[arg(long)]
    out_dir: Option<PathBuf>,
    /// Without --ca-bundle or --out-dir: the bundle comes from the server's admin socket.
    #[command(flatten)]
    target: AdminTarget,
    /// The service to ask about; "" asks about the server as a whole.
    #[arg(long, default_value = writ_server::CA_SERVICE)]
    service: String,
    /// Give up after this long.
    #[arg(long, default_value = "5s")]
    timeout: Ttl,
    #[command(flatten)]
    output: OutputArg,
}

/// Runs `writ healthcheck`: Ok only when the service reports SERVING.
pub async fn run(a: Args) -> anyhow::Result<()> {
    let outcome = match tokio::time::timeout(a.timeout.duration(), check(&a)).await {
        Ok(r) => r,
        Err(_) => Err(anyhow::anyhow!(
            "no answer from {} within {}",
            a.server,
            a.timeout
        )),
    };
    output::unless_broken_pipe(print(&a, &outcome))?;
    match outcome {
        Ok(ServingStatus::Serving) => Ok(()),
        Ok(s) => anyhow::bail!(
            "{} at {} reports {}: the CA cannot sign right now; see the server's log",
            service_name(&a.service),
            a.server,
            s.as_str_name()
        ),
        Err(e) => Err(e.context(format!("health check of {} failed", a.server))),
    }
}

/// Prints the outcome of the check on stdout.
fn print(a: &Args, outcome: &anyhow::Result<ServingStatus>) -> anyhow::Result<()> {
    let (status, error) = match outcome {
        Ok(s) => (s.as_str_name().to_owned(), None),
        Err(e) => ("UNREACHABLE".to_owned(), Some(format!("{e:#}"))),
    };
    match a.output.format {
        Format::Json => output::json(&json!({
            "server": a.server,
            "service": a.service,
            "status": status,
            "serving": matches!(outcome, Ok(ServingStatus::Serving)),
            "error": error,
        }))?,
        Format::Text => {
            if let Ok(s) = outcome {
                outln!(
                    "{}: {} at {}",
                    s.as_str_name(),
                    service_name(&a.service),
                    a.server
                )?;
            }
        }
    }
    Ok(())
}

fn service_name(s: &str) -> &str {
    if s.is_empty() { "the server" } else { s }
}

async fn check(a: &Args) -> anyhow::Result<ServingStatus> {
    let trust = trust(a).await?;
    let config = client_config(trust, None)?;
    let channel = channel(&a.server, config).await?;
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: a.service.clone(),
        })
        .await;
    match response {
        Ok(r) => {
            Ok(ServingStatus::try_from(r.into_inner().status).unwrap_or(ServingStatus::Unknown))
        }
        Err(s) if s.code() == tonic::Code::NotFound => anyhow::bail!(
            "the server does not know the service {:?} (try {:?} or \"\")",
            a.service,
            writ_server::CA_SERVICE
        ),
        Err(s) => anyhow::bail!("{} ({:?})", s.message(), s.code()),
    }
}

/// The roots the server must chain to, and its trust domain.
async fn trust(a: &Args) -> anyhow::Result<ServerTrust> {
    if let Some(file) = &a.ca_bundle {
        let pem = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        let roots = writ_ca::x509::certs_from_pem(&pem)
            .with_context(|| format!("{} holds no PEM certificates", file.display()))?;
        anyhow::ensure!(
            !roots.is_empty(),
            "{} holds no certificates",
            file.display()
        );
        let trust_domain = match &a.trust_domain {
            Some(td) => td.clone(),
            None => TrustDomain::parse("cluster.local")?,
        };
        return Ok(ServerTrust::Bundle {
            trust_domain,
            roots,
        });
    }
    if let Some(dir) = &a.out_dir {
        let identity = writ_agent::files::read_identity(dir)?
            .with_context(|| format!("no identity in {}", dir.display()))?;
        return Ok(ServerTrust::Bundle {
            trust_domain: identity.spiffe_id()?.trust_domain(),
            roots: identity.bundle.clone(),
        });
    }
    let mut admin = a.target.connect().await.context(
        "no bundle to verify the server with: pass --ca-bundle FILE or --out-dir DIR, or run on the server's machine (--data-dir)",
    )?;
    let b = admin
        .get_bundle(writ_proto::v1::GetBundleRequest {})
        .await
        .map_err(crate::admin_client::status)?
        .into_inner();
    Ok(ServerTrust::Bundle {
        trust_domain: TrustDomain::parse(&b.trust_domain)?,
        roots: b.roots,
    })
}
