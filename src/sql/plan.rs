//! Merge plans for SELECTs whose per-shard results must be combined: ORDER BY,
//! LIMIT/OFFSET, DISTINCT, GROUP BY and the aggregates whose partial results recombine
//! exactly (count, sum, min, max, avg, bool_and, bool_or, every).
//!
//! The shards run a rewritten text: `avg(x)` becomes `sum(x)` plus a hidden `count(x)`,
//! ORDER BY and GROUP BY expressions the select list lacks become hidden columns, and a
//! limit becomes `LIMIT limit+offset` when every shard's first rows suffice. Anything
//! else that would need the proxy to evaluate SQL (HAVING, expressions over aggregates,
//! aggregates with DISTINCT/FILTER/ORDER BY, window functions) is refused by name.

use sqlparser::ast::{
    BinaryOperator, Distinct, DuplicateTreatment, Expr, Function, FunctionArg, FunctionArgExpr,
    FunctionArguments, GroupByExpr, Ident, LimitClause, ObjectName, ObjectNamePart, Offset,
    OrderByKind, OrderBySort, Query, SelectItem, SetExpr, Value,
};

use super::expr::{conjuncts, fold};
use super::scatter::{aggregate, check_exprs, check_from, check_select_clauses};
use crate::scatter::plan::{AggFunc, Aggregate, CmpOp, Col, Condition, MergePlan, SortKey};

/// Why a query cannot be merged: the construct, for the error message.
type Refusal = &'static str;

/// The aggregates whose partial results recombine exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Agg {
    Count,
    /// `count(DISTINCT x)`: the shards return their distinct values of x per group
    CountDistinct,
    Sum,
    Avg,
    Min,
    Max,
    BoolAnd,
    BoolOr,
}

/// One select-list item.
struct Item<'q> {
    expr: &'q Expr,
    /// explicit alias, folded
    alias: Option<String>,
    agg: Option<Agg>,
}

