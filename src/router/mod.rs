//! Pure routing: an analysed statement plus its parameters and the shard map → the
//! shards it must run on, and why. No sockets, no clocks, no globals: tested by statement
//! kind in plain unit tests.

mod array;
mod copy;
mod statement;
mod unparsed;

#[cfg(test)]
mod tests;

use std::fmt;

use crate::config::{ShardMap, UnparsedPolicy};
use crate::protocol::SqlState;
use crate::sharding::{KeyError, ShardId};
use crate::sql::Analysis;
pub use copy::{CopyIn, CopyKey};

/// How the replies of a statement on several shards become one answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Merge {
    /// the rows of every shard, one after the other; counts summed in the tag
    Concatenate,
    /// the first n rows of the concatenation (`LIMIT n` without ORDER BY)
    FirstRows(u64),
    /// one `count(…)` per shard, summed into one row
    SumCounts,
    /// grouped, aggregated, sorted, deduplicated or limited by a plan; the shards run
    /// the plan's text
    Plan(std::sync::Arc<crate::scatter::plan::MergePlan>),
    /// a multi-row INSERT split per shard: the shard of each VALUES row, in order; the
    /// RETURNING rows are put back in that order and the counts summed
    InsertSplit(std::sync::Arc<Vec<ShardId>>),
    /// `COPY … FROM STDIN` on every shard: each row goes to the shard of its key (or to
    /// every shard, for a reference table); the counts are summed (the first shard's for
    /// a reference table)
    CopyIn(std::sync::Arc<CopyIn>),
    /// `COPY … TO STDOUT` on several shards: one CopyOutResponse, every shard's rows,
    /// the counts summed; `skip_header` drops the header line of all shards but the first
    CopyOut {
        /// the data starts with a header line (CSV/text `HEADER`)
        skip_header: bool,
    },
}

/// A merge with what the client asked of the result's format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeRequest {
    /// how to merge
    pub merge: Merge,
    /// the first result column is requested in binary (extended protocol Bind)
    pub binary: bool,
    /// the session added a portal Describe to learn the result's types; its
    /// RowDescription is not the client's
    pub added_portal_description: bool,
}

impl Merge {
    /// Name shown by `pgshard route`.
    pub fn name(&self) -> String {
        match self {
            Merge::Concatenate => "concatenate".to_owned(),
            Merge::FirstRows(_) => "concatenate, first rows".to_owned(),
            Merge::SumCounts => "sum counts".to_owned(),
            Merge::Plan(plan) => plan.describe(),
            Merge::InsertSplit(rows) => format!(
                "split {} rows by shard, RETURNING in input order",
                rows.len()
            ),
            Merge::CopyIn(copy) => match &copy.key {
                Some(key) => format!(
                    "COPY rows split by {} (field {})",
                    key.column,
                    key.position + 1
                ),
                None => "COPY rows to every shard".to_owned(),
            },
            Merge::CopyOut { .. } => "COPY rows concatenated".to_owned(),
        }
    }
}

/// A set of shards, sorted and without duplicates.
pub type ShardSet = Vec<ShardId>;

/// Where a statement runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// exactly this shard
    One(ShardId),
    /// every shard (DDL broadcast)
    All,
    /// a read on these shards (sorted, at least two), results merged by the session
    Scatter(ShardSet, Merge),
    /// touches no sharded table: any shard gives the same answer; the session uses the
    /// transaction's shard, or the default shard
    Any,
    /// reads reference tables (a full copy on every shard) and nothing sharded or
    /// unsharded: any one shard answers. The session uses the transaction's shard (the
    /// default shard for a transaction that has not chosen one), else spreads such reads
    /// over the shards round-robin.
    OneCopy,
    /// writes a reference table: runs on every shard (each in its own transaction), the
    /// first shard's reply is the answer
    AllCopies,
}

