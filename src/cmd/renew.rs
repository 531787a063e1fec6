//! `writ renew`.

use std::path::PathBuf;

use clap::Args as ClapArgs;
use serde_json::json;
use writ_agent::renew::{RenewOptions, renew_dir};
use writ_ca::{KeyType, Ttl};

use crate::output::{self, Format, OutputArg, outln};

/// `writ renew` flags.
#[derive(ClapArgs)]
pub struct Args {
    /// The writ server, host:port; several replicas comma-separated or the flag repeated
    /// (one that is down or unavailable is skipped).
    #[arg(long, env = "WRIT_SERVER", default_value = crate::cli_defaults::server(), value_delimiter = ',', num_args = 1)]
    server: Vec<String>,
    /// Directory holding cert.pem, key.pem and bundle.pem; replaced as a set on success.
    #[arg(long)]
    dir: PathBuf,
    /// Key type of the new key.
    #[arg(long, default_value = "ec-p256")]
    key_type: KeyType,
    /// Requested lifetime [default: the server's default TTL].
    #[arg(long)]
    ttl: Option<Ttl>,
    #[command(flatten)]
    output: OutputArg,
}

/// Renews once.
pub async fn run(a: Args) -> anyhow::Result<()> {
    let opts = RenewOptions {
        key_type: a.key_type,
        ttl: a.ttl.map(Ttl::duration),
    };
    let renewed = renew_dir(&a.server.join(","), &a.dir, opts).await?;
    let leaf = renewed.identity.leaf_info()?;
    output::lifetime_note(renewed.lifetime);
    match a.output.format {
        Format::Json => output::json(&json!({
            "spiffe_id": leaf.spiffe_id()?.to_string(),
            "serial": leaf.serial,
            "not_after": humantime::format_rfc3339_seconds(leaf.not_after).to_string(),
            "ttl_seconds": renewed.lifetime.map(|g| g.granted.as_secs()),
            "requested_ttl_seconds": a.ttl.map(Ttl::secs),
        }))?,
        Format::Text => outln!(
            "renewed {} (serial {}), valid until {}",
            leaf.spiffe_id()?,
            leaf.serial,
            humantime::format_rfc3339_seconds(leaf.not_after)
        )?,
    }
    Ok(())
}