/// Build the merge plan of `q`, or name the construct that prevents it.
pub(crate) fn plan(q: &Query) -> Result<MergePlan, Refusal> {
    if q.with.is_some() {
        return Err("WITH");
    }
    if !q.locks.is_empty() {
        return Err("FOR UPDATE/SHARE");
    }
    if q.fetch.is_some() {
        return Err("FETCH FIRST (write it as LIMIT)");
    }
    if q.for_clause.is_some()
        || q.settings.is_some()
        || q.format_clause.is_some()
        || !q.pipe_operators.is_empty()
    {
        return Err("a query clause pgshard does not model");
    }
    let SetExpr::Select(s) = q.body.as_ref() else {
        return Err(match q.body.as_ref() {
            SetExpr::SetOperation { .. } => "UNION/INTERSECT/EXCEPT",
            SetExpr::Values(_) => "VALUES",
            _ => "a nested query",
        });
    };
    check_select_clauses(s)?;
    if s.from.is_empty() {
        return Err("a SELECT without FROM");
    }
    check_from(&s.from)?;
    if let Some(w) = &s.selection {
        check_exprs(w)?;
    }
    if !s.named_window.is_empty() {
        return Err("WINDOW");
    }
    let distinct = match &s.distinct {
        None | Some(Distinct::All) => false,
        Some(Distinct::Distinct) => true,
        Some(Distinct::On(_)) => return Err("DISTINCT ON"),
    };
    let group_exprs: &[Expr] = match &s.group_by {
        GroupByExpr::Expressions(exprs, modifiers) if modifiers.is_empty() => exprs,
        _ => return Err("GROUP BY modifiers"),
    };
    let (limit, offset) = limit_offset(q)?;

    // The select list: items before the first `*` have known positions.
    let mut items = Vec::new();
    let mut wildcard = false;
    for item in &s.projection {
        let (expr, alias) = match item {
            SelectItem::UnnamedExpr(e) => (e, None),
            SelectItem::ExprWithAlias { expr, alias } => (expr, Some(fold(alias))),
            SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..) => {
                wildcard = true;
                break;
            }
            SelectItem::ExprWithAliases { .. } => {
                return Err("a select item pgshard does not model");
            }
        };
        items.push(Item {
            expr,
            alias,
            agg: aggregate_of(expr)?,
        });
    }
    if wildcard && s.projection.len() > items.len() + 1 {
        // columns after a `*` have positions the text does not tell
        return Err("select items after *");
    }
    let order: Vec<_> = match &q.order_by {
        None => Vec::new(),
        Some(o) if o.interpolate.is_some() => return Err("ORDER BY … INTERPOLATE"),
        Some(o) => match &o.kind {
            OrderByKind::Expressions(list) => list.iter().collect(),
            OrderByKind::All(_) => return Err("ORDER BY ALL"),
        },
    };
    let mut order_aggs = Vec::new();
    for o in &order {
        if o.with_fill.is_some() {
            return Err("ORDER BY … WITH FILL");
        }
        if matches!(o.options.sort, Some(OrderBySort::Using(_))) {
            return Err("ORDER BY … USING");
        }
        order_aggs.push(aggregate_of(&o.expr)?);
    }
    let grouped = !group_exprs.is_empty()
        || items.iter().any(|i| i.agg.is_some())
        || order_aggs.iter().any(Option::is_some)
        || s.having.is_some();
    if grouped && wildcard {
        return Err("* with GROUP BY or aggregates");
    }

    let mut b = Builder {
        distinct_arg: None,
        other_aggregates: false,
        hidden: Vec::new(),
        aggregates: Vec::new(),
        projection: s.projection.clone(),
    };
    // aggregates of the select list; avg runs as sum in place plus a hidden count
    for (i, item) in items.iter().enumerate() {
        if let Some(agg) = item.agg {
            b.aggregate(Col::Visible(i), item, agg)?;
        }
    }

    let mut group_by = None;
    if grouped {
        let mut keys = Vec::new();
        for g in group_exprs {
            match g {
                // `GROUP BY ()`: the one group of all rows
                Expr::Tuple(list) if list.is_empty() => {}
                Expr::Tuple(_) => return Err("GROUP BY (…) lists"),
                g => keys.push(group_key(g, &items, &mut b)?),
            }
        }
        group_by = Some(keys);
    }

    let mut having = Vec::new();
    if let Some(h) = &s.having {
        let mut parts = Vec::new();
        conjuncts(h, &mut parts);
        for part in parts {
            having.push(condition(part, &items, &mut b)?);
        }
    }

    let mut order_by = Vec::new();
    for (o, agg) in order.iter().zip(&order_aggs) {
        let descending = matches!(o.options.sort, Some(OrderBySort::Desc));
        let nulls_first = o.options.nulls_first.unwrap_or(descending);
        let col = match resolve_output(&o.expr, &items)? {
            Some(i) => Col::Visible(i),
            None if distinct => {
                return Err("ORDER BY an expression that is not in the DISTINCT select list");
            }
            None => match agg {
                Some(agg) => {
                    let col = b.hide(&o.expr);
                    b.aggregate_hidden(col, &o.expr, *agg)?;
                    col
                }
                None => b.hide(&o.expr),
            },
        };
        let collate_c = collation(&o.expr)?
            || match col {
                Col::Visible(i) => collation(items[i].expr)?,
                Col::Hidden(_) => false,
            };
        order_by.push(SortKey {
            col,
            descending,
            nulls_first,
            collate_c,
        });
    }
    for a in &mut b.aggregates {
        if matches!(a.func, AggFunc::Min | AggFunc::Max)
            && let Col::Visible(i) = a.col
        {
            a.collate_c = collation(items[i].expr)?;
        }
    }

    // The shard text.
    let mut shard = q.clone();
    let mut changed = false;
    if let SetExpr::Select(sel) = shard.body.as_mut() {
        if !b.hidden.is_empty() || b.projection != s.projection {
            let mut projection = b.projection.clone();
            for (n, e) in b.hidden.iter().enumerate() {
                projection.push(SelectItem::ExprWithAlias {
                    expr: e.clone(),
                    alias: Ident::new(format!("pgshard_hidden_{n}")),
                });
            }
            sel.projection = projection;
            changed = true;
        }
        if sel.having.take().is_some() {
            changed = true;
        }
        if let Some(arg) = &b.distinct_arg {
            // each shard returns its distinct values of the argument per group
            if let GroupByExpr::Expressions(exprs, _) = &mut sel.group_by {
                exprs.retain(|e| !matches!(e, Expr::Tuple(l) if l.is_empty()));
                exprs.push(arg.clone());
            }
            changed = true;
        }
        if grouped && distinct {
            // groups are distinct per shard already; duplicates across shards are
            // removed after the merge, on the client's columns only
            sel.distinct = None;
            changed = true;
        }
    }
    if grouped {
        // every shard returns all its groups; ordering and limits apply after the merge
        if shard.order_by.is_some() || shard.limit_clause.is_some() {
            shard.order_by = None;
            shard.limit_clause = None;
            changed = true;
        }
    } else if offset > 0 || limit.is_some() {
        // each shard's first limit+offset rows contain the answer's rows
        let pushed = limit.map(|l| l.saturating_add(offset));
        shard.limit_clause = Some(LimitClause::LimitOffset {
            limit: pushed.map(|n| Expr::value(Value::Number(n.to_string(), false))),
            offset: None,
            limit_by: vec![],
        });
        changed = true;
    }
    let single_group = grouped && group_by.as_ref().is_some_and(Vec::is_empty);
    Ok(MergePlan {
        shard_sql: changed.then(|| shard.to_string()),
        hidden: b.hidden.len(),
        group_by,
        aggregates: b.aggregates,
        single_group,
        having,
        distinct,
        order_by,
        shards_sorted: !grouped,
        offset,
        limit,
    })
}