/// Why a target was chosen: shown by `pgshard route` and in debug logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// the shard key of `table` was bound to a value whose slot is owned by the target
    ShardKey {
        /// table
        table: String,
        /// key column
        column: String,
        /// slot of the value
        slot: u32,
    },
    /// no sharded table is named
    NoShardedTable,
    /// an unsharded table is named: its rows live on the default shard
    UnshardedTable {
        /// the table
        table: String,
    },
    /// schema change: runs on every shard
    Ddl,
    /// transaction control or session statement
    Session,
    /// not parseable, and names no sharded table (policy `default_shard`)
    UnparsedNoShardedTable,
    /// a SELECT on one sharded table whose key is not bound to a single value: it runs
    /// on every shard that may hold matching rows, and their rows are concatenated
    Scatter {
        /// the sharded table
        table: String,
        /// its key column
        column: String,
        /// how many shards run it
        shards: usize,
        /// `"no key"` (all shards), `"key IN list"` or `"key = ANY(array)"` (the shards
        /// owning the values)
        why: &'static str,
    },
    /// a multi-row INSERT whose rows belong to several shards: each gets its own rows
    SplitInsert {
        /// the sharded table
        table: String,
        /// how many shards receive rows
        shards: usize,
    },
    /// only reference tables (and catalogs) are read: one copy answers
    ReferenceRead {
        /// the first reference table
        table: String,
    },
    /// a reference table is written: every copy is changed
    ReferenceWrite {
        /// the table
        table: String,
    },
    /// COPY of a sharded table, or into a reference table
    Copy {
        /// the table
        table: String,
        /// how many shards run it
        shards: usize,
        /// how rows are spread or gathered
        how: &'static str,
    },
    /// the key is compared with a list of NULLs only: no row matches, any shard answers
    EmptyKeyList {
        /// the sharded table
        table: String,
        /// its key column
        column: String,
    },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::ShardKey {
                table,
                column,
                slot,
            } => write!(f, "{table}.{column} = value in slot {slot}"),
            Reason::NoShardedTable => f.write_str("no sharded table"),
            Reason::UnshardedTable { table } => {
                write!(
                    f,
                    "table \"{table}\" is not sharded: it lives on the default shard"
                )
            }
            Reason::Ddl => f.write_str("DDL: broadcast to all shards"),
            Reason::Session => f.write_str("transaction or session statement"),
            Reason::UnparsedNoShardedTable => {
                f.write_str("not parseable; names no sharded table (default shard)")
            }
            Reason::Scatter {
                table,
                column,
                shards,
                why,
            } => {
                let plural = if *shards == 1 { "" } else { "s" };
                write!(
                    f,
                    "{table}.{column}: {why}, runs on {shards} shard{plural}, replies merged"
                )
            }
            Reason::SplitInsert { table, shards } => write!(
                f,
                "INSERT into {table}: rows on {shards} shards, each shard inserts its own rows in its own transaction"
            ),
            Reason::ReferenceRead { table } => write!(
                f,
                "reference table \"{table}\": every shard holds a copy, one answers"
            ),
            Reason::ReferenceWrite { table } => {
                write!(f, "reference table \"{table}\": written on every shard")
            }
            Reason::Copy { table, shards, how } => {
                write!(f, "COPY of \"{table}\" on {shards} shard(s): {how}")
            }
            Reason::EmptyKeyList { table, column } => write!(
                f,
                "{table}.{column} IN (NULL, …) matches no row: any shard answers"
            ),
        }
    }
}

/// The routing decision: a value that records why it was made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// where to run
    pub target: Target,
    /// why
    pub reason: Reason,
}

/// Why a statement cannot be routed. The session maps each to a SQLSTATE.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// a sharded table is used without a usable `key = value` (0A000)
    #[error(
        "statement on sharded table \"{table}\" must constrain its shard key: add \"WHERE {column} = <value>\" (cross-shard queries are not supported yet)"
    )]
    NoShardKey {
        /// table
        table: String,
        /// key column
        column: String,
    },
    /// a SELECT on one sharded table needs several shards, but its result is not the
    /// concatenation of theirs (0A000)
    #[error(
        "statement on sharded table \"{table}\" without a single shard key needs several shards, and {construct} across shards is not supported yet: add \"WHERE {column} = <value>\""
    )]
    ScatterUnsupported {
        /// table
        table: String,
        /// key column
        column: String,
        /// the construct that prevents concatenating per-shard results
        construct: &'static str,
    },
    /// the statement needs more than one shard (0A000)
    #[error(
        "statement needs more than one shard ({detail}); cross-shard statements are not supported yet"
    )]
    CrossShard {
        /// which shards / tables
        detail: String,
    },
    /// an INSERT row gives no usable value for the shard key (0A000)
    #[error(
        "INSERT into sharded table \"{table}\" must give shard key column \"{column}\" as a literal or parameter in every row"
    )]
    InsertKey {
        /// table
        table: String,
        /// key column
        column: String,
    },
    /// an UPDATE assigns the shard key (0A000)
    #[error(
        "UPDATE of shard key column \"{column}\" of table \"{table}\" is not supported: delete and re-insert the row"
    )]
    KeyUpdate {
        /// table
        table: String,
        /// key column
        column: String,
    },
    /// the key value is not valid for the key type (22P02 / 22003)
    #[error("shard key {table}.{column}: {source}")]
    BadKey {
        /// table
        table: String,
        /// key column
        column: String,
        /// the parse problem
        source: KeyError,
    },
    /// the key is NULL: no shard owns it (0A000)
    #[error("shard key {table}.{column} is NULL: rows of a sharded table need a non-NULL key")]
    NullKey {
        /// table
        table: String,
        /// key column
        column: String,
    },
    /// a construct the proxy cannot route correctly (0A000)
    #[error("{what} is not supported by pgshard")]
    Unsupported {
        /// what
        what: String,
    },
    /// the statement could not be parsed and the policy refuses it (0A000 / 42601)
    #[error("pgshard could not parse this statement ({error}){hint}")]
    Unparsed {
        /// parser message
        error: String,
        /// extra advice
        hint: String,
    },
    /// `$n` referenced but not supplied (08P01)
    #[error("statement references parameter ${0} but Bind supplied fewer parameters")]
    MissingParam(usize),
    /// INSERT without a column list into a sharded table whose key position is not known
    /// yet; the session looks it up and routes again.
    #[error("column position of the shard key of \"{table}\" is not known")]
    KeyOrdinalUnknown {
        /// table
        table: String,
    },
}

