//! pkilint (DigiCert's RFC 5280 linter) over issued certificates.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{PKILINT_ENV, write_pem};

/// What pkilint is asked to lint.
pub enum LintJob {
    /// One certificate, with `lint_pkix_cert` (RFC 5280 profile).
    Cert {
        /// Names the certificate in findings.
        label: String,
        /// The certificate, DER.
        der: Vec<u8>,
    },
    /// An issuer/subject pair, with `lint_pkix_signer_signee_cert_chain` (name chaining,
    /// key identifiers, and the subject's signature verified with the issuer's key).
    Chain {
        /// Names the pair in findings.
        label: String,
        /// The issuer, DER.
        issuer: Vec<u8>,
        /// The subject, DER.
        subject: Vec<u8>,
    },
}

/// One pkilint finding at WARNING severity or above.
#[derive(Debug, Clone)]
pub struct Finding {
    /// The job's label.
    pub label: String,
    /// FATAL, ERROR or WARNING.
    pub severity: String,
    /// pkilint's finding code, e.g. `pkix.ca_certificate_no_ku_extension`.
    pub code: String,
    /// The validator that reported it.
    pub validator: String,
    /// Where in the certificate.
    pub node_path: String,
    /// pkilint's message, if any.
    pub message: String,
}

/// Runs pkilint's own CLI entry points (`lint_pkix_cert` and
/// `lint_pkix_signer_signee_cert_chain`, exactly as the console scripts call them) over
/// every job in one Python process, and returns findings at WARNING or above. Panics with
/// install instructions when pkilint is missing, or when a linter fails to run.
pub fn pkilint(jobs: &[LintJob]) -> Vec<Finding> {
    let python = pkilint_python();
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut spec = Vec::new();
    let mut labels = Vec::new();
    for (i, job) in jobs.iter().enumerate() {
        let (label, kind, certs) = match job {
            LintJob::Cert { label, der } => (label, "cert", vec![der]),
            LintJob::Chain {
                label,
                issuer,
                subject,
            } => (label, "chain", vec![issuer, subject]),
        };
        let files: Vec<String> = certs
            .iter()
            .enumerate()
            .map(|(j, der)| {
                let path = write_pem(dir.path(), &format!("{i}-{j}.pem"), &[(*der).clone()]);
                path.to_string_lossy().into_owned()
            })
            .collect();
        spec.push(serde_json::json!({ "kind": kind, "files": files }));
        labels.push(label.clone());
    }
    let spec_path = dir.path().join("jobs.json");
    std::fs::write(&spec_path, serde_json::to_vec(&spec).expect("encode jobs")).expect("write");
    let out = Command::new(&python)
        .arg("-c")
        .arg(PKILINT_DRIVER)
        .arg(&spec_path)
        .output()
        .expect("run pkilint");
    assert!(
        out.status.success(),
        "pkilint ({}) failed to run:\n{}{}",
        python.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let reports: Vec<serde_json::Value> =
        serde_json::from_slice(&out.stdout).expect("pkilint driver prints a JSON array");
    assert_eq!(reports.len(), jobs.len(), "one pkilint report per job");
    let mut findings = Vec::new();
    for (label, report) in labels.iter().zip(&reports) {
        let results = report["results"]
            .as_array()
            .unwrap_or_else(|| panic!("{label}: unexpected pkilint report {report}"));
        for result in results {
            for f in result["finding_descriptions"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
                findings.push(Finding {
                    label: label.clone(),
                    severity: s(&f["severity"]),
                    code: s(&f["code"]),
                    validator: s(&result["validator"]),
                    node_path: s(&result["node_path"]),
                    message: s(&f["message"]),
                });
            }
        }
    }
    findings
}

/// Calls pkilint's CLI `main(argv)` per job, capturing each JSON report, and prints them
/// as one JSON array. A linter's exit code counts findings, so it is not an error here.
const PKILINT_DRIVER: &str = r#"
import contextlib, io, json, sys
from pkilint.bin import lint_pkix_cert, lint_pkix_signer_signee_cert_chain
mains = {"cert": lint_pkix_cert.main, "chain": lint_pkix_signer_signee_cert_chain.main}
reports = []
for job in json.load(open(sys.argv[1])):
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        mains[job["kind"]](["lint", "--severity", "WARNING", "--format", "JSON", *job["files"]])
    reports.append(json.loads(buf.getvalue()))
print(json.dumps(reports))
"#;

/// The Python interpreter that can import pkilint: `$WRIT_PKILINT`, else `python3`, else
/// the interpreter named by the `lint_pkix_cert` script on PATH (a pipx or virtualenv
/// install).
fn pkilint_python() -> PathBuf {
    let can_import = |python: &Path| {
        Command::new(python)
            .args(["-c", "import pkilint.bin.lint_pkix_cert"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if let Some(python) = std::env::var_os(PKILINT_ENV) {
        let python = PathBuf::from(python);
        assert!(
            can_import(&python),
            "{PKILINT_ENV}={} cannot `import pkilint`; point it at the Python interpreter \
             pkilint is installed in",
            python.display()
        );
        return python;
    }
    let python3 = PathBuf::from("python3");
    if can_import(&python3) {
        return python3;
    }
    let from_script = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("lint_pkix_cert"))
        .filter_map(|script| std::fs::read_to_string(script).ok())
        .filter_map(|text| {
            let first = text.lines().next()?.strip_prefix("#!")?.trim().to_owned();
            Some(PathBuf::from(first))
        })
        .find(|python| can_import(python));
    from_script.unwrap_or_else(|| {
        panic!(
            "pkilint (DigiCert's RFC 5280 linter) is required to lint issued certificates; \
             install it with `pip install pkilint` (or `pipx install pkilint`), or set \
             {PKILINT_ENV} to a Python interpreter that can `import pkilint`"
        )
    })
}
