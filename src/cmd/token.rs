//! `writ token create|list|revoke`: one-time bootstrap tokens, through the admin socket.

use clap::{Args, Subcommand};
use serde_json::json;
use writ_ca::{SpiffeId, Ttl};
use writ_proto::admin::{CreateTokenRequest, ListTokensRequest, RevokeTokenRequest};

use crate::admin_client::{AdminTarget, status};
use crate::output::{self, Format, OutputArg, outln};

/// Bootstrap token commands.
#[derive(Subcommand)]
pub enum Command {
    /// Mint a one-time token a machine redeems for its first certificate (`writ bootstrap`).
    /// In text mode only the token is printed, so `writ token create ... > vm.token` works.
    Create(CreateArgs),
    /// List tokens and their state (the tokens themselves are never stored).
    List(ListArgs),
    /// Revoke a pending token by its id (jti).
    Revoke(RevokeArgs),
}

/// `writ token create` flags.
#[derive(Args)]
pub struct CreateArgs {
    /// The SPIFFE ID the token grants.
    #[arg(long)]
    spiffe_id: SpiffeId,
    /// Token lifetime [default: the server's token TTL, 15m unless configured].
    #[arg(long)]
    ttl: Option<Ttl>,
    /// DNS name the certificate may carry (repeatable).
    #[arg(long = "dns")]
    dns: Vec<String>,
    #[command(flatten)]
    target: AdminTarget,
    #[command(flatten)]
    output: OutputArg,
}

/// `writ token list` flags.
#[derive(Args)]
pub struct ListArgs {
    #[command(flatten)]
    target: AdminTarget,
    #[command(flatten)]
    output: OutputArg,
}

/// `writ token revoke` flags.
#[derive(Args)]
pub struct RevokeArgs {
    /// The token's id, as `writ token list` shows it.
    jti: String,
    #[command(flatten)]
    target: AdminTarget,
    #[command(flatten)]
    output: OutputArg,
}

/// Runs a token command.
pub async fn run(c: Command) -> anyhow::Result<()> {
    match c {
        Command::Create(a) => create(a).await,
        Command::List(a) => list(a).await,
        Command::Revoke(a) => revoke(a).await,
    }
}

async fn create(a: CreateArgs) -> anyhow::Result<()> {
    let mut admin = a.target.connect().await?;
    let r = admin
        .create_token(CreateTokenRequest {
            spiffe_id: a.spiffe_id.to_string(),
            ttl_seconds: a.ttl.map(Ttl::secs).unwrap_or(0),
            dns_names: a.dns,
        })
        .await
        .map_err(status)?
        .into_inner();
    match a.output.format {
        Format::Json => output::json(&json!({
            "token": r.token,
            "jti": r.jti,
            "spiffe_id": r.spiffe_id,
            "expires_at": output::time(r.expires_at),
            "ca_fingerprint": r.ca_fingerprint,
        }))?,
        Format::Text => {
            // stdout carries the token alone, for redirection; the rest goes to stderr.
            outln!("{}", r.token)?;
            eprintln!(
                "token {} for {} expires {}; redeem with: writ bootstrap --server HOST:PORT --token-file FILE --out-dir DIR",
                r.jti,
                r.spiffe_id,
                output::time(r.expires_at)
            );
        }
    }
    Ok(())
}

async fn list(a: ListArgs) -> anyhow::Result<()> {
    let mut admin = a.target.connect().await?;
    let r = admin
        .list_tokens(ListTokensRequest {})
        .await
        .map_err(status)?
        .into_inner();
    match a.output.format {
        Format::Json => {
            let tokens: Vec<_> = r
                .tokens
                .iter()
                .map(|t| {
                    json!({
                        "jti": t.jti,
                        "spiffe_id": t.spiffe_id,
                        "created": output::time(t.created),
                        "expires": output::time(t.expires),
                        "state": t.state,
                        "serial": (!t.serial.is_empty()).then_some(&t.serial),
                        "used_at": (t.used_at != 0).then(|| output::time(t.used_at)),
                        "dns_names": t.dns_names,
                    })
                })
                .collect();
            output::json(&json!({ "tokens": tokens }))?;
        }
        Format::Text => {
            outln!(
                "{}:",
                output::count(r.tokens.len() as u64, "token", "tokens")
            )?;
            for t in &r.tokens {
                let serial = if t.serial.is_empty() { "-" } else { &t.serial };
                outln!(
                    "{}  {:<8} expires {}  serial {}  {}",
                    t.jti,
                    t.state,
                    output::time(t.expires),
                    serial,
                    t.spiffe_id
                )?;
            }
        }
    }
    Ok(())
}

async fn revoke(a: RevokeArgs) -> anyhow::Result<()> {
    let mut admin = a.target.connect().await?;
    admin
        .revoke_token(RevokeTokenRequest { jti: a.jti.clone() })
        .await
        .map_err(status)?;
    match a.output.format {
        Format::Json => output::json(&json!({ "jti": a.jti, "state": "revoked" }))?,
        Format::Text => outln!("revoked token {}", a.jti)?,
    }
    Ok(())
}
