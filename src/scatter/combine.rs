//! Merging per-shard replies by a [`MergePlan`]: group and recombine aggregates, remove
//! duplicates, order (a k-way merge when every shard sorted its rows), apply OFFSET and
//! LIMIT, and drop the hidden columns the plan added.
//!
//! Values are compared as Postgres compares them ([`value`](super::value)), decoded from
//! the format each column arrived in; text is compared bytewise only where that is the
//! collation's order. A column whose type the merge cannot compare or recombine exactly
//! fails the statement ([`MergeError::Unsupported`]) rather than risk a wrong answer.

use std::borrow::Cow;
use std::cmp::Ordering;

use bytes::BytesMut;

use super::merge::{MergeError, Merged, Parsed, checked_with, command_tag, split_count};
use super::numeric::Numeric;
use super::plan::{AggFunc, Aggregate, CmpOp, Col, MergePlan, SortKey};
use super::value::{self, Kind, Value};

/// Type oid of numeric (avg's result type).
const NUMERIC_OID: u32 = 1700;
/// Type oid of int8.
const INT8_OID: u32 = 20;

/// How to merge, beyond the plan itself.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// every shard compares text bytewise (its default collation is "C"/"POSIX" and no
    /// column has another): ORDER BY, min and max of text may be merged
    pub bytewise_text: bool,
    /// pgshard added a portal Describe to learn the result's types: its RowDescription
    /// is not part of the client's answer
    pub added_portal_description: bool,
}

/// One result column as a shard described it.
#[derive(Debug, Clone, Copy)]
struct Column {
    oid: u32,
    binary: bool,
}

/// A field of a row: NULL, or its bytes (borrowed from a reply, or computed).
type Field<'a> = Option<Cow<'a, [u8]>>;

/// A row: its fields, and the DataRow it came from while unchanged.
struct Row<'a> {
    raw: Option<&'a [u8]>,
    fields: Vec<Field<'a>>,
}

