//! Identity files on disk: `cert.pem` (leaf, then intermediates), `key.pem` (PKCS#8, mode
//! 0600) and `bundle.pem` (roots), always replaced together as one set.
//!
//! The layout is the one Kubernetes' atomic writer uses for projected volumes
//! (kubernetes/pkg/volume/util/atomic_writer.go), so tools that already cope with
//! Secret/ConfigMap volumes cope with it too:
//!
//! ```text
//! out/
//!   ..2026_11_27_00_12_01.123456789/   one immutable directory per version
//!     cert.pem  key.pem  bundle.pem
//!   ..data -> ..2026_11_27_00_12_01.123456789
//!   cert.pem -> ..data/cert.pem        stable names, created once
//!   key.pem -> ..data/key.pem
//!   bundle.pem -> ..data/bundle.pem
//! ```
//!
//! A new version is written and fsynced in full before `..data` is swapped to it with one
//! `rename(2)`, so no reader ever opens a half-written file. A reader that resolves `..data`
//! once and reads the three files from that version (as [`read_identity`] does, and as
//! watchers of `..data` do) always gets a key and certificate that belong together. Readers
//! that open `cert.pem` and `key.pem` separately can still straddle a swap, which no layout
//! can prevent; they must retry on a mismatch.
//!
//! Writers serialize on an advisory `flock(2)` of the out dir itself, so the agent and a
//! concurrent `writ renew` cannot interleave their swaps. Readers take no lock.

use std::ffi::OsStr;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, symlink};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use writ_ca::PrivateKey;
use zeroize::Zeroizing;

mod identity;

pub use identity::Identity;
use identity::Problem;

/// File name of the certificate chain, leaf first.
pub const CERT_FILE: &str = "cert.pem";
/// File name of the private key (PKCS#8 PEM, mode 0600).
pub const KEY_FILE: &str = "key.pem";
/// File name of the trust bundle (root certificates).
pub const BUNDLE_FILE: &str = "bundle.pem";
/// The symlink naming the current version directory.
pub const DATA_LINK: &str = "..data";

/// The three files of a set, in the order they are written.
pub(crate) const FILES: [&str; 3] = [CERT_FILE, KEY_FILE, BUNDLE_FILE];
/// Built beside `..data` and renamed over it, so the swap is one atomic rename.
pub(crate) const DATA_TMP: &str = "..data_tmp";
/// Prefix of the temporary symlinks renamed over plain files during an upgrade.
pub(crate) const LINK_TMP_PREFIX: &str = "..tmp_";
/// Public material: readable by whoever may enter the out dir (its mode is the gate).
const PUBLIC_MODE: u32 = 0o644;
/// The private key is readable by the owner only, whatever the directory allows.
const KEY_MODE: u32 = 0o600;
/// A new out dir is private to the writer; an existing one keeps the operator's mode.
const OUT_DIR_MODE: u32 = 0o700;
/// Version directories are gated by the out dir's mode, as in Kubernetes.
const VERSION_DIR_MODE: u32 = 0o755;
/// How often [`read_identity`] re-reads when a writer swapped versions under it. Each
/// retry means a whole rotation happened during one read, so a handful is plenty.
const READ_ATTEMPTS: usize = 16;

/// Everything that can go wrong reading or writing identity files. Messages name the path
/// involved and never contain key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file-system operation failed.
    #[error("could not {action} {path}: {source}")]
    Io {
        /// What was being done, as a verb phrase ("read", "create directory", ...).
        action: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// A file exists but does not hold what its name promises (bad PEM, wrong block type).
    #[error("{path}: {reason}")]
    Unparseable {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Some files of the set exist and others do not.
    #[error(
        "{dir} holds an incomplete identity ({missing} missing); remove the leftovers or write a fresh identity"
    )]
    Incomplete {
        /// The out dir.
        dir: PathBuf,
        /// The missing file names, comma-separated.
        missing: String,
    },
    /// `key.pem` does not belong to the leaf certificate in `cert.pem`.
    #[error(
        "{key} does not belong to the certificate in {cert}; they come from different issuances: write a fresh identity (writ renew, writ x509 mint)"
    )]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// An in-memory identity is not a usable set (empty chain, key of another certificate).
    #[error("invalid identity: {0}")]
    Invalid(String),
    /// A name writ needs for a file or symlink is taken by a directory or special file.
    #[error(
        "{path} is a directory or special file where writ keeps an identity file; move it away"
    )]
    NotAFile {
        /// The offending path.
        path: PathBuf,
    },
    /// [`write_bundle`] found no identity to pair the new bundle with.
    #[error("{dir} holds no identity to pair a new bundle with; write the identity first")]
    NoIdentity {
        /// The out dir.
        dir: PathBuf,
    },
    /// Versions kept being swapped while [`read_identity`] read them.
    #[error(
        "{dir} changed {READ_ATTEMPTS} times while being read; is another process rewriting it in a loop?"
    )]
    Unstable {
        /// The out dir.
        dir: PathBuf,
    },
}

