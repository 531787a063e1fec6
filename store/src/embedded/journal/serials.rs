//! Serials of the latest issuances, to catch a repeat without keeping every serial ever
//! issued in memory.

use std::collections::HashSet;

/// How many serials one half of [`RecentSerials`] holds before it is retired.
const SERIALS_PER_HALF: usize = 1 << 20;

/// Serials of the most recent one to two million issuances, as their first 64 bits.
///
/// Serials carry 127 random bits, so a repeat means a broken random source; this catches
/// one without keeping every serial ever issued in memory. A false match only costs a
/// fresh serial.
#[derive(Default)]
pub(super) struct RecentSerials {
    current: HashSet<u64>,
    previous: HashSet<u64>,
}

impl RecentSerials {
    pub(super) fn key(serial: &str) -> u64 {
        let head = serial.get(..16).unwrap_or(serial);
        u64::from_str_radix(head, 16).unwrap_or_else(|_| {
            // Not hex (never written by this CA): fall back to a digest of the text.
            let d = ring::digest::digest(&ring::digest::SHA256, serial.as_bytes());
            u64::from_be_bytes(d.as_ref()[..8].try_into().unwrap_or([0; 8]))
        })
    }

    pub(super) fn contains(&self, serial: &str) -> bool {
        let k = Self::key(serial);
        self.current.contains(&k) || self.previous.contains(&k)
    }

    pub(super) fn insert(&mut self, serial: &str) {
        if self.current.len() >= SERIALS_PER_HALF {
            // The retired half's table is emptied (its keys need no freeing: a memset of
            // its control bytes) and filled again, rather than a fresh one grown by
            // doubling, each step rehashing everything under the journal's lock.
            let mut recycled = std::mem::take(&mut self.previous);
            recycled.clear();
            // The first time, the retired half is the empty one a start begins with:
            // sized once here, the half it becomes is as large as the one it follows.
            recycled.reserve(SERIALS_PER_HALF);
            self.previous = std::mem::replace(&mut self.current, recycled);
        }
        self.current.insert(Self::key(serial));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_serials_forget_only_beyond_two_halves() {
        let mut s = RecentSerials::default();
        for i in 0..(SERIALS_PER_HALF as u64 * 2) {
            s.insert(&format!("{i:016x}"));
        }
        assert!(s.contains(&format!("{:016x}", 0)));
        s.insert("ff");
        // The oldest half is retired once a third begins.
        assert!(!s.contains(&format!("{:016x}", 0)));
        assert!(s.contains(&format!("{:016x}", SERIALS_PER_HALF as u64)));
        assert!(s.contains("ff"));
        // The new half holds a whole half without growing; from the second retirement on it
        // is the retired half's table, emptied.
        assert_eq!(s.current.len(), 1);
        assert!(s.current.capacity() >= SERIALS_PER_HALF);
        let reused = s.previous.capacity();
        for i in 0..SERIALS_PER_HALF as u64 {
            s.insert(&format!("{:016x}", (1 << 40) + i));
        }
        assert_eq!(s.current.capacity(), reused);
        assert!(s.contains("ff") && !s.contains(&format!("{:016x}", SERIALS_PER_HALF as u64)));
    }
}
