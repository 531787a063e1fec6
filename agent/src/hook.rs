//! `--on-rotate CMD`: run a command after each update so a service can reload. Its failure
//! is logged, never fatal; it is killed after a timeout.

use std::time::Duration;

use tokio::process::Command;

/// Runs `cmd` with `sh -c`, with `WRIT_OUT_DIR` set, waiting at most `timeout`.
pub async fn run(cmd: &str, out_dir: &std::path::Path, timeout: Duration) {
    let child = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .env("WRIT_OUT_DIR", out_dir)
        .kill_on_drop(true)
        .stdin(std::process::Stdio::null())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "on-rotate command could not start");
            return;
        }
    };
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) if status.success() => tracing::debug!("on-rotate command succeeded"),
        Ok(Ok(status)) => tracing::warn!(%status, "on-rotate command failed"),
        Ok(Err(e)) => tracing::warn!(error = %e, "on-rotate command failed"),
        Err(_) => {
            let _ = child.kill().await;
            tracing::warn!(timeout = ?timeout, "on-rotate command timed out and was killed");
        }
    }
}
