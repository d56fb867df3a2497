//! sqlparser AST → [`Statement`](super::Statement) summaries.

use sqlparser::ast::{ContextModifier, CopySource, Set, SetExpr, Statement as Ast, Visit};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use super::expr::{fold, split_name};
use super::scatter;
use super::walk::Walker;
use super::{
    Analysis, CopySpec, Limitation, Role, Scatter, Statement, StatementKind, TableOccurrence,
};

/// Parse `sql` (Postgres dialect) and summarise each statement.
pub fn analyze(sql: &str) -> Analysis {
    match Parser::parse_sql(&PostgreSqlDialect {}, sql) {
        Ok(statements) => Analysis::Parsed(statements.iter().map(summarise).collect()),
        Err(e) => Analysis::Unparsed {
            error: e.to_string(),
        },
    }
}

/// A summary with no tables.
fn plain(kind: StatementKind, command: &'static str) -> Statement {
    Statement {
        kind,
        command,
        explain: false,
        tables: Vec::new(),
        insert: None,
        assigned_columns: Vec::new(),
        limitation: None,
        cte_names: Vec::new(),
        scatter: Scatter::Blocked(command),
        links: Vec::new(),
        partitionable: Vec::new(),
        copy: None,
    }
}

/// A summary from a finished walk.
fn walked(kind: StatementKind, command: &'static str, w: Walker) -> Statement {
    Statement {
        kind,
        command,
        explain: false,
        tables: w.tables,
        insert: w.insert,
        assigned_columns: w.assigned,
        limitation: w.limitation,
        cte_names: w.ctes,
        scatter: Scatter::Blocked(command),
        links: w.links,
        partitionable: Vec::new(),
        copy: None,
    }
}

/// Tables of a node the walk does not model: every relation, none constrained.
fn relations_of<V: Visit>(kind: StatementKind, command: &'static str, node: &V) -> Statement {
    let mut w = Walker::default();
    w.safety_net(node);
    walked(kind, command, w)
}

