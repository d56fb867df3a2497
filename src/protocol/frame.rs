//! Splitting a byte stream into whole protocol messages.
//!
//! A message is only handed on once it is complete, and its declared length is checked
//! against a maximum *before* any buffering, so a client cannot make the proxy allocate
//! gigabytes by announcing a huge message. "Incomplete" is `Ok(None)`, not an error.

use bytes::{Buf, Bytes, BytesMut};

/// One whole tagged protocol message: tag byte, length, body. Cloning is cheap
/// (reference-counted); the bytes are forwarded to the other side untouched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    bytes: Bytes,
}

impl Frame {
    /// A frame pgshard built itself (a rewritten client message). `bytes` must be one
    /// whole message: tag, length word, body.
    pub fn from_message(bytes: Bytes) -> Frame {
        debug_assert!(bytes.len() >= 5);
        Frame { bytes }
    }

    /// The message type byte (e.g. `b'Q'` for Query).
    #[inline]
    pub fn tag(&self) -> u8 {
        self.bytes[0]
    }

    /// The body after the tag and the length word.
    #[inline]
    pub fn body(&self) -> &[u8] {
        &self.bytes[5..]
    }

    /// The whole encoded message, as it is relayed.
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// A stream that cannot be split into valid messages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// the declared length is below the 4 bytes of the length word itself
    #[error("invalid message length {len} for message type '{}'", char::from(*.tag))]
    BadLength {
        /// message type (0 for startup packets)
        tag: u8,
        /// declared length
        len: i64,
    },
    /// the declared length is above the configured maximum
    #[error("message of type '{}' is {len} bytes, more than the maximum of {max}", char::from(*.tag))]
    TooLarge {
        /// message type (0 for startup packets)
        tag: u8,
        /// declared length
        len: usize,
        /// allowed maximum
        max: usize,
    },
}

/// Split one tagged message off the front of `buf`, if it is complete.
pub fn split_frame(buf: &mut BytesMut, max_len: usize) -> Result<Option<Frame>, FrameError> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let tag = buf[0];
    let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    if len < 4 {
        return Err(FrameError::BadLength {
            tag,
            len: i64::from(len),
        });
    }
    let len = len as usize;
    if len > max_len {
        return Err(FrameError::TooLarge {
            tag,
            len,
            max: max_len,
        });
    }
    let total = len + 1;
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    Ok(Some(Frame {
        bytes: buf.split_to(total).freeze(),
    }))
}

/// Split one untagged startup-phase packet (StartupMessage, SSLRequest, CancelRequest…)
/// off `buf`; returns the body after the length word.
pub fn split_startup(buf: &mut BytesMut, max_len: usize) -> Result<Option<Bytes>, FrameError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if len < 8 {
        return Err(FrameError::BadLength {
            tag: 0,
            len: i64::from(len),
        });
    }
    let len = len as usize;
    if len > max_len {
        return Err(FrameError::TooLarge {
            tag: 0,
            len,
            max: max_len,
        });
    }
    if buf.len() < len {
        buf.reserve(len - buf.len());
        return Ok(None);
    }
    let mut packet = buf.split_to(len);
    packet.advance(4);
    Ok(Some(packet.freeze()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_whole_messages_and_waits_for_partial_ones() {
        let mut buf = BytesMut::from(&b"Q\0\0\0\x09abcd\0S\0\0\0\x04Z\0"[..]);
        let q = split_frame(&mut buf, 1024).unwrap().unwrap();
        assert_eq!(q.tag(), b'Q');
        assert_eq!(q.body(), b"abcd\0");
        let s = split_frame(&mut buf, 1024).unwrap().unwrap();
        assert_eq!(s.tag(), b'S');
        assert!(s.body().is_empty());
        assert_eq!(split_frame(&mut buf, 1024).unwrap(), None);
        assert_eq!(&buf[..], b"Z\0");
    }

    #[test]
    fn rejects_bad_and_oversized_lengths_before_buffering() {
        let mut buf = BytesMut::from(&b"Q\0\0\0\x02"[..]);
        assert!(matches!(
            split_frame(&mut buf, 1024),
            Err(FrameError::BadLength { tag: b'Q', len: 2 })
        ));
        let mut buf = BytesMut::from(&b"Q\x7f\xff\xff\xff"[..]);
        assert!(matches!(
            split_frame(&mut buf, 1 << 20),
            Err(FrameError::TooLarge { .. })
        ));
        let mut buf = BytesMut::from(&b"Q\xff\xff\xff\xff"[..]);
        assert!(split_frame(&mut buf, 1 << 20).is_err());
    }

    #[test]
    fn startup_packets() {
        let mut buf = BytesMut::from(&b"\0\0\0\x08\x04\xd2\x16\x2f"[..]);
        let body = split_startup(&mut buf, 10_000).unwrap().unwrap();
        assert_eq!(&body[..], b"\x04\xd2\x16\x2f");
        let mut buf = BytesMut::from(&b"\0\0\0\x03"[..]);
        assert!(split_startup(&mut buf, 10_000).is_err());
        let mut buf = BytesMut::from(&b"\0\0\x10\x00abc"[..]);
        assert!(split_startup(&mut buf, 1_000).is_err());
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 0x1234_5678_9abc_def0_u64;
        for _ in 0..2000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let n = (seed % 40) as usize;
            let bytes: Vec<u8> = (0..n).map(|i| (seed >> (i % 8 * 8)) as u8).collect();
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = split_frame(&mut buf, 64) {}
            let mut buf = BytesMut::from(&bytes[..]);
            let _ = split_startup(&mut buf, 64);
        }
    }
}
