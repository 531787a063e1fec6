//! The lifetime the CA granted next to the one asked for, and the sentence that tells a
//! user why they differ. `writ x509 mint`, `writ renew` and `writ agent` share it, so a
//! clamped `--ttl` reads the same wherever it was asked for.

use std::time::Duration;

use writ_proto::v1::{LifetimeLimit, SignResponse};

/// What a signing answer granted for a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Granted {
    /// The lifetime asked for; `None` for the server's default.
    pub requested: Option<Duration>,
    /// The lifetime the server granted.
    pub granted: Duration,
    /// Why the server granted another lifetime than the one asked for.
    pub limited_by: LifetimeLimit,
}

impl Granted {
    /// Reads what `resp` granted a request for `requested`; `None` when the server does
    /// not say (it predates `ttl_seconds`).
    pub fn from_response(requested: Option<Duration>, resp: &SignResponse) -> Option<Self> {
        (resp.ttl_seconds > 0).then(|| Self {
            requested: requested.filter(|d| !d.is_zero()),
            granted: Duration::from_secs(resp.ttl_seconds),
            // A reason this client does not know reads as none: the sentence then
            // still gives both lifetimes.
            limited_by: resp.limited_by(),
        })
    }

    /// The user-facing sentence when the lifetime granted is not the one asked for (or,
    /// with nothing asked, when the server's default was cut short); `None` otherwise.
    pub fn note(&self) -> Option<String> {
        let got = short(self.granted.as_secs());
        let asked = match self.requested {
            Some(r) if r == self.granted => return None,
            Some(r) => format!("asked for {}, got {got}", short(r.as_secs())),
            None if self.limited_by == LifetimeLimit::IssuerExpiry => {
                format!("got {got}, less than the server's default TTL")
            }
            None => return None,
        };
        let why = match self.limited_by {
            LifetimeLimit::MaxTtl => {
                format!("the server's max_ttl is {got} (its --max-ttl flag or max_ttl setting)")
            }
            LifetimeLimit::MinTtl => {
                format!("the server's min_ttl is {got} (its --min-ttl flag or min_ttl setting)")
            }
            LifetimeLimit::IssuerExpiry => "the issuing intermediate expires then, and no \
certificate outlives its issuer (`writ root status` shows the CA's lifetimes)"
                .to_owned(),
            LifetimeLimit::Unspecified => return Some(asked),
        };
        Some(format!("{asked}: {why}"))
    }
}

/// `secs` the way `--ttl` takes them, in hours, minutes and seconds: 48h, 1m30s.
pub fn short(secs: u64) -> String {
    let mut text = String::new();
    for (n, unit) in [(secs / 3600, "h"), (secs / 60 % 60, "m"), (secs % 60, "s")] {
        if n > 0 {
            text.push_str(&format!("{n}{unit}"));
        }
    }
    if text.is_empty() {
        text.push_str("0s");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(requested: Option<u64>, granted: u64, limited_by: LifetimeLimit) -> Option<String> {
        Granted {
            requested: requested.map(Duration::from_secs),
            granted: Duration::from_secs(granted),
            limited_by,
        }
        .note()
    }

    #[test]
    fn lifetimes_read_as_typed() {
        assert_eq!(short(172_800), "48h");
        assert_eq!(short(86_400), "24h");
        assert_eq!(short(90), "1m30s");
        assert_eq!(short(3605), "1h5s");
        assert_eq!(short(10), "10s");
        assert_eq!(short(0), "0s");
    }

    #[test]
    fn each_reason_has_its_sentence() {
        use LifetimeLimit::*;
        assert_eq!(
            note(Some(172_800), 86_400, MaxTtl).unwrap(),
            "asked for 48h, got 24h: the server's max_ttl is 24h (its --max-ttl flag or max_ttl setting)"
        );
        assert_eq!(
            note(Some(10), 60, MinTtl).unwrap(),
            "asked for 10s, got 1m: the server's min_ttl is 1m (its --min-ttl flag or min_ttl setting)"
        );
        let cut = note(Some(86_400), 7199, IssuerExpiry).unwrap();
        assert!(
            cut.starts_with("asked for 24h, got 1h59m59s: the issuing intermediate expires then"),
            "{cut}"
        );
        let default_cut = note(None, 600, IssuerExpiry).unwrap();
        assert!(
            default_cut.starts_with("got 10m, less than the server's default TTL: the issuing"),
            "{default_cut}"
        );
        // A reason this client does not know still gives both lifetimes.
        assert_eq!(
            note(Some(7200), 3600, Unspecified).unwrap(),
            "asked for 2h, got 1h"
        );
    }

    #[test]
    fn nothing_to_say_when_granted_as_asked() {
        assert_eq!(note(Some(3600), 3600, LifetimeLimit::Unspecified), None);
        assert_eq!(note(None, 3600, LifetimeLimit::Unspecified), None);
        let old_server = SignResponse::default();
        assert_eq!(
            Granted::from_response(Some(Duration::from_secs(60)), &old_server),
            None
        );
    }
}
