//! `writ agent`, `writ agent wait`, `writ agent status`.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use writ_agent::config::AgentFileConfig;
use writ_agent::files::read_identity;
use writ_agent::platform::{FirstTrust, JwtSource};
use writ_agent::rotation::{AgentOptions, run};
use writ_agent::schedule::Schedule;
use writ_agent::status::AgentStatus;
use writ_ca::{KeyType, TrustDomain, Ttl};

use crate::output::{self, Format, OutputArg, outln};

/// `writ agent`: run the agent, or one of its helpers.
#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AgentCommand {
    #[command(subcommand)]
    sub: Option<Sub>,
    #[command(flatten)]
    run: RunArgs,
}

impl AgentCommand {
    /// Whether this runs the agent itself rather than one of its one-shot subcommands.
    pub fn runs_the_agent(&self) -> bool {
        self.sub.is_none()
    }
}

#[derive(Subcommand)]
enum Sub {
    /// Exit 0 as soon as a valid certificate is in place (for ExecStartPre, init containers).
    Wait(WaitArgs),
    /// Show the identity in an out dir and what the agent last did.
    Status(StatusArgs),
    /// Remove what the agent wrote (identity files, socket, status and lock files).
    Uninstall(super::agent_uninstall::Args),
}

/// Flags of the agent itself; each may also be set in the --config TOML file.
#[derive(Args, Default)]
struct RunArgs {
    /// The writ server, host:port; several replicas comma-separated or the flag repeated
    /// (renewals and the bundle watch skip one that is down or unavailable).
    #[arg(long, env = "WRIT_SERVER", value_delimiter = ',', num_args = 1)]
    server: Vec<String>,
    /// Directory for cert.pem, key.pem (0600) and bundle.pem, replaced atomically as a set.
    #[arg(long)]
    out_dir: Option<PathBuf>,
    /// One-time bootstrap token for the first certificate (deleted once used).
    #[arg(long)]
    bootstrap_token_file: Option<PathBuf>,
    /// Platform JWT (a Kubernetes projected service-account token) proving the identity,
    /// for the first certificate and every renewal; re-read each time.
    #[arg(long, conflicts_with = "bootstrap_token_file")]
    jwt_file: Option<PathBuf>,
    /// With --jwt-file: PEM file of the CA's roots, to trust the CA on first contact.
    #[arg(long, conflicts_with = "ca_fingerprint")]
    ca_bundle: Option<PathBuf>,
    /// With --jwt-file: the CA root's SHA-256 fingerprint, to trust it on first contact.
    #[arg(long)]
    ca_fingerprint: Option<String>,
    /// With --jwt-file: the CA's trust domain [default: cluster.local].
    #[arg(long)]
    trust_domain: Option<TrustDomain>,
    /// Serve the SPIFFE Workload API on this Unix socket.
    #[arg(long)]
    workload_api_socket: Option<PathBuf>,
    /// Command run (with sh -c) after every update of the files, e.g. to reload a service.
    #[arg(long)]
    on_rotate: Option<String>,
    /// Renew after this fraction of the certificate's lifetime [default: 0.5].
    #[arg(long)]
    renew_at: Option<f64>,
    /// Random jitter around --renew-at, as a fraction of the lifetime [default: 0.1].
    #[arg(long)]
    jitter: Option<f64>,
    /// Key type of each new key [default: ec-p256].
    #[arg(long)]
    key_type: Option<KeyType>,
    /// Requested certificate lifetime [default: the server's default].
    #[arg(long)]
    ttl: Option<Ttl>,
    /// Serve Prometheus metrics (/metrics) and readiness (/healthz: a valid certificate is
    /// held) over plain HTTP on this address; the bound address is in `writ agent status`.
    #[arg(long)]
    metrics_listen: Option<std::net::SocketAddr>,
    /// A uid whose processes may call the Workload API (repeatable) [default: the agent's
    /// own uid and root; giving any --workload-uid or --workload-gid replaces it].
    #[arg(long = "workload-uid", value_name = "UID")]
    workload_uid: Vec<u32>,
    /// A gid whose processes (by their primary group) may call the Workload API (repeatable).
    #[arg(long = "workload-gid", value_name = "GID")]
    workload_gid: Vec<u32>,
    /// TOML config file; flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
}

