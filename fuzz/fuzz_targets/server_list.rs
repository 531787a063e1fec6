//! `servers::parse`, the `--server` list of the agent, `writ renew` and `writ bootstrap`.
//!
//! Invariants: never panics; an accepted list has 1 to `MAX_SERVERS` entries, each trimmed
//! `host:port` with a non-empty host and a port that is a `u16`; joining the entries with
//! commas parses back to the same list.
#![no_main]

use libfuzzer_sys::fuzz_target;
use writ_agent::servers::{MAX_SERVERS, parse};

fuzz_target!(|text: &str| {
    let Ok(entries) = parse(text) else { return };
    assert!((1..=MAX_SERVERS).contains(&entries.len()), "{entries:?}");
    for e in &entries {
        assert_eq!(e.trim(), e);
        let (host, port) = e.rsplit_once(':').expect("an accepted entry has a port");
        assert!(!host.is_empty(), "{e:?}");
        port.parse::<u16>().expect("an accepted port is a u16");
    }
    assert_eq!(parse(&entries.join(",")).expect("a joined list parses"), entries);
});