/// Merge `replies` (each one shard's messages for the statement) by `plan`, writing the
/// client's answer without ReadyForQuery to `out`.
pub fn merge_by_plan(
    replies: &[BytesMut],
    plan: &MergePlan,
    options: Options,
    out: &mut BytesMut,
) -> Result<Merged, MergeError> {
    let mut answer = BytesMut::new();
    let Some(parsed) = checked_with(replies, &mut answer, false)? else {
        out.extend_from_slice(&answer);
        return Ok(Merged::Error);
    };
    let columns = result_columns(&parsed)?;
    preamble(&parsed, plan, options, &mut answer)?;
    // per shard: whether its statement completed (sent its CommandComplete)
    let mut completed = Vec::with_capacity(parsed.len());
    let mut shard_rows = Vec::with_capacity(parsed.len());
    for (shard, msgs) in parsed.iter().enumerate() {
        let mut done = false;
        let mut rows = Vec::new();
        for (tag, msg) in msgs {
            match tag {
                b'D' => {
                    let fields = data_row(msg).ok_or(MergeError::Malformed(shard))?;
                    if fields.len() != columns.len() {
                        return Err(MergeError::Malformed(shard));
                    }
                    rows.push(Row {
                        raw: Some(msg),
                        fields,
                    });
                }
                b'C' => {
                    let tag = command_tag(msg);
                    match split_count(&tag) {
                        Some(("SELECT", _)) => done = true,
                        _ => return Err(MergeError::CommandTag(tag.clone(), tag)),
                    }
                }
                _ => {}
            }
        }
        if !done && !rows.is_empty() {
            return Err(MergeError::Malformed(shard));
        }
        completed.push(done);
        shard_rows.push(rows);
    }
    // either every shard ran the statement or none did (a Describe-only batch): a
    // reply cut short must not pass for a shard with fewer rows
    let has_rows = completed.iter().any(|&d| d);
    if let Some(short) = completed.iter().position(|&d| !d).filter(|_| has_rows) {
        return Err(MergeError::Malformed(short));
    }
    if !has_rows {
        // no Execute in this batch (a Describe only): the preamble is the answer
        out.extend_from_slice(&answer);
        return Ok(Merged::Rows);
    }
    let width = columns.len();
    // a reply narrower than the plan's hidden columns is not this statement's
    let visible = width
        .checked_sub(plan.hidden)
        .ok_or(MergeError::Malformed(0))?;
    let col = |c: Col| plan.index(c, width).ok_or(MergeError::Malformed(0));

    // the columns as the merged rows hold them (recombined avg columns are numeric)
    let mut merged = columns.clone();
    let mut rows: Vec<Row<'_>> = match &plan.group_by {
        Some(keys) => {
            let all: Vec<Row<'_>> = shard_rows.into_iter().flatten().collect();
            let keys = keys
                .iter()
                .map(|&k| col(k))
                .collect::<Result<Vec<_>, _>>()?;
            let grouped = group(all, &keys, plan, &columns, options)?;
            // recombined avg columns hold numerics now
            for a in &plan.aggregates {
                match a.func {
                    AggFunc::Avg { .. } => merged[col(a.col)?].oid = NUMERIC_OID,
                    AggFunc::CountDistinct => merged[col(a.col)?].oid = INT8_OID,
                    _ => {}
                }
            }
            let kept = having(grouped, plan, &merged, options)?;
            sort(kept, plan, &merged, options)?
        }
        None if plan.order_by.is_empty() => shard_rows.into_iter().flatten().collect(),
        None if plan.shards_sorted => merge_sorted(shard_rows, plan, &columns, options)?,
        None => sort(
            shard_rows.into_iter().flatten().collect(),
            plan,
            &columns,
            options,
        )?,
    };
    if plan.distinct {
        rows = distinct(rows, visible, &merged)?;
    }
    let offset = usize::try_from(plan.offset).unwrap_or(usize::MAX);
    let limit = plan
        .limit
        .map_or(usize::MAX, |l| usize::try_from(l).unwrap_or(usize::MAX));
    let mut emitted = 0u64;
    for row in rows.iter().skip(offset).take(limit) {
        write_row(row, visible, plan.hidden, &mut answer);
        emitted += 1;
    }
    crate::protocol::reply::command_complete(&format!("SELECT {emitted}"), &mut answer);
    out.extend_from_slice(&answer);
    Ok(Merged::Rows)
}

/// The columns of the result rows: from the last RowDescription before the rows (the
/// portal's, with the formats the rows use).
fn result_columns(parsed: &Parsed<'_>) -> Result<Vec<Column>, MergeError> {
    let Some(msgs) = parsed.first() else {
        return Ok(Vec::new());
    };
    let Some((_, desc)) = msgs
        .iter()
        .take_while(|(t, _)| !matches!(t, b'D' | b'C'))
        .filter(|(t, _)| *t == b'T')
        .last()
    else {
        return Ok(Vec::new());
    };
    let fields = describe_fields(desc).ok_or(MergeError::Malformed(0))?;
    Ok(fields
        .iter()
        .map(|f| Column {
            oid: f.oid,
            binary: f.format == 1,
        })
        .collect())
}

/// The first shard's preamble, its RowDescriptions rewritten to the client's columns.
fn preamble(
    parsed: &Parsed<'_>,
    plan: &MergePlan,
    options: Options,
    out: &mut BytesMut,
) -> Result<(), MergeError> {
    let Some(msgs) = parsed.first() else {
        return Ok(());
    };
    let mut bound = false;
    for (tag, msg) in msgs {
        match tag {
            b'2' => {
                bound = true;
                out.extend_from_slice(msg);
            }
            b'1' | b'3' | b't' | b'n' | b'S' => out.extend_from_slice(msg),
            b'T' if bound && options.added_portal_description => {}
            b'T' => client_description(msg, plan, out).ok_or(MergeError::Malformed(0))?,
            b'D' | b'C' | b'I' => break,
            _ => {}
        }
    }
    Ok(())
}

/// One field of a RowDescription.
struct FieldDesc<'a> {
    name: &'a [u8],
    table: [u8; 6],
    oid: u32,
    typlen: i16,
    typmod: i32,
    format: i16,
}

