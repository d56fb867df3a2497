//! Relaying backend replies to the client, driven by a queue of expected replies.
//!
//! Every message the session sends to a backend pushes what it expects back
//! ([`Expect`]). Replies are matched against the front of the queue: forwarded
//! untouched, swallowed (for statements the proxy injected, such as a deferred BEGIN or a
//! Parse of a statement this connection had not seen), or answered by the proxy itself
//! in order (a Parse the connection already has). After an ErrorResponse in the extended
//! protocol the backend skips to the next Sync, and so does the queue. The relay stops
//! when the queue is empty, so it never waits for a reply that will not come.

use std::collections::VecDeque;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite};

use super::client::{ClientError, ClientIo};
use crate::backend::{BackendConn, BackendError};
use crate::protocol::reply::{self, TxnStatus};

/// Flush to the client once this much output is buffered.
const OUT_FLUSH_BYTES: usize = 64 * 1024;

/// A reply the backend owes for something the proxy sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// simple Query: everything up to ReadyForQuery; `fwd` false swallows all but errors
    Query {
        /// forward to the client
        fwd: bool,
    },
    /// one statement of a query string pgshard runs statement by statement: everything
    /// up to ReadyForQuery is forwarded, the ReadyForQuery itself is not (the client
    /// gets one at the end of its string)
    Statement,
    /// ParseComplete; `cache` records the statement hash on success
    Parse {
        /// forward to the client
        fwd: bool,
        /// statement hash to remember on this connection
        cache: Option<u64>,
        /// the client statement this Parse creates: forgotten again if it fails
        client: Option<String>,
    },
    /// BindComplete
    Bind,
    /// ParameterDescription? then RowDescription | NoData
    Describe,
    /// DataRow* then CommandComplete | EmptyQueryResponse | PortalSuspended
    Execute,
    /// CloseComplete
    Close {
        /// forward to the client
        fwd: bool,
    },
    /// ReadyForQuery after Sync
    Sync {
        /// forward to the client
        fwd: bool,
    },
    /// the proxy answers ParseComplete itself, in order (unless an earlier error makes
    /// the backend skip the batch: then the client statement is forgotten)
    SynthParse {
        /// the client statement the Parse created
        client: Option<String>,
    },
    /// a message the proxy sent to fail the batch on purpose: its ErrorResponse is
    /// swallowed
    Abort,
    /// the proxy answers CloseComplete itself, in order
    SynthClose,
}

impl Expect {
    fn forwards(&self) -> bool {
        match self {
            Expect::Query { fwd } | Expect::Parse { fwd, .. } | Expect::Close { fwd } => *fwd,
            Expect::Statement => true,
            Expect::Sync { fwd } => *fwd,
            _ => true,
        }
    }
}

/// How a relay ended.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RelayOutcome {
    /// an ErrorResponse was relayed
    pub saw_error: bool,
    /// after an extended-protocol error the backend skips to the next Sync, and no Sync
    /// was sent yet (the batch ended with Flush)
    pub skipping: bool,
    /// client statements whose Parse failed or was skipped by the backend
    pub failed_parses: Vec<String>,
    /// set by the caller: a CopyInResponse pauses the relay (it stays in `out`) instead
    /// of being refused, so the session can drive COPY FROM STDIN on several shards
    pub stop_at_copy_in: bool,
    /// the relay paused at a CopyInResponse (see `stop_at_copy_in`)
    pub copy_in_started: bool,
}

/// Why a relay stopped early.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// the backend failed (the connection is marked broken)
    #[error("{0}")]
    Backend(#[from] BackendError),
    /// the client went away mid-relay (e.g. during COPY FROM STDIN)
    #[error("client: {0}")]
    Client(#[from] ClientError),
    /// a collected reply outgrew its memory cap
    #[error("the result is larger than {0} bytes")]
    TooLarge(usize),
}

/// Relay replies for everything in `queue` into `out`, writing `out` to `client`
/// whenever the backend has nothing more buffered. With `client = None` (broadcast
/// collection) nothing is written and COPY is refused.
pub async fn relay<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut BackendConn,
    queue: &mut VecDeque<Expect>,
    out: &mut BytesMut,
    client: Option<&mut ClientIo<S>>,
) -> Result<RelayOutcome, RelayError> {
    relay_capped(conn, queue, out, client, usize::MAX).await
}

