//! Walk a statement's query blocks, recording every table occurrence and the
//! `column = value` equalities (and `column IN (v1, …)` lists) that constrain *all* rows
//! each occurrence contributes.
//!
//! A query block is one SELECT (or UPDATE / DELETE) with its FROM list. An equality
//! counts for an occurrence only when it is a top-level conjunct of the block's WHERE or
//! of an inner join's ON, and its column reference resolves to that occurrence.
//! Everything else (OR, NOT, outer-join ON, HAVING, merged `USING` columns, renamed
//! columns) is ignored, which can only make the router refuse more.
//!
//! A safety net compares the occurrences found here with every relation sqlparser's
//! visitor sees; any the walk did not reach is added without equalities.

use std::ops::{ControlFlow, Range};

use sqlparser::ast::{
    Assignment, AssignmentTarget, Delete, Expr, FromTable, Insert, JoinConstraint, JoinOperator,
    ObjectName, OnConflictAction, OnInsert, Query, Select, SetExpr, Statement as Ast, TableAlias,
    TableFactor, TableObject, TableWithJoins, Update, UpdateTableFromKind, Visit, Visitor,
};

use super::expr::{
    AnyArray, ColumnRef, any_array, column_ref, conjuncts, equality, fold, in_list,
    key_disjunction, split_name,
};
use super::{InsertValues, KeyArray, KeyLink, Limitation, Role, TableOccurrence, ValueExpr};

/// Collected facts of one statement.
#[derive(Default)]
pub(crate) struct Walker {
    /// occurrences, in the order met
    pub tables: Vec<TableOccurrence>,
    /// INSERT … VALUES of the top-level INSERT
    pub insert: Option<InsertValues>,
    /// SET targets of the top-level UPDATE / ON CONFLICT DO UPDATE
    pub assigned: Vec<String>,
    /// first construct that must not be routed by key
    pub limitation: Option<Limitation>,
    /// names defined by WITH: references to them are not tables
    pub ctes: Vec<String>,
    /// column equalities between occurrences of one block
    pub links: Vec<KeyLink>,
}

/// What a conjunct says about a column.
enum Fact {
    /// `column = value`
    Equal(ValueExpr),
    /// `column IN (values)`
    OneOf(Vec<ValueExpr>),
    /// `column = ANY(array)`
    InArray(KeyArray),
}

/// A conjunct of a block: the entries its column references may name (`visible`), and
/// those whose rows it constrains (`targets`, a subrange: the nullable side of an outer
/// join's ON, else all of `visible`).
struct Conjunct<'a> {
    expr: &'a Expr,
    visible: Range<usize>,
    targets: Range<usize>,
}

/// A name visible in a block's FROM clause.
struct Entry {
    /// the table occurrence, if the entry is a plain table
    occ: Option<usize>,
    /// alias, or the table name when there is no alias
    qualifier: Option<String>,
    /// schema, when the table is named `schema.table` without alias
    schema: Option<String>,
    /// column names are the table's own (no column aliases, not hidden by a join alias)
    attributable: bool,
}

/// The FROM namespace of one query block and its candidate conjuncts.
#[derive(Default)]
struct Block<'a> {
    entries: Vec<Entry>,
    /// conjuncts, each with the entries its column references may resolve to
    conjuncts: Vec<Conjunct<'a>>,
    /// a USING / NATURAL join merges columns: unqualified references are not attributed
    merged: bool,
    /// a join form the walk does not model: attribute nothing in this block
    unsure: bool,
}

impl Walker {
    fn limit(&mut self, l: Limitation) {
        if self.limitation.is_none() {
            self.limitation = Some(l);
        }
    }

