//! The merge plan of a SELECT that needs more than concatenation: what text the shards
//! run, and how their rows become the client's rows (group, aggregate, sort, dedupe,
//! offset, limit, drop hidden columns).
//!
//! Built from the SQL text alone (by `crate::sql`), so it speaks of result *columns*,
//! never of types: types and formats come from each reply's RowDescription and are
//! checked when rows are merged; a column whose type the merge cannot compare or combine
//! exactly makes the statement fail with `0A000` instead of guessing.

/// Where a column the merge reads sits in the shards' result rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Col {
    /// the n-th column the client sees (0-based); only for select items before any `*`
    Visible(usize),
    /// the n-th hidden column, appended after the client's columns and removed again
    Hidden(usize),
}

/// An aggregate the merge recombines from per-shard partial results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggFunc {
    /// `count(*)` / `count(x)`: partial counts are summed
    Count,
    /// `count(DISTINCT x)`: the column holds x, one row per distinct value per shard and
    /// group; the merge counts the distinct non-NULL values across shards
    CountDistinct,
    /// `sum(x)`: partial sums are added (NULL when every partial is NULL)
    Sum,
    /// `min(x)`
    Min,
    /// `max(x)`
    Max,
    /// `avg(x)`, run on the shards as `sum(x)` in place plus a hidden `count(x)`
    Avg {
        /// the hidden column holding the shard's `count(x)`
        count: Col,
    },
    /// `bool_and(x)` / `every(x)`
    BoolAnd,
    /// `bool_or(x)`
    BoolOr,
}

/// One aggregate column of the result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Aggregate {
    /// the column holding the shard's partial result
    pub col: Col,
    /// how partials combine
    pub func: AggFunc,
    /// min/max of an argument explicitly collated "C": text may be compared bytewise
    /// whatever the database's collation
    pub collate_c: bool,
}

/// One ORDER BY key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SortKey {
    /// the column holding the key's value
    pub col: Col,
    /// DESC
    pub descending: bool,
    /// where NULLs go (Postgres' default: last for ASC, first for DESC)
    pub nulls_first: bool,
    /// the key is explicitly collated "C": text may be compared bytewise whatever the
    /// database's collation
    pub collate_c: bool,
}

/// A comparison operator of a HAVING condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    /// `=`
    Eq,
    /// `<>` / `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

/// One AND-ed HAVING condition `column <op> literal`, evaluated on merged groups (a
/// group's partial aggregates on one shard say nothing about the whole group).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    /// the column holding the aggregate or group key
    pub col: Col,
    /// the comparison, with the column on the left
    pub op: CmpOp,
    /// the literal's text, read as the column's type
    pub literal: String,
}

/// How the shards' rows become the client's rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergePlan {
    /// the statement each shard runs: the client's text with partial aggregates, hidden
    /// columns and a pushed-down limit; `None` when the client's own text serves
    pub shard_sql: Option<String>,
    /// hidden columns appended to the select list
    pub hidden: usize,
    /// `Some` when rows are grouped (GROUP BY, or aggregates without GROUP BY): the
    /// group key columns (empty for one group over all rows)
    pub group_by: Option<Vec<Col>>,
    /// aggregate columns, recombined per group
    pub aggregates: Vec<Aggregate>,
    /// whether the query has no GROUP BY but aggregates: exactly one row, even from no
    /// input rows
    pub single_group: bool,
    /// HAVING, as AND-ed conditions on merged groups
    pub having: Vec<Condition>,
    /// SELECT DISTINCT: duplicates across shards are removed
    pub distinct: bool,
    /// ORDER BY, applied after grouping
    pub order_by: Vec<SortKey>,
    /// whether each shard returns its rows already in `order_by` order (no grouping), so
    /// a k-way merge suffices
    pub shards_sorted: bool,
    /// OFFSET, applied after ordering
    pub offset: u64,
    /// LIMIT, applied after OFFSET
    pub limit: Option<u64>,
}

/// The plan of a plain concatenation: nothing to group, order, cut or hide. Specific
/// plans fill in what they need (`MergePlan { limit: Some(10), ..Default::default() }`).
impl Default for MergePlan {
    fn default() -> MergePlan {
        MergePlan {
            shard_sql: None,
            hidden: 0,
            group_by: None,
            aggregates: vec![],
            single_group: false,
            having: vec![],
            distinct: false,
            order_by: vec![],
            shards_sorted: true,
            offset: 0,
            limit: None,
        }
    }
}

impl MergePlan {
    /// Index of `col` in a shard row of `width` columns (the visible ones, then the
    /// hidden ones); `None` if the row is too narrow.
    pub fn index(&self, col: Col, width: usize) -> Option<usize> {
        let visible = width.checked_sub(self.hidden)?;
        match col {
            Col::Visible(i) if i < visible => Some(i),
            Col::Hidden(i) if i < self.hidden => Some(visible + i),
            _ => None,
        }
    }

    /// Name shown by `pgshard route`.
    pub fn describe(&self) -> String {
        let mut steps = Vec::new();
        if let Some(keys) = &self.group_by {
            if keys.is_empty() {
                steps.push("combine aggregates".to_owned());
            } else {
                steps.push(format!("group by {} column(s)", keys.len()));
            }
            if !self.having.is_empty() {
                steps.push(format!("having ({} condition(s))", self.having.len()));
            }
        }
        if self.distinct {
            steps.push("distinct".to_owned());
        }
        if !self.order_by.is_empty() {
            steps.push(if self.shards_sorted {
                "merge sorted streams".to_owned()
            } else {
                "sort".to_owned()
            });
        }
        if self.offset > 0 {
            steps.push(format!("offset {}", self.offset));
        }
        if let Some(n) = self.limit {
            steps.push(format!("limit {n}"));
        }
        if steps.is_empty() {
            steps.push("concatenate".to_owned());
        }
        steps.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(hidden: usize) -> MergePlan {
        MergePlan {
            hidden,
            ..MergePlan::default()
        }
    }

    #[test]
    fn columns_index_visible_then_hidden() {
        let p = plan(2);
        assert_eq!(p.index(Col::Visible(0), 5), Some(0));
        assert_eq!(p.index(Col::Visible(2), 5), Some(2));
        assert_eq!(p.index(Col::Visible(3), 5), None);
        assert_eq!(p.index(Col::Hidden(0), 5), Some(3));
        assert_eq!(p.index(Col::Hidden(1), 5), Some(4));
        assert_eq!(p.index(Col::Hidden(2), 5), None);
        assert_eq!(p.index(Col::Hidden(0), 1), None);
    }
}