/// Writes `id` into `dir` as a new version and swaps it in atomically. Creates `dir` (mode
/// 0700) when missing, replaces plain files left by older tools with the symlink layout,
/// and removes older versions. Blocking: call it from `spawn_blocking` in async code.
pub fn write_identity(dir: &Path, id: &Identity) -> Result<(), Error> {
    id.validate()?;
    let key_pem = id.key.to_pem();
    write_set(
        dir,
        id.chain_pem().as_bytes(),
        key_pem.as_bytes(),
        id.bundle_pem().as_bytes(),
    )
}

/// Swaps in a version with the current certificate and key and a new bundle of DER
/// `roots`. Fails with [`Error::NoIdentity`] when `dir` holds no identity yet.
pub fn write_bundle(dir: &Path, roots: &[Vec<u8>]) -> Result<(), Error> {
    let current = read_identity(dir)?.ok_or_else(|| Error::NoIdentity {
        dir: dir.to_path_buf(),
    })?;
    let next = current.with_bundle(roots.to_vec())?;
    write_identity(dir, &next)
}

/// Reads the identity in `dir`: `None` when none of the three files exist, an error when
/// the set is incomplete, unparseable, or its key is not the certificate's. Reads the
/// symlink layout and plain files alike.
pub fn read_identity(dir: &Path) -> Result<Option<Identity>, Error> {
    for _ in 0..READ_ATTEMPTS {
        let before = data_target(dir)?;
        let result = match &before {
            Some(version) => read_set(dir, &dir.join(version), false),
            None => read_set(dir, dir, true),
        };
        // A version directory never changes once `..data` points to it, so if `..data`
        // named the same version before and after, everything read came from that one
        // version. Otherwise a swap (and maybe a cleanup) happened mid-read: read again.
        if data_target(dir)? == before {
            return result;
        }
    }
    Err(Error::Unstable {
        dir: dir.to_path_buf(),
    })
}

/// Reads the three files under `base`; paths in errors name the stable files in `dir`.
fn read_set(dir: &Path, base: &Path, absent_is_none: bool) -> Result<Option<Identity>, Error> {
    let read = |name: &str| read_optional(&base.join(name), &dir.join(name));
    let (cert, key, bundle) = (read(CERT_FILE)?, read(KEY_FILE)?, read(BUNDLE_FILE)?);
    let (Some(cert), Some(key), Some(bundle)) = (&cert, &key, &bundle) else {
        if absent_is_none && cert.is_none() && key.is_none() && bundle.is_none() {
            return Ok(None);
        }
        let missing: Vec<&str> = [(CERT_FILE, &cert), (KEY_FILE, &key), (BUNDLE_FILE, &bundle)]
            .into_iter()
            .filter(|(_, c)| c.is_none())
            .map(|(name, _)| name)
            .collect();
        return Err(Error::Incomplete {
            dir: dir.to_path_buf(),
            missing: missing.join(", "),
        });
    };
    let cert_path = dir.join(CERT_FILE);
    let key_path = dir.join(KEY_FILE);
    let bundle_path = dir.join(BUNDLE_FILE);
    let chain = writ_ca::x509::certs_from_pem(cert).map_err(|e| Error::Unparseable {
        path: cert_path.clone(),
        reason: format!("{e}; expected PEM certificates, leaf first"),
    })?;
    let bundle = writ_ca::x509::certs_from_pem(bundle).map_err(|e| Error::Unparseable {
        path: bundle_path.clone(),
        reason: format!("{e}; expected PEM root certificates"),
    })?;
    let key_text = std::str::from_utf8(key).map_err(|_| Error::Unparseable {
        path: key_path.clone(),
        reason: "not PEM text".into(),
    })?;
    let key = PrivateKey::from_pem(key_text).map_err(|e| Error::Unparseable {
        path: key_path.clone(),
        reason: e.to_string(),
    })?;
    let id = Identity { chain, key, bundle };
    match id.check() {
        Ok(()) => Ok(Some(id)),
        Err(Problem::KeyMismatch) => Err(Error::KeyMismatch {
            cert: cert_path,
            key: key_path,
        }),
        Err(p @ Problem::BadCert("bundle", ..)) | Err(p @ Problem::EmptyBundle) => {
            Err(Error::Unparseable {
                path: bundle_path,
                reason: p.to_string(),
            })
        }
        Err(p) => Err(Error::Unparseable {
            path: cert_path,
            reason: p.to_string(),
        }),
    }
}

