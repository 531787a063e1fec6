//! Unexpired leaves by expiry, kept in memory so rotation decisions and `root status` do
//! not read the whole history.

use std::collections::BTreeMap;

use super::{IssuanceRecord, LiveLeaves, now_unix};

/// Counts of leaves by (notAfter, generation), for leaves not yet known to be expired.
#[derive(Default)]
pub(super) struct LiveIndex(BTreeMap<(u64, u64), u64>);

impl LiveIndex {
    pub(super) fn add(&mut self, r: &IssuanceRecord) {
        self.add_leaf(r.not_after, r.generation, &r.auth);
    }

    pub(super) fn add_leaf(&mut self, not_after: u64, generation: u64, auth: &str) {
        if auth != writ_ca::AuthMethod::Internal.as_str() {
            *self.0.entry((not_after, generation)).or_default() += 1;
        }
    }

    pub(super) fn at(&mut self, now: u64) -> LiveLeaves {
        // Leaves that expired by the clock are dropped for good, with an hour's slack for
        // a caller's `now` taken a little earlier. What remains is bounded by the distinct
        // expiry seconds of unexpired leaves (a day's worth with the default maximum TTL),
        // whatever the size of the history.
        let horizon = now_unix().saturating_sub(3600);
        self.0 = self.0.split_off(&(horizon, 0));
        let mut live = LiveLeaves::new();
        for (&(not_after, generation), &count) in self.0.range((now.saturating_add(1), 0)..) {
            let e = live.entry(generation).or_insert((0, 0));
            e.0 += count;
            e.1 = e.1.max(not_after);
        }
        live
    }
}