fn describe_fields(msg: &[u8]) -> Option<Vec<FieldDesc<'_>>> {
    let body = msg.get(5..)?;
    let n = i16::from_be_bytes(body.get(..2)?.try_into().ok()?);
    let mut rest = &body[2..];
    let mut fields = Vec::with_capacity(usize::try_from(n).ok()?);
    for _ in 0..n {
        let end = rest.iter().position(|&b| b == 0)?;
        let name = &rest[..end];
        let f = rest.get(end + 1..end + 19)?;
        fields.push(FieldDesc {
            name,
            table: f[..6].try_into().ok()?,
            oid: u32::from_be_bytes(f[6..10].try_into().ok()?),
            typlen: i16::from_be_bytes(f[10..12].try_into().ok()?),
            typmod: i32::from_be_bytes(f[12..16].try_into().ok()?),
            format: i16::from_be_bytes(f[16..18].try_into().ok()?),
        });
        rest = &rest[end + 19..];
    }
    Some(fields)
}

/// The RowDescription the client sees: hidden columns dropped, avg columns numeric.
fn client_description(msg: &[u8], plan: &MergePlan, out: &mut BytesMut) -> Option<()> {
    let fields = describe_fields(msg)?;
    let visible = fields.len().checked_sub(plan.hidden)?;
    let retyped = |func: fn(&AggFunc) -> bool| -> Vec<usize> {
        plan.aggregates
            .iter()
            .filter(|a| func(&a.func))
            .filter_map(|a| match a.col {
                Col::Visible(i) => Some(i),
                Col::Hidden(_) => None,
            })
            .collect()
    };
    let avg = retyped(|f| matches!(f, AggFunc::Avg { .. }));
    let distinct = retyped(|f| matches!(f, AggFunc::CountDistinct));
    let mut body = Vec::with_capacity(msg.len());
    body.extend_from_slice(&i16::try_from(visible).ok()?.to_be_bytes());
    for (i, f) in fields.iter().take(visible).enumerate() {
        body.extend_from_slice(f.name);
        body.push(0);
        let (oid, typlen, typmod) = if avg.contains(&i) {
            (NUMERIC_OID, -1i16, -1i32)
        } else if distinct.contains(&i) {
            (INT8_OID, 8, -1)
        } else {
            (f.oid, f.typlen, f.typmod)
        };
        // a count of distinct values is computed, not a table column
        if distinct.contains(&i) {
            body.extend_from_slice(&[0; 6]);
        } else {
            body.extend_from_slice(&f.table);
        }
        body.extend_from_slice(&oid.to_be_bytes());
        body.extend_from_slice(&typlen.to_be_bytes());
        body.extend_from_slice(&typmod.to_be_bytes());
        body.extend_from_slice(&f.format.to_be_bytes());
    }
    out.extend_from_slice(b"T");
    out.extend_from_slice(&i32::try_from(body.len() + 4).ok()?.to_be_bytes());
    out.extend_from_slice(&body);
    Some(())
}

/// The fields of a DataRow message.
fn data_row(msg: &[u8]) -> Option<Vec<Field<'_>>> {
    let body = msg.get(5..)?;
    let n = usize::try_from(i16::from_be_bytes(body.get(..2)?.try_into().ok()?)).ok()?;
    let mut rest = &body[2..];
    let mut fields = Vec::with_capacity(n);
    for _ in 0..n {
        let len = i32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
        rest = &rest[4..];
        if len == -1 {
            fields.push(None);
        } else {
            // any other negative length is not a DataRow's
            let len = usize::try_from(len).ok()?;
            fields.push(Some(Cow::Borrowed(rest.get(..len)?)));
            rest = &rest[len..];
        }
    }
    rest.is_empty().then_some(fields)
}

