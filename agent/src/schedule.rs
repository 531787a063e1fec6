//! When to renew: at a fraction of the certificate's lifetime, with random jitter so a
//! fleet issued at the same moment does not renew in step. Pure, so it is tested directly.

use std::time::{Duration, SystemTime};

/// The renewal policy.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Schedule {
    /// Fraction of the lifetime after which to renew (0 < f < 1).
    pub renew_at: f64,
    /// Jitter, as a fraction of the lifetime, applied ± around `renew_at`.
    pub jitter: f64,
}

impl Default for Schedule {
    fn default() -> Self {
        Self {
            renew_at: 0.5,
            jitter: 0.1,
        }
    }
}

impl Schedule {
    /// Checks the fractions make sense.
    pub fn new(renew_at: f64, jitter: f64) -> Result<Self, String> {
        if !(renew_at > 0.0 && renew_at < 1.0) {
            return Err(format!(
                "--renew-at {renew_at} must be between 0 and 1 (e.g. 0.5)"
            ));
        }
        if !(0.0..0.5).contains(&jitter) || renew_at - jitter <= 0.0 || renew_at + jitter >= 1.0 {
            return Err(format!(
                "jitter {jitter} must keep renew-at ± jitter strictly between 0 and 1"
            ));
        }
        Ok(Self { renew_at, jitter })
    }

    /// The moment to renew a certificate valid from `not_before` to `not_after`; `unit` is
    /// a uniform random number in [0, 1) that places it within the jitter window.
    pub fn renewal_time(
        &self,
        not_before: SystemTime,
        not_after: SystemTime,
        unit: f64,
    ) -> SystemTime {
        let lifetime = not_after
            .duration_since(not_before)
            .unwrap_or(Duration::ZERO);
        let fraction = (self.renew_at + self.jitter * (2.0 * unit - 1.0)).clamp(0.0, 1.0);
        not_before + lifetime.mul_f64(fraction)
    }

    /// The longest pause between retries: a tenth of the lifetime, between 1 s and 5 min,
    /// so a short-lived certificate still gets several attempts before it expires.
    pub fn max_backoff(&self, not_before: SystemTime, not_after: SystemTime) -> Duration {
        let lifetime = not_after
            .duration_since(not_before)
            .unwrap_or(Duration::ZERO);
        (lifetime / 10).clamp(Duration::from_secs(1), Duration::from_secs(300))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renews_within_the_jitter_window() {
        let s = Schedule::default();
        let nb = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let na = nb + Duration::from_secs(100);
        assert_eq!(s.renewal_time(nb, na, 0.5), nb + Duration::from_secs(50));
        assert_eq!(s.renewal_time(nb, na, 0.0), nb + Duration::from_secs(40));
        assert!(s.renewal_time(nb, na, 0.999) < nb + Duration::from_secs(60));
    }

    #[test]
    fn rejects_nonsense() {
        assert!(Schedule::new(0.0, 0.1).is_err());
        assert!(Schedule::new(1.0, 0.1).is_err());
        assert!(Schedule::new(0.95, 0.1).is_err());
        assert!(Schedule::new(0.5, 0.6).is_err());
        assert!(Schedule::new(0.7, 0.1).is_ok());
    }

    #[test]
    fn backoff_is_bounded() {
        let s = Schedule::default();
        let nb = SystemTime::UNIX_EPOCH;
        assert_eq!(
            s.max_backoff(nb, nb + Duration::from_secs(4)),
            Duration::from_secs(1)
        );
        assert_eq!(
            s.max_backoff(nb, nb + Duration::from_secs(3600)),
            Duration::from_secs(300)
        );
    }
}
