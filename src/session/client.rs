//! Client socket I/O: frame reading with the configured size limit, buffered writes.

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::protocol::{Frame, FrameError, split_frame, split_startup};

/// Largest startup-phase packet (Postgres' own limit).
const MAX_STARTUP_PACKET: usize = 10_000;

/// Why reading from the client stopped.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// socket error
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// the byte stream is not valid protocol
    #[error("{0}")]
    Frame(#[from] FrameError),
}

/// The client side of a session.
pub struct ClientIo<S> {
    stream: S,
    rbuf: BytesMut,
    max_message: usize,
}

impl<S: AsyncRead + AsyncWrite + Unpin> ClientIo<S> {
    /// Wrap a connected stream.
    pub fn new(stream: S, max_message: usize) -> Self {
        ClientIo {
            stream,
            rbuf: BytesMut::new(),
            max_message,
        }
    }

    /// Wrap a connected stream of which `buffered` was already read.
    pub fn with_buffered(stream: S, buffered: BytesMut, max_message: usize) -> Self {
        ClientIo {
            stream,
            rbuf: buffered,
            max_message,
        }
    }

    async fn fill(&mut self) -> Result<bool, ClientError> {
        if self.rbuf.capacity() - self.rbuf.len() < 4 * 1024 {
            self.rbuf.reserve(8 * 1024);
        }
        Ok(self.stream.read_buf(&mut self.rbuf).await? > 0)
    }

    /// The next tagged message, or `None` at end of stream.
    pub async fn read_frame(&mut self) -> Result<Option<Frame>, ClientError> {
        loop {
            if let Some(frame) = split_frame(&mut self.rbuf, self.max_message)? {
                return Ok(Some(frame));
            }
            if !self.fill().await? {
                return Ok(None);
            }
        }
    }

    /// The next untagged startup-phase packet body, or `None` at end of stream.
    pub async fn read_startup(&mut self) -> Result<Option<Bytes>, ClientError> {
        loop {
            if let Some(body) = split_startup(&mut self.rbuf, MAX_STARTUP_PACKET)? {
                return Ok(Some(body));
            }
            if !self.fill().await? {
                return Ok(None);
            }
        }
    }

    /// True when another whole message is already buffered (the client pipelined).
    pub fn has_buffered_frame(&self) -> bool {
        if self.rbuf.len() < 5 {
            return false;
        }
        let len = i32::from_be_bytes([self.rbuf[1], self.rbuf[2], self.rbuf[3], self.rbuf[4]]);
        len >= 4 && self.rbuf.len() > len as usize
    }

    /// Write and clear `out`.
    pub async fn send(&mut self, out: &mut BytesMut) -> std::io::Result<()> {
        if out.is_empty() {
            return Ok(());
        }
        let result = self.stream.write_all(out).await;
        out.clear();
        result?;
        self.stream.flush().await
    }

    /// Give back the read buffer when it holds nothing and has grown past `keep` bytes
    /// (a large message was read): the next read allocates the usual size again.
    pub fn release_idle(&mut self, keep: usize) {
        if self.rbuf.is_empty() && self.rbuf.capacity() > keep {
            self.rbuf = BytesMut::new();
        }
    }

    /// Write raw bytes immediately (the one-byte SSLRequest answer).
    pub async fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await
    }
}
