//! COPY on several shards.
//!
//! FROM STDIN: the same COPY is opened on every shard, each inside `BEGIN`; the client
//! gets one CopyInResponse; its data is split into rows (`sharding::copy::RowSplitter`)
//! and each row is forwarded unchanged to the shard owning its key, batched into CopyData
//! messages of about [`COPY_CHUNK`] bytes (a reference table gets every CopyData on every
//! shard). At CopyDone every shard ends its COPY; only if every one succeeded are they
//! committed, else all roll back and the first error is reported. A bad row, a client's
//! CopyFail or a lost shard sends CopyFail to every shard instead.
//!
//! TO STDOUT: every shard runs the COPY; their rows are streamed in shard order under the
//! first shard's CopyOutResponse, one CopyDone and a summed `COPY n`.

use std::collections::VecDeque;

use bytes::{BufMut, BytesMut};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncWrite};

use super::relay::{Expect, RelayOutcome, relay, relay_until};
use super::txn::Txn;
use super::{Session, SessionEnd};
use crate::backend::{PooledConn, Pools};
use crate::config::ShardMap;
use crate::protocol::reply::{self, ProxyError};
use crate::protocol::{Frame, SqlState};
use crate::router::{CopyIn, CopyKey, Merge, ShardSet};
use crate::sharding::copy::{CopyError, CopyErrorKind, KeyField, Row, RowSplitter};
use crate::sharding::{KeyError, ShardId};

/// Bytes of rows sent to a shard per CopyData message, and read from a shard per step
/// of COPY TO.
const COPY_CHUNK: usize = 64 * 1024;

/// Why COPY on several shards cannot run inside a transaction block.
const COPY_IN_TXN: &str = "pgshard: this COPY runs on every shard and cannot run inside a transaction block yet (cross-shard transactions do not exist); run it outside BEGIN/COMMIT";

/// Why a COPY FROM on several shards is not committed.
enum Failure {
    /// pgshard refused the data (a bad row, a protocol error): this error
    Proxy(ProxyError),
    /// the client sent CopyFail with this message
    ClientFail(String),
    /// a shard's connection failed
    Lost(ProxyError),
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// A COPY spread over `shards` (the router's [`Merge::CopyIn`] / [`Merge::CopyOut`]):
    /// `request` queues the client's statement on each connection (a Query, or the
    /// extended-protocol batch with its Sync when `extended`). Ends with ReadyForQuery.
    pub(super) async fn copy_scatter(
        &mut self,
        shards: &ShardSet,
        merge: &Merge,
        extended: bool,
        request: impl FnMut(&mut PooledConn, &mut VecDeque<Expect>),
    ) -> Result<(), SessionEnd> {
        if !matches!(self.txn, Txn::Idle) {
            self.refuse(ProxyError::cross_shard_unsupported(COPY_IN_TXN));
        } else {
            match merge {
                Merge::CopyIn(plan) => self.copy_in(shards, plan, extended, request).await?,
                Merge::CopyOut { skip_header } => {
                    self.copy_out(shards, *skip_header, request).await?
                }
                _ => self.refuse(ProxyError::error(
                    SqlState::INTERNAL_ERROR,
                    "pgshard: not a COPY",
                )),
            }
        }
        self.ready();
        Ok(())
    }

