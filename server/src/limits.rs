//! Abuse limits: request size, streams per connection, request time, and a rate limit on
//! failed authentications per peer address and per bootstrap token `jti`.
//!
//! The failure limiter runs *before* any signature check: once a peer (or a token id) has
//! failed `auth_failures` times within `auth_failure_window`, further attempts get
//! `ResourceExhausted` with the time to retry, at the cost of a hash lookup. Every
//! authentication path wraps its credential check in [`AuthLimiter::guard`] — one line.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;
use tonic::{Code, Request, Status};
use writ_ca::Ttl;

use crate::Error;

/// Distinct addresses (and token ids) tracked at most; beyond that, new ones are not
/// tracked until old windows expire, so memory stays flat under a flood of addresses.
const MAX_TRACKED: usize = 65_536;

/// The `[limits]` table of the server config.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest request message accepted, in bytes (default 262144: a CSR is at most 64 KiB;
    /// a root import carries a few PEM certificates and a key).
    pub max_request_bytes: Option<usize>,
    /// Concurrent HTTP/2 streams per connection (default 100).
    pub max_concurrent_streams: Option<u32>,
    /// Longest a request may take, from its headers to the response (default 30s;
    /// bundle watch streams are not cut: the limit covers the call until the stream opens).
    pub request_timeout: Option<Ttl>,
    /// Failed authentications allowed per address, and per bootstrap token, within the
    /// window (default 30: generous for fleets behind one NAT address, far too few to
    /// brute-force or burn CPU).
    pub auth_failures: Option<u32>,
    /// The failure-counting window (default 60s).
    pub auth_failure_window: Option<Ttl>,
}

/// Resolved limits.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest request message, bytes.
    pub max_request_bytes: usize,
    /// HTTP/2 streams per connection.
    pub max_concurrent_streams: u32,
    /// Per-request time limit.
    pub request_timeout: Duration,
    /// Failures allowed per window.
    pub auth_failures: u32,
    /// The failure window.
    pub auth_failure_window: Duration,
}

impl LimitsConfig {
    /// Applies defaults and refuses zeros (which would lock everyone out).
    pub fn resolve(&self) -> Result<Limits, Error> {
        let limits = Limits {
            max_request_bytes: self.max_request_bytes.unwrap_or(256 * 1024),
            max_concurrent_streams: self.max_concurrent_streams.unwrap_or(100),
            request_timeout: self
                .request_timeout
                .map_or(Duration::from_secs(30), Ttl::duration),
            auth_failures: self.auth_failures.unwrap_or(30),
            auth_failure_window: self
                .auth_failure_window
                .map_or(Duration::from_secs(60), Ttl::duration),
        };
        // A CSR alone may be 64 KiB; below that, valid requests would be refused.
        if limits.max_request_bytes < 64 * 1024 + 1024 {
            return Err(Error::Config(format!(
                "limits.max_request_bytes = {} is below the largest valid request (a 64 KiB CSR); use at least 66560",
                limits.max_request_bytes
            )));
        }
        if limits.max_concurrent_streams == 0 || limits.auth_failures == 0 {
            return Err(Error::Config(
                "limits.max_concurrent_streams and limits.auth_failures must be at least 1".into(),
            ));
        }
        Ok(limits)
    }
}

impl Limits {
    /// A tonic server builder with the per-connection and per-request limits applied.
    pub(crate) fn server(&self) -> tonic::transport::Server {
        tonic::transport::Server::builder()
            .max_concurrent_streams(self.max_concurrent_streams)
            .timeout(self.request_timeout)
            // Headers carry at most a bootstrap token (8 KiB) or a platform JWT.
            .http2_max_header_list_size(32 * 1024)
    }
}

/// The peer's IP address, when the transport knows it (TCP; not the admin socket).
pub fn peer_ip<T>(req: &Request<T>) -> Option<IpAddr> {
    req.remote_addr().map(|a| a.ip())
}

