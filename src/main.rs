//! `writ`: the command-line interface. It parses flags and calls the crates; the work is
//! done in `writ-server`, `writ-agent` and `writ-ca`.
#![forbid(unsafe_code)]

mod admin_client;
mod cli_defaults;
mod cmd;
mod output;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The log filter from `WRIT_LOG`, else `default`. A value that does not parse is said
/// once on stderr instead of being dropped without a word.
fn log_filter(default: &str) -> tracing_subscriber::EnvFilter {
    use tracing_subscriber::EnvFilter;
    match std::env::var("WRIT_LOG") {
        Err(_) => EnvFilter::new(default),
        Ok(spec) => EnvFilter::try_new(&spec).unwrap_or_else(|e| {
            eprintln!(
                "warning: WRIT_LOG={spec:?} is not a log filter ({e}); logging at {default}. \
                 Examples: WRIT_LOG=debug, WRIT_LOG=warn,writ_server=debug"
            );
            EnvFilter::new(default)
        }),
    }
}

/// The level a command logs at unless `WRIT_LOG` says otherwise: the long-running ones
/// (`server`, `agent`) and the load generator log what they do at info; a one-shot
/// command prints its own result, so only warnings and errors join it on stderr.
fn default_log_level(command: &Command) -> &'static str {
    match command {
        Command::Server(_) | Command::Bench(_) => "info",
        Command::Agent(a) if a.runs_the_agent() => "info",
        _ => "warn",
    }
}

/// jemalloc, not glibc's malloc: a renewal's larger buffers miss glibc's per-thread cache
/// and the server's workers meet on its arena locks; jemalloc takes 10% off the server's
/// CPU per certificate (BENCHMARKS.md, tenth round).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// writ: a certificate authority and workload-identity service (SPIFFE X509-SVIDs).
#[derive(Parser)]
#[command(
    name = "writ",
    version,
    about,
    long_about = "writ: a certificate authority and workload-identity service. It issues \
short-lived X.509 SPIFFE certificates (X509-SVIDs) over gRPC with TLS 1.3, only for \
identities the caller has proven: a certificate it holds (renewal), a one-time bootstrap \
token, a platform JWT (Kubernetes service-account token, OIDC; also over Istio's CA \
protocol), or an administrator on the local admin socket.",
    after_long_help = MANUAL,
    propagate_version = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The manual-page sections of `writ --help`.
const MANUAL: &str = "\
EXAMPLES:
    writ server --config /etc/writ/server.toml          run the CA
    writ token create --spiffe-id spiffe://example.org/vm/web-1 > web-1.token
    writ bootstrap --server ca:8443 --token-file web-1.token --out-dir /var/lib/writ-agent
    writ agent --server ca:8443 --out-dir /var/lib/writ-agent --workload-api-socket /run/writ/agent.sock
    writ root rotate                                     zero-downtime root rotation
    writ identity deny spiffe://example.org/vm/web-1     stop a compromised workload
    writ config check /etc/writ/server.toml              exit 0 clean, 1 warnings, 2 errors
    writ healthcheck --server ca:8443 --data-dir /var/lib/writ

FILES:
    /etc/writ/server.toml, /etc/writ/agent.toml          configuration (flags override them)
    /var/lib/writ                                         CA state (sled), admin.sock; mode 0700
    $XDG_CONFIG_HOME/writ/cli.toml                        your defaults for admin and agent commands
    <out-dir>/cert.pem, key.pem, bundle.pem               a workload's identity, replaced as a set

ENVIRONMENT:
    WRIT_LOG          log filter (error, warn, info, debug; per module: writ_server=debug);
                      default info for server, agent and bench, warn for one-shot commands
    WRIT_SERVER       default --server for client commands
    WRIT_PASSPHRASE   the CA key passphrase when no --passphrase-file is given
    WRIT_CONFIG       the CLI defaults file (instead of cli.toml)

EXIT STATUS:
    0 success; 1 failure (the message says what was wrong and what to do); 2 a usage
    error (flags, cli.toml, WRIT_CONFIG); `config check`: 1 warnings, 2 errors;
    `healthcheck`: 1 when not SERVING. Output cut short by its reader (`| head`) is not
    a failure.

Every command that prints data takes -o json. Durations: 90s, 15m, 24h, 30d. Key types:
ec-p256, ec-p384, rsa-2048, rsa-3072, rsa-4096. Run `writ <command> --help` for each
command's flags. Documentation: README.md, ARCHITECTURE.md, SECURITY.md.
";