impl RouteError {
    /// The SQLSTATE a client should see for this error.
    pub fn sqlstate(&self) -> SqlState {
        match self {
            RouteError::BadKey { source, .. } => match source {
                KeyError::InvalidText { .. } => SqlState::INVALID_TEXT_REPRESENTATION,
                KeyError::OutOfRange { .. } => SqlState::NUMERIC_VALUE_OUT_OF_RANGE,
                KeyError::InvalidBinary { .. } => SqlState::INVALID_BINARY_REPRESENTATION,
            },
            RouteError::MissingParam(_) => SqlState::PROTOCOL_VIOLATION,
            RouteError::NoShardKey { .. }
            | RouteError::ScatterUnsupported { .. }
            | RouteError::CrossShard { .. }
            | RouteError::InsertKey { .. }
            | RouteError::KeyUpdate { .. }
            | RouteError::NullKey { .. }
            | RouteError::Unsupported { .. }
            | RouteError::Unparsed { .. }
            | RouteError::KeyOrdinalUnknown { .. } => SqlState::FEATURE_NOT_SUPPORTED,
        }
    }
}

/// A Bind parameter, as received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Param<'a> {
    /// SQL NULL
    Null,
    /// text format bytes
    Text(&'a [u8]),
    /// binary format bytes
    Binary(&'a [u8]),
}

/// Parameter values for `$n` (1-based).
pub trait ParamSource {
    /// the value of `$n`, or None if not supplied
    fn param(&self, n: usize) -> Option<Param<'_>>;

    /// the type OID the client declared for `$n` in Parse (0 = unspecified, the server
    /// infers it from the statement)
    fn param_type(&self, _n: usize) -> u32 {
        0
    }
}

/// No parameters (simple query protocol).
pub struct NoParams;
impl ParamSource for NoParams {
    fn param(&self, _n: usize) -> Option<Param<'_>> {
        None
    }
}

/// Constants lifted out of a simple query ([`crate::sql::lift`]) as the parameters of
/// its shape: integers declared as `bigint` (so the key type checks match those of an
/// integer literal), strings undeclared (they take the column's type, as an uncast
/// string literal does).
impl ParamSource for crate::sql::lift::Lifted {
    fn param(&self, n: usize) -> Option<Param<'_>> {
        let (_, value) = self.values.get(n.checked_sub(1)?)?;
        Some(Param::Text(value.as_bytes()))
    }

    fn param_type(&self, n: usize) -> u32 {
        match n.checked_sub(1).and_then(|i| self.values.get(i)) {
            Some((crate::sql::lift::LiteralKind::Integer, _)) => 20,
            _ => 0,
        }
    }
}

/// Position of a sharded table's key column among its columns, for INSERT without a
/// column list. Learned from the catalog by the session.
pub trait KeyOrdinals {
    /// 0-based position of the key column of `table` in `INSERT INTO table VALUES (…)`
    fn key_ordinal(&self, table: &str) -> Option<usize>;

    /// 0-based field number of the key column in `COPY table FROM STDIN` rows (the
    /// table's columns without generated ones)
    fn copy_key_ordinal(&self, _table: &str) -> Option<usize> {
        None
    }
}

/// Nothing known.
pub struct NoOrdinals;
impl KeyOrdinals for NoOrdinals {
    fn key_ordinal(&self, _table: &str) -> Option<usize> {
        None
    }
}

/// Everything the router looks at.
pub struct RouteInput<'a> {
    /// original SQL text (scanned for table names when unparseable)
    pub sql: &'a str,
    /// its analysis
    pub analysis: &'a Analysis,
    /// Bind parameters
    pub params: &'a dyn ParamSource,
    /// key positions for column-less INSERT
    pub ordinals: &'a dyn KeyOrdinals,
}

