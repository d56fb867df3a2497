//! Whether a SELECT's result is the plain concatenation of the results of the same text
//! run on every shard that holds some of its rows.
//!
//! Conservative by construction: only the shapes listed in [`Scatter`](super::Scatter)
//! are [`Plain`](super::Scatter::Plain); any clause not modelled here blocks, so a query
//! whose rows would have to be combined, ordered or counted across shards is refused
//! rather than answered with per-shard partial results.

use std::ops::ControlFlow;

use sqlparser::ast::{
    Distinct, DuplicateTreatment, Expr, Function, FunctionArgumentClause, FunctionArguments,
    GroupByExpr, JoinConstraint, JoinOperator, LimitClause, ObjectName, Query, Select,
    SelectFlavor, SelectItem, SetExpr, TableFactor, TableWithJoins, Value, Visit, Visitor,
};

use super::Scatter;

/// The first construct that blocks concatenation, if any.
type Check = Result<(), &'static str>;

/// Like [`Check`], with the query's row limit when it has one (`LIMIT n` without ORDER BY
/// or OFFSET: any n of the rows are its answer).
type LimitCheck = Result<Option<u64>, &'static str>;

/// Whether the per-shard results of query `q` can be concatenated, or (one `count(…)`
/// and nothing else) summed.
pub(crate) fn query(q: &Query) -> Scatter {
    match check_query(q, Projection::Plain) {
        Ok(None) => Scatter::Plain,
        Ok(Some(n)) => Scatter::FirstRows(n),
        Err(_) => match check_query(q, Projection::CountOnly) {
            Ok(None) => Scatter::Count,
            _ => match super::plan::plan(q) {
                Ok(plan) => Scatter::Merge(std::sync::Arc::new(plan)),
                Err(construct) => Scatter::Blocked(construct),
            },
        },
    }
}

/// What the select list may hold.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Projection {
    /// no aggregates: rows are concatenated
    Plain,
    /// exactly one `count(*)` / `count(expr)`: the per-shard counts are summed
    CountOnly,
}

/// Clauses in the order they are written: WITH, the body, ORDER BY, LIMIT, locking.
fn check_query(q: &Query, projection: Projection) -> LimitCheck {
    if q.with.is_some() {
        return Err("WITH");
    }
    match q.body.as_ref() {
        SetExpr::Select(s) => check_select(s, projection)?,
        SetExpr::Query(inner) => {
            if check_query(inner, projection)?.is_some() {
                return Err("LIMIT/OFFSET/FETCH");
            }
        }
        SetExpr::SetOperation { .. } => return Err("UNION/INTERSECT/EXCEPT"),
        SetExpr::Values(_) => return Err("VALUES"),
        SetExpr::Table(_) => return Err("TABLE"),
        SetExpr::Insert(_) | SetExpr::Update(_) | SetExpr::Delete(_) | SetExpr::Merge(_) => {
            return Err("a data-modifying statement");
        }
    }
    if q.order_by.is_some() {
        return Err("ORDER BY");
    }
    let limit = match (&q.limit_clause, &q.fetch) {
        (None, None) => None,
        (
            Some(LimitClause::LimitOffset {
                limit,
                offset: None,
                limit_by,
            }),
            None,
        ) if limit_by.is_empty() && projection == Projection::Plain => match limit {
            None => None, // LIMIT ALL
            Some(Expr::Value(v)) => match &v.value {
                Value::Number(n, false) => {
                    Some(n.parse::<u64>().map_err(|_| "LIMIT/OFFSET/FETCH")?)
                }
                _ => return Err("LIMIT/OFFSET/FETCH"),
            },
            Some(_) => return Err("LIMIT/OFFSET/FETCH"),
        },
        _ => return Err("LIMIT/OFFSET/FETCH"),
    };
    if !q.locks.is_empty() {
        return Err("FOR UPDATE/SHARE");
    }
    if q.for_clause.is_some()
        || q.settings.is_some()
        || q.format_clause.is_some()
        || !q.pipe_operators.is_empty()
    {
        return Err("a query clause pgshard does not model");
    }
    Ok(limit)
}

fn check_select(s: &Select, projection: Projection) -> Check {
    match &s.distinct {
        None | Some(Distinct::All) => {}
        Some(_) => return Err("DISTINCT"),
    }
    check_select_clauses(s)?;
    match projection {
        Projection::Plain => check_exprs(&s.projection)?,
        Projection::CountOnly => check_count_only(&s.projection)?,
    }
    check_from(&s.from)?;
    if let Some(w) = &s.selection {
        check_exprs(w)?;
    }
    match &s.group_by {
        GroupByExpr::Expressions(exprs, modifiers) if exprs.is_empty() && modifiers.is_empty() => {}
        _ => return Err("GROUP BY"),
    }
    if s.having.is_some() {
        return Err("HAVING");
    }
    if !s.named_window.is_empty() {
        return Err("WINDOW");
    }
    Ok(())
}

