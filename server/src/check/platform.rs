//! `writ config check` findings about who may authenticate besides writ's own credentials:
//! trusted JWT issuers and trust-domain aliases.

use std::os::unix::fs::PermissionsExt;

use writ_ca::TrustDomain;

use super::finding::{Finding, Severity};
use crate::{JwtIssuerConfig, ServerConfig};

/// Appends the findings for `[[jwt_issuers]]` and `trust_domain_aliases`.
pub(crate) fn platform_findings(config: &ServerConfig, out: &mut Vec<Finding>) {
    let td = config
        .trust_domain
        .clone()
        .or_else(|| TrustDomain::parse("cluster.local").ok());
    let aliases = config.trust_domain_aliases.as_deref().unwrap_or_default();
    for (i, alias) in aliases.iter().enumerate() {
        if Some(alias) == td.as_ref() {
            out.push(Finding::new(
                Severity::Error,
                "trust_domain_aliases",
                format!("{alias} is the trust domain itself; the server refuses to start"),
                "list only former trust domains in trust_domain_aliases",
            ));
        } else if aliases[..i].contains(alias) {
            out.push(Finding::new(
                Severity::Warning,
                "trust_domain_aliases",
                format!("{alias} is listed twice"),
                "list each former trust domain once",
            ));
        }
    }
    let issuers = config.jwt_issuers.as_deref().unwrap_or_default();
    for (i, issuer) in issuers.iter().enumerate() {
        if issuers[..i].iter().any(|o| o.issuer == issuer.issuer) {
            out.push(Finding::new(
                Severity::Error,
                "jwt_issuers",
                format!(
                    "issuer {:?} is configured twice; the server refuses to start",
                    issuer.issuer
                ),
                "keep one [[jwt_issuers]] table per issuer",
            ));
        }
        issuer_findings(issuer, out);
    }
}

fn issuer_findings(issuer: &JwtIssuerConfig, out: &mut Vec<Finding>) {
    let name = &issuer.issuer;
    match issuer.audiences.as_deref() {
        None => out.push(Finding::new(
            Severity::Warning,
            "jwt_issuers",
            format!(
                "issuer {name:?} names no audience, so any of its tokens minted for {:?} is accepted",
                writ_bootstrap::DEFAULT_AUDIENCE
            ),
            "set audiences = [\"<the audience your workloads' tokens are minted for>\"]",
        )),
        Some([]) => out.push(Finding::new(
            Severity::Error,
            "jwt_issuers",
            format!("issuer {name:?} has an empty audiences list; the server refuses to start"),
            "name at least one audience, such as audiences = [\"istio-ca\"]",
        )),
        Some(_) => {}
    }
    for alg in issuer.algorithms.as_deref().unwrap_or_default() {
        if alg.to_ascii_uppercase().starts_with("HS") {
            out.push(Finding::new(
                Severity::Error,
                "jwt_issuers",
                format!("issuer {name:?} allows {alg}: a shared-secret algorithm lets anyone who knows the key mint identities"),
                "allow only public-key algorithms (RS256, ES256, ...)",
            ));
        }
    }
    let path = &issuer.jwks_file;
    match std::fs::metadata(path) {
        Err(e) => out.push(Finding::new(
            Severity::Error,
            "jwt_issuers",
            format!("issuer {name:?}: JWKS file {} is unreadable ({e}); the server refuses to start", path.display()),
            "export the issuer's keys there (for Kubernetes: kubectl get --raw /openid/v1/jwks)",
        )),
        Ok(m) if m.permissions().mode() & 0o022 != 0 => out.push(Finding::new(
            Severity::Error,
            "jwt_issuers",
            format!(
                "JWKS file {} is writable by group or others: whoever can write it can mint any workload identity",
                path.display()
            ),
            format!("chmod 0644 {}", path.display()),
        )),
        Ok(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn findings(text: &str) -> Vec<Finding> {
        let mut out = Vec::new();
        platform_findings(&ServerConfig::parse(text).unwrap(), &mut out);
        out
    }

    fn jwks(dir: &std::path::Path, mode: u32) -> std::path::PathBuf {
        let p = dir.join("jwks.json");
        std::fs::write(&p, r#"{"keys":[]}"#).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn a_clean_issuer_and_alias_have_no_findings() {
        let dir = tempfile::tempdir().unwrap();
        let p = jwks(dir.path(), 0o644);
        let text = format!(
            "trust_domain = \"new.example\"\ntrust_domain_aliases = [\"old.example\"]\n[[jwt_issuers]]\nissuer = \"https://k8s\"\njwks_file = \"{}\"\naudiences = [\"istio-ca\"]\n",
            p.display()
        );
        assert_eq!(findings(&text), []);
    }

    #[test]
    fn each_risk_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let loose = jwks(dir.path(), 0o666);
        let cases = [
            (
                "trust_domain = \"a.example\"\ntrust_domain_aliases = [\"a.example\"]".to_owned(),
                Severity::Error,
                "trust domain itself",
            ),
            (
                "trust_domain_aliases = [\"cluster.local\"]".to_owned(),
                Severity::Error,
                "trust domain itself",
            ),
            (
                "trust_domain_aliases = [\"o.example\", \"o.example\"]".to_owned(),
                Severity::Warning,
                "listed twice",
            ),
            (
                format!("[[jwt_issuers]]\nissuer = \"i\"\njwks_file = \"{}\"\naudiences = [\"a\"]\n", loose.display()),
                Severity::Error,
                "writable by group or others",
            ),
            (
                "[[jwt_issuers]]\nissuer = \"i\"\njwks_file = \"/nonexistent/jwks.json\"\naudiences = [\"a\"]\n".to_owned(),
                Severity::Error,
                "unreadable",
            ),
            (
                format!("[[jwt_issuers]]\nissuer = \"i\"\njwks_file = \"{}\"\n", loose.display()),
                Severity::Warning,
                "names no audience",
            ),
            (
                format!("[[jwt_issuers]]\nissuer = \"i\"\njwks_file = \"{}\"\naudiences = []\n", loose.display()),
                Severity::Error,
                "empty audiences",
            ),
            (
                format!("[[jwt_issuers]]\nissuer = \"i\"\njwks_file = \"{}\"\naudiences = [\"a\"]\nalgorithms = [\"HS256\"]\n", loose.display()),
                Severity::Error,
                "shared-secret",
            ),
            (
                format!(
                    "[[jwt_issuers]]\nissuer = \"i\"\njwks_file = \"{0}\"\naudiences = [\"a\"]\n[[jwt_issuers]]\nissuer = \"i\"\njwks_file = \"{0}\"\naudiences = [\"a\"]\n",
                    loose.display()
                ),
                Severity::Error,
                "configured twice",
            ),
        ];
        for (text, severity, says) in cases {
            let f = findings(&text);
            assert!(
                f.iter()
                    .any(|f| f.severity == severity && f.message.contains(says)),
                "{text}: {f:?}"
            );
        }
    }
}
