//! The agent's status, kept in a small JSON file beside the identity so `writ agent status`
//! can report on a running agent without a socket.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// Name of the status file in the out dir.
pub const STATUS_FILE: &str = ".writ-agent-status.json";

/// What the agent last did.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct AgentStatus {
    /// The agent's process id.
    pub pid: u32,
    /// When the next renewal is planned (RFC 3339).
    pub next_renewal: Option<String>,
    /// Rotations since the agent started.
    pub rotations: u64,
    /// Bundle updates since the agent started.
    pub bundle_updates: u64,
    /// What the bundle is followed over (`push` or `grpc`), once the watch is open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle_transport: Option<String>,
    /// The metrics endpoint's bound address, when started with `--metrics-listen`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<String>,
    /// The last error, if the last attempt failed.
    pub last_error: Option<String>,
    /// When this status was written (RFC 3339).
    pub updated: String,
}

impl AgentStatus {
    /// Writes the status atomically (temp file + rename).
    pub fn write(&mut self, dir: &Path) -> std::io::Result<()> {
        self.updated = rfc3339(SystemTime::now());
        let tmp = dir.join(format!("{STATUS_FILE}.tmp"));
        std::fs::write(
            &tmp,
            serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?,
        )?;
        std::fs::rename(tmp, path(dir))
    }

    /// Reads the status file, if there is one.
    pub fn read(dir: &Path) -> Option<AgentStatus> {
        let bytes = std::fs::read(path(dir)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

/// The status file's path.
pub fn path(dir: &Path) -> PathBuf {
    dir.join(STATUS_FILE)
}

/// RFC 3339, seconds precision.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}
