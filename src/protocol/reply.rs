//! Encoding of the backend (B) messages pgshard originates itself: errors it raises,
//! authentication exchange, ParameterStatus, BackendKeyData, and the replies it
//! synthesises for the client (ReadyForQuery, CommandComplete, ParseComplete…).
//! Message layouts come from pgwire; this module only adds named constructors.

use bytes::BytesMut;
use pgwire::error::ErrorInfo;
use pgwire::messages::Message;
use pgwire::messages::extendedquery::{CloseComplete, ParseComplete};
use pgwire::messages::response::{
    CommandComplete, ErrorResponse, NoticeResponse, ReadyForQuery, TransactionStatus,
};
use pgwire::messages::startup::{Authentication, BackendKeyData, ParameterStatus, SecretKey};

use super::SqlState;

/// Transaction status as reported in ReadyForQuery (B).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnStatus {
    /// `I`: not in a transaction
    Idle,
    /// `T`: in a transaction block
    InBlock,
    /// `E`: in a failed transaction block
    Failed,
}

impl TxnStatus {
    /// The ReadyForQuery status byte.
    pub fn byte(self) -> u8 {
        match self {
            TxnStatus::Idle => b'I',
            TxnStatus::InBlock => b'T',
            TxnStatus::Failed => b'E',
        }
    }

    /// From the ReadyForQuery status byte.
    pub fn from_byte(b: u8) -> Option<TxnStatus> {
        match b {
            b'I' => Some(TxnStatus::Idle),
            b'T' => Some(TxnStatus::InBlock),
            b'E' => Some(TxnStatus::Failed),
            _ => None,
        }
    }
}

/// An error or notice raised by pgshard itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyError {
    /// "ERROR" or "FATAL"
    pub severity: &'static str,
    /// SQLSTATE
    pub code: SqlState,
    /// primary message
    pub message: String,
    /// optional hint
    pub hint: Option<String>,
    /// optional CONTEXT (where the error happened, e.g. `COPY t, line 3`)
    pub context: Option<String>,
}

impl ProxyError {
    /// An ERROR with a code and message.
    pub fn error(code: SqlState, message: impl Into<String>) -> ProxyError {
        ProxyError {
            severity: "ERROR",
            code,
            message: message.into(),
            hint: None,
            context: None,
        }
    }

    /// A FATAL error (the connection closes after it).
    pub fn fatal(code: SqlState, message: impl Into<String>) -> ProxyError {
        ProxyError {
            severity: "FATAL",
            code,
            message: message.into(),
            hint: None,
            context: None,
        }
    }

    /// Add a hint.
    pub fn with_hint(mut self, hint: impl Into<String>) -> ProxyError {
        self.hint = Some(hint.into());
        self
    }

    /// Add a CONTEXT line.
    pub fn with_context(mut self, context: impl Into<String>) -> ProxyError {
        self.context = Some(context.into());
        self
    }

    /// A statement needs more than one shard, or another unsupported construct.
    pub fn cross_shard_unsupported(message: impl Into<String>) -> ProxyError {
        ProxyError::error(SqlState::FEATURE_NOT_SUPPORTED, message)
    }

    /// A shard cannot be reached.
    pub fn shard_unavailable(shard: &str, detail: impl std::fmt::Display) -> ProxyError {
        ProxyError::error(
            SqlState::CONNECTION_FAILURE,
            format!("pgshard: shard \"{shard}\" is unavailable: {detail}"),
        )
    }

    /// A malformed message from the client (connection closes).
    pub fn protocol_violation(detail: impl std::fmt::Display) -> ProxyError {
        ProxyError::fatal(SqlState::PROTOCOL_VIOLATION, format!("{detail}"))
    }

    /// A Bind or Describe names a prepared statement the client never prepared.
    pub fn unknown_statement(name: &str) -> ProxyError {
        ProxyError::error(
            SqlState::INVALID_SQL_STATEMENT_NAME,
            format!("prepared statement \"{name}\" does not exist"),
        )
    }

    /// Statements in an aborted transaction.
    pub fn in_failed_transaction() -> ProxyError {
        ProxyError::error(
            SqlState::IN_FAILED_SQL_TRANSACTION,
            "current transaction is aborted, commands ignored until end of transaction block",
        )
    }