/// Write `row` without its `hidden` trailing columns.
fn write_row(row: &Row<'_>, visible: usize, hidden: usize, out: &mut BytesMut) {
    if let (Some(raw), 0) = (row.raw, hidden) {
        out.extend_from_slice(raw);
        return;
    }
    let fields = &row.fields[..visible];
    let len: usize = 4
        + 2
        + fields
            .iter()
            .map(|f| 4 + f.as_ref().map_or(0, |v| v.len()))
            .sum::<usize>();
    out.reserve(len + 1);
    out.extend_from_slice(b"D");
    out.extend_from_slice(&(len as i32).to_be_bytes());
    out.extend_from_slice(&(visible as i16).to_be_bytes());
    for f in fields {
        match f {
            None => out.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(v) => {
                out.extend_from_slice(&(v.len() as i32).to_be_bytes());
                out.extend_from_slice(v);
            }
        }
    }
}

/// The kind of column `c`, or why the merge cannot read its type (`what` names the
/// clause for the message).
fn kind_of(c: Column, what: &str) -> Result<Kind, MergeError> {
    Kind::from_oid(c.oid).ok_or_else(|| {
        MergeError::Unsupported(format!(
            "{what} on a column of type oid {} across shards is not supported",
            c.oid
        ))
    })
}

/// A key that only groups or deduplicates: ascending, NULLs together; text compared by
/// bytes, which is equality under any deterministic collation.
fn equality_key(i: usize, kind: Kind) -> (usize, Kind, SortKey) {
    let key = SortKey {
        col: Col::Visible(i),
        descending: false,
        nulls_first: false,
        collate_c: true,
    };
    (i, kind, key)
}

/// The kind of column `c` for comparisons, or why it cannot be compared.
fn comparable(
    c: Column,
    what: &str,
    collate_c: bool,
    options: Options,
) -> Result<Kind, MergeError> {
    let kind = kind_of(c, what)?;
    if kind.is_collatable() && !options.bytewise_text && !collate_c {
        return Err(MergeError::Unsupported(format!(
            "{what} on text across shards needs the \"C\" collation (the shards' collation orders text differently from bytes); add COLLATE \"C\" to the expression"
        )));
    }
    Ok(kind)
}

/// Decode field `f` of a column of `kind`.
fn decode<'a>(kind: Kind, c: Column, f: &'a Field<'_>) -> Result<Option<Value<'a>>, MergeError> {
    match f {
        None => Ok(None),
        Some(bytes) => value::decode(kind, c.binary, bytes)
            .map(Some)
            .map_err(|e| MergeError::Unsupported(format!("{e}"))),
    }
}

/// NULL-aware comparison for one key: NULLs equal each other, placed by `nulls_first`.
fn compare_key(
    kind: Kind,
    a: &Option<Value<'_>>,
    b: &Option<Value<'_>>,
    descending: bool,
    nulls_first: bool,
) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => {
            if nulls_first {
                Ordering::Less
            } else {
                Ordering::Greater
            }
        }
        (Some(_), None) => {
            if nulls_first {
                Ordering::Greater
            } else {
                Ordering::Less
            }
        }
        (Some(x), Some(y)) => {
            let o = value::compare(kind, x, y);
            if descending { o.reverse() } else { o }
        }
    }
}

/// The sort keys of a plan, resolved to column indexes and kinds.
fn sort_keys(
    plan: &MergePlan,
    columns: &[Column],
    options: Options,
) -> Result<Vec<(usize, Kind, SortKey)>, MergeError> {
    plan.order_by
        .iter()
        .map(|k| {
            let i = plan
                .index(k.col, columns.len())
                .ok_or(MergeError::Malformed(0))?;
            let kind = comparable(columns[i], "ORDER BY", k.collate_c, options)?;
            Ok((i, kind, *k))
        })
        .collect()
}

/// Decoded sort keys of one row.
fn row_keys<'a>(
    row: &'a Row<'_>,
    keys: &[(usize, Kind, SortKey)],
    columns: &[Column],
) -> Result<Vec<Option<Value<'a>>>, MergeError> {
    keys.iter()
        .map(|(i, kind, _)| decode(*kind, columns[*i], &row.fields[*i]))
        .collect()
}

