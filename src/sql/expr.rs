//! Small expression helpers: identifier folding, `column = value` recognition, and the
//! literal forms a key value may take.

use sqlparser::ast::{
    ArrayElemTypeDef, BinaryOperator, CastKind, DataType, Expr, Ident, InTarget, ObjectName,
    UnaryOperator, Value,
};

use super::{KeyArray, ValueExpr, ValueType};

/// Fold an identifier like Postgres: unquoted → ASCII lower case, quoted → as written.
pub(crate) fn fold(ident: &Ident) -> String {
    if ident.quote_style.is_some() {
        ident.value.clone()
    } else {
        ident.value.to_ascii_lowercase()
    }
}

/// `(schema, name)` of an object name, folded; None for names that are not plain
/// identifiers.
pub(crate) fn split_name(name: &ObjectName) -> Option<(Option<String>, String)> {
    let mut parts = name.0.iter().rev();
    let last = fold(parts.next()?.as_ident()?);
    let schema = match parts.next() {
        Some(p) => Some(fold(p.as_ident()?)),
        None => None,
    };
    Some((schema, last))
}

/// A column reference: optional qualifier (`a`, or `schema.table`) and the column.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ColumnRef {
    /// schema part of a three-part reference `schema.table.column`
    pub schema: Option<String>,
    /// table name or alias
    pub qualifier: Option<String>,
    /// column name
    pub column: String,
}

/// A plain column reference (no casts, no functions).
pub(crate) fn column_ref(expr: &Expr) -> Option<ColumnRef> {
    match expr {
        Expr::Identifier(id) => Some(ColumnRef {
            schema: None,
            qualifier: None,
            column: fold(id),
        }),
        Expr::CompoundIdentifier(parts) => match parts.as_slice() {
            [t, c] => Some(ColumnRef {
                schema: None,
                qualifier: Some(fold(t)),
                column: fold(c),
            }),
            [s, t, c] => Some(ColumnRef {
                schema: Some(fold(s)),
                qualifier: Some(fold(t)),
                column: fold(c),
            }),
            _ => None,
        },
        Expr::Nested(inner) => column_ref(inner),
        _ => None,
    }
}

/// Split a boolean expression into its top-level AND-ed conjuncts.
pub(crate) fn conjuncts<'a>(expr: &'a Expr, out: &mut Vec<&'a Expr>) {
    match expr {
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            conjuncts(left, out);
            conjuncts(right, out);
        }
        Expr::Nested(inner) => conjuncts(inner, out),
        other => out.push(other),
    }
}

/// `column = value` / `value = column` / `column IN (value)`.
pub(crate) fn equality(expr: &Expr) -> Option<(ColumnRef, ValueExpr)> {
    match expr {
        Expr::BinaryOp {
            left,
            op: BinaryOperator::Eq,
            right,
        } => {
            if let (Some(c), Some(v)) = (column_ref(left), value(right)) {
                return Some((c, v));
            }
            if let (Some(v), Some(c)) = (value(left), column_ref(right)) {
                return Some((c, v));
            }
            None
        }
        Expr::In {
            expr,
            target: InTarget::List(list),
            negated: false,
            global: false,
        } if list.len() == 1 => Some((column_ref(expr)?, value(&list[0])?)),
        Expr::Nested(inner) => equality(inner),
        _ => None,
    }
}

/// `column IN (v1, …, vn)` (not negated) where every element is a value as
/// [`value`] reads it; one unreadable element drops the whole list.
pub(crate) fn in_list(expr: &Expr) -> Option<(ColumnRef, Vec<ValueExpr>)> {
    match expr {
        Expr::In {
            expr,
            target: InTarget::List(list),
            negated: false,
            global: false,
        } if !list.is_empty() => {
            let column = column_ref(expr)?;
            let values = list.iter().map(value).collect::<Option<Vec<_>>>()?;
            Some((column, values))
        }
        Expr::Nested(inner) => in_list(inner),
        _ => None,
    }
}

