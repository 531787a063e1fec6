//! Replacing a small file whole (a summary, a head, a copy of a record): through a
//! temporary file and a rename, so a reader sees the old contents or the new, never a mix.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Replaces the file at `path` with `bytes` (mode 0600); with `sync`, the contents are on
/// disk before the rename (the rename itself is durable once the directory is synced).
pub(crate) fn replace(path: &Path, bytes: &[u8], sync: bool) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(bytes)?;
    if sync {
        file.sync_all()?;
    }
    drop(file);
    std::fs::rename(&tmp, path)
}