    async fn copy_in(
        &mut self,
        shards: &ShardSet,
        plan: &CopyIn,
        extended: bool,
        mut request: impl FnMut(&mut PooledConn, &mut VecDeque<Expect>),
    ) -> Result<(), SessionEnd> {
        let mut begin = BytesMut::new();
        let _ = frontend::query("BEGIN", &mut begin);
        let mut in_txn = |conn: &mut PooledConn, queue: &mut VecDeque<Expect>| {
            conn.queue(&begin);
            queue.push_back(Expect::Query { fwd: false });
            request(conn, queue);
        };
        let (mut conns, mut queues, names) = match self.send_all(shards, &mut in_txn).await {
            Ok(sent) => sent,
            Err(e) => {
                self.refuse(e);
                return Ok(());
            }
        };
        let n = conns.len();
        // 1. every shard up to its CopyInResponse
        let mut outs: Vec<BytesMut> = (0..n).map(|_| BytesMut::new()).collect();
        let mut copying = vec![false; n];
        let mut failure: Option<Failure> = None;
        let mut failed_shard: Option<usize> = None;
        for i in 0..n {
            let mut outcome = RelayOutcome {
                stop_at_copy_in: true,
                ..RelayOutcome::default()
            };
            let result = relay_until::<S>(
                &mut conns[i],
                &mut queues[i],
                &mut outs[i],
                None,
                usize::MAX,
                &mut outcome,
            )
            .await;
            // statements whose Parse failed do not exist, as in Postgres
            for name in &outcome.failed_parses {
                self.stmts.remove(name);
            }
            match result {
                Ok(_) if outcome.copy_in_started => copying[i] = true,
                // the shard refused the statement (or it was not a COPY)
                Ok(_) => {
                    failed_shard.get_or_insert(i);
                }
                Err(e) => {
                    conns[i].broken = true;
                    failure
                        .get_or_insert(Failure::Lost(ProxyError::shard_unavailable(&names[i], e)));
                }
            }
        }
        // 2. the data
        if failure.is_none() && failed_shard.is_none() {
            // the client's CopyInResponse (and BindComplete…): the first shard's
            self.out.extend_from_slice(&outs[0]);
            let sent = self.client.send(&mut self.out).await;
            let data = match sent {
                Ok(()) => self.copy_in_data(&mut conns, plan, &names, extended).await,
                Err(_) => None,
            };
            match data {
                Some(f) => failure = f,
                None => {
                    // the client is gone: closing the connections aborts every COPY
                    for conn in conns.iter_mut() {
                        conn.broken = true;
                    }
                    self.running.lock().await.clear();
                    conns.into_iter().for_each(Pools::release);
                    return Err(SessionEnd::ClientGone);
                }
            }
        }
        // 3. end every shard's COPY and read its answer
        let mut end = BytesMut::new();
        for i in 0..n {
            if conns[i].broken || !copying[i] {
                continue;
            }
            end.clear();
            match &failure {
                None => frontend::copy_done(&mut end),
                Some(Failure::ClientFail(message)) => {
                    let _ = frontend::copy_fail(message, &mut end);
                }
                Some(_) => {
                    let _ = frontend::copy_fail("pgshard: COPY aborted", &mut end);
                }
            }
            if extended {
                frontend::sync(&mut end);
            }
            conns[i].queue(&end);
            outs[i].clear();
            let result = match conns[i].flush().await {
                Ok(()) => relay::<S>(&mut conns[i], &mut queues[i], &mut outs[i], None).await,
                Err(e) => Err(e.into()),
            };
            match result {
                Ok(outcome) if outcome.saw_error => {
                    if !matches!(failure, Some(Failure::Proxy(_) | Failure::Lost(_))) {
                        failed_shard.get_or_insert(i);
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    conns[i].broken = true;
                    failure
                        .get_or_insert(Failure::Lost(ProxyError::shard_unavailable(&names[i], e)));
                }
            }
        }
        // 4. commit only if every shard's COPY succeeded
        let commit = failure.is_none() && failed_shard.is_none();
        let commit_error = self.end_transactions(&mut conns, &names, commit).await;
        self.running.lock().await.clear();
        conns.into_iter().for_each(Pools::release);
        match (failure, failed_shard) {
            (Some(Failure::Proxy(e) | Failure::Lost(e)), _) => self.refuse(e),
            (_, Some(i)) => append_without_ready(&outs[i], &mut self.out),
            (Some(Failure::ClientFail(message)), None) => self.refuse(ProxyError::error(
                SqlState::QUERY_CANCELED,
                format!("COPY from stdin failed: {message}"),
            )),
            (None, None) => match commit_error {
                Some(e) => self.refuse(e),
                None => {
                    // a reference table's rows are counted once
                    let counts = outs.iter().map(|o| copy_count(o).unwrap_or(0));
                    let total: u64 = if plan.key.is_some() {
                        counts.sum()
                    } else {
                        counts.take(1).sum()
                    };
                    reply::command_complete(&format!("COPY {total}"), &mut self.out);
                }
            },
        }
        Ok(())
    }

    /// Relay the client's COPY data to the shards until CopyDone or CopyFail (and, in the
    /// extended protocol, the Sync after it). Returns why the COPY must not be committed
    /// (`Some(None)`: nothing wrong), or `None` if the client went away.
    async fn copy_in_data(
        &mut self,
        conns: &mut [PooledConn],
        plan: &CopyIn,
        names: &[String],
        extended: bool,
    ) -> Option<Option<Failure>> {
        let map = self.shared.map.load_full();
        let mut index: Vec<Option<usize>> = vec![None; map.shard_count()];
        for (i, conn) in conns.iter().enumerate() {
            if let Some(slot) = index.get_mut(conn.shard) {
                *slot = Some(i);
            }
        }
        let mut splitter = plan
            .key
            .as_ref()
            .map(|k| RowSplitter::new(plan.options.clone(), Some(k.position)));
        let mut pending: Vec<BytesMut> = conns.iter().map(|_| BytesMut::new()).collect();
        let mut failure: Option<Failure> = None;
        loop {
            let frame = match self.client.read_frame().await {
                Ok(Some(frame)) => frame,
                _ => return None,
            };
            match frame.tag() {
                b'd' if failure.is_some() => {}
                b'd' => {
                    let placed = match (&mut splitter, &plan.key) {
                        (Some(splitter), Some(key)) => {
                            splitter.push(frame.body());
                            place_rows(splitter, false, plan, key, &map, &index, &mut pending)
                        }
                        // a reference table: every CopyData to every shard
                        _ => {
                            pending
                                .iter_mut()
                                .for_each(|p| p.extend_from_slice(frame.body()));
                            Ok(())
                        }
                    };
                    failure = placed.err().map(Failure::Proxy);
                    if failure.is_none() {
                        failure = send_rows(conns, &mut pending, names, COPY_CHUNK).await;
                    }
                }
                b'c' => {
                    if failure.is_none()
                        && let (Some(splitter), Some(key)) = (&mut splitter, &plan.key)
                    {
                        failure = place_rows(splitter, true, plan, key, &map, &index, &mut pending)
                            .err()
                            .map(Failure::Proxy);
                    }
                    if failure.is_none() {
                        failure = send_rows(conns, &mut pending, names, 0).await;
                    }
                    break;
                }
                b'f' => {
                    if failure.is_none() {
                        failure = Some(Failure::ClientFail(copy_fail_message(&frame)));
                    }
                    break;
                }
                // ignored during COPY, as Postgres does
                b'H' | b'S' => {}
                other => {
                    failure.get_or_insert(Failure::Proxy(ProxyError::error(
                        SqlState::PROTOCOL_VIOLATION,
                        format!("unexpected message type 0x{other:02X} during COPY from stdin"),
                    )));
                    break;
                }
            }
        }
        if extended {
            // the batch ends at the client's Sync
            loop {
                match self.client.read_frame().await {
                    Ok(Some(frame)) if frame.tag() == b'S' => break,
                    Ok(Some(_)) => {}
                    _ => return None,
                }
            }
        }
        Some(failure)
    }

    /// COMMIT (or ROLLBACK) every usable connection of a COPY FROM; the first failure to
    /// commit, if any (the commits are not atomic across shards).
    async fn end_transactions(
        &mut self,
        conns: &mut [PooledConn],
        names: &[String],
        commit: bool,
    ) -> Option<ProxyError> {
        let mut end = BytesMut::new();
        let _ = frontend::query(if commit { "COMMIT" } else { "ROLLBACK" }, &mut end);
        let mut error = None;
        for (i, conn) in conns.iter_mut().enumerate() {
            if conn.broken {
                continue;
            }
            conn.queue(&end);
            let mut queue = VecDeque::from([Expect::Query { fwd: false }]);
            let mut out = BytesMut::new();
            let result = match conn.flush().await {
                Ok(()) => relay::<S>(conn, &mut queue, &mut out, None).await,
                Err(e) => Err(e.into()),
            };
            match result {
                Ok(outcome) if !outcome.saw_error => {}
                Ok(_) => {
                    conn.broken = true;
                    error.get_or_insert(ProxyError::shard_unavailable(
                        &names[i],
                        "COMMIT of its part of the COPY failed",
                    ));
                }
                Err(e) => {
                    conn.broken = true;
                    error.get_or_insert(ProxyError::shard_unavailable(&names[i], e));
                }
            }
        }
        if commit && error.is_some() {
            tracing::error!("COPY committed on some shards but failed to commit on another");
        }
        error
    }

    /// COPY TO STDOUT on several shards: streamed shard after shard.
    async fn copy_out(
        &mut self,
        shards: &ShardSet,
        skip_header: bool,
        mut request: impl FnMut(&mut PooledConn, &mut VecDeque<Expect>),
    ) -> Result<(), SessionEnd> {
        let (mut conns, mut queues, _) = match self.send_all(shards, &mut request).await {
            Ok(sent) => sent,
            Err(e) => {
                self.refuse(e);
                return Ok(());
            }
        };
        let n = conns.len();
        let mut done = vec![false; n];
        let mut total: u64 = 0;
        let mut ended = false;
        let mut client_gone = false;
        let mut buf = BytesMut::new();
        'shards: for i in 0..n {
            let mut seen_data = false;
            while !done[i] {
                let mut outcome = RelayOutcome::default();
                let result = relay_until::<S>(
                    &mut conns[i],
                    &mut queues[i],
                    &mut buf,
                    None,
                    COPY_CHUNK,
                    &mut outcome,
                )
                .await;
                match result {
                    Ok(d) => done[i] = d,
                    Err(e) => {
                        let name = self.shared.pools.shard_name(conns[i].shard);
                        conns[i].broken = true;
                        self.refuse(ProxyError::shard_unavailable(&name, e));
                        ended = true;
                        break 'shards;
                    }
                }
                for msg in messages(&buf) {
                    match msg[0] {
                        b'd' => {
                            let header = skip_header && i > 0 && !seen_data;
                            seen_data = true;
                            if !header {
                                self.out.extend_from_slice(msg);
                            }
                        }
                        b'c' | b'Z' => {}
                        b'C' => total += tag_count(msg).unwrap_or(0),
                        b'E' => {
                            self.out.extend_from_slice(msg);
                            ended = true;
                        }
                        // the first shard's ParseComplete, BindComplete, CopyOutResponse
                        _ if i == 0 => self.out.extend_from_slice(msg),
                        b'N' => self.out.extend_from_slice(msg),
                        _ => {}
                    }
                }
                buf.clear();
                if ended {
                    break 'shards;
                }
                if self.out.len() >= COPY_CHUNK && self.client.send(&mut self.out).await.is_err() {
                    client_gone = true;
                    break 'shards;
                }
            }
        }
        self.release_all(conns, &done, None).await;
        if client_gone {
            return Err(SessionEnd::ClientGone);
        }
        if !ended {
            self.out.extend_from_slice(b"c\0\0\0\x04");
            reply::command_complete(&format!("COPY {total}"), &mut self.out);
        }
        Ok(())
    }
}