fn compare_rows(
    a: &[Option<Value<'_>>],
    b: &[Option<Value<'_>>],
    keys: &[(usize, Kind, SortKey)],
) -> Ordering {
    for ((x, y), (_, kind, k)) in a.iter().zip(b).zip(keys) {
        let o = compare_key(*kind, x, y, k.descending, k.nulls_first);
        if o != Ordering::Equal {
            return o;
        }
    }
    Ordering::Equal
}

/// Sort all rows by the plan's ORDER BY (stable: ties keep shard order).
fn sort<'a>(
    rows: Vec<Row<'a>>,
    plan: &MergePlan,
    columns: &[Column],
    options: Options,
) -> Result<Vec<Row<'a>>, MergeError> {
    if plan.order_by.is_empty() {
        return Ok(rows);
    }
    let keys = sort_keys(plan, columns, options)?;
    let decoded = rows
        .iter()
        .map(|r| row_keys(r, &keys, columns))
        .collect::<Result<Vec<_>, _>>()?;
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by(|&a, &b| compare_rows(&decoded[a], &decoded[b], &keys));
    drop(decoded);
    Ok(permute(rows, &order))
}

/// `rows` in the order of the indexes in `order` (each index once).
fn permute<'a>(rows: Vec<Row<'a>>, order: &[usize]) -> Vec<Row<'a>> {
    let mut slots: Vec<Option<Row<'a>>> = rows.into_iter().map(Some).collect();
    order.iter().filter_map(|&i| slots[i].take()).collect()
}

/// K-way merge of per-shard rows each already sorted by the plan's ORDER BY (the shards
/// ran it): repeatedly take the smallest head; ties go to the lower shard.
fn merge_sorted<'a>(
    shards: Vec<Vec<Row<'a>>>,
    plan: &MergePlan,
    columns: &[Column],
    options: Options,
) -> Result<Vec<Row<'a>>, MergeError> {
    let keys = sort_keys(plan, columns, options)?;
    let decoded: Vec<Vec<Vec<Option<Value<'_>>>>> = shards
        .iter()
        .map(|rows| rows.iter().map(|r| row_keys(r, &keys, columns)).collect())
        .collect::<Result<_, _>>()?;
    let total = shards.iter().map(Vec::len).sum();
    let mut heads = vec![0usize; shards.len()];
    let mut order = Vec::with_capacity(total);
    for _ in 0..total {
        let mut best: Option<usize> = None;
        for s in 0..shards.len() {
            if heads[s] >= shards[s].len() {
                continue;
            }
            best = match best {
                Some(b)
                    if compare_rows(&decoded[s][heads[s]], &decoded[b][heads[b]], &keys)
                        != Ordering::Less =>
                {
                    Some(b)
                }
                _ => Some(s),
            };
        }
        let Some(b) = best else { break };
        order.push((b, heads[b]));
        heads[b] += 1;
    }
    drop(decoded);
    let mut slots: Vec<Vec<Option<Row<'a>>>> = shards
        .into_iter()
        .map(|rows| rows.into_iter().map(Some).collect())
        .collect();
    Ok(order
        .into_iter()
        .filter_map(|(s, i)| slots[s][i].take())
        .collect())
}

/// Remove rows equal (on the first `visible` columns, NULLs equal) to an earlier row.
fn distinct<'a>(
    rows: Vec<Row<'a>>,
    visible: usize,
    columns: &[Column],
) -> Result<Vec<Row<'a>>, MergeError> {
    let kinds = columns[..visible]
        .iter()
        .map(|&c| {
            // equality, not order: text is equal when its bytes are (deterministic
            // collations), so no collation check
            kind_of(c, "DISTINCT")
        })
        .collect::<Result<Vec<_>, _>>()?;
    let keys: Vec<(usize, Kind, SortKey)> = kinds
        .iter()
        .enumerate()
        .map(|(i, &k)| equality_key(i, k))
        .collect();
    let decoded = rows
        .iter()
        .map(|r| row_keys(r, &keys, columns))
        .collect::<Result<Vec<_>, _>>()?;
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by(|&a, &b| compare_rows(&decoded[a], &decoded[b], &keys).then(a.cmp(&b)));
    let mut keep = vec![false; rows.len()];
    let mut prev: Option<usize> = None;
    for &i in &order {
        match prev {
            Some(p) if compare_rows(&decoded[p], &decoded[i], &keys) == Ordering::Equal => {}
            _ => {
                keep[i] = true;
                prev = Some(i);
            }
        }
    }
    drop(decoded);
    Ok(rows
        .into_iter()
        .zip(keep)
        .filter_map(|(r, k)| k.then_some(r))
        .collect())
}

