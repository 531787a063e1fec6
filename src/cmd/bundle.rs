//! `writ bundle show`.

use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;
use writ_ca::{TrustBundle, TrustDomain};
use writ_proto::v1::GetBundleRequest;

use crate::admin_client::{AdminTarget, status};
use crate::output::{self, Format, out};

/// Bundle commands.
#[derive(Subcommand)]
pub enum Command {
    /// Print the current trust bundle.
    Show(ShowArgs),
}

/// How to print the bundle.
#[derive(Clone, Copy, Debug, Default, ValueEnum)]
pub enum BundleFormat {
    /// Concatenated PEM certificates.
    #[default]
    Pem,
    /// The SPIFFE bundle format (JWKS with x5c, spiffe_sequence, spiffe_refresh_hint).
    Spiffe,
}

/// `writ bundle show` flags.
#[derive(Args)]
pub struct ShowArgs {
    /// pem or spiffe.
    #[arg(long, value_enum, default_value_t)]
    format: BundleFormat,
    #[command(flatten)]
    target: AdminTarget,
    /// Output format (json wraps the PEM with the bundle's metadata).
    #[arg(short = 'o', long = "output", value_enum, default_value_t = crate::cli_defaults::output())]
    output: Format,
}

/// Runs a bundle command.
pub async fn run(c: Command) -> anyhow::Result<()> {
    let Command::Show(a) = c;
    let mut admin = a.target.connect().await?;
    let b = admin
        .get_bundle(GetBundleRequest {})
        .await
        .map_err(status)?
        .into_inner();
    let bundle = TrustBundle {
        trust_domain: TrustDomain::parse(&b.trust_domain)?,
        roots: b.roots,
        sequence: b.sequence,
        refresh_hint: std::time::Duration::from_secs(b.refresh_hint_seconds),
    };
    match (a.format, a.output) {
        (BundleFormat::Spiffe, _) => output::json(&bundle.to_spiffe_json()?)?,
        (BundleFormat::Pem, Format::Text) => out!("{}", bundle.to_pem())?,
        (BundleFormat::Pem, Format::Json) => output::json(&json!({
            "trust_domain": bundle.trust_domain.to_string(),
            "sequence": bundle.sequence,
            "roots": bundle.roots.iter().map(|r| writ_ca::x509::certs_to_pem([r])).collect::<Vec<_>>(),
            "fingerprints": bundle.roots.iter().map(|r| writ_ca::x509::sha256_hex(r)).collect::<Vec<_>>(),
        }))?,
    }
    Ok(())
}