/// Send each shard's pending rows once they reach `at_least` bytes (0: whatever is
/// pending) as one CopyData message. A shard whose connection fails ends the COPY.
async fn send_rows(
    conns: &mut [PooledConn],
    pending: &mut [BytesMut],
    names: &[String],
    at_least: usize,
) -> Option<Failure> {
    for (i, (conn, rows)) in conns.iter_mut().zip(pending.iter_mut()).enumerate() {
        if rows.is_empty() || rows.len() < at_least {
            continue;
        }
        let mut header = [0u8; 5];
        header[0] = b'd';
        header[1..].copy_from_slice(&((rows.len() + 4) as i32).to_be_bytes());
        conn.queue(&header);
        conn.queue(rows);
        rows.clear();
        if let Err(e) = conn.flush().await {
            conn.broken = true;
            return Some(Failure::Lost(ProxyError::shard_unavailable(&names[i], e)));
        }
    }
    None
}

/// Take every complete row out of `splitter` (with `last`, the final one too) and append
/// it to the pending bytes of its shard; the header line goes to every shard (each
/// shard's COPY skips its own).
fn place_rows(
    splitter: &mut RowSplitter,
    last: bool,
    plan: &CopyIn,
    key: &CopyKey,
    map: &ShardMap,
    index: &[Option<usize>],
    pending: &mut [BytesMut],
) -> Result<(), ProxyError> {
    loop {
        let next = if last {
            splitter.finish()
        } else {
            splitter.next_row()
        };
        let row = match next {
            Ok(Some(row)) => row,
            Ok(None) => return Ok(()),
            Err(e) => return Err(format_error(&e, plan, key)),
        };
        if row.header {
            pending
                .iter_mut()
                .for_each(|p| p.extend_from_slice(&row.bytes));
            continue;
        }
        let shard = shard_of(&row, plan, key, map)?;
        let i = index.get(shard).copied().flatten().ok_or_else(|| {
            ProxyError::error(
                SqlState::INTERNAL_ERROR,
                "pgshard: the shard map changed during COPY",
            )
        })?;
        pending[i].extend_from_slice(&row.bytes);
    }
}

