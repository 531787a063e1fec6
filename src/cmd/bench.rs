//! `writ bench`: load a running server and report what it costs.

use clap::{Args as ClapArgs, ValueEnum};
use writ_agent::files::Identity;
use writ_agent::watch::Transport;
use writ_bench::watch::WatchOptions;
use writ_bench::{BenchOptions, Mode, Report};
use writ_ca::{KeyType, PrivateKey, SpiffeId, Ttl, build_csr};
use writ_proto::admin::{CreateTokenRequest, MintRequest, RootPrepareRequest, StatusRequest};

use crate::admin_client::{AdminTarget, status};
use crate::output::{self, Format, OutputArg, outln};

type Admin = writ_proto::admin::admin_client::AdminClient<tonic::transport::Channel>;

/// `writ bench` flags.
#[derive(ClapArgs)]
pub struct Args {
    /// The writ server, host:port.
    #[arg(long, env = "WRIT_SERVER", default_value = crate::cli_defaults::server())]
    server: String,
    /// renew: long-lived connections; handshake: a new mTLS connection per renewal;
    /// bootstrap: mint tokens first, then exchange them; watch: hold --watchers
    /// bundle-watch streams, then `root prepare` and time its arrival (changes the CA's
    /// root rotation state: use a test server).
    #[arg(long, value_enum, default_value_t = ModeArg::Renew)]
    mode: ModeArg,
    /// Long-lived connections (renew mode).
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// How long to run.
    #[arg(long, default_value = "10s")]
    duration: Ttl,
    /// Key type of the CSRs.
    #[arg(long, default_value = "ec-p256")]
    key_type: KeyType,
    /// Bundle-watch streams to hold (watch mode), each on its own connection.
    #[arg(long, default_value_t = 1000)]
    watchers: usize,
    /// What the watchers watch over (watch mode): auto (push when the server offers it,
    /// as the agent does), push or grpc.
    #[arg(long, default_value = "auto")]
    watch_transport: Transport,
    /// Tokens to mint for bootstrap mode.
    #[arg(long, default_value_t = 2000)]
    tokens: usize,
    /// The server's pid, when it is not the one the admin socket reports.
    #[arg(long)]
    server_pid: Option<u32>,
    #[command(flatten)]
    target: AdminTarget,
    #[command(flatten)]
    output: OutputArg,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ModeArg {
    Renew,
    Handshake,
    Bootstrap,
    Watch,
}

/// Runs the benchmark.
pub async fn run(a: Args) -> anyhow::Result<()> {
    let mut admin = a.target.connect().await?;
    let st = admin
        .status(StatusRequest {})
        .await
        .map_err(status)?
        .into_inner();
    let ca_key_type: KeyType = st.ca_key_type.parse().unwrap_or(KeyType::EcP256);
    let server_pid = a.server_pid.or((st.pid != 0).then_some(st.pid));
    let mode = match a.mode {
        ModeArg::Renew => Mode::Renew,
        ModeArg::Handshake => Mode::Handshake,
        ModeArg::Bootstrap => Mode::Bootstrap,
        ModeArg::Watch => {
            let identity = bench_identity(&mut admin, &st.trust_domain).await?;
            return watch(a, identity, server_pid, admin).await;
        }
    };
    let mut identity = None;
    let mut tokens = Vec::new();
    if mode == Mode::Bootstrap {
        eprintln!("minting {} bootstrap tokens…", a.tokens);
        for i in 0..a.tokens {
            let t = admin
                .create_token(CreateTokenRequest {
                    spiffe_id: format!("spiffe://{}/bench/vm-{i}", st.trust_domain),
                    ttl_seconds: 3600,
                    dns_names: Vec::new(),
                })
                .await
                .map_err(status)?
                .into_inner();
            tokens.push(t.token);
        }
    } else {
        identity = Some(bench_identity(&mut admin, &st.trust_domain).await?);
    }
    let report = writ_bench::run(BenchOptions {
        server: a.server,
        mode,
        connections: a.connections,
        concurrency: a.concurrency,
        duration: a.duration.duration(),
        key_type: a.key_type,
        identity,
        tokens,
        server_pid,
        ca_key_type,
        progress: a.output.format == Format::Text,
    })
    .await?;
    match a.output.format {
        Format::Json => output::json(&report)?,
        Format::Text => print_text(&report)?,
    }
    Ok(())
}

/// A client identity minted through the admin socket.
async fn bench_identity(admin: &mut Admin, trust_domain: &str) -> anyhow::Result<Identity> {
    let id = SpiffeId::parse(&format!("spiffe://{trust_domain}/bench/client"))?;
    let key = PrivateKey::generate(KeyType::EcP256)?;
    let resp = admin
        .mint(MintRequest {
            spiffe_id: id.to_string(),
            csr: build_csr(&key, &id, &[])?,
            ttl_seconds: 3600,
            dns_names: Vec::new(),
        })
        .await
        .map_err(status)?
        .into_inner();
    Ok(Identity::new(
        resp.chain,
        key,
        resp.bundle.map(|b| b.roots).unwrap_or_default(),
    )?)
}

async fn watch(
    a: Args,
    identity: Identity,
    server_pid: Option<u32>,
    mut admin: Admin,
) -> anyhow::Result<()> {
    let report = writ_bench::watch::run(
        WatchOptions {
            server: a.server,
            watchers: a.watchers,
            transport: a.watch_transport,
            identity,
            server_pid,
            timeout: std::time::Duration::from_secs(30),
            progress: a.output.format == Format::Text,
        },
        || async move {
            admin
                .root_prepare(RootPrepareRequest {
                    key_type: String::new(),
                })
                .await
                .map(|_| ())
                .map_err(|s| writ_bench::Error::Options(format!("root prepare: {}", s.message())))
        },
    )
    .await?;
    match a.output.format {
        Format::Json => output::json(&report)?,
        Format::Text => {
            let mib = |v: Option<f64>| v.map_or("?".into(), |v| format!("{v:.1} MiB"));
            outln!(
                "watch: {} of {} open in {:.1}s over {}",
                report.connected,
                output::count(report.watchers as u64, "stream", "streams"),
                report.connect_seconds,
                report.transport
            )?;
            outln!(
                "  server memory:  {} before, {} with the streams ({} KiB per stream)",
                mib(report.server_rss_before_mib),
                mib(report.server_rss_with_watchers_mib),
                report
                    .server_kib_per_watcher
                    .map_or("?".into(), |k| format!("{k:.1}"))
            )?;
            outln!(
                "  root prepare reached {} ({} within 2 s): p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
                report.reached,
                report.reached_within_2s,
                report.propagation_p50_ms,
                report.propagation_p99_ms,
                report.propagation_max_ms
            )?;
        }
    }
    Ok(())
}

fn print_text(r: &Report) -> anyhow::Result<()> {
    outln!(
        "mode {:?}: {} connections, {} in flight, {:.1}s",
        r.mode,
        r.connections,
        r.concurrency,
        r.seconds
    )?;
    outln!(
        "  certificates:   {} ({:.0}/s)",
        r.certificates,
        r.per_second
    )?;
    outln!(
        "  latency ms:     p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
        r.latency.p50_ms,
        r.latency.p90_ms,
        r.latency.p99_ms,
        r.latency.max_ms
    )?;
    if r.latency.errors.is_empty() {
        outln!("  errors:         none")?;
    }
    for (k, v) in &r.latency.errors {
        outln!("  errors:         {k}: {v}")?;
    }
    outln!(
        "  crypto cost:    {:.1} µs/certificate on one core (before the load {:.1}, after {:.1}; ceiling {:.0}/s on this machine)",
        r.crypto_us_per_cert,
        r.crypto_us_before_load,
        r.crypto_us_after_load,
        r.crypto_ceiling_per_second
    )?;
    match (r.server_cpu_us_per_cert, r.overhead_ratio) {
        (Some(cpu), Some(ratio)) => {
            outln!("  server CPU:     {cpu:.1} µs/certificate ({ratio:.2}× the crypto cost)")?
        }
        _ => outln!("  server CPU:     unknown (pass --server-pid)")?,
    }
    if let Some(ceiling) = r.server_ceiling_per_second {
        outln!(
            "  server alone:   {ceiling:.0}/s on this machine's cores at that CPU per certificate (load generator elsewhere)"
        )?;
    }
    if let Some(cpu) = r.client_cpu_us_per_cert {
        outln!("  client CPU:     {cpu:.1} µs/certificate (this load generator)")?;
    }
    Ok(())
}