/// Clauses of a SELECT no merge models (Postgres has few of them; sqlparser parses other
/// dialects' too): any of them blocks.
pub(super) fn check_select_clauses(s: &Select) -> Check {
    if s.top.is_some()
        || s.select_modifiers.is_some()
        || !s.optimizer_hints.is_empty()
        || s.exclude.is_some()
        || !s.lateral_views.is_empty()
        || s.prewhere.is_some()
        || !s.connect_by.is_empty()
        || !s.cluster_by.is_empty()
        || !s.distribute_by.is_empty()
        || !s.sort_by.is_empty()
        || s.qualify.is_some()
        || s.value_table_mode.is_some()
        || !matches!(s.flavor, SelectFlavor::Standard)
    {
        return Err("a SELECT clause pgshard does not model");
    }
    if s.into.is_some() {
        return Err("SELECT INTO");
    }
    Ok(())
}

/// The select list is one `count(*)` or `count(expr)` call (optionally aliased), with
/// no DISTINCT, FILTER, ORDER BY or OVER, and its argument is plain.
fn check_count_only(projection: &[SelectItem]) -> Check {
    let [item] = projection else {
        return Err("an aggregate with other columns");
    };
    let expr = match item {
        SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => e,
        _ => return Err("an aggregate with other columns"),
    };
    let Expr::Function(f) = expr else {
        return Err("an aggregate inside an expression");
    };
    if aggregate(f) != Some("aggregate function count()") {
        return Err("an aggregate other than count()");
    }
    match &f.args {
        FunctionArguments::List(list) => check_exprs(&list.args),
        _ => Err("a function call pgshard does not model"),
    }
}

/// [`check_from`] of the query's one SELECT (through parentheses), or nothing.
pub(crate) fn partitionable(q: &Query) -> Vec<bool> {
    match q.body.as_ref() {
        SetExpr::Select(s) => check_from(&s.from).unwrap_or_default(),
        SetExpr::Query(inner) => partitionable(inner),
        _ => Vec::new(),
    }
}

/// A FROM list of plain tables, separated by commas or joined (inner, cross, LEFT, RIGHT
/// or FULL, with ON conditions free of subqueries, USING or NATURAL). Returns, per table
/// in order, whether the result is still the union of per-shard results when that table
/// is the one whose rows are split across shards and every other table is complete on
/// each shard: true when every join above it is inner, or keeps its side (LEFT JOIN for
/// the left operand, RIGHT JOIN for the right one). A FULL JOIN or the nullable side of
/// an outer join would pad unmatched rows of the complete tables once per shard.
/// Whether the other tables are complete on each shard is the router's to check.
pub(super) fn check_from(from: &[TableWithJoins]) -> Result<Vec<bool>, &'static str> {
    let mut flags = Vec::new();
    for twj in from {
        check_from_item(&twj.relation)?;
        let start = flags.len();
        flags.push(true);
        for join in &twj.joins {
            check_from_item(&join.relation)?;
            let (constraint, left, right) = match &join.join_operator {
                JoinOperator::Join(c) | JoinOperator::Inner(c) | JoinOperator::CrossJoin(c) => {
                    (c, true, true)
                }
                JoinOperator::Left(c) | JoinOperator::LeftOuter(c) => (c, true, false),
                JoinOperator::Right(c) | JoinOperator::RightOuter(c) => (c, false, true),
                JoinOperator::FullOuter(c) => (c, false, false),
                _ => return Err("join"),
            };
            match constraint {
                JoinConstraint::On(e) => check_exprs(e)?,
                JoinConstraint::Using(_) | JoinConstraint::Natural | JoinConstraint::None => {}
                JoinConstraint::UsingAlias(..) => return Err("join"),
            }
            for f in &mut flags[start..] {
                *f &= left;
            }
            flags.push(right);
        }
    }
    Ok(flags)
}

/// The one FROM item: a plain table (optionally `ONLY`, aliased, sampled).
pub(super) fn check_from_item(tf: &TableFactor) -> Check {
    match tf {
        TableFactor::Table {
            args: None,
            with_hints,
            version: None,
            json_path: None,
            partitions,
            index_directives,
            ..
        } if with_hints.is_empty() && partitions.is_empty() && index_directives.is_empty() => {
            Ok(())
        }
        TableFactor::Table { args: Some(_), .. } => Err("table function"),
        TableFactor::Derived { .. } => Err("subquery"),
        TableFactor::NestedJoin { .. } => Err("join"),
        TableFactor::Function { .. }
        | TableFactor::TableFunction { .. }
        | TableFactor::UNNEST { .. } => Err("table function"),
        _ => Err("a FROM item pgshard does not model"),
    }
}