#[derive(Args)]
struct WaitArgs {
    /// The agent's out dir.
    #[arg(long)]
    out_dir: PathBuf,
    /// Give up after this long.
    #[arg(long, default_value = "60s")]
    timeout: Ttl,
}

#[derive(Args)]
struct StatusArgs {
    /// The agent's out dir.
    #[arg(long)]
    out_dir: PathBuf,
    #[command(flatten)]
    output: OutputArg,
}

/// Runs `writ agent ...`.
pub async fn run_command(c: AgentCommand) -> anyhow::Result<()> {
    match c.sub {
        Some(Sub::Wait(a)) => wait(a).await,
        Some(Sub::Status(a)) => status(a),
        Some(Sub::Uninstall(a)) => super::agent_uninstall::run(a),
        None => run_agent(c.run).await,
    }
}

async fn run_agent(a: RunArgs) -> anyhow::Result<()> {
    let file = match &a.config {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            AgentFileConfig::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?
        }
        None => AgentFileConfig::default(),
    };
    let server = Some(a.server.join(","))
        .filter(|s| !s.is_empty())
        .or(file.server)
        .or_else(|| crate::cli_defaults::server().map(str::to_owned))
        .context("--server HOST:PORT is required")?;
    let out_dir = a
        .out_dir
        .or(file.out_dir)
        .context("--out-dir DIR is required")?;
    let d = Schedule::default();
    let schedule = Schedule::new(
        a.renew_at.or(file.renew_at).unwrap_or(d.renew_at),
        a.jitter.or(file.jitter).unwrap_or(d.jitter),
    )
    .map_err(anyhow::Error::msg)?;
    let jwt = match a.jwt_file.or(file.jwt_file) {
        None => None,
        Some(jwt_file) => {
            let first_trust = match (
                a.ca_bundle.or(file.ca_bundle),
                a.ca_fingerprint.or(file.ca_fingerprint),
            ) {
                (Some(b), None) => FirstTrust::BundleFile(b),
                (None, Some(f)) if is_fingerprint(&f) => FirstTrust::Fingerprint(f),
                (None, Some(f)) => anyhow::bail!(
                    "--ca-fingerprint {f:?} is not a SHA-256 fingerprint (64 lowercase hex digits, as `writ server` prints)"
                ),
                (Some(_), Some(_)) => {
                    anyhow::bail!("give --ca-bundle or --ca-fingerprint, not both")
                }
                (None, None) => anyhow::bail!(
                    "--jwt-file needs --ca-bundle FILE or --ca-fingerprint SHA256 to recognise the CA on first contact"
                ),
            };
            let trust_domain = match a.trust_domain.or(file.trust_domain) {
                Some(td) => td,
                None => TrustDomain::parse("cluster.local")?,
            };
            Some(JwtSource {
                jwt_file,
                trust_domain,
                first_trust,
            })
        }
    };
    // The flags replace the file's lists, and either replaces the default.
    let (uids, gids) = if a.workload_uid.is_empty() && a.workload_gid.is_empty() {
        (file.workload_uids, file.workload_gids)
    } else {
        (Some(a.workload_uid), Some(a.workload_gid))
    };
    let workload_callers = match (uids, gids) {
        (None, None) => writ_agent::workload::Callers::default(),
        (u, g) => writ_agent::workload::Callers::new(u.unwrap_or_default(), g.unwrap_or_default())
            .map_err(anyhow::Error::msg)?,
    };
    let opts = AgentOptions {
        workload_callers,
        jwt,
        server,
        out_dir,
        bootstrap_token_file: a.bootstrap_token_file.or(file.bootstrap_token_file),
        workload_api_socket: a.workload_api_socket.or(file.workload_api_socket),
        on_rotate: a.on_rotate.or(file.on_rotate),
        on_rotate_timeout: Duration::from_secs(30),
        schedule,
        key_type: a.key_type.or(file.key_type).unwrap_or(KeyType::EcP256),
        ttl: a.ttl.or(file.ttl).map(Ttl::duration),
        metrics_listen: a.metrics_listen.or(file.metrics_listen),
    };
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => return,
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        stop.cancel();
    });
    run(opts, shutdown).await?;
    Ok(())
}

