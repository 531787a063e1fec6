//! A user's defaults for the CLI, so the server address, the admin socket or data dir and
//! the output format are not typed every time: `$WRIT_CONFIG`, else
//! `$XDG_CONFIG_HOME/writ/cli.toml`, else `~/.config/writ/cli.toml`. Flags and their
//! environment variables win over the file; the file wins over built-in defaults. Unknown
//! keys are errors naming the key. Loaded once in `main`, before the flags are parsed,
//! because clap's defaults come from here.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::Context;
use serde::Deserialize;

use crate::output::Format;

/// The keys of cli.toml; all optional.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CliDefaults {
    /// The writ server, host:port (`--server`).
    pub server: Option<String>,
    /// The server's data directory, for admin commands (`--data-dir`).
    pub data_dir: Option<PathBuf>,
    /// The admin socket, for admin commands (`--admin-socket`).
    pub admin_socket: Option<PathBuf>,
    /// `text` or `json` (`-o`).
    pub output: Option<Format>,
}

/// The loaded file: its path (when one was read) and its values.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The file read, if any.
    pub path: Option<PathBuf>,
    /// Its values.
    pub values: CliDefaults,
}

static LOADED: OnceLock<Loaded> = OnceLock::new();

/// Reads the defaults file, if there is one. An explicitly named `$WRIT_CONFIG` must exist.
pub fn load() -> anyhow::Result<()> {
    let loaded = match location() {
        Some((path, explicit)) => match std::fs::read_to_string(&path) {
            Ok(text) => Loaded {
                values: parse(&text).map_err(|e| {
                    anyhow::anyhow!(
                        "{}: {e}; cli.toml knows server, data_dir, admin_socket and output",
                        path.display()
                    )
                })?,
                path: Some(path),
            },
            // Only a file the user named must be readable: a HOME that belongs to another
            // user (`sudo -u`, a service account) must not break every command.
            Err(e)
                if !explicit
                    && matches!(
                        e.kind(),
                        std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
                    ) =>
            {
                Loaded::default()
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "reading the CLI defaults {}{}",
                        path.display(),
                        if explicit {
                            " (named by $WRIT_CONFIG)"
                        } else {
                            ""
                        }
                    )
                });
            }
        },
        None => Loaded::default(),
    };
    let _ = LOADED.set(loaded);
    Ok(())
}

/// The loaded defaults (empty before [`load`] or without a file).
pub fn get() -> &'static Loaded {
    LOADED.get_or_init(Loaded::default)
}

/// `--server`'s default for clap: cli.toml's `server`, if any.
pub fn server() -> Option<&'static str> {
    get().values.server.as_deref()
}

/// `-o`'s default for clap: cli.toml's `output`, else text.
pub fn output() -> Format {
    get().values.output.unwrap_or_default()
}

/// Where the file is looked for, and whether it was named explicitly.
pub fn location() -> Option<(PathBuf, bool)> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(p) = var("WRIT_CONFIG") {
        return Some((PathBuf::from(p), true));
    }
    if let Some(d) = var("XDG_CONFIG_HOME") {
        return Some((Path::new(&d).join("writ/cli.toml"), false));
    }
    var("HOME").map(|h| (Path::new(&h).join(".config/writ/cli.toml"), false))
}

fn parse(text: &str) -> Result<CliDefaults, String> {
    toml::from_str(text).map_err(|e| e.message().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_and_unknown_keys_are_named() {
        let d = parse("server = \"ca:8443\"\noutput = \"json\"\ndata_dir = \"/d\"\n").unwrap();
        assert_eq!(d.server.as_deref(), Some("ca:8443"));
        assert_eq!(d.output, Some(Format::Json));
        let e = parse("sever = \"ca:8443\"\n").unwrap_err();
        assert!(e.contains("sever"), "{e}");
        assert!(parse("output = \"yaml\"\n").is_err());
    }
}