/// The shard owning a row's key, or the error Postgres would raise for the key field.
fn shard_of(
    row: &Row,
    plan: &CopyIn,
    key: &CopyKey,
    map: &ShardMap,
) -> Result<ShardId, ProxyError> {
    let text = match &row.key {
        Some(KeyField::Value(text)) => text,
        _ => {
            return Err(ProxyError::error(
                SqlState::NOT_NULL_VIOLATION,
                format!(
                    "null value in column \"{}\" of relation \"{}\" violates not-null constraint",
                    key.column, plan.table
                ),
            )
            .with_hint("pgshard: every row of a sharded table needs a shard key")
            .with_context(format!(
                "COPY {}, line {}: \"{}\"",
                plan.table,
                row.line,
                row.display()
            )));
        }
    };
    match key.key_type.parse_text(text) {
        Ok(value) => Ok(map.locate(&value).1),
        Err(e) => {
            let code = match e {
                KeyError::OutOfRange { .. } => SqlState::NUMERIC_VALUE_OUT_OF_RANGE,
                _ => SqlState::INVALID_TEXT_REPRESENTATION,
            };
            let shown: String = text.chars().take(100).collect();
            Err(ProxyError::error(code, e.to_string()).with_context(format!(
                "COPY {}, line {}, column {}: \"{}\"",
                plan.table, row.line, key.column, shown
            )))
        }
    }
}

