//! The agent's "now". Renewal times are wall-clock times (a fraction of a certificate's
//! validity), but the agent sleeps on tokio's timer; reading the wall clock through
//! [`Clock`] lets a test pause tokio's time and have the wall clock move with it, so the
//! rotation loop runs hours of renewals in milliseconds, deterministically.

use std::time::{Duration, SystemTime};

/// Where the agent reads the wall-clock time.
pub trait Clock: Send + Sync + 'static {
    /// The current wall-clock time.
    fn now(&self) -> SystemTime;
}

/// The system's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// Wall time that advances exactly as tokio's clock does, from the moment it was made: with
/// tokio's time paused (tests), time moves only when every task waits on a timer.
#[derive(Clone, Copy, Debug)]
pub struct TokioClock {
    wall: SystemTime,
    start: tokio::time::Instant,
}

impl TokioClock {
    /// A clock reading `wall` now and following tokio's time from here.
    pub fn starting_at(wall: SystemTime) -> Self {
        Self {
            wall,
            start: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> SystemTime {
        self.wall + self.start.elapsed()
    }
}

/// How long from `clock`'s now until `at`; zero when `at` has passed.
pub fn until(clock: &dyn Clock, at: SystemTime) -> Duration {
    at.duration_since(clock.now()).unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_tokio_clock_moves_with_paused_time_only() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let clock = TokioClock::starting_at(t0);
        assert_eq!(clock.now(), t0);
        let at = t0 + Duration::from_secs(3 * 3600);
        tokio::time::sleep(until(&clock, at)).await;
        assert_eq!(clock.now(), at);
        assert_eq!(until(&clock, t0), Duration::ZERO);
    }
}
