//! Durations as users write them (`90s`, `15m`, `24h`) and the CA's TTL bounds.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::Error;

/// The longest duration writ accepts: a century, far beyond any sane CA lifetime, and
/// short enough that adding it to now never overflows a date.
const MAX: Duration = Duration::from_secs(100 * 365 * 86_400);

/// A positive duration parsed from `90s`, `15m`, `24h`, `1h30m`, `30d`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ttl(Duration);

impl Ttl {
    /// Parses a human duration; zero and sub-second precision are refused.
    pub fn parse(s: &str) -> Result<Self, Error> {
        let d = humantime::parse_duration(s.trim()).map_err(|e| {
            Error::InvalidDuration(format!("{s:?}: {e} (write it like 90s, 15m, 24h)"))
        })?;
        Self::from_duration(d)
    }

    /// Wraps a duration; refuses zero and fractions of a second.
    pub fn from_duration(d: Duration) -> Result<Self, Error> {
        if d.is_zero() {
            return Err(Error::InvalidDuration("must be longer than 0s".into()));
        }
        if d > MAX {
            return Err(Error::InvalidDuration(format!(
                "{} is longer than the 100 years writ allows",
                humantime::format_duration(d)
            )));
        }
        if d.subsec_nanos() != 0 {
            return Err(Error::InvalidDuration(
                "whole seconds only (for example 90s)".into(),
            ));
        }
        Ok(Self(d))
    }

    /// Seconds, for constructors that take whole seconds.
    pub const fn from_secs(secs: u64) -> Self {
        Self(Duration::from_secs(if secs == 0 { 1 } else { secs }))
    }

    /// The duration.
    pub fn duration(self) -> Duration {
        self.0
    }

    /// Whole seconds.
    pub fn secs(self) -> u64 {
        self.0.as_secs()
    }
}

impl fmt::Display for Ttl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl fmt::Debug for Ttl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ttl({self})")
    }
}

impl FromStr for Ttl {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Self::parse(s)
    }
}

impl Serialize for Ttl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Ttl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// What to do with a requested TTL above the maximum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OverMax {
    /// Issue for the maximum instead (writ's own API).
    Clamp,
    /// Refuse the request (Istio's API does this).
    Reject,
}

/// Why a leaf's lifetime is not the one its request asked for (or, when nothing was
/// asked, not the CA's default).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LifetimeLimit {
    /// Cut to the CA's maximum TTL.
    MaxTtl,
    /// Raised to the CA's minimum TTL.
    MinTtl,
    /// Cut to the issuing intermediate's notAfter: no certificate outlives its issuer.
    IssuerExpiry,
}

/// The CA's leaf lifetime bounds: `min <= default <= max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TtlBounds {
    default: Ttl,
    min: Ttl,
    max: Ttl,
}

impl TtlBounds {
    /// Checks `min <= default <= max`.
    pub fn new(default: Ttl, min: Ttl, max: Ttl) -> Result<Self, Error> {
        if !(min <= default && default <= max) {
            return Err(Error::InvalidDuration(format!(
                "need min-ttl ({min}) <= default-ttl ({default}) <= max-ttl ({max})"
            )));
        }
        Ok(Self { default, min, max })
    }

    /// The default TTL.
    pub fn default_ttl(&self) -> Ttl {
        self.default
    }
    /// The minimum TTL.
    pub fn min(&self) -> Ttl {
        self.min
    }
    /// The maximum TTL.
    pub fn max(&self) -> Ttl {
        self.max
    }

    /// The lifetime to issue for a request: the default when none is asked, clamped to
    /// `[min, max]`; above max, clamped or refused per `over_max`. With it, the bound
    /// that changed the request, if one did.
    pub fn resolve(
        &self,
        requested: Option<Duration>,
        over_max: OverMax,
    ) -> Result<(Duration, Option<LifetimeLimit>), Error> {
        let Some(req) = requested.filter(|d| !d.is_zero()) else {
            return Ok((self.default.duration(), None));
        };
        if req > self.max.duration() {
            return match over_max {
                OverMax::Clamp => Ok((self.max.duration(), Some(LifetimeLimit::MaxTtl))),
                OverMax::Reject => Err(Error::TtlTooLong {
                    requested: req.as_secs(),
                    max: self.max.secs(),
                }),
            };
        }
        if req < self.min.duration() {
            return Ok((self.min.duration(), Some(LifetimeLimit::MinTtl)));
        }
        Ok((req, None))
    }
}

impl Default for TtlBounds {
    fn default() -> Self {
        Self {
            default: Ttl::from_secs(3600),
            min: Ttl::from_secs(60),
            max: Ttl::from_secs(24 * 3600),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_human_durations() {
        assert_eq!(Ttl::parse("90s").unwrap().secs(), 90);
        assert_eq!(Ttl::parse("15m").unwrap().secs(), 900);
        assert_eq!(Ttl::parse("24h").unwrap().secs(), 86400);
        assert_eq!(Ttl::parse("1h30m").unwrap().secs(), 5400);
        for bad in [
            "",
            "0s",
            "abc",
            "10",
            "-5s",
            "1.5s",
            "5 parsecs",
            "101y",
            "300000000000y",
        ] {
            assert!(Ttl::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn bounds_must_be_ordered() {
        let s = Ttl::from_secs;
        assert!(TtlBounds::new(s(10), s(20), s(30)).is_err());
        assert!(TtlBounds::new(s(40), s(20), s(30)).is_err());
        assert!(TtlBounds::new(s(20), s(20), s(30)).is_ok());
    }

    #[test]
    fn resolve_names_the_bound_that_changed_the_request() {
        let b = TtlBounds::default();
        let ask = |s: Option<u64>| {
            b.resolve(s.map(Duration::from_secs), OverMax::Clamp)
                .unwrap()
        };
        let got = |s: u64, limit| (Duration::from_secs(s), limit);
        assert_eq!(
            ask(Some(48 * 3600)),
            got(24 * 3600, Some(LifetimeLimit::MaxTtl))
        );
        assert_eq!(ask(Some(10)), got(60, Some(LifetimeLimit::MinTtl)));
        assert_eq!(ask(Some(5400)), got(5400, None));
        // The bounds themselves are granted as asked.
        assert_eq!(ask(Some(24 * 3600)), got(24 * 3600, None));
        assert_eq!(ask(Some(60)), got(60, None));
        // Nothing asked (0 on the wire): the default, limited by nothing.
        assert_eq!(ask(None), got(3600, None));
        assert_eq!(ask(Some(0)), got(3600, None));
    }

    proptest! {
        #[test]
        fn resolved_ttl_is_within_bounds(req in proptest::option::of(0u64..200_000)) {
            let b = TtlBounds::default();
            let (d, limit) = b.resolve(req.map(Duration::from_secs), OverMax::Clamp).unwrap();
            prop_assert!(d >= b.min().duration() && d <= b.max().duration());
            prop_assert_eq!(limit.is_none(), req.is_none_or(|r| r == 0 || d.as_secs() == r));
            if let Some(r) = req.filter(|r| *r > b.max().secs()) {
                let e = b.resolve(Some(Duration::from_secs(r)), OverMax::Reject);
                let too_long = matches!(e, Err(Error::TtlTooLong { .. }));
                prop_assert!(too_long);
            }
        }

        #[test]
        fn display_parses_back(secs in 1u64..10_000_000) {
            let t = Ttl::from_secs(secs);
            prop_assert_eq!(Ttl::parse(&t.to_string()).unwrap(), t);
        }
    }
}