/// Hidden columns and aggregates collected while planning.
struct Builder {
    /// the argument of the query's `count(DISTINCT x)` calls
    distinct_arg: Option<Expr>,
    /// an aggregate other than `count(DISTINCT x)` was seen
    other_aggregates: bool,
    hidden: Vec<Expr>,
    aggregates: Vec<Aggregate>,
    /// the select list the shards run (avg replaced by sum)
    projection: Vec<SelectItem>,
}

impl Builder {
    /// Append a hidden column computing `e`.
    fn hide(&mut self, e: &Expr) -> Col {
        self.hidden.push(e.clone());
        Col::Hidden(self.hidden.len() - 1)
    }

    /// Note an aggregate: `count(DISTINCT x)` makes the shards return distinct values of
    /// x instead of partial aggregates, so no other aggregate can share the query.
    fn note(&mut self, e: &Expr, agg: Agg) -> Result<(), Refusal> {
        if agg == Agg::CountDistinct {
            let arg = single_arg(e).ok_or("count(DISTINCT …) of several arguments")?;
            match &self.distinct_arg {
                Some(a) if a != arg => return Err("count(DISTINCT …) of different expressions"),
                _ => self.distinct_arg = Some(arg.clone()),
            }
        } else {
            self.other_aggregates = true;
        }
        if self.distinct_arg.is_some() && self.other_aggregates {
            return Err("count(DISTINCT …) with other aggregates");
        }
        Ok(())
    }

    /// Record the select-list aggregate `item` at `col`.
    fn aggregate(&mut self, col: Col, item: &Item<'_>, agg: Agg) -> Result<(), Refusal> {
        self.note(item.expr, agg)?;
        let func = match agg {
            Agg::CountDistinct => {
                let Col::Visible(i) = col else { return Ok(()) };
                let arg = single_arg(item.expr).ok_or("count(DISTINCT …) of several arguments")?;
                // the shard returns x's distinct values under the column's name
                let alias = Ident::new(item.alias.clone().unwrap_or_else(|| "count".to_owned()));
                self.projection[i] = SelectItem::ExprWithAlias {
                    expr: arg.clone(),
                    alias,
                };
                AggFunc::CountDistinct
            }
            Agg::Avg => {
                let Col::Visible(i) = col else { return Ok(()) };
                let (sum, count) = split_avg(item.expr);
                // keep the column's name: an unaliased avg(x) is called "avg"
                let alias = Ident::new(item.alias.clone().unwrap_or_else(|| "avg".to_owned()));
                self.projection[i] = SelectItem::ExprWithAlias { expr: sum, alias };
                AggFunc::Avg {
                    count: self.hide(&count),
                }
            }
            other => simple_func(other),
        };
        self.aggregates.push(Aggregate {
            col,
            func,
            collate_c: false,
        });
        Ok(())
    }

