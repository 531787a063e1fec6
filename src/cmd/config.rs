//! `writ config check`.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use writ_server::check::{Finding, Severity, check_server_config, exit_code};

use crate::output::{self, Format};

/// Configuration commands.
#[derive(Subcommand)]
pub enum Command {
    /// Report what is insecure or risky in a server or agent config (exit 0 clean, 1 warnings, 2 errors).
    Check(CheckArgs),
}

/// Which kind of config a file is.
#[derive(Clone, Copy, Debug, Default, ValueEnum)]
pub enum Kind {
    /// Guess from the keys (an agent config has `out_dir`).
    #[default]
    Auto,
    /// A `writ server --config` file.
    Server,
    /// A `writ agent --config` file.
    Agent,
}

/// `writ config check` flags.
#[derive(Args)]
pub struct CheckArgs {
    /// The TOML file.
    file: PathBuf,
    /// Server or agent config.
    #[arg(long, value_enum, default_value_t)]
    kind: Kind,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    output: Format,
}

/// Runs a config command; returns the process exit code.
pub fn run(c: Command) -> anyhow::Result<u8> {
    let Command::Check(a) = c;
    let text = std::fs::read_to_string(&a.file)
        .with_context(|| format!("reading {}", a.file.display()))?;
    let agent = match a.kind {
        Kind::Agent => true,
        Kind::Server => false,
        Kind::Auto => text.lines().any(|l| l.trim_start().starts_with("out_dir")),
    };
    let findings: Vec<Finding> = if agent {
        writ_agent::config::check_agent_config(&text)
            .into_iter()
            .map(|f| {
                let sev = if f.error {
                    Severity::Error
                } else {
                    Severity::Warning
                };
                Finding::new(sev, f.subject, f.message, f.fix)
            })
            .collect()
    } else {
        check_server_config(&text)
    };
    match a.output {
        Format::Json => output::json(&findings)?,
        Format::Text => {
            if findings.is_empty() {
                println!("{}: no findings", a.file.display());
            }
            for f in &findings {
                let sev = match f.severity {
                    Severity::Error => "error",
                    Severity::Warning => "warning",
                };
                println!("{sev}: {}: {}\n  fix: {}", f.subject, f.message, f.fix);
            }
        }
    }
    Ok(exit_code(&findings))
}