fn summarise(st: &Ast) -> Statement {
    use StatementKind as K;
    match st {
        Ast::Query(q) => {
            let mut w = Walker::default();
            w.query(q);
            w.safety_net(q.as_ref());
            let into = matches!(q.body.as_ref(), SetExpr::Select(s) if s.into.is_some());
            if into {
                // SELECT … INTO creates a table: a DDL broadcast that must not read
                // sharded tables (the router checks)
                w.limitation = None;
                walked(K::Ddl, "SELECT INTO", w)
            } else {
                // `WITH … INSERT/UPDATE/DELETE` is a write (refused on sharded tables as a
                // nested write); the session must not take it for a read
                match q.body.as_ref() {
                    SetExpr::Insert(_) => walked(K::Insert, "INSERT", w),
                    SetExpr::Update(_) => walked(K::Update, "UPDATE", w),
                    SetExpr::Delete(_) => walked(K::Delete, "DELETE", w),
                    SetExpr::Merge(_) => walked(K::Other, "MERGE", w),
                    _ => {
                        let mut s = walked(K::Select, "SELECT", w);
                        let partitionable = scatter::partitionable(q);
                        s.scatter = match scatter::query(q) {
                            // belt and braces: the statement reads only its FROM list
                            Scatter::Blocked(c) => Scatter::Blocked(c),
                            _ if s.tables.len() != partitionable.len() => {
                                Scatter::Blocked("subquery")
                            }
                            other => other,
                        };
                        s.partitionable = partitionable;
                        s
                    }
                }
            }
        }
        Ast::Insert(i) => {
            let mut w = Walker::default();
            w.insert(i);
            w.safety_net(i);
            walked(K::Insert, "INSERT", w)
        }
        Ast::Update(u) => {
            let mut w = Walker::default();
            w.update(u);
            w.safety_net(u);
            walked(K::Update, "UPDATE", w)
        }
        Ast::Delete(d) => {
            let mut w = Walker::default();
            w.delete(d);
            w.safety_net(d);
            walked(K::Delete, "DELETE", w)
        }
        Ast::Merge(m) => {
            let mut s = relations_of(K::Other, "MERGE", m);
            s.limitation = Some(Limitation::Merge);
            s
        }
        Ast::Declare { stmts, .. } => {
            let mut w = Walker::default();
            for d in stmts {
                if let Some(q) = &d.for_query {
                    w.query(q);
                }
            }
            w.safety_net(st);
            let mut s = walked(K::Select, "DECLARE", w);
            s.scatter = Scatter::Blocked("DECLARE … CURSOR");
            s
        }
        Ast::Explain { statement, .. } => {
            let mut s = summarise(statement);
            s.explain = true;
            // EXPLAIN output describes one shard's plan: not concatenable
            s.scatter = Scatter::Blocked("EXPLAIN");
            s
        }
        Ast::StartTransaction {
            statements,
            exception,
            ..
        } => {
            if statements.is_empty() && exception.is_none() {
                plain(K::Begin, "BEGIN")
            } else {
                let mut s = relations_of(K::Other, "BEGIN … END block", st);
                s.limitation = Some(Limitation::Opaque("a BEGIN … END block"));
                s
            }
        }
        Ast::Commit { chain, .. } => {
            let mut s = plain(K::Commit, "COMMIT");
            if *chain {
                s.limitation = Some(Limitation::Chain);
            }
            s
        }
        Ast::Rollback { chain, savepoint } => {
            if savepoint.is_some() {
                plain(K::Savepoint, "ROLLBACK TO SAVEPOINT")
            } else {
                let mut s = plain(K::Rollback, "ROLLBACK");
                if *chain {
                    s.limitation = Some(Limitation::Chain);
                }
                s
            }
        }
        Ast::Savepoint { .. } => plain(K::Savepoint, "SAVEPOINT"),
        Ast::ReleaseSavepoint { .. } => plain(K::Savepoint, "RELEASE SAVEPOINT"),
        Ast::Set(set) => plain(
            K::Set {
                local: set_is_local(set),
            },
            "SET",
        ),
        Ast::Reset(_) => plain(K::Set { local: false }, "RESET"),
        Ast::ShowVariable { .. }
        | Ast::ShowVariables { .. }
        | Ast::ShowStatus { .. }
        | Ast::ShowFunctions { .. }
        | Ast::ShowCollation { .. } => plain(K::Show, "SHOW"),
        Ast::Copy {
            source,
            to,
            target,
            options,
            legacy_options,
            ..
        } => {
            let kind = K::Copy { from: !*to };
            let mut spec = copy_spec(target, options, legacy_options);
            let mut s = match source {
                CopySource::Table {
                    table_name,
                    columns,
                } => {
                    let mut s = plain(kind, "COPY");
                    let (schema, name) = split_name(table_name)
                        .unwrap_or((None, table_name.to_string().to_ascii_lowercase()));
                    s.tables.push(TableOccurrence {
                        name,
                        schema,
                        equalities: Vec::new(),
                        key_lists: Vec::new(),
                        key_arrays: Vec::new(),
                        role: if *to { Role::Read } else { Role::Insert },
                    });
                    if !columns.is_empty() {
                        spec.columns = Some(columns.iter().map(fold).collect());
                    }
                    s
                }
                CopySource::Query(q) => {
                    // routed as the SELECT it runs
                    spec.query = true;
                    let mut s = summarise(&Ast::Query(q.clone()));
                    s.kind = kind;
                    s.command = "COPY";
                    s
                }
            };
            s.copy = Some(spec);
            s
        }
        Ast::Prepare { statement, .. } => {
            let inner = summarise(statement);
            Statement {
                kind: K::SqlPrepared,
                command: "PREPARE",
                scatter: Scatter::Blocked("PREPARE"),
                ..inner
            }
        }
        Ast::Execute { .. } => {
            let mut s = plain(K::SqlPrepared, "EXECUTE");
            s.limitation = Some(Limitation::SqlExecute);
            s
        }
        Ast::Deallocate { .. } => plain(K::SqlPrepared, "DEALLOCATE"),
        Ast::CreateTable(ct) => ddl_reading(ct.query.as_deref(), "CREATE TABLE"),
        Ast::CreateView(cv) => ddl_reading(Some(&cv.query), "CREATE VIEW"),
        Ast::CreateVirtualTable { .. }
        | Ast::CreateIndex(_)
        | Ast::CreateRole(_)
        | Ast::CreateServer(_)
        | Ast::CreateForeignTable(_)
        | Ast::CreateForeignDataWrapper(_)
        | Ast::CreateUserMapping(_)
        | Ast::CreatePolicy(_)
        | Ast::CreateRule(_)
        | Ast::CreateOperator(_)
        | Ast::CreateOperatorFamily(_)
        | Ast::CreateOperatorClass(_)
        | Ast::CreateTextSearch(_)
        | Ast::CreateAggregate(_)
        | Ast::AlterTable(_)
        | Ast::AlterSchema(_)
        | Ast::AlterIndex { .. }
        | Ast::AlterView(_)
        | Ast::AlterFunction(_)
        | Ast::AlterType(_)
        | Ast::AlterCollation(_)
        | Ast::AlterOperator(_)
        | Ast::AlterOperatorFamily(_)
        | Ast::AlterOperatorClass(_)
        | Ast::AlterTextSearch(_)
        | Ast::AlterRole { .. }
        | Ast::AlterPolicy(_)
        | Ast::AlterTrigger(_)
        | Ast::Drop { .. }
        | Ast::DropFunction(_)
        | Ast::DropDomain(_)
        | Ast::DropProcedure { .. }
        | Ast::DropPolicy(_)
        | Ast::DropRule(_)
        | Ast::CreateExtension(_)
        | Ast::CreateCollation(_)
        | Ast::DropExtension(_)
        | Ast::DropOperator(_)
        | Ast::DropOperatorFamily(_)
        | Ast::DropOperatorClass(_)
        | Ast::Comment { .. }
        | Ast::CreateSchema { .. }
        | Ast::CreateDatabase { .. }
        | Ast::CreateFunction(_)
        | Ast::CreateTrigger(_)
        | Ast::DropTrigger(_)
        | Ast::CreateProcedure { .. }
        | Ast::Grant(_)
        | Ast::Revoke(_)
        | Ast::GrantRole(_)
        | Ast::RevokeRole(_)
        | Ast::AlterDefaultPrivileges(_)
        | Ast::CreateSequence { .. }
        | Ast::CreateDomain(_)
        | Ast::CreateType { .. }
        | Ast::Truncate(_)
        | Ast::RenameTable(_)
        | Ast::CreateUser(_)
        | Ast::AlterUser(_)
        | Ast::RefreshMaterializedView(_) => plain(K::Ddl, "DDL"),
        Ast::Vacuum(v) => {
            let mut s = plain(K::Other, "VACUUM");
            if let Some(name) = &v.table_name {
                push_name(&mut s, name);
            }
            s
        }
        Ast::Analyze(a) => relations_of(K::Other, "ANALYZE", a),
        Ast::Lock(l) => {
            let mut s = plain(K::Other, "LOCK TABLE");
            for t in &l.tables {
                push_name(&mut s, &t.name);
            }
            s
        }
        Ast::Discard { .. } => plain(K::Other, "DISCARD"),
        Ast::LISTEN { .. } => plain(K::Other, "LISTEN"),
        Ast::UNLISTEN { .. } => plain(K::Other, "UNLISTEN"),
        Ast::NOTIFY { .. } => plain(K::Other, "NOTIFY"),
        Ast::Fetch { .. } => plain(K::Other, "FETCH"),
        Ast::Close { .. } => plain(K::Other, "CLOSE"),
        Ast::Call(f) => relations_of(K::Other, "CALL", f),
        other => relations_of(K::Other, "statement", other),
    }
}

