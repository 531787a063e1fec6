//! `writ bench`: load a running server and report what it costs.

use clap::{Args as ClapArgs, ValueEnum};
use writ_agent::files::Identity;
use writ_bench::{BenchOptions, Mode, Report};
use writ_ca::{KeyType, PrivateKey, SpiffeId, Ttl, build_csr};
use writ_proto::admin::{CreateTokenRequest, MintRequest, StatusRequest};

use crate::admin_client::{AdminTarget, status};
use crate::output::{self, Format};

/// `writ bench` flags.
#[derive(ClapArgs)]
pub struct Args {
    /// The writ server, host:port.
    #[arg(long, env = "WRIT_SERVER", default_value = crate::cli_defaults::server())]
    server: String,
    /// renew: long-lived connections; handshake: a new mTLS connection per renewal;
    /// bootstrap: mint tokens first, then exchange them.
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
    /// Tokens to mint for bootstrap mode.
    #[arg(long, default_value_t = 2000)]
    tokens: usize,
    /// The server's pid, when it is not the one the admin socket reports.
    #[arg(long)]
    server_pid: Option<u32>,
    #[command(flatten)]
    target: AdminTarget,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = crate::cli_defaults::output())]
    output: Format,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ModeArg {
    Renew,
    Handshake,
    Bootstrap,
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
        let id = SpiffeId::parse(&format!("spiffe://{}/bench/client", st.trust_domain))?;
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
        identity = Some(Identity::new(
            resp.chain,
            key,
            resp.bundle.map(|b| b.roots).unwrap_or_default(),
        )?);
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
        progress: a.output == Format::Text,
    })
    .await?;
    match a.output {
        Format::Json => output::json(&report)?,
        Format::Text => print_text(&report),
    }
    Ok(())
}

fn print_text(r: &Report) {
    println!(
        "mode {:?}: {} connections, {} in flight, {:.1}s",
        r.mode, r.connections, r.concurrency, r.seconds
    );
    println!(
        "  certificates:   {} ({:.0}/s)",
        r.certificates, r.per_second
    );
    println!(
        "  latency ms:     p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
        r.latency.p50_ms, r.latency.p90_ms, r.latency.p99_ms, r.latency.max_ms
    );
    if r.latency.errors.is_empty() {
        println!("  errors:         none");
    }
    for (k, v) in &r.latency.errors {
        println!("  errors:         {k}: {v}");
    }
    println!(
        "  crypto cost:    {:.1} µs/certificate on one core (ceiling {:.0}/s on this machine)",
        r.crypto_us_per_cert, r.crypto_ceiling_per_second
    );
    match (r.server_cpu_us_per_cert, r.overhead_ratio) {
        (Some(cpu), Some(ratio)) => {
            println!("  server CPU:     {cpu:.1} µs/certificate ({ratio:.2}× the crypto cost)")
        }
        _ => println!("  server CPU:     unknown (pass --server-pid)"),
    }
}
