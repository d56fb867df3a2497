//! The only user of sqlparser: SQL text → a small [`Statement`] summary that the router
//! needs, with a plan cache keyed by SQL text.
//!
//! The summary records *facts about the text* (which tables, which `column = value`
//! equalities constrain each table occurrence, the INSERT rows); it knows nothing of the
//! shard map, so one cached summary serves every map epoch.

pub mod analyze;
pub mod cache;

use std::sync::Arc;

pub use analyze::analyze;
pub use cache::PlanCache;

/// What a single SQL statement is, as far as routing and transaction handling care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatementKind {
    /// SELECT / VALUES / WITH … SELECT (no data-modifying CTE)
    Select,
    /// INSERT
    Insert,
    /// UPDATE
    Update,
    /// DELETE
    Delete,
    /// CREATE / ALTER / DROP / TRUNCATE / COMMENT … on tables, indexes, views, sequences,
    /// schemas, types, functions: broadcast to every shard.
    Ddl,
    /// BEGIN / START TRANSACTION; the text is kept to be replayed when a shard is chosen.
    Begin,
    /// COMMIT / END (also COMMIT AND CHAIN? no: `chain` is refused upstream)
    Commit,
    /// ROLLBACK / ABORT (not ROLLBACK TO SAVEPOINT)
    Rollback,
    /// SAVEPOINT / RELEASE / ROLLBACK TO: go to the transaction's shard
    Savepoint,
    /// SET / RESET / SET LOCAL / SET TIME ZONE …
    Set {
        /// `SET LOCAL` (transaction-scoped)
        local: bool,
    },
    /// SHOW
    Show,
    /// COPY; `table` is the target when it copies a table rather than a query
    Copy {
        /// true for `FROM STDIN`/file, false for `TO`
        from: bool,
    },
    /// PREPARE / EXECUTE / DEALLOCATE at the SQL level
    SqlPrepared,
    /// LISTEN / NOTIFY / UNLISTEN, DISCARD, EXPLAIN, VACUUM, ANALYZE, CALL and friends
    Other,
}

/// A value appearing as the right-hand side of a key equality or in INSERT VALUES.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueExpr {
    /// a literal, in its text form with casts stripped (`'5'::bigint` → `5`,
    /// `-3` → `-3`, `'abc'` → `abc`)
    Literal(String),
    /// NULL
    Null,
    /// `$n` (1-based)
    Param(usize),
}

/// One occurrence of a table in the statement (a table named twice occurs twice).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableOccurrence {
    /// last name part, folded like Postgres (lower-case unless quoted)
    pub name: String,
    /// schema, if qualified
    pub schema: Option<String>,
    /// values the key could take in this occurrence, per column: every row this occurrence
    /// contributes satisfies `column = value` for one of the listed equalities.
    /// Only top-level AND-ed equalities (WHERE, inner JOIN ON) of the occurrence's own
    /// query block are recorded; anything under OR/NOT/outer joins is ignored.
    pub equalities: Vec<(String, ValueExpr)>,
    /// this occurrence is written to (INSERT/UPDATE/DELETE target)
    pub written: bool,
}

/// Rows of an `INSERT … VALUES`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InsertValues {
    /// target table (folded)
    pub table: String,
    /// the column list, if given (folded)
    pub columns: Option<Vec<String>>,
    /// one entry per row; `None` where the expression is not a plain literal/param
    pub rows: Vec<Vec<Option<ValueExpr>>>,
}

/// The routing summary of one SQL statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// what kind of statement
    pub kind: StatementKind,
    /// every table occurrence (FROM, JOIN, subqueries, CTEs, targets)
    pub tables: Vec<TableOccurrence>,
    /// INSERT … VALUES rows, when the statement is one
    pub insert: Option<InsertValues>,
    /// columns assigned by an UPDATE's SET list (folded), to refuse key changes
    pub assigned_columns: Vec<String>,
    /// the statement reads or writes through a construct the summary cannot see into
    /// (e.g. a function call with side effects is fine; this flags things like
    /// `INSERT … SELECT`): the router must not route it by key.
    pub opaque: bool,
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