    /// Record the hidden ORDER BY aggregate `e` at hidden column `col`.
    fn aggregate_hidden(&mut self, col: Col, e: &Expr, agg: Agg) -> Result<(), Refusal> {
        self.note(e, agg)?;
        let func = match agg {
            Agg::CountDistinct => {
                let arg = single_arg(e).ok_or("count(DISTINCT …) of several arguments")?;
                if let Col::Hidden(h) = col {
                    self.hidden[h] = arg.clone();
                }
                AggFunc::CountDistinct
            }
            Agg::Avg => {
                let (sum, count) = split_avg(e);
                if let Col::Hidden(h) = col {
                    self.hidden[h] = sum;
                }
                AggFunc::Avg {
                    count: self.hide(&count),
                }
            }
            other => simple_func(other),
        };
        let collate_c = collation(e).unwrap_or(false);
        self.aggregates.push(Aggregate {
            col,
            func,
            collate_c,
        });
        Ok(())
    }
}

fn simple_func(agg: Agg) -> AggFunc {
    match agg {
        Agg::Count => AggFunc::Count,
        Agg::Sum => AggFunc::Sum,
        Agg::Min => AggFunc::Min,
        Agg::Max => AggFunc::Max,
        Agg::BoolAnd => AggFunc::BoolAnd,
        Agg::BoolOr => AggFunc::BoolOr,
        Agg::Avg | Agg::CountDistinct => unreachable!("rewritten by the caller"),
    }
}

/// The one argument of an aggregate call.
fn single_arg(e: &Expr) -> Option<&Expr> {
    let Expr::Function(f) = e else { return None };
    let FunctionArguments::List(list) = &f.args else {
        return None;
    };
    match list.args.as_slice() {
        // a row `(x, y)` would be grouped as a list of columns by the shard
        [FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Tuple(_)))] => None,
        [FunctionArg::Unnamed(FunctionArgExpr::Expr(arg))] => Some(arg),
        _ => None,
    }
}

/// `avg(args)` → (`sum(args)`, `count(args)`).
fn split_avg(e: &Expr) -> (Expr, Expr) {
    let rename = |name: &str| {
        let mut e = e.clone();
        if let Expr::Function(f) = &mut e {
            f.name = ObjectName(vec![ObjectNamePart::Identifier(Ident::new(name))]);
        }
        e
    };
    (rename("sum"), rename("count"))
}

/// Whether `e` is a call of a recombinable aggregate (and which); errors for any other
/// use of an aggregate or window function inside `e`.
fn aggregate_of(e: &Expr) -> Result<Option<Agg>, Refusal> {
    if let Expr::Function(f) = e
        && let Some(agg) = recombinable(f)
    {
        if let FunctionArguments::List(list) = &f.args {
            check_exprs(&list.args)?;
        }
        return Ok(Some(agg));
    }
    if let Expr::Function(f) = e
        && let Some(construct) = aggregate(f)
    {
        return Err(construct);
    }
    match check_exprs(e) {
        Ok(()) => Ok(None),
        Err(c) if c.starts_with("aggregate function") || c == "window function" => {
            Err("an expression over an aggregate")
        }
        Err(c) => Err(c),
    }
}

/// A plain call (no DISTINCT, FILTER, ORDER BY, OVER) of an aggregate whose partial
/// results recombine exactly.
fn recombinable(f: &Function) -> Option<Agg> {
    if f.over.is_some()
        || f.filter.is_some()
        || f.null_treatment.is_some()
        || !f.within_group.is_empty()
        || !matches!(f.parameters, FunctionArguments::None)
    {
        return None;
    }
    let FunctionArguments::List(list) = &f.args else {
        return None;
    };
    let distinct = match list.duplicate_treatment {
        None | Some(DuplicateTreatment::All) => false,
        Some(DuplicateTreatment::Distinct) => true,
    };
    if !list.clauses.is_empty() || list.args.len() != 1 {
        return None;
    }
    let name = match f.name.0.as_slice() {
        [ObjectNamePart::Identifier(n)] => fold(n),
        [ObjectNamePart::Identifier(s), ObjectNamePart::Identifier(n)]
            if fold(s) == "pg_catalog" =>
        {
            fold(n)
        }
        _ => return None,
    };
    Some(match name.as_str() {
        "count" if distinct => Agg::CountDistinct,
        _ if distinct => return None,
        "count" => Agg::Count,
        "sum" => Agg::Sum,
        "avg" => Agg::Avg,
        "min" => Agg::Min,
        "max" => Agg::Max,
        "bool_and" | "every" => Agg::BoolAnd,
        "bool_or" => Agg::BoolOr,
        _ => return None,
    })
}