    /// Walk every query nested in `node` (subqueries in expressions), each as its own block.
    pub(crate) fn subqueries<V: Visit>(&mut self, node: &V) {
        struct Finder<'w> {
            walker: &'w mut Walker,
            depth: usize,
        }
        impl Visitor for Finder<'_> {
            type Break = ();
            fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
                if self.depth == 0 {
                    self.walker.query(query);
                }
                self.depth += 1;
                ControlFlow::Continue(())
            }
            fn post_visit_query(&mut self, _query: &Query) -> ControlFlow<()> {
                self.depth -= 1;
                ControlFlow::Continue(())
            }
        }
        let _ = node.visit(&mut Finder {
            walker: self,
            depth: 0,
        });
    }

    /// Add, without equalities, every relation of `node` that the walk did not record.
    pub(crate) fn safety_net<V: Visit>(&mut self, node: &V) {
        let mut seen: Vec<(Option<String>, String)> = Vec::new();
        let _ = sqlparser::ast::visit_relations(node, |name| {
            match split_name(name) {
                Some(n) => seen.push(n),
                // a name we cannot fold: record its text so a sharded name still shows
                None => seen.push((None, name.to_string().to_ascii_lowercase())),
            }
            ControlFlow::<()>::Continue(())
        });
        let mut recorded: Vec<&str> = self.tables.iter().map(|t| t.name.as_str()).collect();
        let mut missing = Vec::new();
        for (schema, name) in seen {
            if let Some(i) = recorded.iter().position(|r| *r == name) {
                recorded.swap_remove(i);
            } else {
                missing.push(TableOccurrence {
                    name,
                    schema,
                    equalities: Vec::new(),
                    key_lists: Vec::new(),
                    key_arrays: Vec::new(),
                    role: Role::Read,
                });
            }
        }
        self.tables.extend(missing);
    }

    /// A full query: CTEs, body, ORDER BY / LIMIT.
    pub(crate) fn query(&mut self, q: &Query) {
        if let Some(with) = &q.with {
            for cte in &with.cte_tables {
                self.ctes.push(fold(&cte.alias.name));
                self.query(&cte.query);
            }
        }
        self.set_expr(&q.body);
        self.subqueries(&q.order_by);
        self.subqueries(&q.limit_clause);
        self.subqueries(&q.fetch);
    }

    fn set_expr(&mut self, s: &SetExpr) {
        match s {
            SetExpr::Select(sel) => self.select(sel),
            SetExpr::Query(q) => self.query(q),
            SetExpr::SetOperation { left, right, .. } => {
                self.set_expr(left);
                self.set_expr(right);
            }
            SetExpr::Values(v) => self.subqueries(v),
            SetExpr::Insert(st)
            | SetExpr::Update(st)
            | SetExpr::Delete(st)
            | SetExpr::Merge(st) => {
                self.limit(Limitation::NestedWrite);
                self.nested_statement(st);
            }
            SetExpr::Table(t) => {
                // `TABLE name` scans the whole table; sqlparser's visitor does not report
                // it as a relation, so record it here
                self.limit(Limitation::Opaque("TABLE <name> inside a query"));
                self.tables.push(TableOccurrence {
                    name: t.table_name.as_ref().map_or_else(String::new, fold),
                    schema: t.schema_name.as_ref().map(fold),
                    equalities: Vec::new(),
                    key_lists: Vec::new(),
                    key_arrays: Vec::new(),
                    role: Role::Read,
                });
            }
        }
    }

    /// A data-modifying statement inside a query: tables are recorded, nothing else.
    fn nested_statement(&mut self, st: &Ast) {
        let (insert, assigned) = (self.insert.take(), std::mem::take(&mut self.assigned));
        match st {
            Ast::Insert(i) => self.insert(i),
            Ast::Update(u) => self.update(u),
            Ast::Delete(d) => self.delete(d),
            other => self.subqueries(other),
        }
        self.insert = insert;
        self.assigned = assigned;
    }

    fn select(&mut self, s: &Select) {
        let mut block = Block::default();
        for twj in &s.from {
            self.table_with_joins(twj, &mut block);
        }
        if let Some(w) = &s.selection {
            block.add_where(w);
            self.subqueries(w);
        }
        if s.into.is_some() {
            self.limit(Limitation::Opaque("SELECT … INTO"));
        }
        if !s.lateral_views.is_empty() || s.prewhere.is_some() || !s.connect_by.is_empty() {
            block.unsure = true;
        }
        self.subqueries(&s.projection);
        self.subqueries(&s.group_by);
        self.subqueries(&s.having);
        self.subqueries(&s.qualify);
        self.subqueries(&s.named_window);
        self.subqueries(&s.sort_by);
        self.subqueries(&s.cluster_by);
        self.subqueries(&s.distribute_by);
        self.subqueries(&s.distinct);
        self.apply(&block);
    }

    fn table_with_joins<'a>(&mut self, twj: &'a TableWithJoins, block: &mut Block<'a>) {
        let start = block.entries.len();
        self.table_factor(&twj.relation, block);
        for join in &twj.joins {
            let right_start = block.entries.len();
            self.table_factor(&join.relation, block);
            let range = start..block.entries.len();
            // which entries the ON clause constrains: both sides of an inner join; only
            // the nullable side of an outer join (the kept side's rows appear whether the
            // condition holds or not)
            let (constraint, targets) = match &join.join_operator {
                JoinOperator::Join(c)
                | JoinOperator::Inner(c)
                | JoinOperator::CrossJoin(c)
                | JoinOperator::StraightJoin(c) => (c, Some(range.clone())),
                JoinOperator::Left(c) | JoinOperator::LeftOuter(c) => {
                    (c, Some(right_start..range.end))
                }
                JoinOperator::Right(c) | JoinOperator::RightOuter(c) => {
                    (c, Some(range.start..right_start))
                }
                JoinOperator::FullOuter(c) => (c, None),
                other => {
                    block.unsure = true;
                    self.subqueries(other);
                    continue;
                }
            };
            match constraint {
                JoinConstraint::On(e) => {
                    if let Some(targets) = targets {
                        let mut parts = Vec::new();
                        conjuncts(e, &mut parts);
                        block.conjuncts.extend(parts.into_iter().map(|p| Conjunct {
                            expr: p,
                            visible: range.clone(),
                            targets: targets.clone(),
                        }));
                    }
                    self.subqueries(e);
                }
                JoinConstraint::Using(_)
                | JoinConstraint::UsingAlias(..)
                | JoinConstraint::Natural => block.merged = true,
                JoinConstraint::None => {}
            }
        }
    }

    fn table_factor<'a>(&mut self, tf: &'a TableFactor, block: &mut Block<'a>) {
        match tf {
            TableFactor::Table {
                name, alias, args, ..
            } => {
                let Some((schema, table)) = split_name(name) else {
                    // the safety net records it without equalities
                    return;
                };
                let occ = self.tables.len();
                self.tables.push(TableOccurrence {
                    name: table.clone(),
                    schema: schema.clone(),
                    equalities: Vec::new(),
                    key_lists: Vec::new(),
                    key_arrays: Vec::new(),
                    role: Role::Read,
                });
                if let Some(args) = args {
                    self.subqueries(args);
                }
                let renamed = alias.as_ref().is_some_and(|a| !a.columns.is_empty());
                block.entries.push(Entry {
                    occ: Some(occ),
                    qualifier: Some(alias.as_ref().map_or(table, |a| fold(&a.name))),
                    schema: if alias.is_none() { schema } else { None },
                    attributable: !renamed && args.is_none(),
                });
            }
            TableFactor::Derived {
                subquery, alias, ..
            } => {
                self.query(subquery);
                block.entries.push(Entry::opaque(alias.as_ref()));
            }
            TableFactor::NestedJoin {
                table_with_joins,
                alias,
            } => {
                let start = block.entries.len();
                self.table_with_joins(table_with_joins, block);
                if alias.is_some() {
                    for e in &mut block.entries[start..] {
                        e.attributable = false;
                        e.qualifier = None;
                    }
                    block.entries.push(Entry::opaque(alias.as_ref()));
                }
            }
            other => {
                self.subqueries(other);
                block.entries.push(Entry::opaque(None));
            }
        }
    }

    /// Attribute the block's equalities and key lists to the occurrences they constrain,
    /// and record the column equalities between its occurrences.
    fn apply(&mut self, block: &Block<'_>) {
        if block.unsure {
            return;
        }
        for conj in &block.conjuncts {
            if let Some((a, b)) = column_pair(conj.expr) {
                self.link(block, conj, &a, &b);
                continue;
            }
            let (col, fact) = if let Some((col, value)) = equality(conj.expr) {
                (col, Fact::Equal(value))
            } else if let Some((col, values)) = in_list(conj.expr) {
                (col, Fact::OneOf(values))
            } else if let Some((col, values)) = key_disjunction(conj.expr) {
                (col, Fact::OneOf(values))
            } else if let Some((col, array)) = any_array(conj.expr) {
                match array {
                    AnyArray::Values(values) => (col, Fact::OneOf(values)),
                    AnyArray::Whole(array) => (col, Fact::InArray(array)),
                }
            } else {
                continue;
            };
            let targets: Vec<usize> = match &col.qualifier {
                Some(_) => match resolve(block, conj, &col) {
                    Some(i) if conj.targets.contains(&i) => {
                        block.entries[i].occ.into_iter().collect()
                    }
                    _ => Vec::new(),
                },
                None if block.merged => Vec::new(),
                None => block.entries[conj.targets.clone()]
                    .iter()
                    .filter(|e| e.attributable)
                    .filter_map(|e| e.occ)
                    .collect(),
            };
            for occ in targets {
                let t = &mut self.tables[occ];
                match &fact {
                    Fact::Equal(v) => t.equalities.push((col.column.clone(), v.clone())),
                    Fact::OneOf(vs) => t.key_lists.push((col.column.clone(), vs.clone())),
                    Fact::InArray(a) => t.key_arrays.push((col.column.clone(), a.clone())),
                }
            }
        }
    }

    /// Record `a = b` between two qualified columns of distinct occurrences, in each
    /// direction whose receiving side the conjunct constrains.
    fn link(&mut self, block: &Block<'_>, conj: &Conjunct<'_>, a: &ColumnRef, b: &ColumnRef) {
        let (Some(ea), Some(eb)) = (resolve(block, conj, a), resolve(block, conj, b)) else {
            return;
        };
        let (Some(oa), Some(ob)) = (block.entries[ea].occ, block.entries[eb].occ) else {
            return;
        };
        if oa == ob {
            return;
        }
        for (from, from_col, to_entry, to, to_col) in [(oa, a, eb, ob, b), (ob, b, ea, oa, a)] {
            if conj.targets.contains(&to_entry) {
                self.links.push(KeyLink {
                    from,
                    from_column: from_col.column.clone(),
                    to,
                    to_column: to_col.column.clone(),
                });
            }
        }
    }

    /// `UPDATE target [FROM …] SET … WHERE …`
    pub(crate) fn update(&mut self, u: &Update) {
        let mut block = Block::default();
        let target = self.tables.len();
        if !matches!(u.table.relation, TableFactor::Table { .. }) {
            self.limit(Limitation::Opaque("UPDATE of something other than a table"));
        }
        self.table_with_joins(&u.table, &mut block);
        if !u.table.joins.is_empty() {
            self.limit(Limitation::Opaque("UPDATE of a join"));
        }
        if let Some(t) = self.tables.get_mut(target) {
            t.role = Role::Write;
        }
        if let Some(UpdateTableFromKind::BeforeSet(from) | UpdateTableFromKind::AfterSet(from)) =
            &u.from
        {
            for twj in from {
                self.table_with_joins(twj, &mut block);
            }
        }
        if let Some(w) = &u.selection {
            block.add_where(w);
            self.subqueries(w);
        }
        self.assignments(&u.assignments);
        self.subqueries(&u.returning);
        self.subqueries(&u.limit);
        self.subqueries(&u.order_by);
        self.apply(&block);
    }

    /// `DELETE FROM target [USING …] WHERE …`
    pub(crate) fn delete(&mut self, d: &Delete) {
        let mut block = Block::default();
        let from = match &d.from {
            FromTable::WithFromKeyword(f) | FromTable::WithoutKeyword(f) => f,
        };
        if from.len() != 1
            || !d.tables.is_empty()
            || from
                .iter()
                .any(|f| !f.joins.is_empty() || !matches!(f.relation, TableFactor::Table { .. }))
        {
            self.limit(Limitation::Opaque("multi-table DELETE"));
        }
        let target = self.tables.len();
        for twj in from {
            self.table_with_joins(twj, &mut block);
        }
        if let Some(t) = self.tables.get_mut(target) {
            t.role = Role::Write;
        }
        for twj in d.using.iter().flatten() {
            self.table_with_joins(twj, &mut block);
        }
        if let Some(w) = &d.selection {
            block.add_where(w);
            self.subqueries(w);
        }
        self.subqueries(&d.returning);
        self.subqueries(&d.limit);
        self.subqueries(&d.order_by);
        self.apply(&block);
    }

    /// `INSERT INTO target [(cols)] VALUES … | SELECT … | DEFAULT VALUES [ON CONFLICT …]`
    pub(crate) fn insert(&mut self, i: &Insert) {
        let TableObject::TableName(name) = &i.table else {
            self.limit(Limitation::Opaque("INSERT into a table function"));
            self.subqueries(&i.table);
            return;
        };
        let Some((schema, table)) = split_name(name) else {
            self.limit(Limitation::Opaque("INSERT into an unusual table name"));
            return;
        };
        self.tables.push(TableOccurrence {
            name: table.clone(),
            schema,
            equalities: Vec::new(),
            key_lists: Vec::new(),
            key_arrays: Vec::new(),
            role: Role::Insert,
        });
        if !i.assignments.is_empty() || i.partitioned.is_some() {
            self.limit(Limitation::Opaque("INSERT … SET"));
        }
        let columns = if i.columns.is_empty() {
            None
        } else {
            let mut cols = Vec::with_capacity(i.columns.len());
            for c in &i.columns {
                match split_name(c) {
                    // `INSERT INTO t (a.b)` assigns a field of a composite column
                    Some((None, col)) => cols.push(col),
                    _ => {
                        self.limit(Limitation::Opaque("INSERT into a composite field"));
                        return;
                    }
                }
            }
            Some(cols)
        };
        match &i.source {
            None => {
                self.insert = Some(InsertValues {
                    table,
                    columns: Some(Vec::new()),
                    rows: vec![Vec::new()],
                    skips_rows: false,
                    returning: false,
                });
            }
            Some(q) => match (q.body.as_ref(), &q.with, &q.order_by, &q.limit_clause) {
                (SetExpr::Values(values), None, None, None) => {
                    let rows = values
                        .rows
                        .iter()
                        .map(|row| row.iter().map(super::expr::value).collect())
                        .collect();
                    self.subqueries(values);
                    self.insert = Some(InsertValues {
                        table,
                        columns,
                        rows,
                        skips_rows: false,
                        returning: false,
                    });
                }
                _ => {
                    self.limit(Limitation::InsertSelect);
                    self.query(q);
                }
            },
        }
        match &i.on {
            Some(OnInsert::OnConflict(c)) => {
                self.subqueries(&c.conflict_target);
                if let OnConflictAction::DoUpdate(u) = &c.action {
                    self.assignments(&u.assignments);
                    self.subqueries(&u.selection);
                }
            }
            Some(OnInsert::DuplicateKeyUpdate(a)) => self.assignments(a),
            None => {}
            Some(other) => {
                self.limit(Limitation::Opaque("INSERT with an unusual ON clause"));
                self.subqueries(other);
            }
        }
        self.subqueries(&i.returning);
        if let Some(ins) = &mut self.insert {
            ins.returning = i.returning.is_some();
            ins.skips_rows = matches!(
                &i.on,
                Some(OnInsert::OnConflict(c)) if matches!(c.action, OnConflictAction::DoNothing)
            );
        }
    }

    fn assignments(&mut self, assignments: &[Assignment]) {
        for a in assignments {
            match &a.target {
                AssignmentTarget::ColumnName(n) => self.assigned_column(n),
                AssignmentTarget::Tuple(ns) => ns.iter().for_each(|n| self.assigned_column(n)),
            }
            self.subqueries(&a.value);
        }
    }

    fn assigned_column(&mut self, name: &ObjectName) {
        // `SET col = …` or `SET col.field = …`: the first part is the column
        match name.0.first().and_then(|p| p.as_ident()) {
            Some(id) => self.assigned.push(fold(id)),
            None => self.limit(Limitation::Opaque("UPDATE of an unusual column name")),
        }
    }
}