/// DDL that may embed a query (`CREATE TABLE … AS`, `CREATE VIEW … AS`): the query's
/// tables are recorded so the router can refuse a broadcast that reads sharded data.
fn ddl_reading(query: Option<&sqlparser::ast::Query>, command: &'static str) -> Statement {
    let mut w = Walker::default();
    if let Some(q) = query {
        w.query(q);
        w.safety_net(q);
    }
    w.limitation = None;
    walked(StatementKind::Ddl, command, w)
}

fn push_name(s: &mut Statement, name: &sqlparser::ast::ObjectName) {
    let (schema, table) = split_name(name).unwrap_or((None, name.to_string().to_ascii_lowercase()));
    s.tables.push(TableOccurrence {
        name: table,
        schema,
        equalities: Vec::new(),
        key_lists: Vec::new(),
        key_arrays: Vec::new(),
        role: Role::Read,
    });
}

/// `SET LOCAL …`, `SET LOCAL TIME ZONE`, `SET LOCAL ROLE`, `SET TRANSACTION …` last until
/// the end of the transaction.
fn set_is_local(set: &Set) -> bool {
    match set {
        Set::SingleAssignment { scope, .. } => matches!(scope, Some(ContextModifier::Local)),
        Set::SetRole {
            context_modifier, ..
        } => matches!(context_modifier, Some(ContextModifier::Local)),
        Set::SetTimeZone { local, .. } => *local,
        Set::SetTransaction { session, .. } => !*session,
        _ => false,
    }
}

