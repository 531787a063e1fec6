//! `writ x509 mint`.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::json;
use writ_agent::files::{Identity, write_identity};
use writ_agent::lifetime::Granted;
use writ_ca::{KeyType, PrivateKey, SpiffeId, Ttl, build_csr};
use writ_proto::admin::MintRequest;

use crate::admin_client::{AdminTarget, status};
use crate::output::{self, Format, OutputArg, outln};

/// X.509 commands.
#[derive(Subcommand)]
pub enum Command {
    /// Issue a key and certificate for an identity, written to DIR/cert.pem, key.pem, bundle.pem.
    Mint(MintArgs),
}

/// `writ x509 mint` flags.
#[derive(Args)]
pub struct MintArgs {
    /// The SPIFFE ID to issue for.
    #[arg(long)]
    spiffe_id: SpiffeId,
    /// Directory to write cert.pem (leaf then intermediates), key.pem (0600) and bundle.pem.
    #[arg(long)]
    out_dir: PathBuf,
    /// Certificate lifetime [default: the server's default TTL].
    #[arg(long)]
    ttl: Option<Ttl>,
    /// Key type: ec-p256, ec-p384, rsa-2048, rsa-3072, rsa-4096.
    #[arg(long, default_value = "ec-p256")]
    key_type: KeyType,
    /// DNS name to include (repeatable).
    #[arg(long = "dns")]
    dns: Vec<String>,
    #[command(flatten)]
    target: AdminTarget,
    #[command(flatten)]
    output: OutputArg,
}

/// Runs an x509 command.
pub async fn run(c: Command) -> anyhow::Result<()> {
    let Command::Mint(a) = c;
    let mut admin = a.target.connect().await?;
    // The key is made here and never leaves this machine; the server sees only a CSR.
    let key = PrivateKey::generate(a.key_type)?;
    let csr = build_csr(&key, &a.spiffe_id, &a.dns)?;
    let resp = admin
        .mint(MintRequest {
            spiffe_id: a.spiffe_id.to_string(),
            csr,
            ttl_seconds: a.ttl.map(|t| t.secs()).unwrap_or(0),
            dns_names: a.dns.clone(),
        })
        .await
        .map_err(status)?
        .into_inner();
    let granted = Granted::from_response(a.ttl.map(Ttl::duration), &resp);
    let bundle = resp.bundle.map(|b| b.roots).unwrap_or_default();
    let identity = Identity {
        chain: resp.chain,
        key,
        bundle,
    };
    write_identity(&a.out_dir, &identity)?;
    output::lifetime_note(granted);
    match a.output.format {
        Format::Json => output::json(&json!({
            "spiffe_id": resp.spiffe_id,
            "serial": resp.serial,
            "not_after": output::time(resp.not_after),
            "ttl_seconds": granted.map(|g| g.granted.as_secs()),
            "requested_ttl_seconds": a.ttl.map(Ttl::secs),
            "cert": a.out_dir.join("cert.pem"),
            "key": a.out_dir.join("key.pem"),
            "bundle": a.out_dir.join("bundle.pem"),
        }))?,
        Format::Text => {
            outln!("issued {} (serial {})", resp.spiffe_id, resp.serial)?;
            outln!("  expires: {}", output::time(resp.not_after))?;
            outln!(
                "  wrote:   {}/{{cert.pem,key.pem,bundle.pem}}",
                a.out_dir.display()
            )?;
        }
    }
    Ok(())
}
