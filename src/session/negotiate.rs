//! Encryption negotiation, before the startup packet: a client may open with
//! SSLRequest (answered `S` and a TLS handshake when `[tls]` has a certificate, else
//! `N`) or GSSENCRequest (always `N`), then sends its StartupMessage or CancelRequest on
//! the connection it ends up with. The socket changes type here, so this runs before the
//! [`Session`](super::Session) is built.

use std::io;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::tls::Stream;

/// SSLRequest code (in place of a protocol version).
const SSL_REQUEST: i32 = 80_877_103;
/// GSSENCRequest code.
const GSSENC_REQUEST: i32 = 80_877_104;

/// A client connection after negotiation, ready for its first startup packet.
pub struct Incoming<S> {
    /// the connection, encrypted or not
    pub stream: S,
    /// bytes of the first packet already read from it
    pub buffered: BytesMut,
    /// whether the connection is encrypted
    pub tls: bool,
}

impl<S> Incoming<S> {
    /// A connection that skipped negotiation (nothing read yet, not encrypted).
    pub fn plain(stream: S) -> Incoming<S> {
        Incoming {
            stream,
            buffered: BytesMut::new(),
            tls: false,
        }
    }
}

/// Answer encryption requests until the client sends something else, which is handed
/// over with the bytes read of it. After `S` the next bytes on the socket belong to the
/// TLS handshake: bytes a client sent before the answer are refused, never read as if
/// they had been encrypted. A failed handshake is an error (the client has been told why
/// by the TLS alert).
pub async fn negotiate(
    mut tcp: TcpStream,
    acceptor: Option<&Arc<rustls::ServerConfig>>,
) -> io::Result<Incoming<Stream>> {
    let mut read = BytesMut::with_capacity(1024);
    loop {
        // The length first: anything but 8 is not an encryption request, and the
        // session's own checks answer a bad length without waiting for more bytes.
        fill(&mut tcp, &mut read, 4).await?;
        if i32::from_be_bytes([read[0], read[1], read[2], read[3]]) != 8 {
            return Ok(plain(tcp, read));
        }
        fill(&mut tcp, &mut read, 8).await?;
        let code = i32::from_be_bytes([read[4], read[5], read[6], read[7]]);
        if code != SSL_REQUEST && code != GSSENC_REQUEST {
            return Ok(plain(tcp, read));
        }
        if read.len() > 8 {
            // Postgres refuses this too (CVE-2021-23214): bytes sent before the answer
            // would otherwise be taken as if they had come over the encrypted channel
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "data sent after an encryption request, before its answer",
            ));
        }
        read.clear();
        match acceptor {
            Some(config) if code == SSL_REQUEST => {
                tcp.write_all(b"S").await?;
                let stream = crate::tls::accept(tcp, config).await?;
                return Ok(Incoming {
                    stream,
                    buffered: BytesMut::new(),
                    tls: true,
                });
            }
            // the client may go on in plain text or ask for the other kind
            _ => tcp.write_all(b"N").await?,
        }
    }
}

/// Read until `buf` holds at least `n` bytes (EOF first is an error).
async fn fill(tcp: &mut TcpStream, buf: &mut BytesMut, n: usize) -> io::Result<()> {
    while buf.len() < n {
        if tcp.read_buf(buf).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(())
}

/// A plain connection of which `read` was read already.
fn plain(tcp: TcpStream, read: BytesMut) -> Incoming<Stream> {
    Incoming {
        stream: Stream::Plain(tcp),
        buffered: read,
        tls: false,
    }
}
