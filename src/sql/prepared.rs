//! SQL-level `PREPARE name [(types)] AS statement`, `EXECUTE name(args)` and
//! `DEALLOCATE`: parsed here (the session keeps the statements per client, under
//! transaction pooling, and prepares them lazily on each connection under a name
//! derived from their text).

use sqlparser::ast::{Expr, ObjectNamePart, Statement as Ast};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use super::ValueExpr;
use super::expr::{fold, value};

/// One of the three commands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SqlPrepared {
    /// `PREPARE name [(types)] AS body`
    Prepare {
        /// statement name (folded)
        name: String,
        /// declared parameter types as written (`bigint`, `text`…)
        types: Vec<String>,
        /// the statement, as text
        body: String,
    },
    /// `EXECUTE name [(args)]`
    Execute {
        /// statement name (folded)
        name: String,
        /// each argument: its value when it is a literal (or NULL), else None
        args: Vec<Option<ValueExpr>>,
        /// the arguments as text, to send on
        args_text: Vec<String>,
    },
    /// `DEALLOCATE [PREPARE] name | ALL`
    Deallocate {
        /// statement name (folded), None for ALL
        name: Option<String>,
    },
}

/// Parse one PREPARE/EXECUTE/DEALLOCATE statement.
pub fn parse(sql: &str) -> Option<SqlPrepared> {
    let mut stmts = Parser::parse_sql(&PostgreSqlDialect {}, sql).ok()?;
    if stmts.len() != 1 {
        return None;
    }
    match stmts.pop()? {
        Ast::Prepare {
            name,
            data_types,
            statement,
        } => Some(SqlPrepared::Prepare {
            name: fold(&name),
            types: data_types.iter().map(|t| t.to_string()).collect(),
            body: statement.to_string(),
        }),
        Ast::Execute {
            name: Some(name),
            parameters,
            immediate: false,
            into,
            using,
            ..
        } if into.is_empty() && using.is_empty() => {
            let [ObjectNamePart::Identifier(id)] = name.0.as_slice() else {
                return None;
            };
            Some(SqlPrepared::Execute {
                name: fold(id),
                args: parameters.iter().map(argument).collect(),
                args_text: parameters.iter().map(|e| e.to_string()).collect(),
            })
        }
        Ast::Deallocate { name, .. } => Some(SqlPrepared::Deallocate {
            name: match fold(&name).as_str() {
                "all" if name.quote_style.is_none() => None,
                other => Some(other.to_owned()),
            },
        }),
        _ => None,
    }
}

/// The value of an EXECUTE argument, when it is one pgshard can route by.
fn argument(e: &Expr) -> Option<ValueExpr> {
    match value(e)? {
        ValueExpr::Param(..) => None,
        v => Some(v),
    }
}

/// The type OID of a declared parameter type, for the routing checks (a type the key
/// types do not convert like: `numeric`, so such a value is never hashed as a key).
pub fn type_oid(name: &str) -> u32 {
    match name.trim().to_ascii_lowercase().as_str() {
        "smallint" | "int2" => 21,
        "integer" | "int" | "int4" => 23,
        "bigint" | "int8" => 20,
        "text" => 25,
        "varchar" | "character varying" => 1043,
        "uuid" => 2950,
        _ => 1700,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::ValueType;

    #[test]
    fn the_three_commands() {
        assert_eq!(
            parse("PREPARE Q1 (bigint, text) AS SELECT * FROM t WHERE k = $1 AND v = $2"),
            Some(SqlPrepared::Prepare {
                name: "q1".into(),
                types: vec!["BIGINT".into(), "TEXT".into()],
                body: "SELECT * FROM t WHERE k = $1 AND v = $2".into(),
            })
        );
        assert_eq!(
            parse("EXECUTE q1(5, 'x', now())"),
            Some(SqlPrepared::Execute {
                name: "q1".into(),
                args: vec![
                    Some(ValueExpr::Literal("5".into(), ValueType::Integer)),
                    Some(ValueExpr::Literal("x".into(), ValueType::Unknown)),
                    None
                ],
                args_text: vec!["5".into(), "'x'".into(), "now()".into()],
            })
        );
        assert_eq!(
            parse("EXECUTE q2"),
            Some(SqlPrepared::Execute {
                name: "q2".into(),
                args: vec![],
                args_text: vec![]
            })
        );
        assert_eq!(
            parse("DEALLOCATE PREPARE q1"),
            Some(SqlPrepared::Deallocate {
                name: Some("q1".into())
            })
        );
        assert_eq!(
            parse("DEALLOCATE ALL"),
            Some(SqlPrepared::Deallocate { name: None })
        );
        assert_eq!(parse("SELECT 1"), None);
        assert_eq!(type_oid("BIGINT"), 20);
        assert_eq!(type_oid("numeric(10,2)"), 1700);
    }
}