impl Entry {
    /// A FROM item that is not a plain table (derived table, function, aliased join).
    fn opaque(alias: Option<&TableAlias>) -> Entry {
        Entry {
            occ: None,
            qualifier: alias.map(|a| fold(&a.name)),
            schema: None,
            attributable: false,
        }
    }
}

impl<'a> Block<'a> {
    fn add_where(&mut self, w: &'a Expr) {
        let mut parts = Vec::new();
        conjuncts(w, &mut parts);
        let all = 0..self.entries.len();
        self.conjuncts.extend(parts.into_iter().map(|p| Conjunct {
            expr: p,
            visible: all.clone(),
            targets: all.clone(),
        }));
    }
}

/// The entry a qualified column reference names among the conjunct's visible entries:
/// exactly one match, a plain table whose columns are its own. Unqualified references
/// give None.
fn resolve(block: &Block<'_>, conj: &Conjunct<'_>, col: &ColumnRef) -> Option<usize> {
    let q = col.qualifier.as_deref()?;
    let mut hits = conj.visible.clone().filter(|&i| {
        let e = &block.entries[i];
        e.qualifier.as_deref() == Some(q) && (col.schema.is_none() || e.schema == col.schema)
    });
    match (hits.next(), hits.next()) {
        (Some(i), None) if block.entries[i].occ.is_some() && block.entries[i].attributable => {
            Some(i)
        }
        _ => None,
    }
}

/// `a.x = b.y`: two column references compared by `=`.
fn column_pair(expr: &Expr) -> Option<(ColumnRef, ColumnRef)> {
    match expr {
        Expr::BinaryOp {
            left,
            op: sqlparser::ast::BinaryOperator::Eq,
            right,
        } => Some((column_ref(left)?, column_ref(right)?)),
        Expr::Nested(inner) => column_pair(inner),
        _ => None,
    }
}