/// Counts failed authentications per address and per token id.
pub struct AuthLimiter {
    max: u32,
    window: Duration,
    addrs: Mutex<Windows<IpAddr>>,
    tokens: Mutex<Windows<String>>,
}

type Windows<K> = HashMap<K, Slot>;

#[derive(Clone, Copy)]
struct Slot {
    start: Instant,
    failures: u32,
}

impl AuthLimiter {
    /// A limiter allowing `limits.auth_failures` per `limits.auth_failure_window`.
    pub fn new(limits: &Limits) -> Self {
        Self {
            max: limits.auth_failures,
            window: limits.auth_failure_window,
            addrs: Mutex::default(),
            tokens: Mutex::default(),
        }
    }

    /// Runs the credential check `f` unless `addr` or `token_id` is over its limit, and
    /// counts a failure when `f` refuses the credential as not genuine (`Unauthenticated`:
    /// forged, foreign, expired, malformed). A genuine credential refused for another
    /// reason (a spent or revoked token, a denied identity, a bad CSR) is not counted: it
    /// cannot be brute-forced, and fifty machines racing for one token are not an attack.
    /// The one call every authentication path makes:
    ///
    /// ```ignore
    /// let caller = shared.auth_limit.guard(peer_ip(&req), None, || verify_jwt(&req))?;
    /// ```
    pub fn guard<T>(
        &self,
        addr: Option<IpAddr>,
        token_id: Option<&str>,
        f: impl FnOnce() -> Result<T, Status>,
    ) -> Result<T, Status> {
        self.check(addr, token_id, Instant::now())?;
        let result = f();
        if let Err(s) = &result
            && s.code() == Code::Unauthenticated
        {
            self.failed(addr, token_id, Instant::now());
        }
        result
    }

    /// Refuses when `addr` or `token_id` has used up its failures in the current window.
    pub fn check(
        &self,
        addr: Option<IpAddr>,
        token_id: Option<&str>,
        now: Instant,
    ) -> Result<(), Status> {
        if let Some(a) = addr
            && let Some(wait) = self.blocked(&self.addrs, &a, now)
        {
            return Err(Status::resource_exhausted(format!(
                "too many failed authentications from {a} ({} within {}); retry in {}",
                self.max,
                humantime::format_duration(self.window),
                retry(wait)
            )));
        }
        if let Some(t) = token_id
            && let Some(wait) = self.blocked(&self.tokens, &t.to_owned(), now)
        {
            return Err(Status::resource_exhausted(format!(
                "too many failed attempts with bootstrap token {t} ({} within {}); retry in {}",
                self.max,
                humantime::format_duration(self.window),
                retry(wait)
            )));
        }
        Ok(())
    }

    /// Counts one failed authentication.
    pub fn failed(&self, addr: Option<IpAddr>, token_id: Option<&str>, now: Instant) {
        if let Some(a) = addr {
            self.count(&self.addrs, a, now);
        }
        if let Some(t) = token_id {
            self.count(&self.tokens, t.to_owned(), now);
        }
    }

    fn blocked<K: Eq + Hash>(
        &self,
        map: &Mutex<Windows<K>>,
        key: &K,
        now: Instant,
    ) -> Option<Duration> {
        let map = map.lock().unwrap_or_else(|p| p.into_inner());
        let slot = map.get(key)?;
        let ends = slot.start + self.window;
        (slot.failures >= self.max && now < ends).then(|| ends - now)
    }

    fn count<K: Eq + Hash>(&self, map: &Mutex<Windows<K>>, key: K, now: Instant) {
        // Counters are plain integers replaced whole: a poisoned lock is still consistent.
        let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_TRACKED && !map.contains_key(&key) {
            map.retain(|_, s| now < s.start + self.window);
            if map.len() >= MAX_TRACKED {
                return;
            }
        }
        let slot = map.entry(key).or_insert(Slot {
            start: now,
            failures: 0,
        });
        if now >= slot.start + self.window {
            *slot = Slot {
                start: now,
                failures: 0,
            };
        }
        slot.failures += 1;
    }
}

