//! `writ root status|prepare|activate|retire|rotate|import`: root rotation with zero
//! downtime, and plugged-in CA certificates.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::json;
use writ_ca::KeyType;
use writ_proto::admin::{
    RootImportRequest, RootPrepareRequest, RootStatusRequest, RootStatusResponse, RootStepRequest,
};

use crate::admin_client::{AdminTarget, status};
use crate::output::{self, Format, OutputArg, outln};

/// Root commands.
#[derive(Subcommand)]
pub enum Command {
    /// Every CA generation: state, key type, fingerprint, expiry, live leaves; and the next step.
    Status(Common),
    /// Create a new root + intermediate and publish the root beside the current one.
    Prepare(PrepareArgs),
    /// Sign new leaves under the prepared generation (chains carry a cross-signed root).
    Activate(StepArgs),
    /// Remove the previous root from the bundle once its leaves have expired.
    Retire(StepArgs),
    /// The whole sequence, driven by the server on schedule: prepare now, activate after
    /// propagation, retire once the old root's leaves have expired.
    Rotate(PrepareArgs),
    /// Import an externally issued intermediate (Istio cacerts layout) as a prepared generation.
    Import(ImportArgs),
}

/// Flags every root command takes.
#[derive(Args)]
pub struct Common {
    #[command(flatten)]
    target: AdminTarget,
    #[command(flatten)]
    output: OutputArg,
}

/// `prepare` / `rotate` flags.
#[derive(Args)]
pub struct PrepareArgs {
    /// Key type of the new root and intermediate [default: the server's --ca-key-type].
    #[arg(long)]
    key_type: Option<KeyType>,
    #[command(flatten)]
    common: Common,
}

/// `activate` / `retire` flags.
#[derive(Args)]
pub struct StepArgs {
    /// Take the step even if it is not yet safe (the refusal says what it would break).
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    common: Common,
}

/// `import` flags.
#[derive(Args)]
pub struct ImportArgs {
    /// The CA certificate writ will sign with (ca-cert.pem).
    #[arg(long)]
    cert: PathBuf,
    /// Its private key (ca-key.pem).
    #[arg(long)]
    key: PathBuf,
    /// The chain from it up to the root (cert-chain.pem).
    #[arg(long)]
    chain: PathBuf,
    /// The root (root-cert.pem).
    #[arg(long)]
    root: PathBuf,
    #[command(flatten)]
    common: Common,
}

/// Runs a root command.
pub async fn run(c: Command) -> anyhow::Result<()> {
    let (common, resp) = match c {
        Command::Status(a) => {
            let r = a
                .target
                .connect()
                .await?
                .root_status(RootStatusRequest {})
                .await;
            (a, r)
        }
        Command::Prepare(a) => {
            let req = RootPrepareRequest {
                key_type: kt(a.key_type),
            };
            let r = a.common.target.connect().await?.root_prepare(req).await;
            (a.common, r)
        }
        Command::Rotate(a) => {
            let req = RootPrepareRequest {
                key_type: kt(a.key_type),
            };
            let r = a.common.target.connect().await?.root_rotate(req).await;
            (a.common, r)
        }
        Command::Activate(a) => {
            let r = a
                .common
                .target
                .connect()
                .await?
                .root_activate(RootStepRequest { force: a.force })
                .await;
            (a.common, r)
        }
        Command::Retire(a) => {
            let r = a
                .common
                .target
                .connect()
                .await?
                .root_retire(RootStepRequest { force: a.force })
                .await;
            (a.common, r)
        }
        Command::Import(a) => {
            let read =
                |p: &PathBuf| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
            let req = RootImportRequest {
                cert: read(&a.cert)?,
                key: read(&a.key)?,
                chain: read(&a.chain)?,
                root: read(&a.root)?,
            };
            let r = a.common.target.connect().await?.root_import(req).await;
            (a.common, r)
        }
    };
    let resp = resp.map_err(status)?.into_inner();
    print(&resp, common.output.format)
}

fn kt(k: Option<KeyType>) -> String {
    k.map(|k| k.mnemonic().to_owned()).unwrap_or_default()
}

fn print(r: &RootStatusResponse, format: Format) -> anyhow::Result<()> {
    let when = |t: i64| {
        if t == 0 {
            String::new()
        } else {
            output::time(t)
        }
    };
    match format {
        Format::Json => output::json(&json!({
            "generations": r.generations.iter().map(|g| json!({
                "id": g.id,
                "state": g.state,
                "key_type": g.key_type,
                "root_fingerprint": g.root_fingerprint,
                "root_not_after": when(g.root_not_after),
                "intermediate_not_after": when(g.intermediate_not_after),
                "live_leaves": g.live_leaves,
                "latest_leaf_not_after": when(g.latest_leaf_not_after),
                "since": when(g.since),
                "imported": g.imported,
                "cross_signed": g.cross_signed,
            })).collect::<Vec<_>>(),
            "next_action": (!r.next_action.is_empty()).then_some(&r.next_action),
            "next_allowed_at": when(r.next_allowed_at),
            "rotating": r.rotating,
            "bundle_sequence": r.bundle_sequence,
        })),
        Format::Text => {
            for g in &r.generations {
                outln!(
                    "G{} {:<9} {:<8} root {}…  root until {}  live leaves {}{}{}",
                    g.id,
                    g.state,
                    g.key_type,
                    &g.root_fingerprint[..g.root_fingerprint.len().min(16)],
                    when(g.root_not_after),
                    g.live_leaves,
                    if g.imported { "  (imported)" } else { "" },
                    if g.cross_signed {
                        "  (cross-signed)"
                    } else {
                        ""
                    },
                )?;
            }
            if r.next_action.is_empty() {
                outln!("next step: none")?;
            } else {
                outln!(
                    "next step: {} (allowed from {})",
                    r.next_action,
                    when(r.next_allowed_at)
                )?;
            }
            if r.rotating {
                outln!("a rotation is under way; the server takes each step when it is allowed")?;
            }
            outln!("bundle sequence: {}", r.bundle_sequence)?;
            Ok(())
        }
    }
}
