//! Custody of the CA's keys at the edge: where the passphrase comes from, the refusal to
//! run as root, and the refusal to start over paths other users can read.
//!
//! The CA core never reads a passphrase; this module does, and hands the bytes to
//! [`writ_ca::seal::unlock`].

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use writ_ca::seal::{KdfParams, KeyProtection};
use zeroize::Zeroizing;

use crate::{Error, Settings};

/// Environment variable holding the passphrase when no file is given.
pub const PASSPHRASE_ENV: &str = "WRIT_PASSPHRASE";

/// Refuses to run with effective uid 0 unless `allow_root`.
pub fn refuse_root(allow_root: bool) -> Result<(), Error> {
    if rustix::process::geteuid().is_root() && !allow_root {
        return Err(Error::Custody(
            "writ server refuses to run as root: a compromise of the process would own the \
             whole machine. Run it as a dedicated user (the packaged unit uses `writ`; \
             `useradd --system --home-dir /var/lib/writ writ`), or pass --allow-root if you \
             really mean it (containers, CI)"
                .into(),
        ));
    }
    Ok(())
}

/// Refuses a directory that its group or others can access at all.
pub fn check_private_dir(path: &Path, what: &str) -> Result<(), Error> {
    check_mode(path, what, "700")
}

/// Refuses a file that its group or others can access at all.
pub fn check_private_file(path: &Path, what: &str) -> Result<(), Error> {
    check_mode(path, what, "600")
}

fn check_mode(path: &Path, what: &str, fix: &str) -> Result<(), Error> {
    let meta = std::fs::metadata(path)
        .map_err(|e| Error::io(format!("reading the {what} {}", path.display()), e))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::Custody(format!(
            "the {what} {} has mode {mode:03o}: its group or other users can access it, \
             and it guards the CA's private keys. Fix: chmod {fix} '{}'",
            path.display(),
            path.display()
        )));
    }
    Ok(())
}

/// The key protection `settings` ask for: the passphrase from `passphrase_file`, else
/// from `WRIT_PASSPHRASE` (`env`), else unencrypted keys in development mode; otherwise
/// a refusal that says what to do.
pub fn key_protection(settings: &Settings, env: Option<String>) -> Result<KeyProtection, Error> {
    let passphrase = match (&settings.passphrase_file, env) {
        (Some(path), _) => {
            check_private_file(path, "passphrase file")?;
            let text = Zeroizing::new(std::fs::read(path).map_err(|e| {
                Error::io(format!("reading the passphrase file {}", path.display()), e)
            })?);
            // One trailing newline is what `echo` and editors add; it is not part of it.
            let end = text
                .strip_suffix(b"\r\n")
                .or_else(|| text.strip_suffix(b"\n"))
                .unwrap_or(&text)
                .len();
            if end == 0 {
                return Err(Error::Custody(format!(
                    "the passphrase file {} is empty; write the passphrase into it",
                    path.display()
                )));
            }
            Zeroizing::new(text[..end].to_vec())
        }
        (None, Some(env)) => {
            let env = Zeroizing::new(env);
            if env.is_empty() {
                return Err(Error::Custody(format!(
                    "{PASSPHRASE_ENV} is set but empty; set it to the passphrase or unset it"
                )));
            }
            Zeroizing::new(env.as_bytes().to_vec())
        }
        // The start-up warning comes once the keys are open (`crate::start`).
        (None, None) if settings.dev => return Ok(KeyProtection::Unencrypted),
        (None, None) => {
            return Err(Error::Custody(format!(
                "no passphrase to encrypt the CA's private keys with: pass --passphrase-file FILE \
                 (mode 0600; `passphrase_file` in the config) or set {PASSPHRASE_ENV}; for a \
                 throw-away development CA with unencrypted keys pass --dev"
            )));
        }
    };
    Ok(KeyProtection::Passphrase {
        passphrase,
        params: KdfParams::default(),
    })
}

/// Checks the data directory and the admin socket's directory before anything is opened.
pub fn check_paths(settings: &Settings) -> Result<(), Error> {
    check_private_dir(&settings.data_dir, "data directory")?;
    if let Some(dir) = settings
        .admin_socket
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        && dir != settings.data_dir
    {
        check_private_dir(dir, "admin socket directory")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::ServerConfig;

    fn settings(dir: &Path) -> Settings {
        ServerConfig {
            data_dir: Some(dir.to_owned()),
            ..Default::default()
        }
        .resolve()
        .unwrap()
    }

    #[test]
    fn open_modes_are_refused_with_the_fix() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("d");
        std::fs::create_dir(&dir).unwrap();
        for mode in [0o750, 0o705, 0o710, 0o777] {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = check_paths(&settings(&dir)).unwrap_err().to_string();
            assert!(
                err.contains(&format!("chmod 700 '{}'", dir.display())),
                "{err}"
            );
        }
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        check_paths(&settings(&dir)).unwrap();

        let file = tmp.path().join("pass");
        std::fs::write(&file, "pw\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
        let mut s = settings(&dir);
        s.passphrase_file = Some(file.clone());
        let err = key_protection(&s, None).unwrap_err().to_string();
        assert!(
            err.contains(&format!("chmod 600 '{}'", file.display())),
            "{err}"
        );
    }

    #[test]
    fn admin_socket_directory_is_checked() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let sock = tmp.path().join("sock");
        std::fs::create_dir(&data).unwrap();
        std::fs::create_dir(&sock).unwrap();
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut s = settings(&data);
        s.admin_socket = sock.join("admin.sock");
        let err = check_paths(&s).unwrap_err().to_string();
        assert!(err.contains("admin socket directory"), "{err}");
        assert!(
            err.contains(&format!("chmod 700 '{}'", sock.display())),
            "{err}"
        );
    }

    #[test]
    fn passphrase_sources() {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = settings(tmp.path());
        let err = key_protection(&s, None).unwrap_err().to_string();
        assert!(
            err.contains("--passphrase-file") && err.contains("--dev"),
            "{err}"
        );
        assert!(key_protection(&s, Some(String::new())).is_err());
        let KeyProtection::Passphrase { passphrase, .. } =
            key_protection(&s, Some("from env".into())).unwrap()
        else {
            panic!("expected a passphrase")
        };
        assert_eq!(&passphrase[..], b"from env");

        let file = tmp.path().join("pass");
        std::fs::write(&file, "from file\r\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        s.passphrase_file = Some(file.clone());
        // The file wins over the environment.
        let KeyProtection::Passphrase { passphrase, .. } =
            key_protection(&s, Some("from env".into())).unwrap()
        else {
            panic!("expected a passphrase")
        };
        assert_eq!(&passphrase[..], b"from file");
        std::fs::write(&file, "\n").unwrap();
        assert!(
            key_protection(&s, None)
                .unwrap_err()
                .to_string()
                .contains("empty")
        );

        s.passphrase_file = None;
        s.dev = true;
        assert!(matches!(
            key_protection(&s, None).unwrap(),
            KeyProtection::Unencrypted
        ));
    }
}