/// Subqueries and aggregate or window calls anywhere in `node`.
pub(super) fn check_exprs<V: Visit>(node: &V) -> Check {
    struct Finder;
    impl Visitor for Finder {
        type Break = &'static str;
        fn pre_visit_query(&mut self, _query: &Query) -> ControlFlow<&'static str> {
            ControlFlow::Break("subquery")
        }
        fn pre_visit_relation(&mut self, _relation: &ObjectName) -> ControlFlow<&'static str> {
            ControlFlow::Break("subquery")
        }
        fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<&'static str> {
            match expr {
                Expr::Function(f) => match aggregate(f) {
                    Some(construct) => ControlFlow::Break(construct),
                    None => ControlFlow::Continue(()),
                },
                _ => ControlFlow::Continue(()),
            }
        }
    }
    match node.visit(&mut Finder) {
        ControlFlow::Break(construct) => Err(construct),
        ControlFlow::Continue(()) => Ok(()),
    }
}

/// Builds `(name, "aggregate function name()")` pairs.
macro_rules! aggregates {
    ($($name:literal),* $(,)?) => {
        &[$(($name, concat!("aggregate function ", $name, "()"))),*]
    };
}

/// Postgres' built-in aggregates (and window functions, which need OVER anyway).
const AGGREGATES: &[(&str, &str)] = aggregates![
    "count",
    "sum",
    "avg",
    "min",
    "max",
    "bool_and",
    "bool_or",
    "every",
    "array_agg",
    "string_agg",
    "json_agg",
    "jsonb_agg",
    "json_object_agg",
    "jsonb_object_agg",
    "json_arrayagg",
    "json_objectagg",
    "xmlagg",
    "bit_and",
    "bit_or",
    "bit_xor",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "variance",
    "var_pop",
    "var_samp",
    "covar_pop",
    "covar_samp",
    "corr",
    "regr_avgx",
    "regr_avgy",
    "regr_count",
    "regr_intercept",
    "regr_r2",
    "regr_slope",
    "regr_sxx",
    "regr_sxy",
    "regr_syy",
    "percentile_cont",
    "percentile_disc",
    "mode",
    "rank",
    "dense_rank",
    "percent_rank",
    "cume_dist",
    "range_agg",
    "range_intersect_agg",
    "any_value",
    "grouping",
    "row_number",
    "ntile",
    "lag",
    "lead",
    "first_value",
    "last_value",
    "nth_value",
];

/// Name prefixes of aggregate families, and `agg` anywhere in a name: over-matching a
/// plain function only refuses a query that could have been scattered.
const AGGREGATE_PREFIXES: &[&str] = &[
    "stddev",
    "variance",
    "var_",
    "covar_",
    "regr_",
    "percentile_",
    "json_object_agg",
    "jsonb_object_agg",
];

/// The construct, if `f` is (or may be) an aggregate or window function call.
pub(super) fn aggregate(f: &Function) -> Option<&'static str> {
    if f.over.is_some() || f.null_treatment.is_some() {
        return Some("window function");
    }
    if f.filter.is_some() {
        return Some("aggregate function with FILTER");
    }
    if !f.within_group.is_empty() {
        return Some("aggregate function with WITHIN GROUP");
    }
    if !matches!(f.parameters, FunctionArguments::None) {
        return Some("a function call pgshard does not model");
    }
    if let FunctionArguments::List(list) = &f.args {
        if matches!(list.duplicate_treatment, Some(DuplicateTreatment::Distinct)) {
            return Some("aggregate function with DISTINCT");
        }
        if list
            .clauses
            .iter()
            .any(|c| matches!(c, FunctionArgumentClause::OrderBy(_)))
        {
            return Some("aggregate function with ORDER BY");
        }
        if !list.clauses.is_empty() {
            return Some("a function call pgshard does not model");
        }
    }
    // the last name part: `pg_catalog.count` is `count`; case is ignored, over-matching
    let Some(name) = f
        .name
        .0
        .last()
        .and_then(|p| p.as_ident())
        .map(|id| id.value.to_ascii_lowercase())
    else {
        return Some("a function call pgshard does not model");
    };
    if let Some((_, construct)) = AGGREGATES.iter().find(|(n, _)| *n == name) {
        return Some(construct);
    }
    if AGGREGATE_PREFIXES.iter().any(|p| name.starts_with(p)) || name.contains("agg") {
        return Some("aggregate function");
    }
    None
}