    /// Encode as ErrorResponse (B).
    pub fn encode(&self, out: &mut BytesMut) {
        let mut info = ErrorInfo::new(
            self.severity.to_owned(),
            self.code.0.to_owned(),
            self.message.clone(),
        );
        info.hint = self.hint.clone();
        info.where_context = self.context.clone();
        info.severity_nonlocalized = Some(self.severity.to_owned());
        encode(ErrorResponse::from(info), out);
    }

    /// Encode as NoticeResponse (B) with severity WARNING.
    pub fn encode_warning(&self, out: &mut BytesMut) {
        let mut info = ErrorInfo::new(
            "WARNING".to_owned(),
            self.code.0.to_owned(),
            self.message.clone(),
        );
        info.severity_nonlocalized = Some("WARNING".to_owned());
        encode(NoticeResponse::from(info), out);
    }
}

fn encode<M: Message>(msg: M, out: &mut BytesMut) {
    // Encoding only fails for messages above pgwire's size limits; everything encoded
    // here is small and built by pgshard, so a failure is a bug worth a loud log but
    // not a crash of the session.
    if let Err(e) = msg.encode(out) {
        tracing::error!(error = %e, "failed to encode a proxy-originated message");
    }
}

/// ReadyForQuery (B).
pub fn ready_for_query(status: TxnStatus, out: &mut BytesMut) {
    let status = match status {
        TxnStatus::Idle => TransactionStatus::Idle,
        TxnStatus::InBlock => TransactionStatus::Transaction,
        TxnStatus::Failed => TransactionStatus::Error,
    };
    encode(ReadyForQuery::new(status), out);
}

/// CommandComplete (B).
pub fn command_complete(tag: &str, out: &mut BytesMut) {
    encode(CommandComplete::new(tag.to_owned()), out);
}

/// ParseComplete (B), for a Parse the proxy answers from its statement cache.
pub fn parse_complete(out: &mut BytesMut) {
    encode(ParseComplete::new(), out);
}

/// CloseComplete (B), for a Close of a statement that lives in the proxy.
pub fn close_complete(out: &mut BytesMut) {
    encode(CloseComplete::new(), out);
}

/// ParameterStatus (B).
pub fn parameter_status(name: &str, value: &str, out: &mut BytesMut) {
    encode(ParameterStatus::new(name.to_owned(), value.to_owned()), out);
}

/// BackendKeyData (B): the key a client would use to cancel.
pub fn backend_key_data(pid: i32, secret: i32, out: &mut BytesMut) {
    encode(BackendKeyData::new(pid, SecretKey::I32(secret)), out);
}

/// AuthenticationSASL (B) offering SCRAM-SHA-256.
pub fn auth_sasl(out: &mut BytesMut) {
    encode(Authentication::SASL(vec!["SCRAM-SHA-256".to_owned()]), out);
}

/// AuthenticationSASLContinue (B).
pub fn auth_sasl_continue(data: &str, out: &mut BytesMut) {
    encode(
        Authentication::SASLContinue(bytes::Bytes::copy_from_slice(data.as_bytes())),
        out,
    );
}

/// AuthenticationSASLFinal (B).
pub fn auth_sasl_final(data: &str, out: &mut BytesMut) {
    encode(
        Authentication::SASLFinal(bytes::Bytes::copy_from_slice(data.as_bytes())),
        out,
    );
}

/// AuthenticationOk (B).
pub fn auth_ok(out: &mut BytesMut) {
    encode(Authentication::Ok, out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::split_frame;

    #[test]
    fn error_response_carries_code_and_message() {
        let mut out = BytesMut::new();
        ProxyError::cross_shard_unsupported("no key").encode(&mut out);
        let frame = split_frame(&mut out, 1 << 20).unwrap().unwrap();
        assert_eq!(frame.tag(), b'E');
        let body = frame.body();
        assert!(body.windows(6).any(|w| w == b"C0A000"));
        assert!(body.windows(7).any(|w| w == b"Mno key"));
    }

    #[test]
    fn ready_for_query_status_byte() {
        let mut out = BytesMut::new();
        ready_for_query(TxnStatus::Failed, &mut out);
        assert_eq!(&out[..], b"Z\0\0\0\x05E");
    }
}
