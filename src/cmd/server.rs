//! `writ server`.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use anyhow::Context;
use clap::Args as ClapArgs;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use writ_ca::{KeyType, TrustDomain, Ttl};
use writ_server::ServerConfig;

use crate::output::{Format, StdoutError, outln};

/// `writ server` flags; each may also be set in the TOML file given by --config.
#[derive(ClapArgs)]
pub struct Args {
    /// Data directory [default: $XDG_STATE_HOME/writ or ~/.local/state/writ].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// gRPC listen address [default: 127.0.0.1:8443].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Trust domain [default: cluster.local].
    #[arg(long)]
    trust_domain: Option<TrustDomain>,
    /// CA key type when creating a CA: ec-p256, ec-p384, rsa-2048, rsa-3072, rsa-4096 [default: ec-p256].
    #[arg(long)]
    ca_key_type: Option<KeyType>,
    /// Leaf TTL when none is requested [default: 1h].
    #[arg(long)]
    default_ttl: Option<Ttl>,
    /// Shortest leaf TTL [default: 1m].
    #[arg(long)]
    min_ttl: Option<Ttl>,
    /// Longest leaf TTL; longer requests are clamped [default: 24h].
    #[arg(long)]
    max_ttl: Option<Ttl>,
    /// Intermediate CA lifetime [default: 30d].
    #[arg(long)]
    intermediate_ttl: Option<Ttl>,
    /// How long a prepared root is published before it may be activated [default: 10m].
    #[arg(long)]
    root_propagation: Option<Ttl>,
    /// Admin socket path [default: <data-dir>/admin.sock].
    #[arg(long)]
    admin_socket: Option<PathBuf>,
    /// DNS name for the server's certificate (repeatable) [default: localhost].
    #[arg(long = "server-dns")]
    server_dns: Vec<String>,
    /// IP address for the server's certificate (repeatable) [default: 127.0.0.1].
    #[arg(long = "server-ip")]
    server_ips: Vec<IpAddr>,
    /// Default bootstrap token lifetime [default: 15m].
    #[arg(long)]
    token_ttl: Option<Ttl>,
    /// Longest bootstrap token lifetime an admin may mint [default: 24h].
    #[arg(long)]
    token_max_ttl: Option<Ttl>,
    /// How long used, revoked and expired token records are kept [default: 7d].
    #[arg(long)]
    token_retention: Option<Ttl>,
    /// A former trust domain whose workloads may still renew, into --trust-domain
    /// (repeatable; for trust-domain migrations).
    #[arg(long = "trust-domain-alias")]
    trust_domain_aliases: Vec<TrustDomain>,
    /// Serve Prometheus metrics (/metrics) and readiness (/healthz, /readyz) over plain
    /// HTTP on this address (port 0 picks one) [default: off].
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
    /// Seal the audit journal's live file as a segment (`audit-<first seq>.jsonl`) once it
    /// holds this many bytes; sealed segments never change and may be archived
    /// [default: 268435456, 256 MiB].
    #[arg(long)]
    audit_segment_bytes: Option<u64>,
    /// File holding the passphrase the CA's private keys are encrypted under (mode 0600);
    /// else WRIT_PASSPHRASE is read.
    #[arg(long)]
    passphrase_file: Option<PathBuf>,
    /// On SIGTERM/SIGINT, how long requests in flight may take to finish before they are
    /// cut; bundle watches end at once so their clients reconnect [default: 10s].
    #[arg(long)]
    shutdown_grace: Option<Ttl>,
    /// Development mode: with no passphrase, store the CA's keys UNENCRYPTED (logged).
    #[arg(long)]
    dev: bool,
    /// Run even with effective uid 0 (containers, CI); otherwise root is refused.
    #[arg(long)]
    allow_root: bool,
    /// TOML config file; flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Print the start-up summary as text or JSON.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = crate::cli_defaults::output())]
    output: Format,
}

/// Runs the server until SIGINT or SIGTERM.
pub async fn run(a: Args) -> anyhow::Result<()> {
    writ_server::custody::refuse_root(a.allow_root)?;
    let file = match &a.config {
        Some(p) => ServerConfig::load(p)?,
        None => ServerConfig::default(),
    };
    let flags = ServerConfig {
        data_dir: a.data_dir,
        listen: a.listen,
        trust_domain: a.trust_domain,
        ca_key_type: a.ca_key_type,
        default_ttl: a.default_ttl,
        min_ttl: a.min_ttl,
        max_ttl: a.max_ttl,
        intermediate_ttl: a.intermediate_ttl,
        admin_socket: a.admin_socket,
        root_propagation: a.root_propagation,
        server_dns: (!a.server_dns.is_empty()).then_some(a.server_dns),
        server_ips: (!a.server_ips.is_empty()).then_some(a.server_ips),
        token_ttl: a.token_ttl,
        token_max_ttl: a.token_max_ttl,
        token_retention: a.token_retention,
        trust_domain_aliases: (!a.trust_domain_aliases.is_empty())
            .then_some(a.trust_domain_aliases),
        metrics_listen: a.metrics_listen,
        audit_segment_bytes: a.audit_segment_bytes,
        passphrase_file: a.passphrase_file,
        dev: a.dev.then_some(true),
        shutdown_grace: a.shutdown_grace,
        ..Default::default()
    };
    let settings = file.merge(flags).resolve()?;
    let td = settings.ca.trust_domain.clone();
    let grace = settings.shutdown_grace;
    let shutdown = CancellationToken::new();
    let mut running = writ_server::start(settings, shutdown.clone())
        .await
        .context("starting the server")?;
    // The CA serves whether or not anyone reads this: a supervisor that took the first
    // line and closed the pipe must not take the server down with it.
    if let Err(e) = summary(&running, &td, a.output) {
        tracing::warn!("the start-up summary was not printed ({e}); serving anyway");
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        r = &mut running.done => return Ok(r??),
    }
    tracing::info!(?grace, "shutting down: answering the requests in flight");
    shutdown.cancel();
    if running.drained(grace).await? {
        tracing::info!("stopped");
    } else {
        tracing::warn!("connections still open when the shutdown grace ran out were cut");
    }
    Ok(())
}

/// Prints what was started, and where, on stdout.
fn summary(
    running: &writ_server::Running,
    td: &TrustDomain,
    format: Format,
) -> Result<(), StdoutError> {
    match format {
        Format::Json => outln!(
            "{}",
            json!({
                "listen": running.addr.to_string(),
                "metrics_listen": running.metrics_addr.map(|a| a.to_string()),
                "data_dir": running.data_dir,
                "admin_socket": running.admin_socket,
                "trust_domain": td.to_string(),
                "root_fingerprint": running.root_fingerprint,
                "created": running.created,
            })
        )?,
        Format::Text => {
            outln!(
                "writ server ({})",
                if running.created {
                    "new CA created"
                } else {
                    "existing CA"
                }
            )?;
            outln!("  data dir:      {}", running.data_dir.display())?;
            outln!("  listening on:  {}", running.addr)?;
            outln!("  admin socket:  {}", running.admin_socket.display())?;
            if let Some(m) = running.metrics_addr {
                outln!("  metrics:       http://{m}/metrics")?;
            }
            outln!("  trust domain:  {td}")?;
            outln!("  root sha256:   {}", running.root_fingerprint)?;
        }
    }
    Ok(())
}
