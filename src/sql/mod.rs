//! The only user of sqlparser: SQL text → a small [`Statement`] summary that the router
//! needs, with a plan cache keyed by SQL text.
//!
//! The summary records *facts about the text* (which tables, which `column = value`
//! equalities and `column IN (…)` lists constrain each table occurrence, the INSERT rows,
//! whether a SELECT's per-shard results may simply be concatenated); it knows nothing of
//! the shard map, so one cached summary serves every map epoch.
//!
//! Soundness rule: when the analysis is unsure, it records *less* (drops an equality, or
//! adds an unconstrained table occurrence), so the router refuses instead of routing by a
//! key that does not constrain every row.
//!
//! Statements sqlparser 0.64 (Postgres dialect) cannot parse become
//! [`Analysis::Unparsed`]; the known ones are listed in the tests of [`analyze`]
//! (`VACUUM ANALYZE t`, `CHECKPOINT`, `DO $$…$$`, `TABLE t`, `FOR NO KEY UPDATE`,
//! `FOR KEY SHARE`, `ALTER SYSTEM`, `ALTER SEQUENCE`, `CLUSTER`, `REINDEX`,
//! `SECURITY LABEL`, `IMPORT FOREIGN SCHEMA`, `PREPARE TRANSACTION`, `COMMIT PREPARED`).

pub mod analyze;
pub mod cache;
mod expr;
pub mod lift;
mod plan;
pub mod prepared;
mod scatter;
pub mod split;
mod walk;

#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Arc;

pub use analyze::analyze;
pub use cache::PlanCache;

/// What a single SQL statement is, as far as routing and transaction handling care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatementKind {
    /// SELECT / VALUES / WITH … SELECT, and `DECLARE … CURSOR FOR <query>`
    Select,
    /// INSERT
    Insert,
    /// UPDATE
    Update,
    /// DELETE
    Delete,
    /// CREATE / ALTER / DROP / TRUNCATE / COMMENT … on tables, indexes, views, sequences,
    /// schemas, types, functions, GRANT / REVOKE, `SELECT … INTO`: broadcast to every shard.
    Ddl,
    /// BEGIN / START TRANSACTION; the text is kept to be replayed when a shard is chosen.
    Begin,
    /// COMMIT / END (`AND CHAIN` is refused by the router)
    Commit,
    /// ROLLBACK / ABORT (not ROLLBACK TO SAVEPOINT)
    Rollback,
    /// SAVEPOINT / RELEASE / ROLLBACK TO: go to the transaction's shard
    Savepoint,
    /// SET / RESET / SET LOCAL / SET TIME ZONE / SET TRANSACTION …
    Set {
        /// transaction-scoped: `SET LOCAL …`, `SET LOCAL TIME ZONE`, `SET TRANSACTION …`
        local: bool,
    },
    /// SHOW
    Show,
    /// COPY
    Copy {
        /// true for `FROM STDIN`/file, false for `TO`
        from: bool,
    },
    /// PREPARE / EXECUTE / DEALLOCATE at the SQL level
    SqlPrepared,
    /// LISTEN / NOTIFY / UNLISTEN, DISCARD, VACUUM, ANALYZE, CALL, LOCK, FETCH, MERGE and
    /// anything else the summary does not classify
    Other,
}

/// The type a value has by its syntax or its cast, which decides how Postgres converts
/// it to the key column's type: the router only accepts values whose conversion is the
/// key type's own input function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueType {
    /// an uncast quoted string or parameter: takes the column's type
    Unknown,
    /// an integer literal, or cast to smallint/integer/bigint
    Integer,
    /// cast to text / unbounded varchar
    Text,
    /// cast to uuid
    Uuid,
}

/// A value appearing as the right-hand side of a key equality or in INSERT VALUES.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueExpr {
    /// a literal, in its text form with a single cast stripped (`'5'::bigint` → `5`,
    /// `-3` → `-3`, `'abc'` → `abc`), and the type its syntax or cast gives it
    Literal(String, ValueType),
    /// NULL
    Null,
    /// `$n` (1-based), and the type of a cast around it
    Param(usize, ValueType),
}

/// How a table occurrence is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// read (FROM, JOIN, subqueries, USING, UPDATE … FROM)
    Read,
    /// the target of an UPDATE or DELETE: rows are selected by its equalities
    Write,
    /// the target of an INSERT: rows come from [`Statement::insert`]
    Insert,
}