#[derive(Subcommand)]
enum Command {
    /// Run the CA server (creates a CA on first start).
    Server(cmd::server::Args),
    /// Issue X.509 certificates through the admin socket.
    #[command(subcommand)]
    X509(cmd::x509::Command),
    /// Show the trust bundle.
    #[command(subcommand)]
    Bundle(cmd::bundle::Command),
    /// The issuance log.
    #[command(subcommand)]
    Certs(cmd::certs::Command),
    /// Inspect certificates.
    #[command(subcommand)]
    Cert(cmd::cert::Command),
    /// Renew a certificate once over mTLS with the certificate itself.
    Renew(cmd::renew::Args),
    /// Keep a workload's identity valid: rotate, follow the bundle, serve the Workload API.
    Agent(cmd::agent::AgentCommand),
    /// Load a running server and report certificates/s, latency and CPU per certificate.
    Bench(cmd::bench::Args),
    /// Rotate the root with zero downtime, or import an external CA.
    #[command(subcommand)]
    Root(cmd::root::Command),
    /// Check configuration files.
    #[command(subcommand)]
    Config(cmd::config::Command),
    /// One-time bootstrap tokens for machines' first certificates.
    #[command(subcommand)]
    Token(cmd::token::Command),
    /// Get a first certificate by redeeming a bootstrap token.
    Bootstrap(cmd::bootstrap::Args),
    /// Deny or allow identities: nothing is issued for a denied one.
    #[command(subcommand)]
    Identity(cmd::identity::Command),
    /// The hash-chained audit log of issuance and admin actions.
    #[command(subcommand)]
    Audit(cmd::audit::Command),
    /// Ask a running server's gRPC health service whether it can sign (exit 0 when SERVING).
    Healthcheck(cmd::healthcheck::Args),
}

/// The server and the load generator use every core; everything else (the agent above
/// all, which lives beside each workload) runs on one thread: a multi-threaded runtime
/// costs the agent several MiB of per-thread stacks and allocator arenas for nothing, as
/// it does a few milliseconds of work per renewal.
fn runtime_for(command: &Command) -> std::io::Result<tokio::runtime::Runtime> {
    match command {
        Command::Server(_) | Command::Bench(_) => tokio::runtime::Runtime::new(),
        _ => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            // File writes and key generation run on blocking threads; let them go soon
            // after instead of lingering between renewals.
            .max_blocking_threads(4)
            .thread_keep_alive(std::time::Duration::from_secs(1))
            .build(),
    }
}

fn main() -> ExitCode {
    // jsonwebtoken (bootstrap tokens) panics without a process-wide crypto provider.
    writ_bootstrap::install_crypto_provider();
    // Before parsing: clap takes its defaults for --server and -o from cli.toml.
    if let Err(e) = cli_defaults::load() {
        eprintln!("error: {e:#}");
        return ExitCode::from(2);
    }
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(log_filter(default_log_level(&cli.command)))
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal: journald, container runtimes and log
        // files would store the escape codes in every line.
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .init();
    let runtime = match runtime_for(&cli.command) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // `config check` reports through its exit code (0 clean, 1 warnings, 2 errors).
    let command = match cli.command {
        Command::Config(c) => {
            return match cmd::config::run(c) {
                Ok(code) => ExitCode::from(code),
                Err(e) if output::is_broken_pipe(&e) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(2)
                }
            };
        }
        other => other,
    };
    let result = runtime.block_on(async {
        match command {
            Command::Server(a) => cmd::server::run(a).await,
            Command::X509(c) => cmd::x509::run(c).await,
            Command::Bundle(c) => cmd::bundle::run(c).await,
            Command::Certs(c) => cmd::certs::run(c).await,
            Command::Cert(c) => cmd::cert::run(c),
            Command::Renew(a) => cmd::renew::run(a).await,
            Command::Agent(c) => cmd::agent::run_command(c).await,
            Command::Bench(a) => cmd::bench::run(a).await,
            Command::Root(c) => cmd::root::run(c).await,
            Command::Config(_) => unreachable!("handled before the runtime starts"),
            Command::Token(c) => cmd::token::run(c).await,
            Command::Bootstrap(a) => cmd::bootstrap::run(a).await,
            Command::Identity(c) => cmd::identity::run(c).await,
            Command::Audit(c) => cmd::audit::run(c).await,
            Command::Healthcheck(a) => cmd::healthcheck::run(a).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // `writ ... | head -1`: the reader took what it wanted and went. Like `cat` ended by
        // SIGPIPE, or ripgrep, stop quietly; it is no failure.
        Err(e) if output::is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
