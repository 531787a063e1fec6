//! Bundle push: the trust bundle streamed from the server over a bare TLS connection,
//! chosen by ALPN (`writ-bundle/1`) on the server's one port.
//!
//! Why beside gRPC's `WatchBundle`: an agent holds its bundle watch for its whole life,
//! and an idle HTTP/2 connection keeps h2's and tokio-util's fixed buffers (about 35 KiB
//! on the server) for nothing. A push connection is a TLS session and one task: about a
//! third of that, which is what lets one server carry 10,000 agents in ~100 MiB.
//!
//! The wire: after the handshake the server writes messages, each framed as gRPC frames
//! a message — one flag byte (0: uncompressed), a big-endian `u32` length, then a
//! protobuf `writ.v1.TrustBundle` — first the current bundle, then every change. The
//! client writes nothing; anything it sends ends the connection.

use std::io;
use std::time::Duration;

use prost::Message;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::TcpStream;

use crate::v1::TrustBundle;

/// The ALPN protocol name of the push channel.
pub const ALPN: &[u8] = b"writ-bundle/1";

/// The largest message either side accepts: a bundle of a few hundred roots.
pub const MAX_MESSAGE: usize = 1 << 20;

/// Flag byte and length.
const PREFIX: usize = 5;

/// TCP keepalive (idle, interval, probes) on both ends of a push connection: neither side
/// sends anything while the bundle stays the same, so a peer whose host vanished without
/// closing is noticed within two minutes instead of the kernel's default two hours.
const KEEPALIVE: (Duration, Duration, u32) = (Duration::from_secs(60), Duration::from_secs(15), 4);

/// Turns on [`KEEPALIVE`] for a push connection's socket.
pub fn keepalive(tcp: &TcpStream) -> io::Result<()> {
    use rustix::net::sockopt;
    let (idle, interval, probes) = KEEPALIVE;
    sockopt::set_socket_keepalive(tcp, true)?;
    sockopt::set_tcp_keepidle(tcp, idle)?;
    sockopt::set_tcp_keepintvl(tcp, interval)?;
    sockopt::set_tcp_keepcnt(tcp, probes)?;
    Ok(())
}

/// Frames `bundle` for the wire.
pub fn encode(bundle: &TrustBundle) -> Vec<u8> {
    let len = bundle.encoded_len();
    let mut out = Vec::with_capacity(PREFIX + len);
    out.push(0);
    // A bundle over 4 GiB cannot be built from the server's state; the reader refuses
    // anything over MAX_MESSAGE anyway.
    out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
    bundle
        .encode(&mut out)
        .expect("a Vec grows to fit any message");
    out
}

/// Why a frame was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The flag byte was not 0 (compression is never used).
    Flag(u8),
    /// The declared length is over [`MAX_MESSAGE`].
    TooLarge(usize),
    /// The body is not a `TrustBundle`.
    Decode(String),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Flag(b) => write!(f, "bundle push frame with flag byte {b:#04x}, not 0"),
            FrameError::TooLarge(n) => write!(
                f,
                "bundle push frame of {n} bytes is over the {MAX_MESSAGE}-byte limit"
            ),
            FrameError::Decode(e) => write!(f, "bundle push frame is not a TrustBundle: {e}"),
        }
    }
}

impl std::error::Error for FrameError {}

/// Parses the first frame of `buf`: `Ok(None)` while it is incomplete, else the bundle
/// and how many bytes it took.
pub fn decode(buf: &[u8]) -> Result<Option<(TrustBundle, usize)>, FrameError> {
    let Some(len) = declared_len(buf)? else {
        return Ok(None);
    };
    let Some(body) = buf.get(PREFIX..PREFIX + len) else {
        return Ok(None);
    };
    let bundle = TrustBundle::decode(body).map_err(|e| FrameError::Decode(e.to_string()))?;
    Ok(Some((bundle, PREFIX + len)))
}

/// The body length a complete prefix declares, checked against the limits.
fn declared_len(buf: &[u8]) -> Result<Option<usize>, FrameError> {
    let Some(prefix) = buf.get(..PREFIX) else {
        return Ok(None);
    };
    if prefix[0] != 0 {
        return Err(FrameError::Flag(prefix[0]));
    }
    let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
    if len > MAX_MESSAGE {
        return Err(FrameError::TooLarge(len));
    }
    Ok(Some(len))
}

