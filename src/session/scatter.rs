//! Statements on several shards (scatter-gather): send to every target shard at once,
//! collect each shard's reply (bounded by `[server] merge_memory_mb`), merge them
//! (`crate::scatter`), answer the client once.
//!
//! Only outside a transaction for now: a read inside a transaction that spans shards
//! would need every shard's transaction, which the spine's single-shard transactions do
//! not have.

use std::collections::VecDeque;

use bytes::BytesMut;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::io::{AsyncRead, AsyncWrite};

use super::relay::{Expect, RelayError, RelayOutcome, relay_capped, relay_until};
use super::txn::Txn;
use super::{Session, SessionEnd};
use crate::backend::{PooledConn, Pools};
use crate::metrics::RouteKind;
use crate::protocol::reply::ProxyError;
use crate::protocol::{Frame, SqlState};
use crate::router::{Merge, MergeRequest, ShardSet};
use crate::scatter::stream::ConcatStream;
use crate::scatter::{self, combine, merge::Merged};

/// Bytes read from a shard, or buffered for the client, per step of a streamed scatter.
const STREAM_CHUNK: usize = 64 * 1024;
use crate::sharding::ShardId;
use crate::sql::split::split_insert;

/// The replies of a statement sent to several shards.
pub(crate) struct Gathered {
    /// each shard's reply messages, in shard order
    pub replies: Vec<BytesMut>,
    /// the shard of each reply
    pub shards: ShardSet,
    /// every connection's database compares text bytewise
    pub bytewise_text: bool,
}

/// For each shard of `shards` (in order), the indexes of the INSERT rows it owns.
pub(super) fn row_groups(shards: &[ShardId], row_shards: &[ShardId]) -> Vec<Vec<usize>> {
    shards
        .iter()
        .map(|s| {
            row_shards
                .iter()
                .enumerate()
                .filter(|(_, r)| *r == s)
                .map(|(i, _)| i)
                .collect()
        })
        .collect()
}

