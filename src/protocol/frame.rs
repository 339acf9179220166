//! Splitting a byte stream into `{tag, length, body}` messages without copying.

use bytes::{Buf, Bytes, BytesMut};

/// Messages up to this size (tag and length included) are copied into the
/// frame itself: `ReadyForQuery`, `Sync`, `Execute` and most short queries.
const INLINE: usize = 64;

/// One complete protocol message, tag and length included, exactly as it
/// arrived, so it can be forwarded untouched.
///
/// A short message is copied out of the read buffer into the frame; a
/// longer one shares the buffer's memory. Both beat the other way round:
/// copying a few bytes costs less than the reference counting of a shared
/// slice, and a long message is never copied.
#[derive(Clone, Debug)]
pub struct Frame(Repr);

#[derive(Clone, Debug)]
enum Repr {
    Inline { len: u8, data: [u8; INLINE] },
    Shared(Bytes),
}

impl PartialEq for Frame {
    fn eq(&self, other: &Frame) -> bool {
        self.bytes() == other.bytes()
    }
}

impl Eq for Frame {}

impl Frame {
    /// Wraps bytes that are known to hold one whole message (tag, length, body).
    pub fn from_bytes(bytes: Bytes) -> Frame {
        Frame(Repr::Shared(bytes))
    }

    /// Takes the first `size` bytes of `buf`, one whole message, off it.
    fn split_off_front(buf: &mut BytesMut, size: usize) -> Frame {
        if size <= INLINE {
            let mut data = [0; INLINE];
            data[..size].copy_from_slice(&buf[..size]);
            buf.advance(size);
            // `size` fits: it is at most INLINE.
            Frame(Repr::Inline {
                len: size as u8,
                data,
            })
        } else {
            Frame(Repr::Shared(buf.split_to(size).freeze()))
        }
    }

    /// The message type byte, e.g. `b'Q'`.
    pub fn tag(&self) -> u8 {
        self.bytes()[0]
    }

    /// The message body after the tag and length.
    pub fn body(&self) -> &[u8] {
        &self.bytes()[5..]
    }

    /// The whole message, for forwarding.
    pub fn bytes(&self) -> &[u8] {
        match &self.0 {
            Repr::Inline { len, data } => &data[..usize::from(*len)],
            Repr::Shared(bytes) => bytes,
        }
    }

    /// The bytes from `from` on, to keep beyond the frame (shared with it
    /// when it is long).
    pub fn slice_from(&self, from: usize) -> Bytes {
        match &self.0 {
            Repr::Inline { .. } => Bytes::copy_from_slice(&self.bytes()[from..]),
            Repr::Shared(bytes) => bytes.slice(from..),
        }
    }
}

/// Why a byte stream could not be split into messages; always fatal for the
/// connection, because the stream can no longer be resynchronised.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The length field is below 4 (it counts itself) or negative.
    #[error("invalid message length {length} for message type {tag:#04x}")]
    InvalidLength {
        /// The message's type byte.
        tag: u8,
        /// The length field as received.
        length: i32,
    },
    /// The length field exceeds the configured `max_message_size`.
    #[error("message of type {tag:#04x} is {length} bytes, over the limit of {limit} bytes")]
    TooLarge {
        /// The message's type byte.
        tag: u8,
        /// The length field as received.
        length: usize,
        /// The `max_message_size` in force.
        limit: usize,
    },
}

/// Takes the next complete message off the front of `buf`.
///
/// Returns `Ok(None)` when more bytes are needed. The length is checked as
/// soon as the five header bytes are present, so an oversized message is
/// refused before its body is buffered.
pub fn decode(buf: &mut BytesMut, max_size: usize) -> Result<Option<Frame>, FrameError> {
    let Some(length) = peek_length(buf, max_size)? else {
        return Ok(None);
    };
    if buf.len() < 1 + length {
        buf.reserve(1 + length - buf.len());
        return Ok(None);
    }
    Ok(Some(Frame::split_off_front(buf, 1 + length)))
}

/// The size of the message at the front of `buf`, tag and length included,
/// if all of it is there; lets a caller walk a run of messages in place
/// without taking each off as a [`Frame`].
pub fn whole_message_len(buf: &[u8], max_size: usize) -> Result<Option<usize>, FrameError> {
    Ok(peek_length(buf, max_size)?
        .map(|length| 1 + length)
        .filter(|&size| buf.len() >= size))
}

/// Validates the header at the front of `buf` and returns the length field.
fn peek_length(buf: &[u8], max_size: usize) -> Result<Option<usize>, FrameError> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let tag = buf[0];
    let length = (&buf[1..5]).get_i32();
    if length < 4 {
        return Err(FrameError::InvalidLength { tag, length });
    }
    let length = length as usize;
    if length > max_size {
        return Err(FrameError::TooLarge {
            tag,
            length,
            limit: max_size,
        });
    }
    Ok(Some(length))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_consecutive_messages_and_waits_for_partial_ones() {
        let mut buf = BytesMut::from(&b"Q\0\0\0\x0bSELECT\0S\0\0\0\x04Z\0\0"[..]);
        let first = decode(&mut buf, 1024).unwrap().unwrap();
        assert_eq!(first.tag(), b'Q');
        assert_eq!(first.body(), b"SELECT\0");
        let second = decode(&mut buf, 1024).unwrap().unwrap();
        assert_eq!(second.tag(), b'S');
        assert!(second.body().is_empty());
        assert_eq!(decode(&mut buf, 1024).unwrap(), None);
        assert_eq!(&buf[..], b"Z\0\0");
    }

    #[test]
    fn short_and_long_messages_come_out_the_same_way() {
        for size in [5, INLINE - 1, INLINE, INLINE + 1, 4096] {
            let mut message = vec![b'Q'];
            message.extend_from_slice(&(size as i32 - 1).to_be_bytes());
            message.resize(size, b'x');
            let mut buf = BytesMut::from(&message[..]);
            buf.extend_from_slice(b"S\0\0\0\x04");
            let frame = decode(&mut buf, 1 << 20).unwrap().unwrap();
            assert_eq!(frame.bytes(), &message[..], "size {size}");
            assert_eq!(frame.tag(), b'Q');
            assert_eq!(frame.body().len(), size - 5);
            assert_eq!(frame.slice_from(5), &message[5..]);
            assert_eq!(frame, Frame::from_bytes(Bytes::from(message)));
            assert_eq!(&buf[..], b"S\0\0\0\x04");
        }
    }

    #[test]
    fn measures_only_whole_messages() {
        let buf = b"Z\0\0\0\x05IC\0\0";
        assert_eq!(whole_message_len(buf, 1024), Ok(Some(6)));
        assert_eq!(whole_message_len(&buf[6..], 1024), Ok(None));
        assert_eq!(whole_message_len(&buf[..5], 1024), Ok(None));
        assert!(whole_message_len(b"D\0\0\0\x01", 1024).is_err());
    }

    #[test]
    fn rejects_short_negative_and_oversized_lengths() {
        for header in [&b"Q\0\0\0\x03"[..], &b"Q\xff\xff\xff\xff"[..]] {
            let mut buf = BytesMut::from(header);
            assert!(matches!(
                decode(&mut buf, 1024),
                Err(FrameError::InvalidLength { tag: b'Q', .. })
            ));
        }
        let mut buf = BytesMut::from(&b"d\0\x10\0\0"[..]);
        assert!(matches!(
            decode(&mut buf, 1024),
            Err(FrameError::TooLarge {
                length: 1048576,
                ..
            })
        ));
    }
}