/// Reads the next bundle from `r`; `Ok(None)` when the stream ends cleanly between
/// messages. `buf` is scratch space, reused across calls.
pub async fn read<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
) -> io::Result<Option<TrustBundle>> {
    buf.clear();
    buf.resize(PREFIX, 0);
    let mut got = 0;
    while got < PREFIX {
        match r.read(&mut buf[got..PREFIX]).await? {
            0 if got == 0 => return Ok(None),
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n => got += n,
        }
    }
    let len = declared_len(buf)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
        .unwrap_or_default();
    buf.resize(PREFIX + len, 0);
    r.read_exact(&mut buf[PREFIX..]).await?;
    match decode(buf) {
        Ok(Some((bundle, _))) => Ok(Some(bundle)),
        Ok(None) => Err(io::ErrorKind::UnexpectedEof.into()),
        Err(e) => Err(io::Error::new(io::ErrorKind::InvalidData, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bundle(roots: usize) -> TrustBundle {
        TrustBundle {
            trust_domain: "example.org".into(),
            roots: (0..roots).map(|i| vec![i as u8; 600]).collect(),
            sequence: 7,
            refresh_hint_seconds: 300,
        }
    }

    #[test]
    fn a_frame_is_the_grpc_message_framing() {
        let b = bundle(1);
        let wire = encode(&b);
        assert_eq!(wire[0], 0);
        assert_eq!(
            u32::from_be_bytes(wire[1..5].try_into().unwrap()) as usize,
            wire.len() - 5
        );
        assert_eq!(decode(&wire), Ok(Some((b, wire.len()))));
    }

    #[test]
    fn a_partial_frame_asks_for_more() {
        let wire = encode(&bundle(2));
        for cut in [0, 1, 4, 5, wire.len() - 1] {
            assert_eq!(decode(&wire[..cut]), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn compressed_oversized_and_garbage_frames_are_refused() {
        let mut wire = encode(&bundle(1));
        wire[0] = 1;
        assert_eq!(decode(&wire), Err(FrameError::Flag(1)));

        let mut huge = vec![0u8];
        huge.extend_from_slice(&((MAX_MESSAGE + 1) as u32).to_be_bytes());
        assert_eq!(decode(&huge), Err(FrameError::TooLarge(MAX_MESSAGE + 1)));

        let mut garbage = vec![0u8, 0, 0, 0, 3];
        garbage.extend_from_slice(&[0xff, 0xff, 0xff]);
        assert!(matches!(decode(&garbage), Err(FrameError::Decode(_))));
    }

    #[tokio::test]
    async fn the_reader_takes_frames_one_by_one_and_ends_cleanly() {
        let (one, two) = (bundle(1), bundle(3));
        let mut wire = encode(&one);
        wire.extend(encode(&two));
        let mut r = wire.as_slice();
        let mut buf = Vec::new();
        assert_eq!(read(&mut r, &mut buf).await.unwrap(), Some(one));
        assert_eq!(read(&mut r, &mut buf).await.unwrap(), Some(two));
        assert_eq!(read(&mut r, &mut buf).await.unwrap(), None);
    }

    #[tokio::test]
    async fn the_reader_refuses_a_stream_cut_inside_a_frame_or_over_the_limit() {
        let wire = encode(&bundle(1));
        let mut buf = Vec::new();
        for cut in [3, wire.len() - 1] {
            let e = read(&mut &wire[..cut], &mut buf).await.unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "cut at {cut}");
        }
        // The length is checked before anything of that size is allocated.
        let huge = [0u8, 0xff, 0xff, 0xff, 0xff];
        let e = read(&mut &huge[..], &mut buf).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(buf.capacity() < 1024, "{}", buf.capacity());
    }

    proptest! {
        #[test]
        fn frames_round_trip(
            td in "[a-z0-9.-]{1,40}",
            roots in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..5),
            sequence: u64,
        ) {
            let b = TrustBundle { trust_domain: td, roots, sequence, refresh_hint_seconds: 0 };
            let wire = encode(&b);
            prop_assert_eq!(decode(&wire), Ok(Some((b, wire.len()))));
        }

        #[test]
        fn any_bytes_parse_or_are_refused_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(Some((_, used))) = decode(&bytes) {
                prop_assert!(used <= bytes.len());
            }
        }
    }
}