/// The options of a COPY, new (`WITH (FORMAT csv, …)`) and old (`CSV HEADER`) syntax.
fn copy_spec(
    target: &sqlparser::ast::CopyTarget,
    options: &[sqlparser::ast::CopyOption],
    legacy: &[sqlparser::ast::CopyLegacyOption],
) -> CopySpec {
    use sqlparser::ast::{CopyLegacyCsvOption as Csv, CopyLegacyOption as L, CopyOption as O};
    let mut spec = CopySpec {
        stdio: matches!(
            target,
            sqlparser::ast::CopyTarget::Stdin | sqlparser::ast::CopyTarget::Stdout
        ),
        ..CopySpec::default()
    };
    let other = |spec: &mut CopySpec, what: String| {
        spec.other.get_or_insert(what);
    };
    for o in options {
        match o {
            O::Format(f) => spec.format = Some(f.value.to_ascii_lowercase()),
            O::Delimiter(c) => spec.delimiter = Some(*c),
            O::Null(n) => spec.null = Some(n.clone()),
            O::Header(h) => spec.header = *h,
            O::Quote(c) => spec.quote = Some(*c),
            O::Escape(c) => spec.escape = Some(*c),
            O::Encoding(e) => spec.encoding = Some(e.clone()),
            O::ForceNotNull(cols) => spec.force_not_null.extend(cols.iter().map(fold)),
            O::ForceNull(cols) => spec.force_null.extend(cols.iter().map(fold)),
            // output-only or harmless for splitting
            O::ForceQuote(_) | O::Freeze(_) => {}
        }
    }
    for o in legacy {
        match o {
            L::Binary => spec.format = Some("binary".to_owned()),
            L::Delimiter(c) => spec.delimiter = Some(*c),
            L::Null(n) => spec.null = Some(n.clone()),
            L::Csv(csv) => {
                spec.format = Some("csv".to_owned());
                for c in csv {
                    match c {
                        Csv::Header => spec.header = true,
                        Csv::Quote(q) => spec.quote = Some(*q),
                        Csv::Escape(e) => spec.escape = Some(*e),
                        Csv::ForceNotNull(cols) => {
                            spec.force_not_null.extend(cols.iter().map(fold))
                        }
                        Csv::ForceQuote(_) => {}
                    }
                }
            }
            other_option => other(&mut spec, other_option.to_string()),
        }
    }
    spec
}
