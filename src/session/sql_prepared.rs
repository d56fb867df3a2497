//! SQL-level prepared statements under transaction pooling: `PREPARE` is checked on a
//! shard and kept per client; `EXECUTE` routes the statement by its arguments, prepares
//! it lazily on the connection that runs it under a name derived from its text (shared
//! by every client preparing the same text), and executes it there; `DEALLOCATE`
//! forgets it. Statements on several shards are refused (use the extended protocol).

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite};

use super::relay::Expect;
use super::statements::statement_hash;
use super::txn::Txn;
use super::{Session, SessionEnd};
use crate::backend::Pools;
use crate::protocol::SqlState;
use crate::protocol::reply::{self, ProxyError};
use crate::router::{Param, ParamSource, Target};
use crate::sql::prepared::{self, SqlPrepared};
use crate::sql::{SharedAnalysis, ValueExpr};

/// A statement the client prepared with SQL `PREPARE`.
#[derive(Clone)]
pub(super) struct SqlStmt {
    body: Arc<str>,
    types: Vec<String>,
    analysis: SharedAnalysis,
    hash: u64,
}

impl SqlStmt {
    /// The statement's name on backend connections.
    fn server_name(&self) -> String {
        format!("pgshard_sql_{:016x}", self.hash)
    }

    /// `PREPARE <server name> (types) AS body`.
    fn prepare_text(&self) -> String {
        let types = if self.types.is_empty() {
            String::new()
        } else {
            format!(" ({})", self.types.join(", "))
        };
        format!("PREPARE {}{types} AS {}", self.server_name(), self.body)
    }
}

/// EXECUTE arguments as parameters of the prepared statement.
struct Arguments<'a> {
    args: &'a [Option<ValueExpr>],
    types: &'a [String],
}