/// `column = value OR column IN (…) OR …`: every disjunct an equality or IN list (as
/// [`equality`] and [`in_list`] read them) on the same column reference. Every row that
/// satisfies it has `column` equal to one of the values, as for `column IN (all values)`.
pub(crate) fn key_disjunction(expr: &Expr) -> Option<(ColumnRef, Vec<ValueExpr>)> {
    fn disjuncts<'a>(expr: &'a Expr, out: &mut Vec<&'a Expr>) {
        match expr {
            Expr::BinaryOp {
                left,
                op: BinaryOperator::Or,
                right,
            } => {
                disjuncts(left, out);
                disjuncts(right, out);
            }
            Expr::Nested(inner) => disjuncts(inner, out),
            other => out.push(other),
        }
    }
    let mut parts = Vec::new();
    disjuncts(expr, &mut parts);
    if parts.len() < 2 {
        return None;
    }
    let mut column: Option<ColumnRef> = None;
    let mut values = Vec::new();
    for part in parts {
        let (c, vs) = match equality(part) {
            Some((c, v)) => (c, vec![v]),
            None => in_list(part)?,
        };
        match &column {
            Some(first) if *first != c => return None,
            Some(_) => {}
            None => column = Some(c),
        }
        values.extend(vs);
    }
    Some((column?, values))
}

/// The array side of `column = ANY(…)`.
pub(crate) enum AnyArray {
    /// `ARRAY[v1, …]` (optionally cast): its elements, each a value as [`value`] reads it
    Values(Vec<ValueExpr>),
    /// one literal or parameter, read by the router
    Whole(KeyArray),
}

/// `column = ANY(array)` / `column = SOME(array)`, where the array is `ARRAY[…]` of
/// values, a string literal or a parameter, optionally under one cast to an array of a
/// key-compatible type. A subquery, an expression or another operator gives None.
pub(crate) fn any_array(expr: &Expr) -> Option<(ColumnRef, AnyArray)> {
    match expr {
        Expr::AnyOp {
            left,
            compare_op: BinaryOperator::Eq,
            right,
            ..
        } => Some((column_ref(left)?, array(right, None)?)),
        Expr::Nested(inner) => any_array(inner),
        _ => None,
    }
}

/// An array operand; `cast_to` is the element type of an enclosing array cast.
fn array(expr: &Expr, cast_to: Option<ValueType>) -> Option<AnyArray> {
    match expr {
        Expr::Nested(inner) => array(inner, cast_to),
        Expr::Cast {
            kind: CastKind::Cast | CastKind::DoubleColon,
            expr,
            data_type: DataType::Array(ArrayElemTypeDef::SquareBracket(elem, None)),
            format: None,
            ..
        } if cast_to.is_none() => array(expr, Some(key_type_of(elem)?)),
        Expr::Array(a) if !a.elem.is_empty() => {
            let values = a.elem.iter().map(value).collect::<Option<Vec<_>>>()?;
            match cast_to {
                None => Some(AnyArray::Values(values)),
                Some(to) => values
                    .into_iter()
                    .map(|v| cast(v, to))
                    .collect::<Option<Vec<_>>>()
                    .map(AnyArray::Values),
            }
        }
        Expr::Value(v) => {
            let ty = cast_to.unwrap_or(ValueType::Unknown);
            match &v.value {
                Value::SingleQuotedString(s) if !s.contains('\\') => {
                    Some(AnyArray::Whole(KeyArray::Literal(s.clone(), ty)))
                }
                Value::Placeholder(p) => {
                    param_number(p).map(|n| AnyArray::Whole(KeyArray::Param(n, ty)))
                }
                _ => None,
            }
        }
        _ => None,
    }
}

