use crate::frame::*;

use bytes::BufMut;

#[derive(Debug, Eq, PartialEq)]
pub struct Priority {
    stream_id: StreamId,
    dependency: StreamDependency,
}

#[derive(Debug, Eq, PartialEq)]
pub struct StreamDependency {
    /// The ID of the stream dependency target
    dependency_id: StreamId,

    /// The weight for the stream. The value exposed (and set) here is always in
    /// the range [0, 255], instead of [1, 256] (as defined in section 5.3.2.)
    /// so that the value fits into a `u8`.
    weight: u8,

    /// True if the stream dependency is exclusive.
    is_exclusive: bool,
}

impl Priority {
    pub fn load(head: Head, payload: &[u8]) -> Result<Self, Error> {
        let dependency = StreamDependency::load(payload)?;

        if dependency.dependency_id() == head.stream_id() {
            return Err(Error::InvalidDependencyId);
        }

        Ok(Priority {
            stream_id: head.stream_id(),
            dependency,
        })
    }

    // writ patch (see vendor/README.md): upstream panicked when asked to
    // write a PRIORITY frame. h2 never queues one, but a frame it can read it can also
    // write: RFC 9113 §6.3, a 5-octet payload on the frame's own stream.
    pub fn encode<B: BufMut>(&self, dst: &mut B) {
        let head = Head::new(Kind::Priority, 0, self.stream_id);
        head.encode(5, dst);
        self.dependency.encode(dst);
    }
}

impl<B> From<Priority> for Frame<B> {
    fn from(src: Priority) -> Self {
        Frame::Priority(src)
    }
}

// ===== impl StreamDependency =====

impl StreamDependency {
    pub fn new(dependency_id: StreamId, weight: u8, is_exclusive: bool) -> Self {
        StreamDependency {
            dependency_id,
            weight,
            is_exclusive,
        }
    }

    pub fn load(src: &[u8]) -> Result<Self, Error> {
        if src.len() != 5 {
            return Err(Error::InvalidPayloadLength);
        }

        // Parse the stream ID and exclusive flag
        let (dependency_id, is_exclusive) = StreamId::parse(&src[..4]);

        // Read the weight
        let weight = src[4];

        Ok(StreamDependency::new(dependency_id, weight, is_exclusive))
    }

    pub fn dependency_id(&self) -> StreamId {
        self.dependency_id
    }

    // writ patch: the inverse of `load` (RFC 9113 §5.3.1: E bit, 31-bit stream, weight).
    pub fn encode<B: BufMut>(&self, dst: &mut B) {
        let mut id = u32::from(self.dependency_id);
        if self.is_exclusive {
            id |= 1 << 31;
        }
        dst.put_u32(id);
        dst.put_u8(self.weight);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_encoded_priority_frame_loads_back() {
        let frame = Priority {
            stream_id: StreamId::from(3),
            dependency: StreamDependency::new(StreamId::from(1), 200, true),
        };
        let mut buf = Vec::new();
        frame.encode(&mut buf);
        assert_eq!(buf.len(), 9 + 5);
        let head = Head::parse(&buf);
        assert_eq!(head.kind(), Kind::Priority);
        assert_eq!(Priority::load(head, &buf[9..]).unwrap(), frame);
    }
}