/// Whole seconds, rounded up, so "retry in 0s" is never said.
fn retry(wait: Duration) -> String {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    humantime::format_duration(Duration::from_secs(secs.max(1))).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(max: u32, window: u64) -> AuthLimiter {
        AuthLimiter::new(&Limits {
            max_request_bytes: 1 << 20,
            max_concurrent_streams: 1,
            request_timeout: Duration::from_secs(1),
            auth_failures: max,
            auth_failure_window: Duration::from_secs(window),
        })
    }

    #[test]
    fn failures_lock_out_an_address_until_the_window_ends() {
        let l = limiter(3, 60);
        let (a, b) = (
            Some(IpAddr::from([10, 0, 0, 1])),
            Some(IpAddr::from([10, 0, 0, 2])),
        );
        let t0 = Instant::now();
        for _ in 0..3 {
            l.check(a, None, t0).unwrap();
            l.failed(a, None, t0);
        }
        let err = l.check(a, None, t0 + Duration::from_secs(10)).unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted);
        assert!(err.message().contains("10.0.0.1"), "{}", err.message());
        assert!(err.message().contains("retry in 50s"), "{}", err.message());
        l.check(b, None, t0).expect("other addresses unaffected");
        l.check(a, None, t0 + Duration::from_secs(60))
            .expect("allowed again after the window");
        // A new window starts from the next failure.
        l.failed(a, None, t0 + Duration::from_secs(61));
        l.check(a, None, t0 + Duration::from_secs(61)).unwrap();
    }

    #[test]
    fn failures_lock_out_a_token_id_from_any_address() {
        let l = limiter(2, 60);
        let t0 = Instant::now();
        l.failed(Some(IpAddr::from([10, 0, 0, 1])), Some("jti-1"), t0);
        l.failed(Some(IpAddr::from([10, 0, 0, 2])), Some("jti-1"), t0);
        let err = l
            .check(Some(IpAddr::from([10, 0, 0, 3])), Some("jti-1"), t0)
            .unwrap_err();
        assert!(err.message().contains("jti-1"), "{}", err.message());
        l.check(None, Some("jti-2"), t0).unwrap();
    }

    #[test]
    fn guard_counts_only_refused_credentials() {
        let l = limiter(1, 60);
        let a = Some(IpAddr::from([10, 0, 0, 9]));
        l.guard(a, None, || {
            Err::<(), _>(Status::invalid_argument("bad CSR"))
        })
        .unwrap_err();
        l.guard(a, None, || Ok(()))
            .expect("a bad CSR is not a failed authentication");
        let e = l
            .guard(a, None, || {
                Err::<(), _>(Status::unauthenticated("bad cert"))
            })
            .unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated);
        let mut ran = false;
        let e = l
            .guard(a, None, || {
                ran = true;
                Ok(())
            })
            .unwrap_err();
        assert_eq!(e.code(), Code::ResourceExhausted);
        assert!(!ran, "a locked-out peer gets no credential check at all");
    }

    #[test]
    fn memory_stays_bounded() {
        let l = limiter(5, 60);
        let t0 = Instant::now();
        for i in 0..(MAX_TRACKED as u32 + 100) {
            l.failed(Some(IpAddr::from(i.to_be_bytes())), None, t0);
        }
        assert_eq!(l.addrs.lock().unwrap().len(), MAX_TRACKED);
    }

    #[test]
    fn config_defaults_and_refusals() {
        let d = LimitsConfig::default().resolve().unwrap();
        assert_eq!(d.max_request_bytes, 256 * 1024);
        assert_eq!(d.auth_failures, 30);
        let tiny = LimitsConfig {
            max_request_bytes: Some(1000),
            ..Default::default()
        };
        assert!(matches!(tiny.resolve(), Err(Error::Config(m)) if m.contains("66560")));
        let zero = LimitsConfig {
            auth_failures: Some(0),
            ..Default::default()
        };
        assert!(zero.resolve().is_err());
    }
}