/// Writes one version holding the given file contents and makes it current.
fn write_set(dir: &Path, cert: &[u8], key: &[u8], bundle: &[u8]) -> Result<(), Error> {
    ensure_out_dir(dir)?;
    let _lock = lock_dir(dir)?;
    upgrade_plain_files(dir)?;
    let version = create_version(dir, &[cert, key, bundle])?;
    swap_data(dir, &version)?;
    ensure_stable_links(dir)?;
    sync_dir(dir)?;
    remove_old_versions(dir, &version)
}

/// Creates `dir` with mode 0700 when missing; an existing directory keeps its mode.
fn ensure_out_dir(dir: &Path) -> Result<(), Error> {
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(Error::NotAFile {
            path: dir.to_path_buf(),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => DirBuilder::new()
            .recursive(true)
            .mode(OUT_DIR_MODE)
            .create(dir)
            .map_err(io_err("create directory", dir)),
        Err(e) => Err(io_err("inspect", dir)(e)),
    }
}

/// Takes an exclusive advisory lock on the out dir itself (no lock file to leave behind);
/// released when the returned handle drops.
pub(crate) fn lock_dir(dir: &Path) -> Result<File, Error> {
    let handle = File::open(dir).map_err(io_err("open", dir))?;
    rustix::fs::flock(&handle, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| io_err("lock", dir)(e.into()))?;
    Ok(handle)
}

/// Turns plain `cert.pem`/`key.pem`/`bundle.pem` files into the symlink layout without
/// changing what any of the names shows. Their current contents are first copied into a
/// version that `..data` points to; each plain file is then replaced by a symlink that
/// resolves to identical bytes. Only after that does the caller swap in the new set, in
/// one step, so a reader never pairs an old plain file with a new file.
fn upgrade_plain_files(dir: &Path) -> Result<(), Error> {
    let mut plain = Vec::new();
    for name in FILES {
        let path = dir.join(name);
        match fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_symlink() => {}
            Ok(m) if m.is_file() => plain.push(name),
            Ok(_) => return Err(Error::NotAFile { path }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("inspect", &path)(e)),
        }
    }
    if plain.is_empty() {
        return Ok(());
    }
    // Snapshot what each name shows now (through any symlink), key included.
    let mut current = Vec::with_capacity(FILES.len());
    for name in FILES {
        current.push(read_optional(&dir.join(name), &dir.join(name))?);
    }
    let version = new_version_dir(dir)?;
    let vdir = dir.join(&version);
    for (name, bytes) in FILES.iter().zip(&current) {
        if let Some(bytes) = bytes {
            write_new_file(&vdir.join(name), bytes, mode_of(name))?;
        }
    }
    sync_dir(&vdir)?;
    swap_data(dir, &version)?;
    for name in plain {
        replace_with_link(dir, name)?;
    }
    sync_dir(dir)
}

/// Creates a fresh version directory holding the three files, fsynced.
fn create_version(dir: &Path, contents: &[&[u8]; 3]) -> Result<String, Error> {
    let version = new_version_dir(dir)?;
    let vdir = dir.join(&version);
    for (name, bytes) in FILES.iter().zip(contents) {
        write_new_file(&vdir.join(name), bytes, mode_of(name))?;
    }
    sync_dir(&vdir)?;
    Ok(version)
}

/// Creates an empty, uniquely named version directory and returns its name. Names are
/// `..` + the UTC time to the nanosecond, as Kubernetes names them, so a listing sorts by age.
fn new_version_dir(dir: &Path) -> Result<String, Error> {
    let stamp: String = humantime::format_rfc3339_nanos(SystemTime::now())
        .to_string()
        .chars()
        .filter(|c| *c != 'Z')
        .map(|c| if matches!(c, '-' | 'T' | ':') { '_' } else { c })
        .collect();
    let mut n = 0u32;
    loop {
        let name = if n == 0 {
            format!("..{stamp}")
        } else {
            format!("..{stamp}_{n}")
        };
        let path = dir.join(&name);
        match DirBuilder::new().mode(VERSION_DIR_MODE).create(&path) {
            Ok(()) => return Ok(name),
            // Two versions within the same nanosecond, or a leftover from a crash.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < 1000 => n += 1,
            Err(e) => return Err(io_err("create directory", &path)(e)),
        }
    }
}

