//! The protobuf codec every writ service and client uses: prost's, with per-call buffers
//! sized for writ's messages instead of tonic's 8 KiB default.
//!
//! tonic allocates one encode buffer per call and keeps it for the call's life; on a
//! bundle watch that is the life of the agent's connection, so with thousands of agents
//! the default is megabytes of idle memory. Buffers still grow to fit a larger message.

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstDecoder, ProstEncoder};

/// Initial per-call buffer: a bundle or a signing request fits; a certificate chain grows
/// it once.
pub const BUFFER_SIZE: usize = 1024;

/// tonic's default: how much a server stream may batch before yielding.
const YIELD_THRESHOLD: usize = 32 * 1024;

/// prost encoding with [`BUFFER_SIZE`] buffers.
#[derive(Debug, Clone)]
pub struct CompactCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for CompactCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

fn settings() -> BufferSettings {
    BufferSettings::new(BUFFER_SIZE, YIELD_THRESHOLD)
}

impl<T, U> Codec for CompactCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::new(settings())
    }
}
