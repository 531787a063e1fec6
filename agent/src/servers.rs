//! Several writ servers behind one `--server`: `a:8443,b:8443` (or the flag repeated), each
//! entry possibly a DNS name with several addresses. A call goes to one replica; when that
//! one cannot be reached or answers `UNAVAILABLE`, the next is tried at once, so one dead
//! replica costs a client a refused connection, not a backoff period. Replicas are tried
//! in the order given, a DNS name's addresses in the resolver's order: a fleet spreads
//! its load by DNS round robin or by listing the replicas in another order per site, and
//! an operator can tell which replica a client prefers.
//!
//! Only [`Error::Connect`] moves on: any other answer (a refusal, a bad response) came from
//! a live server of this CA and would be the same at every replica.

use std::future::Future;

use crate::Error;

/// How many `host:port` entries one `--server` may list.
pub const MAX_SERVERS: usize = 16;

/// The entries of `spec`, in the order given: `host:port` each, separated by commas.
pub fn parse(spec: &str) -> Result<Vec<String>, Error> {
    let entries: Vec<String> = spec.split(',').map(|s| s.trim().to_owned()).collect();
    if entries.len() > MAX_SERVERS {
        return Err(Error::Config(format!(
            "--server lists {} addresses; at most {MAX_SERVERS} are accepted",
            entries.len()
        )));
    }
    for e in &entries {
        let valid = e
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !valid {
            return Err(Error::Config(format!(
                "--server {spec:?}: {e:?} is not host:port; give one or more addresses such as ca-1.example.org:8443,ca-2.example.org:8443"
            )));
        }
    }
    Ok(entries)
}

/// Every address `spec` names, each DNS name expanded to the addresses it resolves to
/// (in the resolver's order, duplicates dropped). An entry that does not resolve is left
/// as it is, so connecting to it reports the resolver's error.
pub async fn candidates(spec: &str) -> Result<Vec<String>, Error> {
    let mut out: Vec<String> = Vec::new();
    for entry in parse(spec)? {
        let resolved: Vec<String> = match tokio::net::lookup_host(entry.as_str()).await {
            Ok(addrs) => addrs.map(|a| a.to_string()).collect(),
            Err(_) => Vec::new(),
        };
        let found = if resolved.is_empty() {
            vec![entry]
        } else {
            resolved
        };
        for a in found {
            if !out.contains(&a) {
                out.push(a);
            }
        }
    }
    Ok(out)
}

/// Calls `f` with each candidate address of `spec` in turn until one call does not fail
/// with [`Error::Connect`]; returns that call's result, or, when every replica failed to
/// connect, an error naming them all.
pub async fn each<T, F, Fut>(spec: &str, mut f: F) -> Result<T, Error>
where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let all = candidates(spec).await?;
    let mut failures = Vec::new();
    for addr in &all {
        match f(addr.clone()).await {
            Err(Error::Connect(why)) => {
                if all.len() > 1 {
                    tracing::debug!(server = %addr, error = %why, "writ server unavailable; trying the next");
                }
                failures.push(why);
            }
            other => return other,
        }
    }
    Err(Error::Connect(match failures.len() {
        1 => failures.remove(0),
        n => format!(
            "none of the {n} writ servers answered ({spec}): {}",
            failures.join("; ")
        ),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_parsed_strictly() {
        assert_eq!(parse("a:1").unwrap(), ["a:1"]);
        assert_eq!(parse("a:1, b:2").unwrap(), ["a:1", "b:2"]);
        assert_eq!(parse("[::1]:8443").unwrap(), ["[::1]:8443"]);
        for bad in ["", "a", "a:", ":1", "a:1,", "a:1,,b:2", "a:x", "a:70000"] {
            let err = parse(bad).unwrap_err().to_string();
            assert!(err.contains("host:port"), "{bad:?}: {err}");
        }
        let many = vec!["a:1"; MAX_SERVERS + 1].join(",");
        assert!(parse(&many).unwrap_err().to_string().contains("at most"));
    }

    #[tokio::test]
    async fn an_unreachable_replica_is_skipped_and_other_errors_are_final() {
        // The dead replica first: the call moves on to the second, and stops there.
        let mut tried = Vec::new();
        let r = each("127.0.0.1:1,127.0.0.1:2,127.0.0.1:3", |addr| {
            tried.push(addr.clone());
            async move {
                match addr.as_str() {
                    "127.0.0.1:1" => Err(Error::Connect("refused".into())),
                    _ => Ok(addr),
                }
            }
        })
        .await;
        assert_eq!(r.unwrap(), "127.0.0.1:2");
        assert_eq!(tried, ["127.0.0.1:1", "127.0.0.1:2"]);
        // A refusal from a live replica is the CA's answer: not retried elsewhere.
        let mut calls = 0;
        let r: Result<(), Error> = each("127.0.0.1:1,127.0.0.1:2", |_| {
            calls += 1;
            async { Err(Error::Config("refused by policy".into())) }
        })
        .await;
        assert!(matches!(r, Err(Error::Config(_))));
        assert_eq!(calls, 1);
        // All down: one error naming every replica's failure.
        let r: Result<(), Error> = each("127.0.0.1:1,127.0.0.1:2", |a| async move {
            Err(Error::Connect(format!("{a} refused")))
        })
        .await;
        let msg = r.unwrap_err().to_string();
        assert!(msg.contains("none of the 2 writ servers"), "{msg}");
        assert!(msg.contains("127.0.0.1:1 refused") && msg.contains("127.0.0.1:2 refused"));
    }
}