/// [`relay`] that fails with [`RelayError::TooLarge`] once `out` holds more than `cap`
/// bytes (for replies collected in memory to be merged; the connection is then marked
/// broken, as its reply was not read to the end).
pub async fn relay_capped<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut BackendConn,
    queue: &mut VecDeque<Expect>,
    out: &mut BytesMut,
    client: Option<&mut ClientIo<S>>,
    cap: usize,
) -> Result<RelayOutcome, RelayError> {
    let mut outcome = RelayOutcome::default();
    if relay_until(conn, queue, out, client, cap, &mut outcome).await? {
        Ok(outcome)
    } else {
        conn.broken = true;
        Err(RelayError::TooLarge(cap))
    }
}

/// Relay like [`relay`] until the queue is empty (`true`), or until `out` holds more
/// than `pause_at` bytes (`false`: the reply continues; call again, after taking the
/// whole messages out of `out`, to go on). Lets a statement on several shards stream
/// its rows in bounded chunks instead of collecting whole replies.
pub async fn relay_until<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut BackendConn,
    queue: &mut VecDeque<Expect>,
    out: &mut BytesMut,
    mut client: Option<&mut ClientIo<S>>,
    pause_at: usize,
    outcome: &mut RelayOutcome,
) -> Result<bool, RelayError> {
    loop {
        if out.len() > pause_at {
            return Ok(false);
        }
        while let Some(front) = queue.front() {
            match front {
                Expect::SynthParse { .. } => reply::parse_complete(out),
                Expect::SynthClose => reply::close_complete(out),
                _ => break,
            }
            queue.pop_front();
        }
        if queue.is_empty() {
            return Ok(true);
        }
        if let Some(client) = client.as_deref_mut()
            && !out.is_empty()
            && (out.len() >= OUT_FLUSH_BYTES || !conn.has_buffered_frame())
        {
            client.send(out).await.map_err(ClientError::Io)?;
        }
        let frame = conn.read_frame().await?;
        let fwd = queue.front().is_some_and(Expect::forwards);
        match frame.tag() {
            b'E' => {
                let deliberate = matches!(queue.front(), Some(Expect::Abort));
                if !deliberate {
                    outcome.saw_error = true;
                    out.extend_from_slice(frame.as_bytes());
                }
                if !matches!(
                    queue.front(),
                    Some(Expect::Query { .. } | Expect::Statement)
                ) {
                    // The backend now ignores everything up to the next Sync.
                    outcome.skipping = true;
                    while let Some(front) = queue.front() {
                        if matches!(front, Expect::Sync { .. }) {
                            outcome.skipping = false;
                            break;
                        }
                        match queue.pop_front() {
                            Some(Expect::Parse { cache, client, .. }) => {
                                if let Some(h) = cache {
                                    conn.prepared.remove(&h);
                                }
                                outcome.failed_parses.extend(client);
                            }
                            Some(Expect::SynthParse { client }) => {
                                outcome.failed_parses.extend(client)
                            }
                            _ => {}
                        }
                    }
                }
            }
            b'Z' => {
                let status = frame
                    .body()
                    .first()
                    .and_then(|&b| TxnStatus::from_byte(b))
                    .ok_or_else(|| desync(conn, "bad ReadyForQuery"))?;
                conn.status = status;
                // the shard is alive and answering (see backend::health::Answered)
                conn.note_answered();
                match queue.pop_front() {
                    Some(Expect::Query { fwd }) | Some(Expect::Sync { fwd }) => {
                        if fwd {
                            out.extend_from_slice(frame.as_bytes());
                        }
                    }
                    Some(Expect::Statement) => {}
                    _ => return Err(desync(conn, "unexpected ReadyForQuery").into()),
                }
            }
            b'1' => match queue.pop_front() {
                Some(Expect::Parse { fwd, cache, .. }) => {
                    if let Some(h) = cache {
                        conn.prepared.insert(h);
                    }
                    if fwd {
                        out.extend_from_slice(frame.as_bytes());
                    }
                }
                _ => return Err(desync(conn, "unexpected ParseComplete").into()),
            },
            b'2' => {
                if queue.pop_front() != Some(Expect::Bind) {
                    return Err(desync(conn, "unexpected BindComplete").into());
                }
                out.extend_from_slice(frame.as_bytes());
            }
            b'3' => match queue.pop_front() {
                Some(Expect::Close { fwd }) => {
                    if fwd {
                        out.extend_from_slice(frame.as_bytes());
                    }
                }
                _ => return Err(desync(conn, "unexpected CloseComplete").into()),
            },
            b'T' | b'n' => {
                if fwd {
                    out.extend_from_slice(frame.as_bytes());
                }
                if matches!(queue.front(), Some(Expect::Describe)) {
                    queue.pop_front();
                }
            }
            b'C' | b'I' | b's' => {
                if fwd {
                    out.extend_from_slice(frame.as_bytes());
                }
                if matches!(queue.front(), Some(Expect::Execute)) {
                    queue.pop_front();
                }
            }
            b'G' => {
                out.extend_from_slice(frame.as_bytes());
                // In the extended protocol the batch's Sync reached the backend during
                // COPY and was ignored; the client sends another after CopyDone.
                let extended = matches!(queue.front(), Some(Expect::Execute));
                match client.as_deref_mut() {
                    Some(client) => {
                        client.send(out).await.map_err(ClientError::Io)?;
                        copy_in(conn, client, extended).await?;
                    }
                    None if outcome.stop_at_copy_in => {
                        outcome.copy_in_started = true;
                        return Ok(false);
                    }
                    None => {
                        // Broadcast statements never COPY; abort it on the backend.
                        out.clear();
                        let mut fail = BytesMut::new();
                        postgres_protocol::message::frontend::copy_fail(
                            "COPY is not supported here",
                            &mut fail,
                        )
                        .map_err(BackendError::Io)?;
                        conn.queue(&fail);
                        conn.flush().await?;
                    }
                }
            }
            b'W' => {
                return Err(desync(conn, "COPY BOTH (replication) is not supported").into());
            }
            _ => {
                if fwd {
                    out.extend_from_slice(frame.as_bytes());
                }
            }
        }
    }
}