impl ParamSource for Arguments<'_> {
    fn param(&self, n: usize) -> Option<Param<'_>> {
        match self.args.get(n.checked_sub(1)?)?.as_ref()? {
            ValueExpr::Literal(text, _) => Some(Param::Text(text.as_bytes())),
            ValueExpr::Null => Some(Param::Null),
            ValueExpr::Param(..) => None,
        }
    }

    fn param_type(&self, n: usize) -> u32 {
        n.checked_sub(1)
            .and_then(|i| self.types.get(i))
            .map_or(0, |t| prepared::type_oid(t))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// PREPARE / EXECUTE / DEALLOCATE sent as SQL.
    pub(super) async fn on_sql_prepared(&mut self, sql: &str) -> Result<(), SessionEnd> {
        let Some(command) = prepared::parse(sql) else {
            self.refuse(ProxyError::cross_shard_unsupported(
                "pgshard: this form of PREPARE/EXECUTE/DEALLOCATE is not supported",
            ));
            self.ready();
            return Ok(());
        };
        match command {
            SqlPrepared::Prepare { name, types, body } => self.sql_prepare(name, types, body).await,
            SqlPrepared::Deallocate { name } => {
                match name {
                    None => {
                        self.sql_stmts.clear();
                        reply::command_complete("DEALLOCATE ALL", &mut self.out);
                    }
                    Some(name) if self.sql_stmts.remove(&name).is_some() => {
                        reply::command_complete("DEALLOCATE", &mut self.out);
                    }
                    Some(name) => self.refuse(ProxyError::unknown_statement(&name)),
                }
                self.ready();
            }
            SqlPrepared::Execute {
                name,
                args,
                args_text,
            } => return self.sql_execute(&name, &args, &args_text).await,
        }
        Ok(())
    }

    /// Check the statement by preparing it on the default shard (errors are Postgres'
    /// own), then keep it for this client.
    async fn sql_prepare(&mut self, name: String, types: Vec<String>, body: String) {
        if self.sql_stmts.contains_key(&name) {
            self.refuse(ProxyError::error(
                SqlState::DUPLICATE_PREPARED_STATEMENT,
                format!("prepared statement \"{name}\" already exists"),
            ));
            self.ready();
            return;
        }
        let stmt = SqlStmt {
            hash: statement_hash(&format!("sql:{body}"), types.join(",").as_bytes()),
            analysis: self.shared.plans.get(&body),
            body: Arc::from(body.as_str()),
            types,
        };
        let shard = self.shared.map.load().default_shard;
        let checked = match self.checkout(shard).await {
            Ok(mut conn) => {
                let mut queue = VecDeque::new();
                // the client's settings (search_path) decide what the names mean
                self.prepare_conn(&mut conn, &mut queue);
                let settle = if queue.is_empty() {
                    Ok(())
                } else {
                    // run the queued settings statements first, swallowing their replies
                    let mut scratch = BytesMut::new();
                    let r = async {
                        conn.flush().await?;
                        super::relay::relay::<S>(&mut conn, &mut queue, &mut scratch, None).await
                    }
                    .await;
                    r.map(|_| ()).map_err(|e| e.to_string())
                };
                let answer = match settle {
                    Ok(()) if conn.prepared.contains(&stmt.hash) => Ok(None),
                    Ok(()) => conn
                        .simple_query(&stmt.prepare_text())
                        .await
                        .map(|a| a.error.map(|e| (e, a.sqlstate)))
                        .map_err(|e| e.to_string()),
                    Err(e) => Err(e),
                };
                match &answer {
                    Ok(None) => {
                        conn.prepared.insert(stmt.hash);
                    }
                    Ok(Some(_)) => {}
                    Err(_) => conn.broken = true,
                }
                Pools::release(conn);
                answer
            }
            Err(e) => {
                self.refuse(e);
                self.ready();
                return;
            }
        };
        match checked {
            Ok(None) => {
                self.sql_stmts.insert(name, stmt);
                reply::command_complete("PREPARE", &mut self.out);
            }
            Ok(Some((message, code))) => self.refuse(ProxyError::error(
                SqlState::from_shard(code.as_deref(), SqlState::FEATURE_NOT_SUPPORTED),
                message,
            )),
            Err(e) => {
                let name = self.shared.pools.shard_name(shard);
                self.refuse(ProxyError::shard_unavailable(&name, e));
            }
        }
        self.ready();
    }

    /// Route by the arguments, prepare on the connection if needed, execute.
    async fn sql_execute(
        &mut self,
        name: &str,
        args: &[Option<ValueExpr>],
        args_text: &[String],
    ) -> Result<(), SessionEnd> {
        let Some(stmt) = self.sql_stmts.get(name).cloned() else {
            self.refuse(ProxyError::unknown_statement(name));
            self.ready();
            return Ok(());
        };
        let params = Arguments {
            args,
            types: &stmt.types,
        };
        let route = match self.route(&stmt.body, &stmt.analysis, &params).await {
            Ok(route) => route,
            Err(e) => {
                self.refuse(e);
                self.ready();
                return Ok(());
            }
        };
        let map = self.shared.map.load_full();
        let shard = match route.target {
            Target::One(s) => s,
            Target::Any | Target::OneCopy => match &self.txn {
                Txn::Attached { conn } => conn.shard,
                Txn::Idle if matches!(route.target, Target::OneCopy) => {
                    self.next_copy_shard(map.shard_count())
                }
                _ => map.default_shard,
            },
            _ if map.shard_count() == 1 => 0,
            _ => {
                self.refuse(ProxyError::cross_shard_unsupported(
                    "pgshard: EXECUTE of a statement that runs on several shards is not supported; prepare it with the extended query protocol",
                ));
                self.ready();
                return Ok(());
            }
        };
        let mut queue = VecDeque::new();
        let Some(mut conn) = self.attach_or_refuse(shard, &mut queue).await else {
            return Ok(());
        };
        let mut buf = BytesMut::new();
        // (in a failed transaction the EXECUTE fails with 25P02 anyway; a PREPARE there
        // would fail too and must not be recorded as done)
        if conn.status != crate::protocol::reply::TxnStatus::Failed
            && conn.prepared.insert(stmt.hash)
        {
            let _ = postgres_protocol::message::frontend::query(&stmt.prepare_text(), &mut buf);
            queue.push_back(Expect::Query { fwd: false });
        }
        let args = if args_text.is_empty() {
            String::new()
        } else {
            format!("({})", args_text.join(", "))
        };
        let _ = postgres_protocol::message::frontend::query(
            &format!("EXECUTE {}{args}", stmt.server_name()),
            &mut buf,
        );
        conn.queue(&buf);
        queue.push_back(if self.suppress_ready {
            Expect::Statement
        } else {
            Expect::Query { fwd: true }
        });
        self.exchange(conn, queue).await.map(|_| ())
    }
}
