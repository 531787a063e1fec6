//! `writ identity deny|allow|list`: identities the CA issues nothing for, through the
//! admin socket.

use clap::{Args, Subcommand};
use serde_json::json;
use writ_ca::SpiffeId;
use writ_proto::admin::{IdentityAllowRequest, IdentityDenyRequest, IdentityListRequest};

use crate::admin_client::{AdminTarget, status};
use crate::output::{self, Format, OutputArg, outln};

/// Identity deny-list commands.
#[derive(Subcommand)]
pub enum Command {
    /// Deny an identity: no certificate is issued for it (renewal, bootstrap token, any
    /// other path, admin mint) until it is allowed again. Existing certificates stay valid
    /// until they expire.
    Deny(DenyArgs),
    /// Lift a deny.
    Allow(AllowArgs),
    /// List denied identities.
    List(ListArgs),
}

/// `writ identity deny` flags.
#[derive(Args)]
pub struct DenyArgs {
    /// The SPIFFE ID to deny.
    spiffe_id: SpiffeId,
    /// Why, for other administrators and the audit log (never shown to the denied caller).
    #[arg(long, default_value = "")]
    reason: String,
    #[command(flatten)]
    target: AdminTarget,
    #[command(flatten)]
    output: OutputArg,
}

/// `writ identity allow` flags.
#[derive(Args)]
pub struct AllowArgs {
    /// The SPIFFE ID to allow again.
    spiffe_id: SpiffeId,
    #[command(flatten)]
    target: AdminTarget,
    #[command(flatten)]
    output: OutputArg,
}

/// `writ identity list` flags.
#[derive(Args)]
pub struct ListArgs {
    #[command(flatten)]
    target: AdminTarget,
    #[command(flatten)]
    output: OutputArg,
}

/// Runs an identity command.
pub async fn run(c: Command) -> anyhow::Result<()> {
    match c {
        Command::Deny(a) => {
            let mut admin = a.target.connect().await?;
            let d = admin
                .identity_deny(IdentityDenyRequest {
                    spiffe_id: a.spiffe_id.to_string(),
                    reason: a.reason,
                })
                .await
                .map_err(status)?
                .into_inner();
            match a.output.format {
                Format::Json => output::json(&entry(&d))?,
                Format::Text => outln!(
                    "denied {} (existing certificates stay valid until they expire; lift with `writ identity allow {}`)",
                    d.spiffe_id,
                    d.spiffe_id
                )?,
            }
        }
        Command::Allow(a) => {
            let mut admin = a.target.connect().await?;
            let r = admin
                .identity_allow(IdentityAllowRequest {
                    spiffe_id: a.spiffe_id.to_string(),
                })
                .await
                .map_err(status)?
                .into_inner();
            match a.output.format {
                Format::Json => output::json(&json!({
                    "spiffe_id": a.spiffe_id.to_string(),
                    "was_denied": r.was_denied,
                }))?,
                Format::Text if r.was_denied => outln!("allowed {} again", a.spiffe_id)?,
                Format::Text => outln!("{} was not denied; nothing changed", a.spiffe_id)?,
            }
        }
        Command::List(a) => {
            let mut admin = a.target.connect().await?;
            let r = admin
                .identity_list(IdentityListRequest {})
                .await
                .map_err(status)?
                .into_inner();
            match a.output.format {
                Format::Json => output::json(&json!({
                    "denied": r.denied.iter().map(entry).collect::<Vec<_>>(),
                }))?,
                Format::Text => {
                    outln!(
                        "{}:",
                        output::count(
                            r.denied.len() as u64,
                            "denied identity",
                            "denied identities"
                        )
                    )?;
                    for d in &r.denied {
                        outln!(
                            "{}  since {}  {}",
                            d.spiffe_id,
                            output::time(d.since),
                            d.reason
                        )?;
                    }
                }
            }
        }
    }
    Ok(())
}

fn entry(d: &writ_proto::admin::DeniedIdentity) -> serde_json::Value {
    json!({
        "spiffe_id": d.spiffe_id,
        "reason": d.reason,
        "since": output::time(d.since),
    })
}
