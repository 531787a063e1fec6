//! `writ agent uninstall`: removes what the agent wrote in its out dir (the identity
//! versions, `..data`, the stable links, leftovers of an interrupted swap, the status and
//! lock files), its Workload API socket and, on request, its config file. Everything else
//! stays: a file is removed only when its name *and* its kind are ones the agent creates
//! (a `cert.pem` that is a plain file or a link elsewhere was not written by the agent).

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use crate::Error;
use crate::files::{DATA_LINK, DATA_TMP, FILES, LINK_TMP_PREFIX, is_version_name};
use crate::lock::LOCK_FILE;
use crate::status::STATUS_FILE;

/// What an uninstall would remove and what it leaves.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Paths to remove, in removal order (contents before their directory).
    pub remove: Vec<PathBuf>,
    /// Paths found that the agent did not write; never touched.
    pub keep: Vec<PathBuf>,
    /// The out dir, removed at the end if nothing is left in it.
    pub out_dir: PathBuf,
}

impl Plan {
    /// True when there is nothing to remove.
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty()
    }
}

fn out_dir_error(what: &str, path: &Path, e: io::Error) -> Error {
    Error::OutDir(format!("{what} {}: {e}", path.display()))
}

/// Refuses while an agent holds `out_dir` (see [`crate::lock`]).
pub fn refuse_if_running(out_dir: &Path) -> Result<(), Error> {
    let held = crate::lock::is_held(out_dir)
        .map_err(|e| out_dir_error("checking the agent lock in", out_dir, e))?;
    if held {
        let pid = crate::lock::running_pid(out_dir)
            .map(|p| format!(" (pid {p})"))
            .unwrap_or_default();
        return Err(Error::OutDir(format!(
            "a writ agent{pid} is still running on {}: stop it first (systemctl stop writ-agent, or kill the process), then run uninstall again; nothing was removed",
            out_dir.display()
        )));
    }
    Ok(())
}

