//! Startup phase: StartupMessage (TLS was negotiated before, in [`super::negotiate`]),
//! SCRAM-SHA-256 authentication, then ParameterStatus, BackendKeyData and the first
//! ReadyForQuery.

use std::sync::Arc;

use pgwire::messages::Message;
use pgwire::messages::startup::NegotiateProtocolVersion;
use tokio::io::{AsyncRead, AsyncWrite};

use super::auth::Verifier;
use super::settings::Settings;
use super::{Session, SessionEnd};
use crate::backend::Pools;
use crate::protocol::SqlState;
use crate::protocol::frontend::{StartupPacket, decode_sasl_initial, decode_startup};
use crate::protocol::reply::{self, ProxyError};

/// Parameters reported to clients when no shard could be asked.
const FALLBACK_PARAMS: &[(&str, &str)] = &[
    ("server_version", "15.0"),
    ("server_encoding", "UTF8"),
    ("client_encoding", "UTF8"),
    ("DateStyle", "ISO, MDY"),
    ("IntervalStyle", "postgres"),
    ("TimeZone", "UTC"),
    ("integer_datetimes", "on"),
    ("standard_conforming_strings", "on"),
];

/// Parameters a client may set at startup that the server reports back.
const REPORTED: &[&str] = &[
    "application_name",
    "client_encoding",
    "DateStyle",
    "IntervalStyle",
    "TimeZone",
];

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    pub(super) async fn startup(&mut self) -> Result<(), SessionEnd> {
        let params = loop {
            let body = match self.client.read_startup().await {
                Ok(Some(body)) => body,
                Ok(None) | Err(super::ClientError::Io(_)) => return Err(SessionEnd::ClientGone),
                Err(super::ClientError::Frame(e)) => {
                    return Err(SessionEnd::Fatal(ProxyError::protocol_violation(e)));
                }
            };
            match decode_startup(&body) {
                Ok(StartupPacket::SslRequest) | Ok(StartupPacket::GssEncRequest) if self.tls => {
                    return Err(SessionEnd::Fatal(ProxyError::protocol_violation(
                        "encryption requested on a connection that is already encrypted",
                    )));
                }
                // a stream that skipped negotiation: no TLS here
                Ok(StartupPacket::SslRequest) | Ok(StartupPacket::GssEncRequest) => {
                    self.client
                        .send_raw(b"N")
                        .await
                        .map_err(|_| SessionEnd::ClientGone)?;
                }
                Ok(StartupPacket::Cancel { pid, secret }) => {
                    let server = &self.shared.config.server;
                    // the installed shard set: a reload may have changed it
                    let shards = self.shared.pools.current();
                    self.shared
                        .cancels
                        .cancel((pid, secret), &shards.shards, server.connect_timeout)
                        .await;
                    return Err(SessionEnd::ClientGone);
                }
                Ok(StartupPacket::Startup {
                    major: 3,
                    minor,
                    params,
                }) => {
                    if self.shared.config.tls.require_tls && !self.tls {
                        return Err(SessionEnd::Fatal(ProxyError::fatal(
                            SqlState::INVALID_AUTHORIZATION,
                            "pgshard requires TLS: this connection is not encrypted \
                             (connect with sslmode=require or stronger)",
                        )));
                    }
                    if minor > 0 {
                        self.negotiate_protocol(&params);
                    }
                    break params;
                }
                Ok(StartupPacket::Startup { major, minor, .. }) => {
                    return Err(SessionEnd::Fatal(ProxyError::fatal(
                        SqlState::PROTOCOL_VIOLATION,
                        format!(
                            "unsupported frontend protocol {major}.{minor}: server supports 3.0"
                        ),
                    )));
                }
                Err(e) => return Err(SessionEnd::Fatal(ProxyError::protocol_violation(e))),
            }
        };
        let param = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        let user = param("user").ok_or_else(|| {
            SessionEnd::Fatal(ProxyError::fatal(
                SqlState::INVALID_AUTHORIZATION,
                "no PostgreSQL user name specified in startup packet",
            ))
        })?;
        let database = param("database").unwrap_or_else(|| user.clone());
        // before authentication: a refused login is logged with the user it claimed
        tracing::Span::current().record("user", user.as_str());
        self.authenticate(&user).await?;
        let expected_db = self
            .shared
            .config
            .shards
            .first()
            .map(|s| s.dbname.as_str())
            .unwrap_or("");
        let admin = database == crate::admin::ADMIN_DATABASE && expected_db != database;
        if database != expected_db && !admin {
            return Err(SessionEnd::Fatal(ProxyError::fatal(
                SqlState::INVALID_CATALOG_NAME,
                format!(
                    "database \"{database}\" does not exist (pgshard serves \"{expected_db}\")"
                ),
            )));
        }
        if admin
            && !self
                .shared
                .config
                .users
                .iter()
                .any(|u| u.name == user && u.admin)
        {
            return Err(SessionEnd::Fatal(ProxyError::fatal(
                SqlState::INSUFFICIENT_PRIVILEGE,
                format!(
                    "user \"{user}\" may not use the pgshard admin console: it is for users with admin = true in [[users]]"
                ),
            )));
        }
        self.registration.info.set_login(&user, &database);
        self.user = user;
        self.settings = Settings::from_startup(&params).map_err(|e| {
            SessionEnd::Fatal(ProxyError::fatal(
                SqlState::FEATURE_NOT_SUPPORTED,
                e.to_string(),
            ))
        })?;
        reply::auth_ok(&mut self.out);
        if admin {
            // the admin console never talks to a shard, not even for its parameters
            self.admin = true;
            for (name, value) in FALLBACK_PARAMS {
                reply::parameter_status(name, value, &mut self.out);
            }
            reply::backend_key_data(self.cancel_key.0, self.cancel_key.1, &mut self.out);
            reply::ready_for_query(crate::protocol::reply::TxnStatus::Idle, &mut self.out);
            self.client
                .send(&mut self.out)
                .await
                .map_err(|_| SessionEnd::ClientGone)?;
            tracing::info!(user = %self.user, "admin console login");
            return Ok(());
        }
        let server_params = self.server_params().await;
        for (name, value) in server_params.iter() {
            let value = REPORTED
                .iter()
                .find(|r| r.eq_ignore_ascii_case(name))
                .and_then(|r| param(r).or_else(|| param(&r.to_ascii_lowercase())))
                .unwrap_or_else(|| value.clone());
            reply::parameter_status(name, &value, &mut self.out);
        }
        reply::backend_key_data(self.cancel_key.0, self.cancel_key.1, &mut self.out);
        self.ready();
        self.client
            .send(&mut self.out)
            .await
            .map_err(|_| SessionEnd::ClientGone)?;
        tracing::debug!(user = %self.user, "client authenticated");
        Ok(())
    }

    /// Protocol 3.x with x > 0: answer NegotiateProtocolVersion and carry on with 3.0.
    fn negotiate_protocol(&mut self, params: &[(String, String)]) {
        let unsupported = params
            .iter()
            .filter(|(k, _)| k.starts_with("_pq_."))
            .map(|(k, _)| k.clone())
            .collect();
        let _ = NegotiateProtocolVersion::new(0, unsupported).encode(&mut self.out);
    }

    async fn authenticate(&mut self, user: &str) -> Result<(), SessionEnd> {
        let known = self.shared.users.get(user).cloned();
        let verifier = known.clone().unwrap_or_else(Verifier::impossible);
        let fail = || {
            SessionEnd::Fatal(ProxyError::fatal(
                SqlState::INVALID_PASSWORD,
                format!("password authentication failed for user \"{user}\""),
            ))
        };
        reply::auth_sasl(&mut self.out);
        self.client
            .send(&mut self.out)
            .await
            .map_err(|_| SessionEnd::ClientGone)?;
        let first = self.read_password_message().await?;
        let (mechanism, data) = decode_sasl_initial(first.body())
            .map_err(|e| SessionEnd::Fatal(ProxyError::protocol_violation(e)))?;
        if mechanism != "SCRAM-SHA-256" {
            return Err(SessionEnd::Fatal(ProxyError::fatal(
                SqlState::PROTOCOL_VIOLATION,
                format!("unsupported SASL mechanism \"{mechanism}\""),
            )));
        }
        let (server_first, waiting) = Verifier::server()
            .on_client_first_message_with_secret(data, verifier.secret())
            .map_err(|_| fail())?;
        reply::auth_sasl_continue(&server_first, &mut self.out);
        self.client
            .send(&mut self.out)
            .await
            .map_err(|_| SessionEnd::ClientGone)?;
        let second = self.read_password_message().await?;
        let server_final = waiting
            .on_client_final_message(second.body())
            .map_err(|_| fail())?;
        if known.is_none() {
            return Err(fail());
        }
        reply::auth_sasl_final(&server_final, &mut self.out);
        Ok(())
    }

    async fn read_password_message(&mut self) -> Result<crate::protocol::Frame, SessionEnd> {
        match self.client.read_frame().await {
            Ok(Some(frame)) if frame.tag() == b'p' => Ok(frame),
            Ok(Some(frame)) => Err(SessionEnd::Fatal(ProxyError::protocol_violation(format!(
                "expected password response, got message type {}",
                frame.tag()
            )))),
            Ok(None) | Err(super::ClientError::Io(_)) => Err(SessionEnd::ClientGone),
            Err(super::ClientError::Frame(e)) => {
                Err(SessionEnd::Fatal(ProxyError::protocol_violation(e)))
            }
        }
    }

    /// ParameterStatus values of the default shard (learned once), or fallbacks.
    async fn server_params(&self) -> super::shared::ServerParams {
        if let Some(p) = self
            .shared
            .server_params
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            return p;
        }
        let shard = self.shared.map.load().default_shard;
        match self.shared.pools.get(shard).await {
            Ok(conn) => {
                let params = Arc::new(conn.server_params.clone());
                Pools::release(conn);
                *self
                    .shared
                    .server_params
                    .write()
                    .unwrap_or_else(|e| e.into_inner()) = Some(params.clone());
                params
            }
            Err(e) => {
                tracing::warn!(error = %e, "default shard unavailable at client login; reporting fallback parameters");
                Arc::new(
                    FALLBACK_PARAMS
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                )
            }
        }
    }
}
