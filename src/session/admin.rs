//! Serving the admin console ([`crate::admin`]) to a client that logged in to the
//! database `pgshard`: simple query protocol only, answered by the proxy itself (no
//! backend connection is ever made for it).

use bytes::{BufMut, BytesMut};
use pgwire::messages::Message;
use pgwire::messages::data::{DataRow, FieldDescription, RowDescription};
use pgwire::messages::response::EmptyQueryResponse;
use tokio::io::{AsyncRead, AsyncWrite};

use super::reload::ReloadError;
use super::{ClientError, Session, SessionEnd};
use crate::admin::{self, Command, Table};
use crate::metrics::ClientState;
use crate::protocol::SqlState;
use crate::protocol::frontend::decode_query;
use crate::protocol::reply::{self, ProxyError, TxnStatus};
use crate::session::holds::{format_ranges, parse_ranges};

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// The admin console's message loop.
    pub(super) async fn serve_admin(&mut self) -> SessionEnd {
        let shutdown = self.shared.shutdown.clone();
        // after an extended-protocol message, everything up to Sync is skipped
        let mut skipping = false;
        self.registration.info.set_state(ClientState::Idle);
        loop {
            let frame = tokio::select! {
                biased;
                _ = shutdown.cancelled() => {
                    return SessionEnd::Fatal(ProxyError::fatal(
                        SqlState::ADMIN_SHUTDOWN,
                        "terminating connection: pgshard is shutting down",
                    ));
                }
                frame = self.client.read_frame() => frame,
            };
            let frame = match frame {
                Ok(Some(frame)) => frame,
                Ok(None) | Err(ClientError::Io(_)) => return SessionEnd::ClientGone,
                Err(ClientError::Frame(e)) => {
                    return SessionEnd::Fatal(ProxyError::protocol_violation(e));
                }
            };
            match frame.tag() {
                b'Q' => {
                    match decode_query(frame.body()) {
                        Ok(sql) => {
                            let sql = sql.to_owned();
                            let info = self.registration.info.clone();
                            info.set_state(ClientState::Active);
                            info.statements
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            self.admin_command(&sql).await;
                            info.set_state(ClientState::Idle);
                        }
                        Err(e) => return SessionEnd::Fatal(ProxyError::protocol_violation(e)),
                    }
                    reply::ready_for_query(TxnStatus::Idle, &mut self.out);
                }
                b'P' | b'B' | b'D' | b'E' | b'C' | b'H' => {
                    if !skipping {
                        extended_refused().encode(&mut self.out);
                        skipping = true;
                    }
                }
                b'S' => {
                    skipping = false;
                    reply::ready_for_query(TxnStatus::Idle, &mut self.out);
                }
                b'F' => {
                    extended_refused().encode(&mut self.out);
                    reply::ready_for_query(TxnStatus::Idle, &mut self.out);
                }
                b'X' => return SessionEnd::ClientGone,
                b'd' | b'c' | b'f' => {}
                other => {
                    return SessionEnd::Fatal(ProxyError::protocol_violation(format!(
                        "invalid frontend message type {other}"
                    )));
                }
            }
            if !self.client.has_buffered_frame() && self.client.send(&mut self.out).await.is_err() {
                return SessionEnd::ClientGone;
            }
        }
    }

    /// Run one admin command, writing its result (or error) to the output buffer.
    async fn admin_command(&mut self, sql: &str) {
        let command = match admin::parse(sql) {
            Ok(c) => c,
            Err(e) => {
                ProxyError::error(SqlState::SYNTAX_ERROR, e.to_string()).encode(&mut self.out);
                return;
            }
        };
        let shared = &self.shared;
        let out = &mut self.out;
        match command {
            Command::Empty => encode(EmptyQueryResponse::new(), out),
            Command::ShowSlots => {
                let map = shared.map.load();
                write_table(&admin::slots_table(&map, &shared.holds.held_ranges()), out);
            }
            Command::ShowMap => {
                let map = shared.map.load();
                let path = shared
                    .config_path
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default();
                write_table(
                    &admin::map_table(&map, &path, &shared.holds.held_ranges()),
                    out,
                );
            }
            Command::ShowHolds => {
                let table = admin::holds_table(&shared.holds.list(), shared.holds.waiting());
                write_table(&table, out);
            }
            Command::Reload => match shared.reload() {
                Ok(_) => reply::command_complete("RELOAD", out),
                Err(ReloadError::NoFile) => ProxyError::error(
                    SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE,
                    ReloadError::NoFile.to_string(),
                )
                .encode(out),
                Err(e) => {
                    tracing::warn!(error = %e, "shard map reload refused; the running map is unchanged");
                    ProxyError::error(SqlState::CONFIG_FILE_ERROR, e.to_string()).encode(out)
                }
            },
            Command::Hold(text) => match parse_ranges(&text, shared.map.load().slots) {
                Ok(ranges) => {
                    shared.holds.hold(&ranges);
                    let limit = shared.config.server.hold_timeout;
                    match shared.holds.quiesce(limit).await {
                        Ok(()) => {
                            tracing::info!(slots = %format_ranges(&ranges), "slots held");
                            reply::command_complete("HOLD", out);
                        }
                        Err(running) => {
                            tracing::warn!(slots = %format_ranges(&ranges), running, "slots held, but statements routed before the hold are still running");
                            ProxyError::error(
                                SqlState::LOCK_NOT_AVAILABLE,
                                format!(
                                    "slots held, but {running} statements routed before the hold were still running after {} ms; RELEASE and retry",
                                    limit.as_millis()
                                ),
                            )
                            .encode(out)
                        }
                    }
                }
                Err(e) => invalid_ranges(&e).encode(out),
            },
            Command::ShowShards => {
                let map = shared.map.load();
                write_table(&admin::shards_table(&map, &shared.shard_statuses()), out);
            }
            Command::ShowPools => write_table(&admin::pools_table(&shared.shard_statuses()), out),
            Command::ShowClients => {
                let clients = shared.metrics.clients.list();
                write_table(
                    &admin::clients_table(&clients, std::time::Instant::now()),
                    out,
                );
            }
            Command::ShowStats => write_table(&admin::stats_table(&shared.metrics.shards()), out),
            Command::ShowConfig => {
                let map = shared.map.load();
                let urls: Vec<(String, String)> = shared
                    .pools
                    .current()
                    .shards
                    .iter()
                    .map(|s| {
                        (
                            s.name.clone(),
                            format!("postgres://{}@{}:{}/{}", s.user, s.host, s.port, s.dbname),
                        )
                    })
                    .collect();
                write_table(
                    &admin::config_table(&shared.config, &shared.log_level(), &map, &urls),
                    out,
                );
            }
            Command::ShowVersion => write_table(&admin::version_table(), out),
            Command::Pause(shard) => match self.named_shards(shard) {
                Ok(names) => {
                    self.shared.pauses.pause(&names);
                    tracing::warn!(shards = ?names, "shards paused: new statements for them wait until RESUME");
                    let limit = self.shared.config.server.hold_timeout;
                    match self.shared.wait_idle(&names, limit).await {
                        Ok(()) => reply::command_complete("PAUSE", &mut self.out),
                        Err(busy) => ProxyError::error(
                            SqlState::LOCK_NOT_AVAILABLE,
                            format!(
                                "paused, but {busy} connections were still in use after {} ms (open transactions finish on them); RESUME to undo",
                                limit.as_millis()
                            ),
                        )
                        .encode(&mut self.out),
                    }
                }
                Err(e) => e.encode(&mut self.out),
            },
            Command::Resume(shard) => {
                let names = match shard {
                    Some(name) => vec![name],
                    None => self.shared.pauses.list(),
                };
                self.shared.pauses.resume(Some(&names));
                tracing::info!(shards = ?names, "shards resumed");
                reply::command_complete("RESUME", &mut self.out);
            }
            Command::Shutdown => {
                tracing::warn!(user = %self.user, "SHUTDOWN from the admin console");
                self.shared.stop.cancel();
                reply::command_complete("SHUTDOWN", &mut self.out);
            }
            Command::Release(None) => {
                shared.holds.release(None);
                tracing::info!("all slots released");
                reply::command_complete("RELEASE", out);
            }
            Command::Release(Some(text)) => match parse_ranges(&text, shared.map.load().slots) {
                Ok(ranges) => {
                    shared.holds.release(Some(&ranges));
                    tracing::info!(slots = %format_ranges(&ranges), "slots released");
                    reply::command_complete("RELEASE", out);
                }
                Err(e) => invalid_ranges(&e).encode(out),
            },
        }
    }
}