async fn wait(a: WaitArgs) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + a.timeout.duration();
    let mut last = String::from("no certificate yet");
    loop {
        match read_identity(&a.out_dir) {
            Ok(Some(id)) => match id.leaf_info() {
                Ok(leaf) if leaf.not_after > SystemTime::now() => return Ok(()),
                Ok(leaf) => {
                    last = format!(
                        "the certificate expired at {}",
                        humantime::format_rfc3339_seconds(leaf.not_after)
                    )
                }
                Err(e) => last = e.to_string(),
            },
            Ok(None) => {}
            Err(e) => last = e.to_string(),
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!(
                "no valid certificate in {} after {} ({last}); is `writ agent --out-dir {}` running and able to reach the CA?",
                a.out_dir.display(),
                a.timeout,
                a.out_dir.display()
            );
        }
        // A short-lived readiness probe, not the agent: a brief poll is the simple, portable way.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn status(a: StatusArgs) -> anyhow::Result<()> {
    let identity = read_identity(&a.out_dir)?
        .with_context(|| format!("no identity in {}", a.out_dir.display()))?;
    let leaf = identity.leaf_info()?;
    let st = AgentStatus::read(&a.out_dir);
    let roots: Vec<String> = identity
        .bundle
        .iter()
        .map(|r| writ_ca::x509::sha256_hex(r))
        .collect();
    let now = SystemTime::now();
    match a.output.format {
        Format::Json => output::json(&json!({
            "spiffe_id": leaf.spiffe_id()?.to_string(),
            "serial": leaf.serial,
            "not_after": humantime::format_rfc3339_seconds(leaf.not_after).to_string(),
            "valid": leaf.not_after > now,
            "next_renewal": st.as_ref().and_then(|s| s.next_renewal.clone()),
            "rotations": st.as_ref().map(|s| s.rotations),
            "bundle_updates": st.as_ref().map(|s| s.bundle_updates),
            "bundle_roots": roots,
            "bundle_transport": st.as_ref().and_then(|s| s.bundle_transport.clone()),
            "last_error": st.as_ref().and_then(|s| s.last_error.clone()),
            "agent_pid": st.as_ref().map(|s| s.pid),
            "metrics_listen": st.as_ref().and_then(|s| s.metrics_listen.clone()),
        }))?,
        Format::Text => {
            outln!("SPIFFE ID:     {}", leaf.spiffe_id()?)?;
            outln!("serial:        {}", leaf.serial)?;
            outln!(
                "not after:     {}{}",
                humantime::format_rfc3339_seconds(leaf.not_after),
                if leaf.not_after > now {
                    ""
                } else {
                    " (EXPIRED)"
                }
            )?;
            match &st {
                Some(s) => {
                    outln!(
                        "next renewal:  {}",
                        s.next_renewal.as_deref().unwrap_or("-")
                    )?;
                    outln!(
                        "rotations:     {} (bundle updates {})",
                        s.rotations,
                        s.bundle_updates
                    )?;
                    if let Some(t) = &s.bundle_transport {
                        outln!("bundle watch:  {t}")?;
                    }
                    outln!(
                        "last error:    {}",
                        s.last_error.as_deref().unwrap_or("none")
                    )?;
                    if let Some(m) = &s.metrics_listen {
                        outln!("metrics:       http://{m}/metrics")?;
                    }
                }
                None => outln!("agent:         no status file (agent not started here)")?,
            }
            for r in roots {
                outln!("bundle root:   {r}")?;
            }
        }
    }
    Ok(())
}

/// 64 lowercase hex digits.
fn is_fingerprint(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}
