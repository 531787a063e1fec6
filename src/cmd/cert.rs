//! `writ cert inspect`.

use std::path::PathBuf;
use std::time::SystemTime;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::json;
use writ_ca::CertInfo;

use crate::output::{self, Format, OutputArg, outln};

/// Certificate commands.
#[derive(Subcommand)]
pub enum Command {
    /// Summarise a PEM certificate or chain: SPIFFE ID, SANs, key type, validity, issuer.
    Inspect(InspectArgs),
}

/// `writ cert inspect` flags.
#[derive(Args)]
pub struct InspectArgs {
    /// A PEM file with one or more certificates.
    file: PathBuf,
    #[command(flatten)]
    output: OutputArg,
}

/// Runs a cert command.
pub fn run(c: Command) -> anyhow::Result<()> {
    let Command::Inspect(a) = c;
    let pem = std::fs::read(&a.file).with_context(|| format!("reading {}", a.file.display()))?;
    let certs =
        writ_ca::x509::certs_from_pem(&pem).with_context(|| format!("{}", a.file.display()))?;
    let now = SystemTime::now();
    let infos = certs
        .iter()
        .map(|d| CertInfo::parse(d))
        .collect::<Result<Vec<_>, _>>()?;
    match a.output.format {
        Format::Json => {
            let list: Vec<_> = infos.iter().map(|i| to_json(i, now)).collect();
            output::json(&list)?;
        }
        Format::Text => {
            for (n, i) in infos.iter().enumerate() {
                if n > 0 {
                    outln!()?;
                }
                print_text(n, i, now)?;
            }
        }
    }
    Ok(())
}

fn to_json(i: &CertInfo, now: SystemTime) -> serde_json::Value {
    json!({
        "spiffe_id": i.spiffe_id().ok().map(|s| s.to_string()),
        "uris": i.uris,
        "dns_names": i.dns_names,
        "ip_addrs": i.ip_addrs,
        "key_type": i.key_type.map(|k| k.mnemonic()),
        "is_ca": i.is_ca,
        "subject": i.subject,
        "issuer": i.issuer,
        "serial": i.serial,
        "not_before": humantime::format_rfc3339_seconds(i.not_before).to_string(),
        "not_after": humantime::format_rfc3339_seconds(i.not_after).to_string(),
        "seconds_left": i.seconds_left(now),
        "sha256": i.fingerprint,
    })
}

fn print_text(n: usize, i: &CertInfo, now: SystemTime) -> anyhow::Result<()> {
    let role = if i.is_ca {
        "CA certificate"
    } else {
        "certificate"
    };
    outln!("[{n}] {role}")?;
    if let Ok(id) = i.spiffe_id() {
        outln!("  SPIFFE ID:  {id}")?;
    }
    for u in &i.uris {
        outln!("  URI SAN:    {u}")?;
    }
    for d in &i.dns_names {
        outln!("  DNS SAN:    {d}")?;
    }
    for ip in &i.ip_addrs {
        outln!("  IP SAN:     {ip}")?;
    }
    if !i.subject.is_empty() {
        outln!("  subject:    {}", i.subject)?;
    }
    outln!("  issuer:     {}", i.issuer)?;
    outln!(
        "  key:        {}",
        i.key_type.map(|k| k.mnemonic()).unwrap_or("unknown")
    )?;
    outln!("  serial:     {}", i.serial)?;
    let left = i.seconds_left(now);
    let validity = if left >= 0 {
        format!(
            "valid for {}",
            humantime::format_duration(std::time::Duration::from_secs(left as u64))
        )
    } else {
        format!(
            "EXPIRED {} ago",
            humantime::format_duration(std::time::Duration::from_secs((-left) as u64))
        )
    };
    outln!(
        "  not after:  {} ({validity})",
        humantime::format_rfc3339_seconds(i.not_after)
    )?;
    outln!("  sha256:     {}", i.fingerprint)?;
    Ok(())
}
