//! `push::decode` over arbitrary bytes, as an agent reads the bundle push channel: frame
//! after frame until the input runs out or a frame is refused.
//!
//! Invariants: never panics; a frame never claims more bytes than it was given nor more
//! than the size limit allows; a decoded bundle re-frames to bytes that decode to the
//! same bundle, whose length is exactly what the frame declares.
#![no_main]

use libfuzzer_sys::fuzz_target;
use writ_proto::push::{self, MAX_MESSAGE};

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(Some((bundle, used))) = push::decode(rest) {
        assert!(
            used >= 5 && used <= rest.len(),
            "frame of {used} bytes from {}",
            rest.len()
        );
        assert!(
            used - 5 <= MAX_MESSAGE,
            "a frame over the limit was accepted"
        );
        let again = push::encode(&bundle);
        let (back, len) = push::decode(&again)
            .expect("a framed bundle decodes")
            .expect("a framed bundle is complete");
        assert_eq!(back, bundle, "re-framing changed the bundle");
        assert_eq!(len, again.len());
        rest = &rest[used..];
    }
});