/// Keep the groups every HAVING condition holds for (a NULL comparison does not hold).
fn having<'a>(
    rows: Vec<Row<'a>>,
    plan: &MergePlan,
    columns: &[Column],
    options: Options,
) -> Result<Vec<Row<'a>>, MergeError> {
    if plan.having.is_empty() {
        return Ok(rows);
    }
    let mut checks = Vec::with_capacity(plan.having.len());
    for c in &plan.having {
        let i = plan
            .index(c.col, columns.len())
            .ok_or(MergeError::Malformed(0))?;
        let ordered = !matches!(c.op, CmpOp::Eq | CmpOp::Ne);
        let kind = if ordered {
            comparable(columns[i], "HAVING", false, options)?
        } else {
            kind_of(columns[i], "HAVING")?
        };
        let literal = value::decode(kind, false, c.literal.as_bytes()).map_err(|e| {
            MergeError::Unsupported(format!(
                "HAVING literal '{}' cannot be compared exactly across shards: {e}",
                c.literal
            ))
        })?;
        checks.push((i, kind, c.op, literal));
    }
    let mut kept = Vec::with_capacity(rows.len());
    for row in rows {
        let mut keep = true;
        for (i, kind, op, literal) in &checks {
            let Some(v) = decode(*kind, columns[*i], &row.fields[*i])? else {
                keep = false;
                break;
            };
            let o = value::compare(*kind, &v, literal);
            let holds = match op {
                CmpOp::Eq => o == Ordering::Equal,
                CmpOp::Ne => o != Ordering::Equal,
                CmpOp::Lt => o == Ordering::Less,
                CmpOp::Le => o != Ordering::Greater,
                CmpOp::Gt => o == Ordering::Greater,
                CmpOp::Ge => o != Ordering::Less,
            };
            if !holds {
                keep = false;
                break;
            }
        }
        if keep {
            kept.push(row);
        }
    }
    Ok(kept)
}

/// Merge partial groups: rows with equal keys (NULLs equal) become one row whose
/// aggregate columns are recombined and whose other columns come from the first row.
fn group<'a>(
    rows: Vec<Row<'a>>,
    keys: &[usize],
    plan: &MergePlan,
    columns: &[Column],
    options: Options,
) -> Result<Vec<Row<'a>>, MergeError> {
    let key_specs: Vec<(usize, Kind, SortKey)> = keys
        .iter()
        .map(|&i| Ok(equality_key(i, kind_of(columns[i], "GROUP BY")?)))
        .collect::<Result<_, MergeError>>()?;
    let decoded = rows
        .iter()
        .map(|r| row_keys(r, &key_specs, columns))
        .collect::<Result<Vec<_>, _>>()?;
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by(|&a, &b| compare_rows(&decoded[a], &decoded[b], &key_specs).then(a.cmp(&b)));
    let mut runs: Vec<Vec<usize>> = Vec::new();
    for &i in &order {
        match runs.last_mut() {
            Some(run)
                if compare_rows(&decoded[run[0]], &decoded[i], &key_specs) == Ordering::Equal =>
            {
                run.push(i)
            }
            _ => runs.push(vec![i]),
        }
    }
    drop(decoded);
    // groups in the order their first row arrived
    runs.sort_by_key(|r| r[0]);
    let width = columns.len();
    let aggs = plan
        .aggregates
        .iter()
        .map(|a| {
            let i = plan.index(a.col, width).ok_or(MergeError::Malformed(0))?;
            let count = match a.func {
                AggFunc::Avg { count } => {
                    Some(plan.index(count, width).ok_or(MergeError::Malformed(0))?)
                }
                _ => None,
            };
            Ok((i, count, *a))
        })
        .collect::<Result<Vec<_>, MergeError>>()?;
    let mut out = Vec::with_capacity(runs.len());
    for run in runs {
        let mut fields = rows[run[0]].fields.clone();
        for &(i, count, a) in &aggs {
            fields[i] = recombine(&rows, &run, i, count, a, columns, options)?;
        }
        out.push(Row { raw: None, fields });
    }
    if plan.single_group && out.is_empty() {
        // aggregates over no rows at all (shards return none for count(DISTINCT …)):
        // counts are 0, everything else NULL, as Postgres answers
        let mut fields: Vec<Field<'a>> = vec![None; columns.len()];
        for &(i, _, a) in &aggs {
            if matches!(a.func, AggFunc::Count | AggFunc::CountDistinct) {
                fields[i] = Some(Cow::Owned(encode_int8(0, columns[i].binary)));
            }
        }
        out.push(Row { raw: None, fields });
    }
    Ok(out)
}

