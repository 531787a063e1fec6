//! `writ config check`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use writ_server::check::{Finding, Severity, check_server_config, exit_code};

use crate::output::{self, Format, OutputArg, outln};

/// Configuration commands.
#[derive(Subcommand)]
pub enum Command {
    /// Report what is insecure or risky in a server or agent config (exit 0 clean, 1 warnings, 2 errors).
    Check(CheckArgs),
    /// Print the CLI's effective defaults (server, data dir, admin socket, output) and
    /// where each comes from: flag, environment, cli.toml or built-in.
    ShowDefaults(ShowDefaultsArgs),
}

/// `writ config show-defaults` flags: pass any to see how a flag would win.
#[derive(Args)]
pub struct ShowDefaultsArgs {
    /// As `--server` of the commands that take it.
    #[arg(long)]
    server: Option<String>,
    /// As `--data-dir` of the admin commands.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// As `--admin-socket` of the admin commands.
    #[arg(long)]
    admin_socket: Option<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum)]
    output: Option<Format>,
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
    #[command(flatten)]
    output: OutputArg,
}

/// Runs a config command; returns the process exit code.
pub fn run(c: Command) -> anyhow::Result<u8> {
    let a = match c {
        Command::Check(a) => a,
        Command::ShowDefaults(a) => return show_defaults(a).map(|()| 0),
    };
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
    // The verdict is the exit status, whether or not the whole report was read.
    output::unless_broken_pipe(print_findings(&a.file, &findings, a.output.format))?;
    Ok(exit_code(&findings))
}

/// Prints the findings about `file` on stdout.
fn print_findings(file: &Path, findings: &[Finding], format: Format) -> anyhow::Result<()> {
    match format {
        Format::Json => output::json(&findings)?,
        Format::Text => {
            if findings.is_empty() {
                outln!("{}: no findings", file.display())?;
            }
            for f in findings {
                let sev = match f.severity {
                    Severity::Error => "error",
                    Severity::Warning => "warning",
                };
                outln!("{sev}: {}: {}\n  fix: {}", f.subject, f.message, f.fix)?;
            }
        }
    }
    Ok(())
}

/// One effective default and where it came from.
#[derive(serde::Serialize)]
struct Effective {
    value: Option<String>,
    source: String,
}

fn show_defaults(a: ShowDefaultsArgs) -> anyhow::Result<()> {
    let loaded = crate::cli_defaults::get();
    let file = &loaded.values;
    let file_source = || match &loaded.path {
        Some(p) => p.display().to_string(),
        None => "cli.toml".into(),
    };
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let pick = |flag: Option<String>,
                var: Option<&str>,
                from_file: Option<String>,
                builtin: Option<String>| {
        if let Some(v) = flag {
            return Effective {
                value: Some(v),
                source: "flag".into(),
            };
        }
        if let Some((name, v)) = var.and_then(|n| env(n).map(|v| (n, v))) {
            return Effective {
                value: Some(v),
                source: format!("env {name}"),
            };
        }
        if let Some(v) = from_file {
            return Effective {
                value: Some(v),
                source: file_source(),
            };
        }
        Effective {
            value: builtin,
            source: "built-in".into(),
        }
    };
    let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
    let server = pick(a.server, Some("WRIT_SERVER"), file.server.clone(), None);
    let data_dir = pick(
        path(&a.data_dir),
        Some("WRIT_DATA_DIR"),
        path(&file.data_dir),
        writ_server::default_data_dir()
            .ok()
            .map(|d| d.display().to_string()),
    );
    // As `AdminTarget::socket` resolves it: an explicit socket (flag or env), else an
    // explicit data dir's socket, else cli.toml's socket, else <data dir>/admin.sock.
    let explicit = |e: &Effective| e.source == "flag" || e.source.starts_with("env ");
    let socket = pick(
        path(&a.admin_socket),
        Some("WRIT_ADMIN_SOCKET"),
        path(&file.admin_socket),
        None,
    );
    let admin_socket = if explicit(&socket) || (socket.value.is_some() && !explicit(&data_dir)) {
        socket
    } else {
        Effective {
            value: data_dir
                .value
                .as_ref()
                .map(|d| Path::new(d).join("admin.sock").display().to_string()),
            source: format!("<data_dir>/admin.sock, data_dir from {}", data_dir.source),
        }
    };
    let format_name = |f: Format| match f {
        Format::Text => "text".to_owned(),
        Format::Json => "json".to_owned(),
    };
    let output_format = a.output.or(file.output).unwrap_or_default();
    let output = pick(
        a.output.map(format_name),
        None,
        file.output.map(format_name),
        Some("text".into()),
    );
    let entries = [
        ("server", server),
        ("data_dir", data_dir),
        ("admin_socket", admin_socket),
        ("output", output),
    ];
    match output_format {
        Format::Json => {
            let mut doc = serde_json::Map::new();
            doc.insert(
                "file".into(),
                serde_json::json!(
                    crate::cli_defaults::location().map(|(p, _)| p.display().to_string())
                ),
            );
            doc.insert(
                "file_loaded".into(),
                serde_json::json!(loaded.path.is_some()),
            );
            for (k, e) in entries {
                doc.insert(k.into(), serde_json::to_value(e)?);
            }
            output::json(&doc)?;
        }
        Format::Text => {
            match &loaded.path {
                Some(p) => outln!("defaults file: {}", p.display())?,
                None => outln!(
                    "defaults file: none ({})",
                    crate::cli_defaults::location().map_or("no HOME".into(), |(p, _)| format!(
                        "{} does not exist",
                        p.display()
                    ))
                )?,
            }
            for (k, e) in entries {
                outln!(
                    "{k:<13} {:<40} ({})",
                    e.value.as_deref().unwrap_or("-"),
                    e.source
                )?;
            }
        }
    }
    Ok(())
}