impl<S> Session<S> {
    /// The shards a PAUSE names: one that must exist, or every installed shard.
    fn named_shards(&self, shard: Option<String>) -> Result<Vec<String>, ProxyError> {
        let installed: Vec<String> = self
            .shared
            .pools
            .current()
            .shards
            .iter()
            .map(|s| s.name.clone())
            .collect();
        match shard {
            None => Ok(installed),
            Some(name) if installed.contains(&name) => Ok(vec![name]),
            Some(name) => Err(ProxyError::error(
                SqlState::INVALID_PARAMETER_VALUE,
                format!(
                    "no shard named \"{name}\"; shards: {}",
                    installed.join(", ")
                ),
            )),
        }
    }
}

fn extended_refused() -> ProxyError {
    ProxyError::error(
        SqlState::FEATURE_NOT_SUPPORTED,
        "the pgshard admin console accepts the simple query protocol only",
    )
}

fn invalid_ranges(message: &str) -> ProxyError {
    ProxyError::error(
        SqlState::INVALID_PARAMETER_VALUE,
        format!("invalid slot ranges: {message}"),
    )
}

/// RowDescription, DataRows (text format) and CommandComplete `SELECT n`.
fn write_table(table: &Table, out: &mut BytesMut) {
    let fields = table
        .columns
        .iter()
        .map(|&(name, ty)| {
            let (oid, size) = ty.oid_and_size();
            FieldDescription::new(name.to_owned(), 0, 0, oid, size, -1, 0)
        })
        .collect();
    encode(RowDescription::new(fields), out);
    for row in &table.rows {
        let mut data = BytesMut::new();
        for value in row {
            data.put_i32(value.len() as i32);
            data.put_slice(value.as_bytes());
        }
        encode(DataRow::new(data, row.len() as i16), out);
    }
    reply::command_complete(&format!("SELECT {}", table.rows.len()), out);
}

fn encode<M: Message>(msg: M, out: &mut BytesMut) {
    if let Err(e) = msg.encode(out) {
        tracing::error!(error = %e, "failed to encode an admin console message");
    }
}