/// The error Postgres raises for malformed COPY data.
fn format_error(e: &CopyError, plan: &CopyIn, key: &CopyKey) -> ProxyError {
    let (code, message) = match &e.kind {
        CopyErrorKind::BadFormat(what) => (SqlState::BAD_COPY_FILE_FORMAT, (*what).to_owned()),
        CopyErrorKind::MissingKey => (
            SqlState::BAD_COPY_FILE_FORMAT,
            format!("missing data for column \"{}\"", key.column),
        ),
        CopyErrorKind::Encoding(bytes) => (
            SqlState::CHARACTER_NOT_IN_REPERTOIRE,
            format!(
                "invalid byte sequence for encoding \"UTF8\": {}",
                bytes
                    .iter()
                    .map(|b| format!("0x{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        ),
    };
    let context = if e.text.is_empty() {
        format!("COPY {}, line {}", plan.table, e.line)
    } else {
        format!("COPY {}, line {}: \"{}\"", plan.table, e.line, e.text)
    };
    ProxyError::error(code, message).with_context(context)
}

/// The message of a CopyFail (F).
fn copy_fail_message(frame: &Frame) -> String {
    let body = frame.body();
    let end = body.iter().position(|&b| b == 0).unwrap_or(body.len());
    String::from_utf8_lossy(&body[..end]).into_owned()
}

/// The whole messages in a buffer of relayed backend messages.
fn messages(buf: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = buf;
    std::iter::from_fn(move || {
        let len = rest.get(1..5)?;
        let len = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
        let total = usize::try_from(len).ok()?.checked_add(1)?;
        let msg = rest.get(..total)?;
        rest = &rest[total..];
        Some(msg)
    })
}

/// The count of a `COPY n` CommandComplete.
fn tag_count(msg: &[u8]) -> Option<u64> {
    let body = msg.get(5..)?;
    let end = body.iter().position(|&b| b == 0).unwrap_or(body.len());
    let tag = std::str::from_utf8(&body[..end]).ok()?;
    tag.strip_prefix("COPY ")?.parse().ok()
}

/// The `COPY n` count in a shard's reply.
fn copy_count(reply: &[u8]) -> Option<u64> {
    messages(reply).filter(|m| m[0] == b'C').find_map(tag_count)
}

/// Copy relayed messages, dropping ReadyForQuery (the session writes its own).
fn append_without_ready(buf: &[u8], out: &mut BytesMut) {
    for msg in messages(buf) {
        if msg[0] != b'Z' {
            out.put_slice(msg);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_messages() {
        let mut b = BytesMut::new();
        reply::command_complete("COPY 12", &mut b);
        reply::ready_for_query(reply::TxnStatus::Idle, &mut b);
        assert_eq!(messages(&b).count(), 2);
        assert_eq!(copy_count(&b), Some(12));
        let mut out = BytesMut::new();
        append_without_ready(&b, &mut out);
        assert_eq!(messages(&out).count(), 1);
        // truncated input never panics
        assert_eq!(messages(&b[..7]).count(), 0);
        assert_eq!(tag_count(b"C\0\0\0\x0bINSERT 0 1\0"), None);
    }
}