/// A simple Query message carrying `sql`.
fn query_message(sql: &str) -> Vec<u8> {
    let mut m = Vec::with_capacity(sql.len() + 6);
    m.push(b'Q');
    m.extend_from_slice(&((sql.len() + 5) as i32).to_be_bytes());
    m.extend_from_slice(sql.as_bytes());
    m.push(0);
    m
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// A simple Query on several shards.
    pub(super) async fn scatter_query(
        &mut self,
        frame: &Frame,
        shards: ShardSet,
        merge: Merge,
    ) -> Result<(), SessionEnd> {
        let in_txn = !matches!(self.txn, Txn::Idle);
        if in_txn && !self.shared.config.transactions.two_phase {
            self.refuse(ProxyError::cross_shard_unsupported(
                "pgshard: a statement on several shards cannot run inside a transaction block with [transactions] two_phase = false; run it outside BEGIN/COMMIT",
            ));
            self.ready();
            return Ok(());
        }
        // a merge plan may give the shards a rewritten text, a split INSERT each shard
        // its own rows
        let per_shard: Vec<Vec<u8>> = match &merge {
            Merge::Plan(plan) => match &plan.shard_sql {
                Some(sql) => vec![query_message(sql); shards.len()],
                None => Vec::new(),
            },
            Merge::InsertSplit(rows) => {
                let sql = frame.body().strip_suffix(b"\0").unwrap_or(frame.body());
                let sql = String::from_utf8_lossy(sql);
                match split_insert(&sql, &row_groups(&shards, rows)) {
                    Ok(parts) => parts.iter().map(|p| query_message(&p.sql)).collect(),
                    Err(e) => {
                        self.refuse(ProxyError::cross_shard_unsupported(format!("pgshard: {e}")));
                        self.ready();
                        return Ok(());
                    }
                }
            }
            _ => Vec::new(),
        };
        let shard_list = shards.clone();
        let streamed = match merge {
            Merge::Concatenate if !in_txn => Some(None),
            Merge::FirstRows(n) if !in_txn => Some(Some(n)),
            _ => None,
        };
        if let Some(limit) = streamed {
            let request = |conn: &mut PooledConn, queue: &mut VecDeque<Expect>| {
                conn.queue(frame.as_bytes());
                queue.push_back(Expect::Query { fwd: true });
            };
            self.stream_concatenated(&shards, request, limit).await?;
            self.ready();
            return Ok(());
        }
        let request = |conn: &mut PooledConn, queue: &mut VecDeque<Expect>| {
            let message = shard_list
                .iter()
                .position(|&s| s == conn.shard)
                .and_then(|i| per_shard.get(i))
                .map_or(frame.as_bytes(), Vec::as_slice);
            conn.queue(message);
            queue.push_back(Expect::Query { fwd: true });
        };
        let replies = if in_txn {
            // inside a transaction block: on the transaction's connections
            self.gather_in_txn(&shards, request).await
        } else {
            self.gather(&shards, request).await
        };
        // simple-query results are text
        let request = MergeRequest {
            merge,
            binary: false,
            added_portal_description: false,
        };
        self.answer_merged(replies, request);
        self.ready();
        Ok(())
    }

    /// Send the same request to every shard in `shards` (checked out in shard order, so
    /// two scatters cannot deadlock on pools), then collect each reply in memory. Returns
    /// the replies, or the error to report.
    pub(super) async fn gather(
        &mut self,
        shards: &ShardSet,
        mut request: impl FnMut(&mut PooledConn, &mut VecDeque<Expect>),
    ) -> Result<Gathered, ProxyError> {
        let (mut conns, mut queues, names) = self.send_all(shards, &mut request).await?;
        let bytewise_text = conns.iter().all(|c| c.bytewise_text);
        // Each shard's reply may use an equal share of the statement's merge memory.
        let total_budget = self.shared.config.server.merge_memory;
        let budget = total_budget / conns.len().max(1);
        let mut replies: Vec<Option<BytesMut>> = (0..conns.len()).map(|_| None).collect();
        let mut failure: Option<ProxyError> = None;
        let mut failed_reply: Option<(usize, BytesMut)> = None;
        let mut failed_parses: Vec<String> = Vec::new();
        {
            // Read every shard at once: the first error ends the statement without
            // waiting for slower shards.
            let mut pending: FuturesUnordered<_> = conns
                .iter_mut()
                .zip(queues.iter_mut())
                .enumerate()
                .map(|(i, (conn, queue))| async move {
                    let mut reply = BytesMut::new();
                    let result = relay_capped::<S>(conn, queue, &mut reply, None, budget).await;
                    (i, result, reply)
                })
                .collect();
            while let Some((i, result, reply)) = pending.next().await {
                match result {
                    Ok(outcome) if outcome.saw_error => {
                        failed_parses.extend(outcome.failed_parses);
                        failed_reply = Some((i, reply));
                        break;
                    }
                    Ok(_) => replies[i] = Some(reply),
                    Err(RelayError::TooLarge(_)) => {
                        failure = Some(
                            ProxyError::error(
                                SqlState::PROGRAM_LIMIT_EXCEEDED,
                                format!(
                                    "pgshard: the results of this statement from several shards exceed merge_memory_mb ({} MiB)",
                                    total_budget >> 20
                                ),
                            )
                            .with_hint("add a shard key condition, or raise [server] merge_memory_mb"),
                        );
                        break;
                    }
                    Err(e) => {
                        failure = Some(ProxyError::shard_unavailable(&names[i], e));
                        break;
                    }
                }
            }
        }
        // Shards still working on a statement that already failed: their replies were not
        // read to the end.
        let aborted = failure.is_some() || failed_reply.is_some();
        let finished: Vec<bool> = (0..conns.len())
            .map(|i| {
                !aborted
                    || replies[i].is_some()
                    || failed_reply.as_ref().is_some_and(|(f, _)| *f == i)
            })
            .collect();
        let failed = failed_reply.as_ref().map(|(i, _)| *i);
        self.release_all(conns, &finished, failed).await;
        // statements whose Parse failed do not exist, as in Postgres
        for name in &failed_parses {
            self.stmts.remove(name);
        }
        if let Some(e) = failure {
            return Err(e);
        }
        if let Some((i, reply)) = failed_reply {
            // the failing shard's reply alone: every merge writes its error, once
            return Ok(Gathered {
                replies: vec![reply],
                shards: vec![shards[i]],
                bytewise_text,
            });
        }
        Ok(Gathered {
            replies: replies.into_iter().flatten().collect(),
            shards: shards.clone(),
            bytewise_text,
        })
    }

    /// Give back the connections of a statement on several shards: one whose reply was
    /// not read to the end (`finished[i]` false) has its statement cancelled and is
    /// closed, not pooled; the others go back to their pools. `failed`: the index of the
    /// shard whose error ended the statement, counted as an error like the unfinished.
    pub(super) async fn release_all(
        &mut self,
        mut conns: Vec<PooledConn>,
        finished: &[bool],
        failed: Option<usize>,
    ) {
        let timeout = self.shared.config.server.connect_timeout;
        if let Some(started) = self.scatter_started.take() {
            let elapsed = started.elapsed();
            for (i, (conn, done)) in conns.iter().zip(finished).enumerate() {
                if let Some(stats) = &conn.stats {
                    stats.record(RouteKind::Scatter, elapsed, !done || failed == Some(i));
                }
            }
        }
        for (conn, done) in conns.iter_mut().zip(finished) {
            if !done {
                conn.broken = true;
                if let Some(cfg) = self.shared.config.shards.get(conn.shard) {
                    super::cancel::send_cancel(cfg, conn.key.0, conn.key.1, timeout).await;
                }
            }
        }
        self.running.lock().await.clear();
        conns.into_iter().for_each(Pools::release);
    }

    /// Record the backend processes a scatter runs on, so a client's CancelRequest
    /// reaches every one of them.
    async fn set_running(&self, conns: &[PooledConn]) {
        *self.running.lock().await = conns.iter().map(|c| (c.shard, c.key.0, c.key.1)).collect();
    }

    /// Check out one connection per shard (in shard order, so two scatters cannot
    /// deadlock on pools) and send each its request; the shards then work in parallel.
    pub(super) async fn send_all(
        &mut self,
        shards: &ShardSet,
        request: &mut impl FnMut(&mut PooledConn, &mut VecDeque<Expect>),
    ) -> Result<(Vec<PooledConn>, Vec<VecDeque<Expect>>, Vec<String>), ProxyError> {
        let mut conns = Vec::with_capacity(shards.len());
        self.scatter_started = Some(std::time::Instant::now());
        for &shard in shards {
            match self.checkout(shard).await {
                Ok(conn) => conns.push(conn),
                Err(e) => {
                    self.scatter_started = None;
                    conns.into_iter().for_each(Pools::release);
                    return Err(e);
                }
            }
        }
        let mut queues = Vec::with_capacity(conns.len());
        for conn in conns.iter_mut() {
            let mut queue = VecDeque::new();
            self.prepare_conn(conn, &mut queue);
            request(conn, &mut queue);
            if conn.flush().await.is_err() {
                conn.broken = true;
            }
            queues.push(queue);
        }
        // a client's CancelRequest reaches every one of them
        self.set_running(&conns).await;
        let names = conns
            .iter()
            .map(|c| self.shared.pools.shard_name(c.shard))
            .collect();
        Ok((conns, queues, names))
    }

    /// Send a statement whose answer is the concatenation of the shards' rows (at most
    /// `limit` of them) and stream it: a first chunk from every shard to check their
    /// columns agree, then each shard's rows in turn, written to the client in chunks of
    /// [`STREAM_CHUNK`] bytes, so memory stays bounded whatever the result size. A
    /// shard's error ends the statement (after the rows already sent, as a single
    /// Postgres failing mid-scan would); the other shards' connections are closed, which
    /// stops their work.
    pub(super) async fn stream_concatenated(
        &mut self,
        shards: &ShardSet,
        mut request: impl FnMut(&mut PooledConn, &mut VecDeque<Expect>),
        limit: Option<u64>,
    ) -> Result<(), SessionEnd> {
        let (mut conns, mut queues, names) = match self.send_all(shards, &mut request).await {
            Ok(sent) => sent,
            Err(e) => {
                self.refuse(e);
                return Ok(());
            }
        };
        let n = conns.len();
        let mut bufs: Vec<BytesMut> = (0..n).map(|_| BytesMut::new()).collect();
        let mut done = vec![false; n];
        let mut outcome = RelayOutcome::default();
        let mut failure: Option<ProxyError> = None;
        let mut early_error: Option<usize> = None;
        {
            // First chunks from every shard at once; a shard failing right away ends the
            // statement without waiting for the others.
            let mut pending: FuturesUnordered<_> = conns
                .iter_mut()
                .zip(queues.iter_mut())
                .zip(bufs.iter_mut())
                .enumerate()
                .map(|(i, ((conn, queue), buf))| async move {
                    let mut outcome = RelayOutcome::default();
                    let result =
                        relay_until::<S>(conn, queue, buf, None, STREAM_CHUNK, &mut outcome).await;
                    (i, result.map(|d| (d, outcome)))
                })
                .collect();
            while let Some((i, result)) = pending.next().await {
                match result {
                    Ok((d, first)) => {
                        done[i] = d;
                        let saw_error = first.saw_error;
                        outcome.failed_parses.extend(first.failed_parses);
                        if saw_error {
                            early_error = Some(i);
                            break;
                        }
                    }
                    Err(e) => {
                        failure = Some(ProxyError::shard_unavailable(&names[i], e));
                        break;
                    }
                }
            }
        }
        let mut stream = ConcatStream::new(limit);
        let started = match (failure, early_error) {
            (Some(e), _) => Err(e),
            (None, Some(i)) => Ok(stream
                .start(&[&bufs[i][..]], &mut self.out)
                .unwrap_or(Merged::Error)),
            (None, None) => {
                let firsts: Vec<&[u8]> = bufs.iter().map(|b| &b[..]).collect();
                stream
                    .start(&firsts, &mut self.out)
                    .map_err(|e| ProxyError::error(e.sqlstate(), format!("pgshard: {e}")))
            }
        };
        let mut ended = matches!(started, Ok(Merged::Error));
        if let Err(e) = started {
            self.refuse(e);
            ended = true;
        }
        let mut client_gone = false;
        'shards: for i in 0..n {
            while !ended {
                let chunk = std::mem::take(&mut bufs[i]);
                match stream.feed(&chunk, i, &mut self.out) {
                    Ok(Merged::Rows) => {}
                    Ok(Merged::Error) => ended = true,
                    Err(e) => {
                        self.refuse(ProxyError::error(e.sqlstate(), format!("pgshard: {e}")));
                        ended = true;
                    }
                }
                if ended {
                    break 'shards;
                }
                if self.out.len() >= STREAM_CHUNK && self.client.send(&mut self.out).await.is_err()
                {
                    client_gone = true;
                    break 'shards;
                }
                if done[i] {
                    continue 'shards;
                }
                match relay_until::<S>(
                    &mut conns[i],
                    &mut queues[i],
                    &mut bufs[i],
                    None,
                    STREAM_CHUNK,
                    &mut outcome,
                )
                .await
                {
                    Ok(d) => done[i] = d,
                    Err(e) => {
                        self.refuse(ProxyError::shard_unavailable(&names[i], e));
                        break 'shards;
                    }
                }
            }
        }
        self.release_all(conns, &done, None).await;
        for name in &outcome.failed_parses {
            self.stmts.remove(name);
        }
        if client_gone {
            return Err(SessionEnd::ClientGone);
        }
        if !ended {
            stream.finish(&mut self.out);
        }
        Ok(())
    }

    /// Write the merged answer (or the failure) for gathered replies.
    pub(super) fn answer_merged(
        &mut self,
        gathered: Result<Gathered, ProxyError>,
        merge: MergeRequest,
    ) {
        let Gathered {
            replies,
            shards,
            bytewise_text,
        } = match gathered {
            Ok(g) => g,
            Err(e) => return self.refuse(e),
        };
        let merged = match &merge.merge {
            Merge::Concatenate => scatter::concatenate(&replies, None, &mut self.out),
            Merge::FirstRows(n) => scatter::concatenate(&replies, Some(*n), &mut self.out),
            Merge::SumCounts => scatter::sum_counts(&replies, merge.binary, &mut self.out),
            Merge::InsertSplit(rows) => scatter::interleave(&replies, &shards, rows, &mut self.out),
            // (COPY takes its own path: session/copy.rs)
            Merge::CopyIn(_) | Merge::CopyOut { .. } => {
                return self.refuse(ProxyError::error(
                    SqlState::INTERNAL_ERROR,
                    "pgshard: COPY cannot be merged",
                ));
            }
            Merge::Plan(plan) => {
                let options = combine::Options {
                    bytewise_text,
                    added_portal_description: merge.added_portal_description,
                };
                combine::merge_by_plan(&replies, plan, options, &mut self.out)
            }
        };
        match merged {
            Ok(Merged::Rows) | Ok(Merged::Error) => {}
            Err(e) => {
                tracing::debug!(error = %e, "merge refused");
                self.refuse(ProxyError::error(e.sqlstate(), format!("pgshard: {e}")))
            }
        }
    }
}
