//! Server-side prepared statements under transaction pooling: their names (derived from
//! the statement text, so every client preparing the same text shares one per
//! connection), lazy preparation on connections that lack them, and the frontend
//! messages that carry the renamed statement.

use std::collections::VecDeque;
use std::hash::{Hash, Hasher};

use bytes::{BufMut, BytesMut};

use super::ClientStmt;
use super::relay::Expect;
use crate::backend::PooledConn;
use crate::protocol::Frame;

/// Make sure the connection has the client's statement `name` before a Bind or Describe
/// uses it, queueing a Parse whose reply is swallowed if not; returns the server-side
/// name. The unnamed statement is re-parsed once per batch, since another client may have
/// replaced it on this connection.
pub(super) fn ensure_prepared(
    conn: &mut PooledConn,
    name: &str,
    stmt: &ClientStmt,
    unnamed_ready: &mut bool,
    buf: &mut BytesMut,
    queue: &mut VecDeque<Expect>,
) -> String {
    if name.is_empty() {
        if !*unnamed_ready {
            encode_parse("", &stmt.sql, &stmt.param_types, buf);
            queue.push_back(Expect::Parse {
                fwd: false,
                cache: None,
                client: None,
            });
            *unnamed_ready = true;
        }
        return String::new();
    }
    let server = server_name(stmt.hash);
    if conn.prepared.insert(stmt.hash) {
        encode_parse(&server, &stmt.sql, &stmt.param_types, buf);
        queue.push_back(Expect::Parse {
            fwd: false,
            cache: Some(stmt.hash),
            client: None,
        });
    }
    server
}

/// Identity of a prepared statement: its text and declared parameter types.
pub(super) fn statement_hash(sql: &str, param_types: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    sql.hash(&mut h);
    param_types.hash(&mut h);
    h.finish()
}

/// Server-side name of a statement, shared by every client that prepares the same text.
pub(super) fn server_name(hash: u64) -> String {
    format!("pgshard_{hash:016x}")
}

/// Parse (F).
pub(super) fn encode_parse(name: &str, sql: &str, param_types: &[u8], buf: &mut BytesMut) {
    let len = 4 + name.len() + 1 + sql.len() + 1 + 2 + param_types.len();
    buf.put_u8(b'P');
    buf.put_i32(len as i32);
    buf.put_slice(name.as_bytes());
    buf.put_u8(0);
    buf.put_slice(sql.as_bytes());
    buf.put_u8(0);
    buf.put_i16((param_types.len() / 4) as i16);
    buf.put_slice(param_types);
}

/// Bind (F) with the statement name replaced, everything after it copied verbatim.
pub(super) fn encode_bind_renamed(
    frame: &Frame,
    name: &str,
    rest_offset: usize,
    buf: &mut BytesMut,
) {
    let body = frame.body();
    let portal_end = body.iter().position(|&b| b == 0).unwrap_or(0);
    let portal = &body[..portal_end];
    let rest = &body[rest_offset..];
    let len = 4 + portal.len() + 1 + name.len() + 1 + rest.len();
    buf.put_u8(b'B');
    buf.put_i32(len as i32);
    buf.put_slice(portal);
    buf.put_u8(0);
    buf.put_slice(name.as_bytes());
    buf.put_u8(0);
    buf.put_slice(rest);
}

/// Describe (F) of a statement.
pub(super) fn encode_describe_statement(name: &str, buf: &mut BytesMut) {
    buf.put_u8(b'D');
    buf.put_i32((4 + 1 + name.len() + 1) as i32);
    buf.put_u8(b'S');
    buf.put_slice(name.as_bytes());
    buf.put_u8(0);
}