/// The key value an expression denotes, if it is one of the forms whose text is exactly
/// what Postgres would feed the key type's input function: a literal, a parameter, a
/// negated integer literal, or one of those under a single cast to a key-compatible type.
pub(crate) fn value(expr: &Expr) -> Option<ValueExpr> {
    match expr {
        Expr::Nested(inner) => value(inner),
        Expr::Cast {
            kind: CastKind::Cast | CastKind::DoubleColon,
            expr,
            data_type,
            format: None,
            ..
        } => cast(bare_value(expr)?, key_type_of(data_type)?),
        Expr::TypedString(ts) => match &ts.value.value {
            Value::SingleQuotedString(s) => cast(string_literal(s)?, key_type_of(&ts.data_type)?),
            _ => None,
        },
        other => bare_value(other),
    }
}

/// Apply a cast to a bare value. An integer literal cast to text becomes its canonical
/// decimal text (`05::text` is `'5'` in Postgres); other cross-type casts are refused.
fn cast(v: ValueExpr, to: ValueType) -> Option<ValueExpr> {
    match v {
        ValueExpr::Literal(text, ValueType::Unknown) => Some(ValueExpr::Literal(text, to)),
        ValueExpr::Literal(text, ValueType::Integer) => match to {
            ValueType::Integer => Some(ValueExpr::Literal(text, to)),
            ValueType::Text => {
                let n: i64 = text.parse().ok()?;
                Some(ValueExpr::Literal(n.to_string(), to))
            }
            _ => None,
        },
        ValueExpr::Literal(..) => None,
        ValueExpr::Param(n, ValueType::Unknown) => Some(ValueExpr::Param(n, to)),
        ValueExpr::Param(..) => None,
        ValueExpr::Null => Some(ValueExpr::Null),
    }
}

/// A literal or parameter without casts.
fn bare_value(expr: &Expr) -> Option<ValueExpr> {
    match expr {
        Expr::Nested(inner) => bare_value(inner),
        Expr::Value(v) => match &v.value {
            Value::Number(n, false) if is_integer(n) => {
                Some(ValueExpr::Literal(n.clone(), ValueType::Integer))
            }
            Value::SingleQuotedString(s) => string_literal(s),
            Value::Null => Some(ValueExpr::Null),
            Value::Placeholder(p) => {
                param_number(p).map(|n| ValueExpr::Param(n, ValueType::Unknown))
            }
            _ => None,
        },
        Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        } => match expr.as_ref() {
            Expr::Value(v) => match &v.value {
                Value::Number(n, false) if is_integer(n) => {
                    Some(ValueExpr::Literal(format!("-{n}"), ValueType::Integer))
                }
                _ => None,
            },
            _ => None,
        },
        _ => None,
    }
}

/// A string literal; refused if it contains a backslash, whose meaning depends on
/// `standard_conforming_strings`.
fn string_literal(s: &str) -> Option<ValueExpr> {
    if s.contains('\\') {
        None
    } else {
        Some(ValueExpr::Literal(s.to_owned(), ValueType::Unknown))
    }
}

/// Decimal digits only: `1e3`, `1.0`, `0x1F`, `1_000` are refused (their meaning as a key
/// differs between types or Postgres versions).
fn is_integer(n: &str) -> bool {
    !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())
}

/// `$n` → n (1-based).
fn param_number(p: &str) -> Option<usize> {
    let digits = p.strip_prefix('$')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|n| *n >= 1)
}

/// Cast targets that leave the literal's text as the key's input: integer types, text,
/// unbounded varchar, uuid. Bounded character types truncate or pad, so they are refused.
fn key_type_of(ty: &DataType) -> Option<ValueType> {
    match ty {
        DataType::SmallInt(None)
        | DataType::Int2(None)
        | DataType::Int(None)
        | DataType::Integer(None)
        | DataType::Int4(None)
        | DataType::BigInt(None)
        | DataType::Int8(None) => Some(ValueType::Integer),
        DataType::Text | DataType::Varchar(None) | DataType::CharacterVarying(None) => {
            Some(ValueType::Text)
        }
        DataType::Uuid => Some(ValueType::Uuid),
        _ => None,
    }
}