/// Writes a new file with its final mode set at creation (no window with a looser mode)
/// and fsyncs it.
fn write_new_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), Error> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io_err("create", path))?;
    file.write_all(bytes).map_err(io_err("write", path))?;
    file.sync_all().map_err(io_err("sync", path))
}

/// Points `..data` at `version` with one atomic rename of a freshly made symlink.
fn swap_data(dir: &Path, version: &str) -> Result<(), Error> {
    let tmp = dir.join(DATA_TMP);
    remove_if_exists(&tmp)?;
    symlink(version, &tmp).map_err(io_err("create symlink", &tmp))?;
    let data = dir.join(DATA_LINK);
    fs::rename(&tmp, &data).map_err(io_err("rename a symlink over", &data))
}

/// Creates the stable `cert.pem -> ..data/cert.pem` links that are missing or point
/// elsewhere. Links already right are left alone: they never need to change.
fn ensure_stable_links(dir: &Path) -> Result<(), Error> {
    for name in FILES {
        let path = dir.join(name);
        let target = Path::new(DATA_LINK).join(name);
        match fs::read_link(&path) {
            Ok(t) if t == target => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                symlink(&target, &path).map_err(io_err("create symlink", &path))?;
            }
            // A symlink elsewhere, or a plain file a non-locking tool wrote since the upgrade.
            _ => replace_with_link(dir, name)?,
        }
    }
    Ok(())
}

/// Atomically replaces whatever is at `dir/name` by the symlink `..data/name`.
fn replace_with_link(dir: &Path, name: &str) -> Result<(), Error> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{LINK_TMP_PREFIX}{name}"));
    remove_if_exists(&tmp)?;
    symlink(Path::new(DATA_LINK).join(name), &tmp).map_err(io_err("create symlink", &tmp))?;
    fs::rename(&tmp, &path).map_err(io_err("rename a symlink over", &path))
}

/// Removes every version directory but `keep`. Failures are ignored: a leftover version
/// wastes a few kilobytes and is retried on the next write, while failing here would
/// report an error for a write that succeeded.
fn remove_old_versions(dir: &Path, keep: &str) -> Result<(), Error> {
    let entries = fs::read_dir(dir).map_err(io_err("list", dir))?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        if name == OsStr::new(keep) || !is_version_name(&name) {
            continue;
        }
        let path = entry.path();
        let is_dir = fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir());
        if is_dir && let Err(e) = fs::remove_dir_all(&path) {
            tracing::warn!(path = %path.display(), error = %e, "could not remove an old identity version");
        }
    }
    Ok(())
}

/// True for `..<digit>...`: the names [`new_version_dir`] makes, and nothing else a user
/// could plausibly keep in the out dir.
pub(crate) fn is_version_name(name: &OsStr) -> bool {
    name.to_str().is_some_and(|s| {
        s.strip_prefix("..")
            .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
    })
}

/// The version `..data` points to, or `None` when there is no `..data` (plain files).
fn data_target(dir: &Path) -> Result<Option<PathBuf>, Error> {
    let data = dir.join(DATA_LINK);
    match fs::read_link(&data) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::InvalidInput => Err(Error::NotAFile { path: data }),
        Err(e) => Err(io_err("read symlink", &data)(e)),
    }
}

/// Reads `path`, `None` when it does not exist; errors name `shown` (the stable name).
fn read_optional(path: &Path, shown: &Path) -> Result<Option<Zeroizing<Vec<u8>>>, Error> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(Zeroizing::new(bytes))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("read", shown)(e)),
    }
}

fn remove_if_exists(path: &Path) -> Result<(), Error> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("remove", path)(e)),
        _ => Ok(()),
    }
}

/// Fsyncs a directory so renames and new entries in it survive a crash.
fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("sync directory", dir))
}

fn mode_of(name: &str) -> u32 {
    if name == KEY_FILE {
        KEY_MODE
    } else {
        PUBLIC_MODE
    }
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> Error + 'a {
    move |source| Error::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// Test identities from a real writ CA, shared with the Workload API tests.
#[cfg(test)]
pub(crate) mod testing;

#[cfg(test)]
mod tests;
