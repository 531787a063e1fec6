//! A running `writ agent` child process, killed when dropped.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use super::{Server, writ_bin};

/// `writ agent --server <server> --out-dir <out> <extra>`, running.
pub struct Agent {
    child: Child,
}

impl Agent {
    /// Starts the agent, logging errors only (to the test's stderr).
    pub fn start(server: &Server, out_dir: &Path, extra: &[&str]) -> Agent {
        Self::start_at(&server.addr, out_dir, extra)
    }

    /// Like [`Agent::start`] with `--server servers` (one address or several).
    pub fn start_at(servers: &str, out_dir: &Path, extra: &[&str]) -> Agent {
        let child = Self::command(servers, out_dir, extra)
            .env("WRIT_LOG", "error")
            .spawn()
            .unwrap();
        Agent { child }
    }

    /// Like [`Agent::start`], logging warnings and errors to `log`.
    pub fn start_logged(server: &Server, out_dir: &Path, extra: &[&str], log: &Path) -> Agent {
        let child = Self::command(&server.addr, out_dir, extra)
            .env("WRIT_LOG", "warn")
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        Agent { child }
    }

    fn command(servers: &str, out_dir: &Path, extra: &[&str]) -> Command {
        let mut c = Command::new(writ_bin());
        c.args(["agent", "--server", servers, "--out-dir"])
            .arg(out_dir)
            .args(extra)
            .stdin(Stdio::null());
        c
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it is still running.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// CPU seconds (user + system) the agent has used.
    pub fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .collect();
        let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
        ticks / 100.0
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