/// `LIMIT n` / `OFFSET m` as numbers (absent: no limit, offset 0).
fn limit_offset(q: &Query) -> Result<(Option<u64>, u64), Refusal> {
    let number = |e: &Expr| match e {
        Expr::Value(v) => match &v.value {
            Value::Number(n, false) => n.parse::<u64>().ok(),
            _ => None,
        },
        _ => None,
    };
    match &q.limit_clause {
        None => Ok((None, 0)),
        Some(LimitClause::LimitOffset {
            limit,
            offset,
            limit_by,
        }) if limit_by.is_empty() => {
            let limit = match limit {
                None => None,
                Some(Expr::Value(v)) if matches!(v.value, Value::Null) => None,
                Some(e) => Some(number(e).ok_or("LIMIT that is not a number")?),
            };
            let offset = match offset {
                None => 0,
                Some(Offset { value, .. }) => number(value).ok_or("OFFSET that is not a number")?,
            };
            Ok((limit, offset))
        }
        Some(_) => Err("LIMIT/OFFSET form pgshard does not model"),
    }
}

/// The select-list position an ORDER BY expression names: a position (`ORDER BY 2`), an
/// output name (`ORDER BY total`), or the same expression as an item.
fn resolve_output(e: &Expr, items: &[Item<'_>]) -> Result<Option<usize>, Refusal> {
    if let Expr::Value(v) = e
        && let Value::Number(n, _) = &v.value
    {
        let pos = n
            .parse::<usize>()
            .ok()
            .filter(|p| (1..=items.len()).contains(p));
        return pos
            .map(|p| Some(p - 1))
            .ok_or("ORDER BY position beyond the select list or after *");
    }
    if let Expr::Identifier(id) = e {
        let name = fold(id);
        if let Some(i) = items
            .iter()
            .position(|it| it.alias.as_deref() == Some(name.as_str()))
        {
            return Ok(Some(i));
        }
        if let Some(i) = items
            .iter()
            .position(|it| it.alias.is_none() && it.expr == e)
        {
            return Ok(Some(i));
        }
        // Postgres prefers an output column named like this over an input column: an
        // unaliased call named like it would be taken instead
        if items.iter().any(|it| {
            it.alias.is_none() && implicit_name(it.expr).as_deref() == Some(name.as_str())
        }) {
            return Err("ORDER BY a name that is both an output and an input column");
        }
        return Ok(None);
    }
    Ok(items.iter().position(|it| it.expr == e))
}

/// The column name Postgres gives an unaliased item, where it is a name a query could
/// order by.
fn implicit_name(e: &Expr) -> Option<String> {
    match e {
        Expr::Identifier(id) => Some(fold(id)),
        Expr::CompoundIdentifier(parts) => parts.last().map(fold),
        Expr::Function(f) => match f.name.0.last() {
            Some(ObjectNamePart::Identifier(id)) => Some(fold(id)),
            _ => None,
        },
        Expr::Cast { expr, .. } | Expr::Nested(expr) => implicit_name(expr),
        _ => None,
    }
}

/// The column holding GROUP BY expression `g`: a position, the same expression as an
/// item, or a hidden column.
fn group_key(g: &Expr, items: &[Item<'_>], b: &mut Builder) -> Result<Col, Refusal> {
    match g {
        Expr::Rollup(_) | Expr::Cube(_) | Expr::GroupingSets(_) => {
            return Err("GROUPING SETS/ROLLUP/CUBE");
        }
        Expr::Value(v) if matches!(v.value, Value::Number(..)) => {
            return match resolve_output(g, items)? {
                Some(i) if items[i].agg.is_none() => Ok(Col::Visible(i)),
                _ => Err("GROUP BY position of an aggregate"),
            };
        }
        Expr::Identifier(id) => {
            // Postgres takes a GROUP BY name as an input column first; an output alias
            // of the same name would be read differently here
            let name = fold(id);
            if items
                .iter()
                .any(|it| it.alias.as_deref() == Some(name.as_str()) && it.expr != g)
            {
                return Err(
                    "GROUP BY an output column name (repeat the expression or use its position)",
                );
            }
        }
        _ => {}
    }
    check_exprs(g)?;
    match items.iter().position(|it| it.expr == g && it.agg.is_none()) {
        Some(i) => Ok(Col::Visible(i)),
        None => Ok(b.hide(g)),
    }
}

/// A HAVING conjunct `expr <op> literal` (either way round), where `expr` is a
/// recombinable aggregate or a group key: the column holding its merged value.
fn condition(e: &Expr, items: &[Item<'_>], b: &mut Builder) -> Result<Condition, Refusal> {
    const SHAPE: &str =
        "HAVING other than AND-ed comparisons of an aggregate or group key with a literal";
    let Expr::BinaryOp { left, op, right } = e else {
        return Err(SHAPE);
    };
    let op = match op {
        BinaryOperator::Eq => CmpOp::Eq,
        BinaryOperator::NotEq => CmpOp::Ne,
        BinaryOperator::Lt => CmpOp::Lt,
        BinaryOperator::LtEq => CmpOp::Le,
        BinaryOperator::Gt => CmpOp::Gt,
        BinaryOperator::GtEq => CmpOp::Ge,
        _ => return Err(SHAPE),
    };
    let literal = |e: &Expr| match e {
        Expr::Value(v) => match &v.value {
            Value::Number(n, false) => Some(n.clone()),
            Value::SingleQuotedString(s) => Some(s.clone()),
            _ => None,
        },
        Expr::UnaryOp {
            op: sqlparser::ast::UnaryOperator::Minus,
            expr,
        } => match expr.as_ref() {
            Expr::Value(v) => match &v.value {
                Value::Number(n, false) => Some(format!("-{n}")),
                _ => None,
            },
            _ => None,
        },
        _ => None,
    };
    let (expr, op, literal) = match (literal(left), literal(right)) {
        (None, Some(l)) => (left.as_ref(), op, l),
        (Some(l), None) => {
            let flipped = match op {
                CmpOp::Lt => CmpOp::Gt,
                CmpOp::Le => CmpOp::Ge,
                CmpOp::Gt => CmpOp::Lt,
                CmpOp::Ge => CmpOp::Le,
                other => other,
            };
            (right.as_ref(), flipped, l)
        }
        _ => return Err(SHAPE),
    };
    let col = match aggregate_of(expr)? {
        Some(agg) => match items.iter().position(|it| it.expr == expr) {
            Some(i) => Col::Visible(i),
            None => {
                let col = b.hide(expr);
                b.aggregate_hidden(col, expr, agg)?;
                col
            }
        },
        None => match items
            .iter()
            .position(|it| it.expr == expr && it.agg.is_none())
        {
            Some(i) => Col::Visible(i),
            None => b.hide(expr),
        },
    };
    Ok(Condition { col, op, literal })
}

/// Whether `e` is explicitly collated "C"/"POSIX" at its top; errors if any other
/// collation is named inside it (the merge compares text bytewise).
fn collation(e: &Expr) -> Result<bool, Refusal> {
    use sqlparser::ast::Visit;
    use std::ops::ControlFlow;
    struct Finder;
    impl sqlparser::ast::Visitor for Finder {
        type Break = ();
        fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
            match expr {
                Expr::Collate { collation, .. } if !is_c(collation) => ControlFlow::Break(()),
                _ => ControlFlow::Continue(()),
            }
        }
    }
    if e.visit(&mut Finder).is_break() {
        return Err("a COLLATE other than \"C\" in ORDER BY, min() or max()");
    }
    Ok(matches!(e, Expr::Collate { collation, .. } if is_c(collation)))
}

fn is_c(name: &ObjectName) -> bool {
    match name.0.last() {
        Some(ObjectNamePart::Identifier(id)) => matches!(id.value.as_str(), "C" | "POSIX"),
        _ => false,
    }
}
