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

/// Answer encryption requests until the client sends something else. Reads exactly the
/// 8-byte head of each packet: after `S` the next bytes on the socket belong to the TLS
/// handshake, never to a buffer read in plain text. A failed handshake is an error (the
/// client has been told why by the TLS alert).
pub async fn negotiate(
    mut tcp: TcpStream,
    acceptor: Option<&Arc<rustls::ServerConfig>>,
) -> io::Result<Incoming<Stream>> {
    loop {
        let mut head = [0u8; 8];
        tcp.read_exact(&mut head).await?;
        let len = i32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let code = i32::from_be_bytes([head[4], head[5], head[6], head[7]]);
        if len != 8 || (code != SSL_REQUEST && code != GSSENC_REQUEST) {
            return Ok(Incoming {
                stream: Stream::Plain(tcp),
                buffered: BytesMut::from(&head[..]),
                tls: false,
            });
        }
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
