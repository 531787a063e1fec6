//! `writ x509 mint`.

use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::json;
use writ_agent::files::{Identity, write_identity};
use writ_ca::{CertInfo, KeyType, PrivateKey, SpiffeId, Ttl, build_csr};
use writ_proto::admin::MintRequest;

use crate::admin_client::{AdminTarget, status};
use crate::output::{self, Format, outln};

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
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = crate::cli_defaults::output())]
    output: Format,
}

/// Runs an x509 command.
pub async fn run(c: Command) -> anyhow::Result<()> {
    let Command::Mint(a) = c;
    let mut admin = a.target.connect().await?;
    // The key is made here and never leaves this machine; the server sees only a CSR.
    let key = PrivateKey::generate(a.key_type)?;
    let csr = build_csr(&key, &a.spiffe_id, &a.dns)?;
    let before = unix_now();
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
    let after = unix_now();
    let (granted, note) = lifetime(a.ttl, before..=after, &resp.chain)?;
    let bundle = resp.bundle.map(|b| b.roots).unwrap_or_default();
    let identity = Identity {
        chain: resp.chain,
        key,
        bundle,
    };
    write_identity(&a.out_dir, &identity)?;
    if let Some(note) = note {
        eprintln!("{note}");
    }
    match a.output {
        Format::Json => output::json(&json!({
            "spiffe_id": resp.spiffe_id,
            "serial": resp.serial,
            "not_after": output::time(resp.not_after),
            "ttl_seconds": granted,
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

/// Seconds since the Unix epoch, rounded down as certificate times are.
fn unix_now() -> u64 {
    secs(SystemTime::now())
}

/// Whole seconds since the Unix epoch.
fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The lifetime the server gave the leaf of `chain`, signed at a second within
/// `signed_in`, and a note saying why when it is not the `requested` one. The server
/// grants a lifetime between its min_ttl and max_ttl, and never past its intermediate's
/// end, without saying so in its answer: the client works it out from the certificate.
fn lifetime(
    requested: Option<Ttl>,
    signed_in: RangeInclusive<u64>,
    chain: &[Vec<u8>],
) -> anyhow::Result<(u64, Option<String>)> {
    let leaf = chain
        .first()
        .context("the server's answer holds no certificate; check its log")?;
    let not_after = secs(CertInfo::parse(leaf)?.not_after);
    // Every second the server may have signed at gives a possible lifetime.
    let possible =
        not_after.saturating_sub(*signed_in.end())..=not_after.saturating_sub(*signed_in.start());
    let requested = requested.map(Ttl::secs);
    if let Some(r) = requested.filter(|r| possible.contains(r)) {
        return Ok((r, None));
    }
    // The bounds are settings someone typed in whole minutes or hours, so the roundest
    // possible lifetime is the one granted.
    let granted = possible
        .clone()
        .max_by_key(|&s| roundness(s))
        .unwrap_or(*possible.end());
    let Some(requested) = requested else {
        return Ok((granted, None));
    };
    let issuer_end = match chain.get(1) {
        Some(der) => Some(secs(CertInfo::parse(der)?.not_after)),
        None => None,
    };
    let why = if issuer_end == Some(not_after) {
        "the issuing intermediate expires then, and no certificate outlives its issuer \
(`writ root status` shows the CA's lifetimes)"
            .to_owned()
    } else if granted < requested {
        format!(
            "the server's max_ttl is {} (its --max-ttl flag or max_ttl setting)",
            short(granted)
        )
    } else {
        format!(
            "the server's min_ttl is {} (its --min-ttl flag or min_ttl setting)",
            short(granted)
        )
    };
    let note = format!(
        "note: asked for {}, got {}: {why}",
        short(requested),
        short(granted)
    );
    Ok((granted, Some(note)))
}

/// The largest of a day, an hour, a minute, ten seconds or five that divides `s`.
fn roundness(s: u64) -> u64 {
    [86_400, 3600, 60, 10, 5]
        .into_iter()
        .find(|&unit| s > 0 && s.is_multiple_of(unit))
        .unwrap_or(1)
}

/// `s` seconds the way --ttl takes them, in hours, minutes and seconds: 48h, 1m30s.
fn short(s: u64) -> String {
    let mut text = String::new();
    for (n, unit) in [(s / 3600, "h"), (s / 60 % 60, "m"), (s % 60, "s")] {
        if n > 0 {
            text.push_str(&format!("{n}{unit}"));
        }
    }
    if text.is_empty() {
        text.push_str("0s");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_read_as_typed() {
        assert_eq!(short(172_800), "48h");
        assert_eq!(short(86_400), "24h");
        assert_eq!(short(90), "1m30s");
        assert_eq!(short(3605), "1h5s");
        assert_eq!(short(10), "10s");
        assert_eq!(roundness(86_400), 86_400);
        assert_eq!(roundness(86_399), 1);
        assert_eq!(roundness(60), 60);
    }
}
