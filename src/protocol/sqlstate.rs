//! The SQLSTATE codes pgshard itself raises (backend errors pass through unchanged).

/// A five-character SQLSTATE code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqlState(pub &'static str);

impl SqlState {
    /// 08P01 protocol_violation
    pub const PROTOCOL_VIOLATION: SqlState = SqlState("08P01");
    /// 08006 connection_failure (a shard is unreachable)
    pub const CONNECTION_FAILURE: SqlState = SqlState("08006");
    /// 0A000 feature_not_supported (cross-shard constructs, unparseable statements)
    pub const FEATURE_NOT_SUPPORTED: SqlState = SqlState("0A000");
    /// 28P01 invalid_password
    pub const INVALID_PASSWORD: SqlState = SqlState("28P01");
    /// 28000 invalid_authorization_specification (unknown user)
    pub const INVALID_AUTHORIZATION: SqlState = SqlState("28000");
    /// 3D000 invalid_catalog_name (unknown database)
    pub const INVALID_CATALOG_NAME: SqlState = SqlState("3D000");
    /// 25P02 in_failed_sql_transaction
    pub const IN_FAILED_SQL_TRANSACTION: SqlState = SqlState("25P02");
    /// 25001 active_sql_transaction (BEGIN inside a transaction: a warning)
    pub const ACTIVE_SQL_TRANSACTION: SqlState = SqlState("25001");
    /// 25P01 no_active_sql_transaction (COMMIT outside a transaction: a warning)
    pub const NO_ACTIVE_SQL_TRANSACTION: SqlState = SqlState("25P01");
    /// 22P02 invalid_text_representation (a key literal that is not a valid value)
    pub const INVALID_TEXT_REPRESENTATION: SqlState = SqlState("22P02");
    /// 22P04 bad_copy_file_format
    pub const BAD_COPY_FILE_FORMAT: SqlState = SqlState("22P04");
    /// 23502 not_null_violation
    pub const NOT_NULL_VIOLATION: SqlState = SqlState("23502");
    /// 57014 query_canceled (a COPY the client failed)
    pub const QUERY_CANCELED: SqlState = SqlState("57014");
    /// 22P03 invalid_binary_representation
    pub const INVALID_BINARY_REPRESENTATION: SqlState = SqlState("22P03");
    /// 22003 numeric_value_out_of_range
    pub const NUMERIC_VALUE_OUT_OF_RANGE: SqlState = SqlState("22003");
    /// 22021 character_not_in_repertoire (SQL text that is not UTF-8)
    pub const CHARACTER_NOT_IN_REPERTOIRE: SqlState = SqlState("22021");
    /// 26000 invalid_sql_statement_name (unknown prepared statement)
    pub const INVALID_SQL_STATEMENT_NAME: SqlState = SqlState("26000");
    /// 42P05 duplicate_prepared_statement
    pub const DUPLICATE_PREPARED_STATEMENT: SqlState = SqlState("42P05");
    /// 53300 too_many_connections (no backend connection free within the pool timeout)
    pub const TOO_MANY_CONNECTIONS: SqlState = SqlState("53300");
    /// 54000 program_limit_exceeded (a cross-shard merge outgrew its memory cap)
    pub const PROGRAM_LIMIT_EXCEEDED: SqlState = SqlState("54000");
    /// 57P01 admin_shutdown
    pub const ADMIN_SHUTDOWN: SqlState = SqlState("57P01");
    /// 40001 serialization_failure (retry the transaction)
    pub const SERIALIZATION_FAILURE: SqlState = SqlState("40001");
    /// 55P03 lock_not_available (a statement waited too long for a slot being moved)
    pub const LOCK_NOT_AVAILABLE: SqlState = SqlState("55P03");
    /// 55000 object_not_in_prerequisite_state
    pub const OBJECT_NOT_IN_PREREQUISITE_STATE: SqlState = SqlState("55000");
    /// F0000 config_file_error
    pub const CONFIG_FILE_ERROR: SqlState = SqlState("F0000");
    /// 22023 invalid_parameter_value
    pub const INVALID_PARAMETER_VALUE: SqlState = SqlState("22023");
    /// 42601 syntax_error
    pub const SYNTAX_ERROR: SqlState = SqlState("42601");
    /// 42501 insufficient_privilege (a non-admin user asking for the admin console)
    pub const INSUFFICIENT_PRIVILEGE: SqlState = SqlState("42501");
    /// XX000 internal_error
    pub const INTERNAL_ERROR: SqlState = SqlState("XX000");

    /// The code a shard reported, for errors pgshard re-raises in its own words (a
    /// failed PREPARE TRANSACTION): the codes clients act on keep their meaning
    /// (serialization failures and deadlocks are retried, constraint violations are
    /// not); others become `fallback`.
    pub fn from_shard(code: Option<&str>, fallback: SqlState) -> SqlState {
        const KEPT: &[&str] = &[
            "40001", "40P01", "23000", "23502", "23503", "23505", "23514", "23P01", "55000",
            "57014", "25P02", "53100", "53200", "42601", "42P01", "42703", "42883", "42804",
            "42P02", "42P18", "42704", "42P08", "0A000",
        ];
        code.and_then(|c| KEPT.iter().find(|k| **k == c))
            .map_or(fallback, |k| SqlState(k))
    }
}
