//! `writ certs list`.

use clap::{Args, Subcommand};
use writ_proto::admin::ListCertificatesRequest;

use crate::admin_client::{AdminTarget, status};
use crate::output::{self, Format, OutputArg, outln};

/// Issuance log commands.
#[derive(Subcommand)]
pub enum Command {
    /// List recent issuance log entries, newest first.
    List(ListArgs),
}

/// `writ certs list` flags.
#[derive(Args)]
pub struct ListArgs {
    /// How many entries.
    #[arg(long, default_value_t = 50)]
    limit: u32,
    #[command(flatten)]
    target: AdminTarget,
    #[command(flatten)]
    output: OutputArg,
}

/// Runs a certs command.
pub async fn run(c: Command) -> anyhow::Result<()> {
    let Command::List(a) = c;
    let mut admin = a.target.connect().await?;
    let r = admin
        .list_certificates(ListCertificatesRequest { limit: a.limit })
        .await
        .map_err(status)?
        .into_inner();
    match a.output.format {
        Format::Json => {
            let entries: Vec<_> = r
                .certificates
                .iter()
                .map(|c| {
                    serde_json::json!({
                        "serial": c.serial,
                        "spiffe_id": c.spiffe_id,
                        "not_before": output::time(c.not_before),
                        "not_after": output::time(c.not_after),
                        "fingerprint": c.fingerprint,
                        "key_type": c.key_type,
                        "auth": c.auth,
                        "generation": c.generation,
                    })
                })
                .collect();
            output::json(&serde_json::json!({ "total": r.total, "certificates": entries }))?;
        }
        Format::Text => {
            outln!(
                "{} issued; newest {}:",
                output::count(r.total, "certificate", "certificates"),
                r.certificates.len()
            )?;
            for c in &r.certificates {
                outln!(
                    "{}  {:<8} {:<8} {}  {}",
                    c.serial,
                    c.key_type,
                    c.auth,
                    output::time(c.not_after),
                    c.spiffe_id
                )?;
            }
        }
    }
    Ok(())
}
