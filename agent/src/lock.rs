//! The running agent's hold on its out dir: an exclusive `flock(2)` on
//! `<out>/.writ-agent.lock` for the life of the process, so a second agent on the same dir
//! is refused and `writ agent uninstall` can tell whether one is still running. The
//! kernel drops the lock when the process dies, however it dies.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, flock};

/// The lock file's name in the out dir.
pub const LOCK_FILE: &str = ".writ-agent.lock";

/// Held while the agent runs; the lock is released on drop.
#[derive(Debug)]
pub struct AgentLock {
    _file: File,
}

/// The lock file of `out_dir`.
pub fn path(out_dir: &Path) -> PathBuf {
    out_dir.join(LOCK_FILE)
}

/// Takes the lock, creating the out dir (0700) and the lock file (0600) if needed. Fails
/// with a message naming the running agent's pid (from its status file) when another
/// agent holds it.
pub fn acquire(out_dir: &Path) -> io::Result<AgentLock> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(out_dir)?;
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(path(out_dir))?;
    match flock(&file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(AgentLock { _file: file }),
        Err(rustix::io::Errno::WOULDBLOCK) => Err(io::Error::new(
            io::ErrorKind::WouldBlock,
            format!(
                "another writ agent{} is already running on {}; stop it first",
                running_pid(out_dir)
                    .map(|p| format!(" (pid {p})"))
                    .unwrap_or_default(),
                out_dir.display()
            ),
        )),
        Err(e) => Err(e.into()),
    }
}

/// True when an agent holds `out_dir`'s lock right now. A missing lock file means none.
pub fn is_held(out_dir: &Path) -> io::Result<bool> {
    let file = match File::open(path(out_dir)) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    match flock(&file, FlockOperation::NonBlockingLockShared) {
        Ok(()) => Ok(false),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(true),
        Err(e) => Err(e.into()),
    }
}

/// The pid the agent recorded in its status file, if any.
pub fn running_pid(out_dir: &Path) -> Option<u32> {
    crate::status::AgentStatus::read(out_dir).map(|s| s.pid)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn one_holder_at_a_time_and_released_on_drop() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        assert!(!is_held(&out).unwrap());
        let held = acquire(&out).unwrap();
        assert!(is_held(&out).unwrap());
        let err = acquire(&out).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        assert!(err.to_string().contains("already running"), "{err}");
        drop(held);
        assert!(!is_held(&out).unwrap());
        drop(acquire(&out).unwrap());
    }
}