/// The value of aggregate `a` (partials in column `i`) over the rows of one group.
fn recombine<'a>(
    rows: &[Row<'a>],
    run: &[usize],
    i: usize,
    count: Option<usize>,
    a: Aggregate,
    columns: &[Column],
    options: Options,
) -> Result<Field<'a>, MergeError> {
    let c = columns[i];
    let partials = run.iter().map(|&r| &rows[r].fields[i]);
    match a.func {
        AggFunc::Count => {
            let mut total: i64 = 0;
            for p in partials {
                total = total
                    .checked_add(int8(c, p)?.unwrap_or(0))
                    .ok_or_else(out_of_range)?;
            }
            Ok(Some(Cow::Owned(encode_int8(total, c.binary))))
        }
        AggFunc::Sum => match c.oid {
            INT8_OID => {
                let mut total: Option<i64> = None;
                for p in partials {
                    if let Some(v) = int8(c, p)? {
                        total = Some(total.unwrap_or(0).checked_add(v).ok_or_else(out_of_range)?);
                    }
                }
                Ok(total.map(|t| Cow::Owned(encode_int8(t, c.binary))))
            }
            NUMERIC_OID => {
                Ok(numeric_sum(c, partials)?.map(|n| Cow::Owned(encode_numeric(&n, c.binary))))
            }
            oid => Err(unsupported_sum("sum()", oid)),
        },
        AggFunc::Avg { .. } => {
            let count_col = count.ok_or(MergeError::Malformed(0))?;
            let cc = columns[count_col];
            let mut n: i64 = 0;
            for &r in run {
                n = n
                    .checked_add(int8(cc, &rows[r].fields[count_col])?.unwrap_or(0))
                    .ok_or_else(out_of_range)?;
            }
            let sum = match c.oid {
                INT8_OID => {
                    let mut total = Numeric::from_i64(0);
                    let mut any = false;
                    for p in partials {
                        if let Some(v) = int8(c, p)? {
                            total = total.add(&Numeric::from_i64(v)).map_err(numeric_error)?;
                            any = true;
                        }
                    }
                    any.then_some(total)
                }
                NUMERIC_OID => numeric_sum(c, partials)?,
                oid => return Err(unsupported_sum("avg()", oid)),
            };
            match sum {
                Some(s) if n > 0 => {
                    let avg = s
                        .div(&Numeric::from_i64(n))
                        .map_err(|e| MergeError::Unsupported(e.to_string()))?;
                    Ok(Some(Cow::Owned(encode_numeric(&avg, c.binary))))
                }
                _ => Ok(None),
            }
        }
        AggFunc::CountDistinct => {
            // equality only: bytes are equal when values are (no collation involved)
            let kind = kind_of(c, "count(DISTINCT …)")?;
            let mut values = Vec::new();
            for p in partials {
                if let Some(v) = decode(kind, c, p)? {
                    values.push(v);
                }
            }
            values.sort_by(|a, b| value::compare(kind, a, b));
            values.dedup_by(|a, b| value::compare(kind, a, b) == Ordering::Equal);
            let n = i64::try_from(values.len()).map_err(|_| out_of_range())?;
            Ok(Some(Cow::Owned(encode_int8(n, c.binary))))
        }
        AggFunc::Min | AggFunc::Max => {
            let kind = comparable(c, "min()/max()", a.collate_c, options)?;
            let mut best: Option<(&Field<'a>, Value<'_>)> = None;
            for p in partials {
                let Some(v) = decode(kind, c, p)? else {
                    continue;
                };
                let better = match &best {
                    None => true,
                    Some((_, b)) => {
                        let o = value::compare(kind, &v, b);
                        if matches!(a.func, AggFunc::Min) {
                            o == Ordering::Less
                        } else {
                            o == Ordering::Greater
                        }
                    }
                };
                if better {
                    best = Some((p, v));
                }
            }
            Ok(best.and_then(|(f, _)| f.clone()))
        }
        AggFunc::BoolAnd | AggFunc::BoolOr => {
            let mut acc: Option<bool> = None;
            for p in partials {
                match decode(Kind::Bool, c, p)? {
                    Some(Value::Bool(b)) => {
                        acc = Some(match (acc, a.func) {
                            (None, _) => b,
                            (Some(x), AggFunc::BoolAnd) => x && b,
                            (Some(x), _) => x || b,
                        })
                    }
                    Some(_) => return Err(unsupported_sum("bool_and()/bool_or()", c.oid)),
                    None => {}
                }
            }
            Ok(acc.map(|b| {
                Cow::Owned(if c.binary {
                    vec![u8::from(b)]
                } else {
                    vec![if b { b't' } else { b'f' }]
                })
            }))
        }
    }
}

