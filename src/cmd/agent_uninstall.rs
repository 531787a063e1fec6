//! `writ agent uninstall`: removes what the agent wrote, after confirmation.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::Context;
use clap::Args as ClapArgs;
use serde_json::json;
use writ_agent::config::AgentFileConfig;
use writ_agent::uninstall;

use crate::output::{self, Format, OutputArg, outln};

/// `writ agent uninstall` flags.
#[derive(ClapArgs)]
pub struct Args {
    /// The agent's out dir [default: out_dir from --config].
    #[arg(long)]
    out_dir: Option<PathBuf>,
    /// The agent's config file: where its out dir and Workload API socket are.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The Workload API socket to remove [default: workload_api_socket from --config].
    #[arg(long)]
    workload_api_socket: Option<PathBuf>,
    /// Also remove the config file given with --config.
    #[arg(long)]
    purge: bool,
    /// Do not ask for confirmation (required when stdin is not a terminal).
    #[arg(long)]
    yes: bool,
    #[command(flatten)]
    output: OutputArg,
}

/// Runs `writ agent uninstall`.
pub fn run(a: Args) -> anyhow::Result<()> {
    let file = match &a.config {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            AgentFileConfig::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?
        }
        None => AgentFileConfig::default(),
    };
    if a.purge && a.config.is_none() {
        anyhow::bail!("--purge removes the agent's config file: name it with --config FILE");
    }
    let out_dir = a
        .out_dir
        .or(file.out_dir)
        .context("--out-dir DIR is required (or --config FILE with out_dir)")?;
    let socket = a.workload_api_socket.or(file.workload_api_socket);
    uninstall::refuse_if_running(&out_dir)?;
    let purge = if a.purge { a.config.as_deref() } else { None };
    let plan = uninstall::plan(&out_dir, socket.as_deref(), purge)?;

    if !plan.is_empty() && !a.yes {
        if !std::io::stdin().is_terminal() {
            anyhow::bail!(
                "refusing to remove {} path(s) without confirmation: stdin is not a terminal; run again with --yes",
                plan.remove.len()
            );
        }
        let mut err = std::io::stderr().lock();
        writeln!(err, "writ agent uninstall will remove:")?;
        for p in &plan.remove {
            writeln!(err, "  {}", p.display())?;
        }
        for p in &plan.keep {
            writeln!(err, "  (kept, not written by the agent) {}", p.display())?;
        }
        write!(err, "Remove these {} path(s)? [y/N] ", plan.remove.len())?;
        err.flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            anyhow::bail!("nothing was removed");
        }
    }
    let removed = uninstall::execute(&plan)?;
    match a.output.format {
        Format::Json => output::json(&json!({
            "removed": removed,
            "kept": plan.keep,
        }))?,
        Format::Text => {
            if removed.is_empty() {
                outln!("nothing to remove in {}", out_dir.display())?;
            }
            for p in &removed {
                outln!("removed {}", p.display())?;
            }
            for p in &plan.keep {
                outln!("kept    {} (not written by the agent)", p.display())?;
            }
        }
    }
    Ok(())
}
