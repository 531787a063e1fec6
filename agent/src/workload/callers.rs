//! Who may call the Workload API. The agent holds one identity and hands its private key
//! to every caller it serves, so the socket is not enough of a gate: each call's peer
//! credentials (`SO_PEERCRED`: uid, gid and pid of the process that connected, as the
//! kernel recorded them at `connect(2)`) must name an allowed uid or gid. SPIRE reads the
//! same credentials to attest a caller; writ's agent serves one identity, so its policy is
//! an allow list, by default the agent's own user and root.

use tokio::net::unix::UCred;
use tonic::Status;

/// How many uids and gids one agent may allow.
pub const MAX_ALLOWED: usize = 64;

/// The uids and gids whose processes may call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Callers {
    uids: Vec<u32>,
    gids: Vec<u32>,
}

impl Default for Callers {
    /// The agent's own user and root: an agent nobody configured is not open to every
    /// local user.
    fn default() -> Self {
        let own = rustix::process::getuid().as_raw();
        let mut uids = vec![own];
        if own != 0 {
            uids.push(0);
        }
        Self {
            uids,
            gids: Vec::new(),
        }
    }
}

impl Callers {
    /// Exactly `uids` and `gids` (`--workload-uid`, `--workload-gid`). An empty list would
    /// serve nobody: refused, as is an absurdly long one.
    pub fn new(mut uids: Vec<u32>, mut gids: Vec<u32>) -> Result<Self, String> {
        if uids.is_empty() && gids.is_empty() {
            return Err(
                "the Workload API would serve nobody: give at least one --workload-uid or --workload-gid, or neither for the default (the agent's own user and root)"
                    .into(),
            );
        }
        if uids.len() + gids.len() > MAX_ALLOWED {
            return Err(format!(
                "{} workload uids and gids given; at most {MAX_ALLOWED} are accepted (allow a group with --workload-gid instead)",
                uids.len() + gids.len()
            ));
        }
        uids.sort_unstable();
        uids.dedup();
        gids.sort_unstable();
        gids.dedup();
        Ok(Self { uids, gids })
    }

    /// The allowed uids.
    pub fn uids(&self) -> &[u32] {
        &self.uids
    }

    /// The allowed gids.
    pub fn gids(&self) -> &[u32] {
        &self.gids
    }

    /// Admits a caller whose uid or primary gid is allowed. Without credentials (not a
    /// unix socket) nobody is admitted.
    pub fn admit(&self, peer: Option<&UCred>) -> Result<(), Status> {
        let Some(peer) = peer else {
            return Err(Status::permission_denied(
                "the caller's credentials could not be read; the Workload API serves only callers on its unix socket",
            ));
        };
        if self.uids.contains(&peer.uid()) || self.gids.contains(&peer.gid()) {
            return Ok(());
        }
        let pid = peer.pid().map_or_else(|| "?".into(), |p| p.to_string());
        Err(Status::permission_denied(format!(
            "uid {} (gid {}, pid {pid}) may not use this Workload API: it serves uids {:?} and gids {:?}; add --workload-uid {} or --workload-gid {} to the agent",
            peer.uid(),
            peer.gid(),
            self.uids,
            self.gids,
            peer.uid(),
            peer.gid(),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The credentials of this process, as a peer on a socket pair sees them.
    fn own_cred() -> UCred {
        let (a, _b) = tokio::net::UnixStream::pair().unwrap();
        a.peer_cred().unwrap()
    }

    #[tokio::test]
    async fn a_caller_is_admitted_by_uid_or_gid_and_refused_by_name_otherwise() {
        let me = own_cred();
        assert!(Callers::default().admit(Some(&me)).is_ok());
        assert!(
            Callers::new(vec![me.uid()], vec![])
                .unwrap()
                .admit(Some(&me))
                .is_ok()
        );
        assert!(
            Callers::new(vec![], vec![me.gid()])
                .unwrap()
                .admit(Some(&me))
                .is_ok()
        );
        let other = Callers::new(vec![me.uid() ^ 1], vec![me.gid() ^ 1]).unwrap();
        let refused = other.admit(Some(&me)).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied);
        assert!(
            refused.message().contains(&format!("uid {} ", me.uid())),
            "{}",
            refused.message()
        );
        assert!(refused.message().contains("--workload-uid"));
        assert_eq!(
            other.admit(None).unwrap_err().code(),
            tonic::Code::PermissionDenied
        );
    }

    #[test]
    fn empty_and_oversized_allow_lists_are_refused() {
        assert!(Callers::new(vec![], vec![]).unwrap_err().contains("nobody"));
        let many = (0..=MAX_ALLOWED as u32).collect();
        assert!(Callers::new(many, vec![]).unwrap_err().contains("at most"));
        assert_eq!(Callers::new(vec![5, 5, 1], vec![]).unwrap().uids(), [1, 5]);
    }
}