/// One occurrence of a table in the statement (a table named twice occurs twice).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableOccurrence {
    /// last name part, folded like Postgres (lower-case unless quoted)
    pub name: String,
    /// schema, if qualified
    pub schema: Option<String>,
    /// values the key could take in this occurrence, per column: every row this occurrence
    /// contributes satisfies `column = value` for each listed equality.
    /// Only top-level AND-ed equalities (WHERE, inner JOIN ON) of the occurrence's own
    /// query block are recorded; anything under OR/NOT/outer joins is ignored.
    pub equalities: Vec<(String, ValueExpr)>,
    /// `column IN (v1, …, vn)` lists (not negated, every element a literal or parameter
    /// form accepted for equalities), attributed by the same rules as
    /// [`equalities`](Self::equalities): every row this occurrence contributes has
    /// `column` equal to one of the values. `IN (v)` with one value is recorded as an
    /// equality instead.
    pub key_lists: Vec<(String, Vec<ValueExpr>)>,
    /// `column = ANY(<array>)` where the array is one literal or parameter whose elements
    /// are read by the router (`= ANY(ARRAY[…])` and an OR of key equalities are recorded
    /// in [`key_lists`](Self::key_lists) instead); attributed by the same rules
    pub key_arrays: Vec<(String, KeyArray)>,
    /// how the statement uses it
    pub role: Role,
}

/// The array of a `column = ANY(…)` condition whose elements only the router can read:
/// from the array's text form, or from a Bind parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyArray {
    /// a string literal (`'{1,2,NULL}'`), and the element type of a cast around it
    /// (`'{1,2}'::bigint[]` → [`ValueType::Integer`]; uncast: [`ValueType::Unknown`])
    Literal(String, ValueType),
    /// `$n` (1-based), and the element type of a cast around it
    Param(usize, ValueType),
}

/// `a.x = b.y` between two table occurrences of one query block, at the top level of its
/// WHERE or of a join's ON: every row occurrence `to` contributes has `to_column` equal to
/// `from_column` of the `from` row it is combined with. Inner joins and WHERE give both
/// directions; the ON of an outer join only the direction into its nullable side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyLink {
    /// index in [`Statement::tables`] of the side the value comes from
    pub from: usize,
    /// its column (folded)
    pub from_column: String,
    /// index in [`Statement::tables`] of the side the value is carried to
    pub to: usize,
    /// its column (folded)
    pub to_column: String,
}

/// Rows of an `INSERT … VALUES` (or `DEFAULT VALUES`, which is one row with no columns).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InsertValues {
    /// target table (folded)
    pub table: String,
    /// the column list, if given (folded)
    pub columns: Option<Vec<String>>,
    /// one entry per row; `None` where the expression is not a plain literal/param
    pub rows: Vec<Vec<Option<ValueExpr>>>,
    /// `ON CONFLICT … DO NOTHING`: some rows may insert nothing (and return nothing)
    pub skips_rows: bool,
    /// `RETURNING …`
    pub returning: bool,
}

/// A construct the router must refuse rather than route by key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limitation {
    /// `INSERT … SELECT`
    InsertSelect,
    /// a data-modifying statement nested in WITH or elsewhere
    NestedWrite,
    /// `MERGE`
    Merge,
    /// `COMMIT AND CHAIN` / `ROLLBACK AND CHAIN`
    Chain,
    /// SQL-level `EXECUTE`: which statement it runs is not known from the text
    SqlExecute,
    /// some other construct the summary cannot see into
    Opaque(&'static str),
}

impl Limitation {
    /// true if the construct is refused even when it names no sharded table
    pub fn always(self) -> bool {
        matches!(self, Limitation::Chain | Limitation::SqlExecute)
    }
}

impl fmt::Display for Limitation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Limitation::InsertSelect => f.write_str("INSERT … SELECT on a sharded table"),
            Limitation::NestedWrite => f.write_str(
                "a data-modifying WITH or nested INSERT/UPDATE/DELETE on a sharded table",
            ),
            Limitation::Merge => f.write_str("MERGE on a sharded table"),
            Limitation::Chain => f.write_str("COMMIT/ROLLBACK AND CHAIN"),
            Limitation::SqlExecute => {
                f.write_str("SQL-level EXECUTE (use the extended protocol to prepare statements)")
            }
            Limitation::Opaque(what) => f.write_str(what),
        }
    }
}