/// Postgres' own errors for numeric results it cannot hold.
fn numeric_error(e: super::value::ValueError) -> MergeError {
    MergeError::OutOfRange(e.to_string())
}

fn out_of_range() -> MergeError {
    MergeError::OutOfRange("bigint out of range".to_owned())
}

fn unsupported_sum(what: &str, oid: u32) -> MergeError {
    MergeError::Unsupported(format!(
        "{what} of a column of type oid {oid} cannot be combined exactly across shards (supported: integer and numeric arguments)"
    ))
}

/// An int8 field.
fn int8(c: Column, f: &Field<'_>) -> Result<Option<i64>, MergeError> {
    if c.oid != INT8_OID {
        return Err(MergeError::NotACount);
    }
    match decode(Kind::Int8, c, f)? {
        None => Ok(None),
        Some(Value::Int(v)) => Ok(Some(v)),
        Some(_) => Err(MergeError::NotACount),
    }
}

/// Sum of numeric partials; `None` when all are NULL.
fn numeric_sum<'f, 'a: 'f>(
    c: Column,
    partials: impl Iterator<Item = &'f Field<'a>>,
) -> Result<Option<Numeric>, MergeError> {
    let mut total: Option<Numeric> = None;
    for p in partials {
        let Some(bytes) = p else { continue };
        let n = if c.binary {
            Numeric::parse_binary(bytes)
        } else {
            Numeric::parse_text(bytes)
        }
        .map_err(|e| MergeError::Unsupported(e.to_string()))?;
        total = Some(match total {
            None => n,
            Some(t) => t.add(&n).map_err(numeric_error)?,
        });
    }
    Ok(total)
}

fn encode_int8(v: i64, binary: bool) -> Vec<u8> {
    if binary {
        v.to_be_bytes().to_vec()
    } else {
        v.to_string().into_bytes()
    }
}

fn encode_numeric(n: &Numeric, binary: bool) -> Vec<u8> {
    let mut out = Vec::new();
    if binary {
        n.write_binary(&mut out);
    } else {
        n.write_text(&mut out);
    }
    out
}

#[cfg(test)]
#[path = "combine_tests.rs"]
mod tests;