/// Lists what to remove: the agent's files in `out_dir`, the Workload API `socket` (only
/// if it is a socket) and `config` (the caller passes it only for `--purge`).
pub fn plan(out_dir: &Path, socket: Option<&Path>, config: Option<&Path>) -> Result<Plan, Error> {
    let mut plan = Plan {
        out_dir: out_dir.to_owned(),
        ..Plan::default()
    };
    match fs::read_dir(out_dir) {
        Ok(entries) => {
            let mut entries: Vec<_> = entries
                .collect::<Result<_, _>>()
                .map_err(|e| out_dir_error("listing", out_dir, e))?;
            entries.sort_by_key(|e| e.file_name());
            for entry in entries {
                classify(&mut plan, &entry.file_name(), &entry.path())?;
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(out_dir_error("listing", out_dir, e)),
    }
    // The lock goes last: it is what tells a concurrent uninstall or agent we are here.
    if let Some(i) = plan.remove.iter().position(|p| p.ends_with(LOCK_FILE)) {
        let lock = plan.remove.remove(i);
        plan.remove.push(lock);
    }
    if let Some(socket) = socket {
        match fs::symlink_metadata(socket) {
            Ok(m) if m.file_type().is_socket() => plan.remove.push(socket.to_owned()),
            Ok(_) => plan.keep.push(socket.to_owned()),
            Err(_) => {}
        }
    }
    if let Some(config) = config
        && fs::symlink_metadata(config).is_ok_and(|m| m.is_file())
    {
        plan.remove.push(config.to_owned());
    }
    Ok(plan)
}

fn classify(plan: &mut Plan, name: &OsStr, path: &Path) -> Result<(), Error> {
    let meta = fs::symlink_metadata(path).map_err(|e| out_dir_error("inspecting", path, e))?;
    let kind = meta.file_type();
    let text = name.to_str().unwrap_or("");
    let ours = if kind.is_symlink() {
        let target = fs::read_link(path).map_err(|e| out_dir_error("reading link", path, e))?;
        if text == DATA_LINK || text == DATA_TMP {
            target
                .to_str()
                .is_some_and(|t| is_version_name(OsStr::new(t)))
        } else if let Some(file) = text.strip_prefix(LINK_TMP_PREFIX).or(Some(text))
            && FILES.contains(&file)
        {
            target == Path::new(DATA_LINK).join(file)
        } else {
            false
        }
    } else if kind.is_dir() && is_version_name(name) {
        // A version holds exactly the agent's files; anything else in it stays, with it.
        let mut foreign = false;
        for entry in fs::read_dir(path).map_err(|e| out_dir_error("listing", path, e))? {
            let entry = entry.map_err(|e| out_dir_error("listing", path, e))?;
            let is_ours = FILES.iter().any(|f| entry.file_name() == OsStr::new(f))
                && entry.file_type().is_ok_and(|t| t.is_file());
            if is_ours {
                plan.remove.push(entry.path());
            } else {
                plan.keep.push(entry.path());
                foreign = true;
            }
        }
        !foreign
    } else {
        kind.is_file() && (text == STATUS_FILE || text == LOCK_FILE)
    };
    if ours {
        plan.remove.push(path.to_owned());
    } else {
        plan.keep.push(path.to_owned());
    }
    Ok(())
}

/// Removes what `plan` lists, holding the agent lock so no agent starts meanwhile, then
/// the out dir if it is empty. Returns what was removed.
pub fn execute(plan: &Plan) -> Result<Vec<PathBuf>, Error> {
    let _lock = if plan.out_dir.is_dir() {
        Some(
            crate::lock::acquire(&plan.out_dir)
                .map_err(|e| Error::OutDir(format!("{e}; nothing was removed")))?,
        )
    } else {
        None
    };
    let mut removed = Vec::new();
    for path in &plan.remove {
        let is_dir = fs::symlink_metadata(path).is_ok_and(|m| m.is_dir());
        let result = if is_dir {
            fs::remove_dir(path)
        } else {
            fs::remove_file(path)
        };
        match result {
            Ok(()) => removed.push(path.clone()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(out_dir_error("removing", path, e)),
        }
    }
    // `acquire` created the lock file if it was missing: ours either way, not reported.
    let _ = fs::remove_file(crate::lock::path(&plan.out_dir));
    if plan.keep.iter().all(|k| !k.starts_with(&plan.out_dir))
        && fs::remove_dir(&plan.out_dir).is_ok()
    {
        removed.push(plan.out_dir.clone());
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::os::unix::fs::symlink;

    use super::*;

    fn layout(out: &Path) {
        let v = out.join("..2026_11_27_00_12_01.123456789");
        fs::create_dir_all(&v).unwrap();
        for f in FILES {
            fs::write(v.join(f), "x").unwrap();
            symlink(Path::new(DATA_LINK).join(f), out.join(f)).unwrap();
        }
        symlink("..2026_11_27_00_12_01.123456789", out.join(DATA_LINK)).unwrap();
        fs::write(out.join(STATUS_FILE), "{}").unwrap();
        fs::write(out.join(LOCK_FILE), "").unwrap();
    }

    #[test]
    fn removes_the_layout_and_keeps_foreign_files() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        layout(&out);
        fs::write(out.join("notes.txt"), "mine").unwrap();
        fs::write(out.join("..data_backup"), "mine").unwrap();
        let p = plan(&out, None, None).unwrap();
        assert_eq!(p.keep, [out.join("..data_backup"), out.join("notes.txt")]);
        assert_eq!(p.remove.last().unwrap(), &out.join(LOCK_FILE));
        execute(&p).unwrap();
        let left: Vec<_> = fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left.len(), 2, "{left:?}");

        // Without the foreign files the out dir itself goes.
        fs::remove_file(out.join("notes.txt")).unwrap();
        fs::remove_file(out.join("..data_backup")).unwrap();
        layout(&out);
        execute(&plan(&out, None, None).unwrap()).unwrap();
        assert!(!out.exists());
    }

    #[test]
    fn look_alikes_are_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        fs::create_dir(&out).unwrap();
        fs::write(out.join("cert.pem"), "a plain file someone put here").unwrap();
        symlink("/etc/hostname", out.join("key.pem")).unwrap();
        fs::create_dir(out.join("..2026_01_01_00_00_00.1")).unwrap();
        fs::write(out.join("..2026_01_01_00_00_00.1/other.txt"), "mine").unwrap();
        fs::write(out.join("..2026_01_01_00_00_00.1/cert.pem"), "x").unwrap();
        let sock_not_socket = tmp.path().join("workload.sock");
        fs::write(&sock_not_socket, "not a socket").unwrap();
        let p = plan(&out, Some(&sock_not_socket), None).unwrap();
        assert_eq!(p.remove, [out.join("..2026_01_01_00_00_00.1/cert.pem")]);
        assert!(p.keep.contains(&out.join("cert.pem")));
        assert!(p.keep.contains(&out.join("key.pem")));
        assert!(p.keep.contains(&sock_not_socket));
        execute(&p).unwrap();
        assert!(out.join("cert.pem").exists() && sock_not_socket.exists());
        assert!(out.join("..2026_01_01_00_00_00.1/other.txt").exists());
    }

    #[test]
    fn refuses_while_an_agent_holds_the_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        let held = crate::lock::acquire(&out).unwrap();
        let err = refuse_if_running(&out).unwrap_err().to_string();
        assert!(
            err.contains("still running") && err.contains("nothing was removed"),
            "{err}"
        );
        let p = plan(&out, None, None).unwrap();
        assert!(execute(&p).is_err());
        assert!(out.join(LOCK_FILE).exists());
        drop(held);
        refuse_if_running(&out).unwrap();
    }
}