/// Route a query string (one or more statements) against a shard map.
///
/// Each statement is routed on its own, then the targets are combined: `Any` joins
/// anything, `One(x)` + `One(x)` stays `One(x)`, `All` + `All` stays `All`; any other
/// mix (including a `Scatter` with anything but `Any`) needs more than one shard and is
/// refused as [`RouteError::CrossShard`].
pub fn route(
    input: &RouteInput<'_>,
    map: &ShardMap,
    unparsed: UnparsedPolicy,
) -> Result<Route, RouteError> {
    if changes_string_syntax(input.sql) {
        return Err(RouteError::Unsupported {
            what: "changing standard_conforming_strings (pgshard reads string literals with it on, as every shard does)".to_owned(),
        });
    }
    if changes_encoding(input.sql) {
        return Err(RouteError::Unsupported {
            what: "a client_encoding other than UTF8 or SQL_ASCII (pgshard hashes keys as the bytes the shards store)".to_owned(),
        });
    }
    let statements = match input.analysis {
        Analysis::Parsed(statements) => statements,
        Analysis::Unparsed { error } => return unparsed::route(input.sql, error, map, unparsed),
    };
    let mut combined: Option<Route> = None;
    for statement in statements {
        let next = statement::route(statement, input, map)?;
        combined = Some(match combined {
            None => next,
            Some(prev) => combine(prev, next, map)?,
        });
    }
    Ok(combined.unwrap_or(Route {
        target: Target::Any,
        reason: Reason::NoShardedTable,
    }))
}

/// Whether a statement may turn `standard_conforming_strings` off: with it off, a
/// backslash in a string literal escapes the quote, and the text would no longer mean
/// what pgshard's parser read. Anything but SHOW that mentions it is refused.
fn changes_string_syntax(sql: &str) -> bool {
    mentions(sql, "standard_conforming_strings") && !starts_with_word(sql, "show")
}

/// Whether a statement sets a client encoding other than UTF8/SQL_ASCII: with another
/// encoding the server converts text before storing it, so the key bytes pgshard hashes
/// would differ from the stored ones.
fn changes_encoding(sql: &str) -> bool {
    // Checked on every statement: no allocation unless the text mentions an encoding.
    let sets = mentions(sql, "client_encoding") || starts_with_word(sql, "set names");
    sets && !starts_with_word(sql, "show")
        && !["utf8", "utf-8", "unicode", "sql_ascii"]
            .iter()
            .any(|ok| mentions(sql, ok))
}

/// Case-insensitive substring test, without allocating.
fn mentions(sql: &str, needle: &str) -> bool {
    let needle = needle.as_bytes();
    sql.len() >= needle.len()
        && sql
            .as_bytes()
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle))
}

/// Whether the text, after leading whitespace, begins with `prefix` (case-insensitive).
fn starts_with_word(sql: &str, prefix: &str) -> bool {
    sql.trim_start()
        .as_bytes()
        .get(..prefix.len())
        .is_some_and(|w| w.eq_ignore_ascii_case(prefix.as_bytes()))
}

/// Two statements of one query string: where can both run? A scatter read only combines
/// with statements that may run anywhere; with anything else (even the same shards) it
/// is refused, since the merged replies would interleave with another statement's.
fn combine(prev: Route, next: Route, map: &ShardMap) -> Result<Route, RouteError> {
    match (&prev.target, &next.target) {
        // A merged answer is built for one statement: the replies of other statements
        // in the same string would be concatenated with it.
        (Target::Scatter(..), _) | (_, Target::Scatter(..)) => Err(RouteError::CrossShard {
            detail: "a statement on several shards must be sent on its own, not in a string with other statements".to_owned(),
        }),
        (_, Target::Any) => Ok(prev),
        (Target::Any, _) => Ok(next),
        (Target::One(a), Target::One(b)) if a == b => Ok(prev),
        (Target::All, Target::All) => Ok(prev),
        // every shard holds the reference tables: a read of them joins anything; a
        // write of them joins only other broadcasts
        (_, Target::OneCopy) => Ok(prev),
        (Target::OneCopy, _) => Ok(next),
        (Target::AllCopies, Target::AllCopies) | (Target::All, Target::AllCopies) => Ok(prev),
        (Target::AllCopies, Target::All) => Ok(next),
        (a, b) => Err(RouteError::CrossShard {
            detail: format!(
                "statements of one query string go to {} and {}",
                describe(a, map),
                describe(b, map)
            ),
        }),
    }
}

/// A target in words, for error details.
fn describe(target: &Target, map: &ShardMap) -> String {
    match target {
        Target::One(id) => format!("shard {}", map.shard_name(*id)),
        Target::All => "all shards".to_owned(),
        Target::Any => "any shard".to_owned(),
        Target::OneCopy => "one copy of the reference tables".to_owned(),
        Target::AllCopies => "every copy of a reference table".to_owned(),
        Target::Scatter(set, _) => format!(
            "shards {}",
            set.iter()
                .map(|id| map.shard_name(*id))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}