/// COPY FROM STDIN: pass the client's CopyData through until CopyDone or CopyFail (and,
/// for a COPY started by the extended protocol, the Sync that follows it).
async fn copy_in<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut BackendConn,
    client: &mut ClientIo<S>,
    extended: bool,
) -> Result<(), RelayError> {
    let mut done = false;
    loop {
        let frame = match client.read_frame().await {
            Ok(Some(frame)) => frame,
            Ok(None) | Err(_) => {
                let mut fail = BytesMut::new();
                let _ = postgres_protocol::message::frontend::copy_fail(
                    "client disconnected during COPY",
                    &mut fail,
                );
                conn.queue(&fail);
                let _ = conn.flush().await;
                conn.broken = true;
                return Err(ClientError::Io(std::io::ErrorKind::UnexpectedEof.into()).into());
            }
        };
        conn.queue(frame.as_bytes());
        match frame.tag() {
            b'c' | b'f' if !extended => {
                conn.flush().await?;
                return Ok(());
            }
            b'c' | b'f' => done = true,
            b'S' if done => {
                conn.flush().await?;
                return Ok(());
            }
            b'd' | b'H' | b'S' => {}
            _ if done => {}
            _ => {
                conn.flush().await?;
                return Ok(());
            }
        }
        if !client.has_buffered_frame() {
            conn.flush().await?;
        }
    }
}

fn desync(conn: &mut BackendConn, what: &str) -> BackendError {
    conn.broken = true;
    BackendError::Protocol(what.to_owned())
}
