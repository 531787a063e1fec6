//! `writ bootstrap`: a machine's first certificate, bought with a one-time token.

use std::path::PathBuf;

use clap::Args as ClapArgs;
use serde_json::json;
use writ_agent::bootstrap::bootstrap;
use writ_ca::{KeyType, Ttl};

use crate::output::{self, Format, OutputArg, outln};

/// `writ bootstrap` flags.
#[derive(ClapArgs)]
pub struct Args {
    /// The writ server, host:port; several replicas comma-separated or the flag repeated
    /// (one that is down or unavailable is skipped). The token pins its root, so any
    /// address reaching it works.
    #[arg(long, env = "WRIT_SERVER", default_value = crate::cli_defaults::server(), value_delimiter = ',', num_args = 1)]
    server: Vec<String>,
    /// File holding the token from `writ token create`; deleted once redeemed. Not read
    /// when the out dir already holds an unexpired certificate.
    #[arg(long)]
    token_file: PathBuf,
    /// Directory to write cert.pem, key.pem (0600) and bundle.pem to.
    #[arg(long)]
    out_dir: PathBuf,
    /// Key type: ec-p256, ec-p384, rsa-2048, rsa-3072, rsa-4096.
    #[arg(long, default_value = "ec-p256")]
    key_type: KeyType,
    /// Lifetime of the certificate, e.g. 1h; clamped to the server's [min_ttl, max_ttl]
    /// (a note on stderr says so) [default: the server's default TTL].
    #[arg(long)]
    ttl: Option<Ttl>,
    #[command(flatten)]
    output: OutputArg,
}

/// Redeems the token unless the out dir already holds a valid certificate.
pub async fn run(a: Args) -> anyhow::Result<()> {
    let server = a.server.join(",");
    let done = bootstrap(
        &server,
        &a.token_file,
        &a.out_dir,
        a.key_type,
        a.ttl.map(Ttl::duration),
    )
    .await?;
    output::lifetime_note(done.lifetime);
    let leaf = done.identity.leaf_info()?;
    let id = leaf.spiffe_id()?;
    let not_after = humantime::format_rfc3339_seconds(leaf.not_after).to_string();
    match a.output.format {
        Format::Json => output::json(&json!({
            "spiffe_id": id.to_string(),
            "serial": leaf.serial,
            "not_after": not_after,
            "redeemed": done.redeemed,
            "ttl_seconds": done.lifetime.map(|g| g.granted.as_secs()),
            "requested_ttl_seconds": a.ttl.map(Ttl::secs),
            "cert": a.out_dir.join("cert.pem"),
            "key": a.out_dir.join("key.pem"),
            "bundle": a.out_dir.join("bundle.pem"),
        }))?,
        Format::Text if done.redeemed => {
            outln!(
                "bootstrapped {id} (serial {}), valid until {not_after}",
                leaf.serial
            )?;
            outln!(
                "  wrote: {}/{{cert.pem,key.pem,bundle.pem}}",
                a.out_dir.display()
            )?;
            outln!(
                "  keep it fresh with: writ renew --server {} --dir {}",
                server,
                a.out_dir.display()
            )?;
        }
        Format::Text => outln!(
            "{} already holds a valid certificate for {id} (serial {}, valid until {not_after}); token not used",
            a.out_dir.display(),
            leaf.serial
        )?,
    }
    Ok(())
}
