//! What `writ config check` reports: findings with a severity and a fix, and the exit
//! code they add up to. Shared by every group of checks.

use serde::Serialize;

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Risky; works.
    Warning,
    /// Insecure or broken.
    Error,
}

/// One thing wrong with a config.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Severity.
    pub severity: Severity,
    /// The setting or path concerned.
    pub subject: String,
    /// What is wrong.
    pub message: String,
    /// How to fix it, in one line.
    pub fix: String,
}

impl Finding {
    /// A finding.
    pub fn new(
        severity: Severity,
        subject: &str,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            severity,
            subject: subject.to_owned(),
            message: message.into(),
            fix: fix.into(),
        }
    }
}

/// The exit code `writ config check` uses: 0 clean, 1 warnings only, 2 any error.
pub fn exit_code(findings: &[Finding]) -> u8 {
    match findings.iter().map(|f| f.severity).max() {
        None => 0,
        Some(Severity::Warning) => 1,
        Some(Severity::Error) => 2,
    }
}
