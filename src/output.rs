//! `-o text|json`: every command that prints data can print JSON for scripts.
//!
//! Command output goes through [`out!`] and [`outln!`], never `print!`/`println!`: those
//! panic when stdout's reader has gone (`writ audit list | head -1`), whereas these return
//! the error, which `main` recognises as [`is_broken_pipe`] and ends the command quietly.

use std::io::Write;

use clap::ValueEnum;
use serde::{Deserialize, Serialize};

/// Output format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// For people.
    #[default]
    Text,
    /// One JSON document, for scripts.
    Json,
}

/// `-o/--output`, flattened into every command that prints data; the default comes from
/// the user's `cli.toml` (`output`), and the flag wins.
#[derive(Clone, Copy, Debug, clap::Args)]
pub struct OutputArg {
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = crate::cli_defaults::output())]
    pub format: Format,
}

/// Like `print!`, but returns a [`StdoutError`] instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::stdout_fmt(format_args!($($arg)*))
    };
}

/// Like `println!`, but returns a [`StdoutError`] instead of panicking.
macro_rules! outln {
    () => {
        $crate::output::stdout_fmt(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::output::stdout_fmt(format_args!("{}\n", format_args!($($arg)*)))
    };
}

pub(crate) use {out, outln};

/// Writing a command's output to stdout failed. A type of its own, so that only a pipe
/// closed on stdout ends a command quietly, and never a broken pipe met on a socket or
/// another process's stdin.
#[derive(Debug)]
pub struct StdoutError(pub std::io::Error);

impl std::fmt::Display for StdoutError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot write the output to stdout: {}", self.0)
    }
}

impl std::error::Error for StdoutError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// Writes formatted text to stdout; the backend of [`out!`] and [`outln!`].
pub fn stdout_fmt(args: std::fmt::Arguments<'_>) -> Result<(), StdoutError> {
    std::io::stdout()
        .lock()
        .write_fmt(args)
        .map_err(StdoutError)
}

/// Whether `e` comes from writing to a stdout nobody reads any more: the reader (`head`,
/// a pager) took what it wanted, so the command has nothing left to do and did not fail.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<StdoutError>()
            .is_some_and(|s| s.0.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// `printed`, except that a stdout closed by its reader is no error: for commands whose
/// verdict is their exit status, which `writ ... | head -1` must not turn into success.
pub fn unless_broken_pipe(printed: anyhow::Result<()>) -> anyhow::Result<()> {
    match printed {
        Err(e) if is_broken_pipe(&e) => Ok(()),
        other => other,
    }
}

/// Prints `value` as pretty JSON on stdout.
pub fn json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    outln!("{}", serde_json::to_string_pretty(value)?)?;
    Ok(())
}

/// `n` and the noun, singular for one: "1 token", "3 tokens".
pub fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// RFC 3339 for a Unix timestamp.
pub fn time(unix: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Says on stderr, as `mint`, `bootstrap` and `renew` do alike, when the CA granted
/// another lifetime than the one asked for.
pub fn lifetime_note(granted: Option<writ_agent::lifetime::Granted>) {
    if let Some(note) = granted.and_then(|g| g.note()) {
        eprintln!("note: {note}");
    }
}