/// Whether a statement's result is the concatenation of the results of the same text run
/// on several shards, each holding part of the rows.
///
/// [`Scatter::Plain`] needs a SELECT of one query block over exactly one table
/// occurrence (no join, subquery, CTE or set operation), without anything that combines
/// rows across the result (aggregates, window functions, GROUP BY, HAVING, DISTINCT) or
/// orders, limits, locks or stores them (ORDER BY, LIMIT/OFFSET/FETCH, FOR UPDATE, INTO).
///
/// Aggregates are recognised by their call syntax (OVER, FILTER, WITHIN GROUP, DISTINCT
/// or ORDER BY inside the arguments) and by the names of Postgres' built-in aggregates.
/// A user-defined aggregate called by a name not on that list cannot be told from a
/// plain function by the text alone: such a query is taken as [`Scatter::Plain`] and each
/// shard returns its own partial aggregate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scatter {
    /// concatenating the per-shard results gives the statement's result
    Plain,
    /// `LIMIT n` without ORDER BY or OFFSET: every shard returns at most n rows, the
    /// first n of their concatenation are a correct answer
    FirstRows(u64),
    /// the select list is one `count(…)`: summing the per-shard counts gives the result
    Count,
    /// rows are combined by a merge plan (ORDER BY, LIMIT/OFFSET, DISTINCT, GROUP BY,
    /// recombinable aggregates), the shards running the plan's text
    Merge(Arc<crate::scatter::plan::MergePlan>),
    /// not concatenable; names the first construct found (for the error message)
    Blocked(&'static str),
}

/// The routing summary of one SQL statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// what kind of statement (for `EXPLAIN x`, the kind of `x`)
    pub kind: StatementKind,
    /// the command word(s), for messages: `SELECT`, `LOCK TABLE`, `VACUUM`, …
    pub command: &'static str,
    /// `EXPLAIN [ANALYZE] <statement>`: summarised as the inner statement
    pub explain: bool,
    /// every table occurrence (FROM, JOIN, subqueries, CTEs, targets); for DDL only the
    /// tables read by an embedded query (`CREATE TABLE … AS`, `CREATE VIEW`)
    pub tables: Vec<TableOccurrence>,
    /// INSERT … VALUES rows, when the statement is one
    pub insert: Option<InsertValues>,
    /// columns assigned by an UPDATE's SET list or `ON CONFLICT DO UPDATE SET` (folded),
    /// to refuse key changes
    pub assigned_columns: Vec<String>,
    /// set when the statement uses a construct the router must not route by key
    pub limitation: Option<Limitation>,
    /// names defined by WITH in this statement (their references are not tables)
    pub cte_names: Vec<String>,
    /// whether per-shard results of this text can simply be concatenated
    pub scatter: Scatter,
    /// column equalities between table occurrences (for carrying a key value across a
    /// join)
    pub links: Vec<KeyLink>,
    /// for a SELECT whose only query block is a FROM list of plain tables: per table
    /// occurrence (index as in [`tables`](Self::tables)), whether
    /// [`scatter`](Self::scatter) still holds when that occurrence is the one split
    /// across shards and every other one is complete on each shard (it is inner-joined,
    /// or on the kept side of every outer join above it). Empty otherwise.
    pub partitionable: Vec<bool>,
    /// for COPY: the column list, where the data goes or comes from, and the options
    /// that decide how rows and fields are written
    pub copy: Option<CopySpec>,
}

/// What a COPY statement says about its data (options as written; Postgres checks them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopySpec {
    /// `COPY (SELECT …) TO`: the statement's tables and scatter are the query's
    pub query: bool,
    /// the column list (folded), if given
    pub columns: Option<Vec<String>>,
    /// `STDIN`/`STDOUT`, not a file or program on the server
    pub stdio: bool,
    /// `FORMAT` (lower-case), or `BINARY`/`CSV` of the old syntax
    pub format: Option<String>,
    /// `DELIMITER`
    pub delimiter: Option<char>,
    /// `NULL`
    pub null: Option<String>,
    /// `QUOTE`
    pub quote: Option<char>,
    /// `ESCAPE`
    pub escape: Option<char>,
    /// `HEADER`
    pub header: bool,
    /// `ENCODING`
    pub encoding: Option<String>,
    /// `FORCE_NOT_NULL` columns (folded)
    pub force_not_null: Vec<String>,
    /// `FORCE_NULL` columns (folded)
    pub force_null: Vec<String>,
    /// the first option pgshard does not model, as written
    pub other: Option<String>,
}

/// The analysis of one query string: its statements, or why it could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Analysis {
    /// parsed; one entry per `;`-separated statement (empty for an empty query)
    Parsed(Vec<Statement>),
    /// sqlparser could not parse it; the message says where
    Unparsed {
        /// parser error text
        error: String,
    },
}

/// Shared, cached analysis.
pub type SharedAnalysis = Arc<Analysis>;
