//! Latency and outcome accounting.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

/// Latencies in microseconds and errors by status code, merged from every worker.
#[derive(Clone, Debug, Default)]
pub struct Samples {
    latencies_us: Vec<u32>,
    errors: BTreeMap<String, u64>,
}

impl Samples {
    /// Records a success.
    pub fn ok(&mut self, latency: Duration) {
        self.latencies_us
            .push(latency.as_micros().min(u32::MAX as u128) as u32);
    }

    /// Records a failure by its kind (gRPC code name, or `invalid-response`).
    pub fn error(&mut self, kind: impl Into<String>) {
        *self.errors.entry(kind.into()).or_default() += 1;
    }

    /// Adds another worker's samples.
    pub fn merge(&mut self, other: Samples) {
        self.latencies_us.extend(other.latencies_us);
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
    }

    /// Successful requests.
    pub fn successes(&self) -> u64 {
        self.latencies_us.len() as u64
    }

    /// Summarises the samples.
    pub fn summary(mut self) -> Latency {
        self.latencies_us.sort_unstable();
        let pick = |q: f64| -> f64 {
            if self.latencies_us.is_empty() {
                return 0.0;
            }
            let i = ((self.latencies_us.len() as f64 - 1.0) * q).round() as usize;
            self.latencies_us[i] as f64 / 1000.0
        };
        Latency {
            p50_ms: pick(0.50),
            p90_ms: pick(0.90),
            p99_ms: pick(0.99),
            max_ms: pick(1.0),
            errors: self.errors,
        }
    }
}

/// Latency percentiles in milliseconds and errors by kind.
#[derive(Clone, Debug, Serialize)]
pub struct Latency {
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Slowest.
    pub max_ms: f64,
    /// Failed requests by kind.
    pub errors: BTreeMap<String, u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let mut s = Samples::default();
        for i in 1..=100 {
            s.ok(Duration::from_millis(i));
        }
        s.error("Unavailable");
        let l = s.summary();
        assert_eq!(l.p50_ms, 51.0);
        assert_eq!(l.p99_ms, 99.0);
        assert_eq!(l.max_ms, 100.0);
        assert_eq!(l.errors["Unavailable"], 1);
    }
}
