//! CPU time of a process, from `/proc/<pid>/stat` (Linux).

use std::time::Duration;

/// User + system CPU time consumed so far by `pid`.
pub fn process_cpu(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces; fields resume after its closing parenthesis.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // Linux reports clock ticks of 1/100 s (USER_HZ) on every mainstream architecture.
    Some(Duration::from_millis((utime + stime) * 10))
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_own_cpu() {
        assert!(super::process_cpu(std::process::id()).is_some());
        assert!(super::process_cpu(u32::MAX).is_none());
    }
}
