//! Routing of one analysed statement.

use crate::config::{ShardMap, TableRule};
use crate::sharding::{KeyError, KeyType, KeyValue, ShardId};
use crate::sql::{
    KeyArray, Role, Scatter, Statement, StatementKind, TableOccurrence, ValueExpr, ValueType,
};

use super::{Merge, Param, Reason, Route, RouteError, RouteInput, Target};

/// Where one statement runs.
pub(super) fn route(
    st: &Statement,
    input: &RouteInput<'_>,
    map: &ShardMap,
) -> Result<Route, RouteError> {
    if let Some(l) = st.limitation.filter(|l| l.always()) {
        return Err(unsupported(l.to_string()));
    }
    let sharded = || st.tables.iter().find(|t| map.table(&t.name).is_some());
    match st.kind {
        StatementKind::Begin
        | StatementKind::Commit
        | StatementKind::Rollback
        | StatementKind::Savepoint
        | StatementKind::Set { .. }
        | StatementKind::Show => Ok(route_to(Target::Any, Reason::Session)),
        StatementKind::Ddl => match sharded() {
            Some(t) => Err(unsupported(format!(
                "{} reading sharded table \"{}\" (each shard holds only part of its rows)",
                st.command, t.name
            ))),
            None => Ok(route_to(Target::All, Reason::Ddl)),
        },
        // COPY spread over shards: router/copy.rs; what it leaves routes as before
        StatementKind::Copy { from } => super::copy::route(
            st,
            input,
            map,
            |select| dml(select, input, map),
            || match (sharded(), reference_table(st, map)) {
                (Some(t), _) => Err(unsupported(format!(
                    "this COPY of sharded table \"{}\"",
                    t.name
                ))),
                (None, Some(t)) if from => Err(unsupported(format!(
                    "COPY into reference table \"{t}\" (yet): use INSERT, which writes every copy"
                ))),
                (None, reference) => Ok(match (unsharded_table(st, map), reference) {
                    (Some(table), _) => on_default_shard(table, map),
                    (None, Some(table)) => reference_read(table),
                    (None, None) => route_to(Target::Any, Reason::NoShardedTable),
                }),
            },
        ),
        StatementKind::SqlPrepared => match sharded() {
            Some(t) => Err(unsupported(format!(
                "SQL-level {} of a statement on sharded table \"{}\" (prepare it with the extended protocol instead)",
                st.command, t.name
            ))),
            None => Ok(route_to(Target::Any, Reason::Session)),
        },
        StatementKind::Other => match sharded() {
            Some(t) => Err(unsupported(match st.limitation {
                Some(l) => l.to_string(),
                None => format!("{} on sharded table \"{}\"", st.command, t.name),
            })),
            None if st.tables.is_empty() => Ok(route_to(Target::Any, Reason::Session)),
            None => Ok(match unsharded_table(st, map) {
                Some(table) => on_default_shard(table, map),
                None => route_to(Target::Any, Reason::NoShardedTable),
            }),
        },
        StatementKind::Select
        | StatementKind::Insert
        | StatementKind::Update
        | StatementKind::Delete => dml(st, input, map),
    }
}

fn route_to(target: Target, reason: Reason) -> Route {
    Route { target, reason }
}

fn unsupported(what: String) -> RouteError {
    RouteError::Unsupported { what }
}

/// The shard a keyed occurrence pins the statement to.
struct Pin<'s> {
    shard: ShardId,
    slot: u32,
    table: &'s str,
    column: &'s str,
}

/// A SELECT's only sharded occurrence, not pinned to one shard by its key.
struct Spread<'s> {
    /// index of the occurrence in the statement's tables
    index: usize,
    table: &'s str,
    column: &'s str,
    /// the shards that may hold its rows (sorted, no duplicates; empty if none can)
    shards: Vec<ShardId>,
    why: &'static str,
}

/// What one occurrence's key allows.
enum Need {
    /// one shard, found from the value in this slot
    One(u32, ShardId),
    /// these shards (sorted, no duplicates), and why
    Shards(Vec<ShardId>, &'static str),
}

/// Every occurrence of a sharded table must be pinned by its own key, all to one shard.
/// Exception: a SELECT whose only sharded occurrence has no key equality runs on the
/// shards its `key IN (…)` list names, or on every shard, when its result is the
/// concatenation of theirs.
fn dml(st: &Statement, input: &RouteInput<'_>, map: &ShardMap) -> Result<Route, RouteError> {
    if let Some(route) = reference_write(st, map)? {
        return Ok(route);
    }
    let sharded = st
        .tables
        .iter()
        .filter(|t| map.table(&t.name).is_some())
        .count();
    // UPDATE/DELETE of one table, reading nothing else but reference tables, may run on
    // several shards when the map allows it (each shard commits on its own).
    let write_spread = matches!(st.kind, StatementKind::Update | StatementKind::Delete)
        && sharded == 1
        && st
            .tables
            .iter()
            .all(|t| map.table(&t.name).is_some() || map.is_replicated(&t.name))
        && map.broadcast_writes;
    let may_spread = (st.kind == StatementKind::Select && sharded == 1) || write_spread;
    let carried = carried_keys(st, input, map);
    let mut chosen: Option<Pin<'_>> = None;
    let mut spread: Option<Spread<'_>> = None;
    let mut split: Option<Vec<ShardId>> = None;
    for (index, occ) in st.tables.iter().enumerate() {
        let Some(rule) = map.table(&occ.name) else {
            continue;
        };
        if let Some(l) = st.limitation {
            return Err(unsupported(l.to_string()));
        }
        if occ.role != Role::Read && st.assigned_columns.contains(&rule.key) {
            return Err(RouteError::KeyUpdate {
                table: occ.name.clone(),
                column: rule.key.clone(),
            });
        }
        match occ.role {
            Role::Insert => split = insert_rows(st, occ, rule, input, map, &mut chosen)?,
            Role::Read | Role::Write => {
                let equality = occ
                    .equalities
                    .iter()
                    .find(|(column, _)| *column == rule.key)
                    .map(|(_, v)| v);
                let need = match (equality, carried[index]) {
                    (Some(value), _) => match locate(value, occ, rule, input, map) {
                        Ok((slot, shard)) => Need::One(slot, shard),
                        // `key = NULL`, or a value no key can equal (`bigint_key =
                        // 99999999999999999999` compares as numeric): this occurrence
                        // contributes no rows, so it needs no shard; whichever shard
                        // runs the statement evaluates the comparison itself
                        Err(RouteError::NullKey { .. })
                        | Err(RouteError::BadKey {
                            source: KeyError::OutOfRange { .. },
                            ..
                        }) => continue,
                        Err(e) => return Err(e),
                    },
                    (None, Some((slot, shard))) => Need::One(slot, shard),
                    (None, None) if may_spread && (occ.role == Role::Read || write_spread) => {
                        key_set(occ, rule, input, map)?
                    }
                    (None, None) => {
                        return Err(RouteError::NoShardKey {
                            table: occ.name.clone(),
                            column: rule.key.clone(),
                        });
                    }
                };
                match need {
                    Need::One(slot, shard) => pin(&mut chosen, occ, rule, slot, shard, map)?,
                    Need::Shards(shards, why) => {
                        spread = Some(Spread {
                            index,
                            table: &occ.name,
                            column: &rule.key,
                            shards,
                            why,
                        });
                    }
                }
            }
        }
    }
    if let Some(s) = spread {
        return scatter(st, s, map);
    }
    if let Some(row_shards) = split {
        return split_insert(st, row_shards, sharded);
    }
    let unsharded = unsharded_table(st, map);
    Ok(match (chosen, unsharded) {
        (Some(p), Some(table)) if p.shard != map.default_shard => {
            return Err(RouteError::CrossShard {
                detail: format!(
                    "{}.{} in slot {} is on shard {}, but table \"{table}\" is not sharded and lives on the default shard {}",
                    p.table,
                    p.column,
                    p.slot,
                    map.shard_name(p.shard),
                    map.shard_name(map.default_shard)
                ),
            });
        }
        (Some(p), _) => route_to(
            Target::One(p.shard),
            Reason::ShardKey {
                table: p.table.to_owned(),
                column: p.column.to_owned(),
                slot: p.slot,
            },
        ),
        (None, Some(table)) => on_default_shard(table, map),
        (None, None) => match reference_table(st, map) {
            Some(table) => reference_read(table),
            None => route_to(Target::Any, Reason::NoShardedTable),
        },
    })
}

/// The first reference table the statement names (not a WITH name).
fn reference_table<'s>(st: &'s Statement, map: &ShardMap) -> Option<&'s str> {
    st.tables
        .iter()
        .find(|t| map.is_replicated(&t.name) && !st.cte_names.contains(&t.name))
        .map(|t| t.name.as_str())
}

fn reference_read(table: &str) -> Route {
    route_to(
        Target::OneCopy,
        Reason::ReferenceRead {
            table: table.to_owned(),
        },
    )
}

/// A statement that writes a reference table (as its target, or in a nested WITH) runs
/// on every shard, so that every copy changes alike. It may read only reference tables
/// and catalogs: a sharded table has different rows on each shard, an unsharded one
/// lives on the default shard only.
fn reference_write(st: &Statement, map: &ShardMap) -> Result<Option<Route>, RouteError> {
    let Some(written) = st
        .tables
        .iter()
        .find(|t| t.role != Role::Read && map.is_replicated(&t.name))
    else {
        return Ok(None);
    };
    if let Some(other) = st.tables.iter().find(|t| {
        !map.is_replicated(&t.name)
            && !st.cte_names.contains(&t.name)
            && !is_catalog(t.schema.as_deref(), &t.name)
    }) {
        let what = if map.table(&other.name).is_some() {
            "sharded"
        } else {
            "unsharded"
        };
        return Err(unsupported(format!(
            "a write to reference table \"{}\" that also uses {what} table \"{}\" (every shard must compute the same change from its own rows)",
            written.name, other.name
        )));
    }
    Ok(Some(route_to(
        Target::AllCopies,
        Reason::ReferenceWrite {
            table: written.name.clone(),
        },
    )))
}

/// Key values carried across join links ([`Statement::links`]): per occurrence, the
/// slot and shard its key is bound to by the key equality of an occurrence it is joined
/// with on the key columns. Only between sharded tables whose keys have the same type
/// (the same value hashes to the same slot), repeated until nothing changes. Values that
/// do not locate (NULL, invalid) carry nothing; the occurrence that holds them reports
/// the problem itself.
fn carried_keys(
    st: &Statement,
    input: &RouteInput<'_>,
    map: &ShardMap,
) -> Vec<Option<(u32, ShardId)>> {
    let mut pins: Vec<Option<(u32, ShardId)>> = vec![None; st.tables.len()];
    if st.links.is_empty() {
        return pins;
    }
    for (pin, occ) in pins.iter_mut().zip(&st.tables) {
        let Some(rule) = map.table(&occ.name) else {
            continue;
        };
        if let Some((_, value)) = occ.equalities.iter().find(|(c, _)| *c == rule.key) {
            *pin = locate(value, occ, rule, input, map).ok();
        }
    }
    let key_of = |i: usize| {
        st.tables
            .get(i)
            .and_then(|t| map.table(&t.name))
            .map(|r| (r.key.as_str(), r.key_type))
    };
    loop {
        let mut changed = false;
        for link in &st.links {
            let (Some(from), Some(to)) = (key_of(link.from), key_of(link.to)) else {
                continue;
            };
            let on_keys = from.0 == link.from_column && to.0 == link.to_column;
            if on_keys
                && from.1 == to.1
                && pins[link.to].is_none()
                && let Some(pin) = pins[link.from]
            {
                pins[link.to] = Some(pin);
                changed = true;
            }
        }
        if !changed {
            return pins;
        }
    }
}

/// The shards a SELECT's only sharded occurrence needs: those owning the values of its
/// key list, or of the elements of its `key = ANY(array)` (NULLs match nothing and are
/// skipped), else all of them.
fn key_set(
    occ: &TableOccurrence,
    rule: &TableRule,
    input: &RouteInput<'_>,
    map: &ShardMap,
) -> Result<Need, RouteError> {
    let mut located = Vec::new();
    let why =
        if let Some((_, values)) = occ.key_lists.iter().find(|(column, _)| *column == rule.key) {
            for value in values {
                match locate(value, occ, rule, input, map) {
                    Err(RouteError::NullKey { .. }) => continue,
                    Err(e) => return Err(e),
                    Ok(found) => located.push(found),
                }
            }
            "key IN list"
        } else {
            let mut keys = None;
            for (_, array) in occ
                .key_arrays
                .iter()
                .filter(|(column, _)| *column == rule.key)
            {
                keys = array_keys(array, occ, rule, input)?;
                if keys.is_some() {
                    break;
                }
            }
            let Some(keys) = keys else {
                return Ok(Need::Shards((0..map.shard_count()).collect(), "no key"));
            };
            located.extend(keys.iter().flatten().map(|k| map.locate(k)));
            "key = ANY(array)"
        };
    let mut shards: Vec<ShardId> = located.iter().map(|(_, shard)| *shard).collect();
    shards.sort_unstable();
    shards.dedup();
    Ok(match (shards.len(), located.first()) {
        (1, Some((slot, shard))) => Need::One(*slot, *shard),
        _ => Need::Shards(shards, why),
    })
}

/// The elements of the array in `key = ANY(array)` (`None` for NULL elements), or `None`
/// when the array cannot be read as the key's: a cast or declared parameter type other
/// than an array of the key's type, a binary element type other than the key's, or a
/// form [`array`](super::array) does not read. Elements that are not valid values of
/// the key type are refused as for an equality.
fn array_keys(
    array: &KeyArray,
    occ: &TableOccurrence,
    rule: &TableRule,
    input: &RouteInput<'_>,
) -> Result<Option<Vec<Option<KeyValue>>>, RouteError> {
    let bad = |source: KeyError| RouteError::BadKey {
        table: occ.name.clone(),
        column: rule.key.clone(),
        source,
    };
    let from_text = |text: &str| -> Result<Option<Vec<Option<KeyValue>>>, RouteError> {
        let Some(elements) = super::array::parse_text(text) else {
            return Ok(None);
        };
        elements
            .iter()
            .map(|e| match e {
                None => Ok(None),
                Some(t) => rule.key_type.parse_text(t).map(Some).map_err(bad),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    };
    match array {
        KeyArray::Literal(text, ty) => {
            if !type_fits(*ty, rule.key_type) {
                return Ok(None);
            }
            from_text(text)
        }
        KeyArray::Param(n, ty) => {
            let oid = input.params.param_type(*n);
            if !type_fits(*ty, rule.key_type) || !array_oid_fits(oid, rule.key_type) {
                return Ok(None);
            }
            match input.params.param(*n) {
                None => Err(RouteError::MissingParam(*n)),
                Some(Param::Null) => Ok(Some(Vec::new())),
                Some(Param::Text(bytes)) => match std::str::from_utf8(bytes) {
                    Ok(text) => from_text(text),
                    Err(_) => Ok(None),
                },
                Some(Param::Binary(bytes)) => {
                    let Some((elem_oid, elements)) = super::array::parse_binary(bytes) else {
                        return Ok(None);
                    };
                    if !element_oid_is_key(elem_oid, rule.key_type) {
                        return Ok(None);
                    }
                    elements
                        .iter()
                        .map(|e| match e {
                            None => Ok(None),
                            Some(b) => rule.key_type.parse_binary(b).map(Some).map_err(bad),
                        })
                        .collect::<Result<Vec<_>, _>>()
                        .map(Some)
                }
            }
        }
    }
}

/// Whether an array parameter declared with this type OID holds values of the key's
/// type: unspecified (0) takes the key's array type from the comparison; otherwise it
/// must be the key type's own array type.
fn array_oid_fits(oid: u32, key: KeyType) -> bool {
    match oid {
        0 => true,
        1005 => key == KeyType::SmallInt,
        1007 => key == KeyType::Integer,
        1016 => key == KeyType::BigInt,
        1009 | 1015 => key == KeyType::Text,
        2951 => key == KeyType::Uuid,
        _ => false,
    }
}

/// Whether a binary array's element type is the key's own type.
fn element_oid_is_key(oid: u32, key: KeyType) -> bool {
    match key {
        KeyType::SmallInt => oid == 21,
        KeyType::Integer => oid == 23,
        KeyType::BigInt => oid == 20,
        KeyType::Text => oid == 25 || oid == 1043,
        KeyType::Uuid => oid == 2950,
    }
}

/// Route a SELECT whose only sharded occurrence needs `s.shards`.
fn scatter(st: &Statement, s: Spread<'_>, map: &ShardMap) -> Result<Route, RouteError> {
    let reason = || Reason::Scatter {
        table: s.table.to_owned(),
        column: s.column.to_owned(),
        shards: s.shards.len(),
        why: s.why,
    };
    match s.shards.as_slice() {
        // no value can match: the query returns no rows wherever it runs; the default
        // shard also holds any unsharded table it names
        [] => Ok(route_to(
            Target::One(map.default_shard),
            Reason::EmptyKeyList {
                table: s.table.to_owned(),
                column: s.column.to_owned(),
            },
        )),
        // a one-shard map: every row is there
        [only] => Ok(route_to(Target::One(*only), reason())),
        // a broadcast write: every shard's rows (and RETURNING rows) and counts add up
        _ if matches!(st.kind, StatementKind::Update | StatementKind::Delete) => Ok(route_to(
            Target::Scatter(s.shards.clone(), Merge::Concatenate),
            reason(),
        )),
        // joined with other tables: each shard must hold all of their rows, and the
        // split table must not be padded once per shard by an outer join
        _ if st.tables.len() > 1
            && !matches!(st.scatter, Scatter::Blocked(_))
            && !joins_complete_copies(st, s.index, map) =>
        {
            Err(RouteError::ScatterUnsupported {
                table: s.table.to_owned(),
                column: s.column.to_owned(),
                construct: join_construct(st, s.index, map),
            })
        }
        _ => match st.scatter {
            Scatter::Plain => Ok(route_to(
                Target::Scatter(s.shards.clone(), Merge::Concatenate),
                reason(),
            )),
            Scatter::FirstRows(n) => Ok(route_to(
                Target::Scatter(s.shards.clone(), Merge::FirstRows(n)),
                reason(),
            )),
            Scatter::Count => Ok(route_to(
                Target::Scatter(s.shards.clone(), Merge::SumCounts),
                reason(),
            )),
            Scatter::Merge(ref plan) => Ok(route_to(
                Target::Scatter(s.shards.clone(), Merge::Plan(plan.clone())),
                reason(),
            )),
            Scatter::Blocked(construct) => Err(RouteError::ScatterUnsupported {
                table: s.table.to_owned(),
                column: s.column.to_owned(),
                construct,
            }),
        },
    }
}

/// Whether the occurrence `split` of a SELECT may be the one split across shards: it is
/// on the kept side of every join, and every other table of the statement is replicated
/// (a full copy on every shard).
fn joins_complete_copies(st: &Statement, split: usize, map: &ShardMap) -> bool {
    st.partitionable.len() == st.tables.len()
        && st.partitionable.get(split) == Some(&true)
        && st
            .tables
            .iter()
            .enumerate()
            .all(|(i, t)| i == split || map.is_replicated(&t.name))
}

/// Why [`joins_complete_copies`] refused, for the message.
fn join_construct(st: &Statement, split: usize, map: &ShardMap) -> &'static str {
    if st.partitionable.len() != st.tables.len() {
        return "subquery";
    }
    let others_copied = st
        .tables
        .iter()
        .enumerate()
        .all(|(i, t)| i == split || map.is_replicated(&t.name));
    if others_copied {
        "an outer join that keeps unmatched rows of a reference table (reference LEFT JOIN sharded, or FULL JOIN)"
    } else {
        "join"
    }
}

/// The first table the statement uses that is neither sharded, nor a reference table,
/// nor a system catalog:
/// its rows live on the default shard only (DDL creates it everywhere, data goes to the
/// default shard).
fn unsharded_table<'s>(st: &'s Statement, map: &ShardMap) -> Option<&'s str> {
    st.tables
        .iter()
        .find(|t| {
            map.table(&t.name).is_none()
                && !map.is_replicated(&t.name)
                && !st.cte_names.contains(&t.name)
                && !is_catalog(t.schema.as_deref(), &t.name)
        })
        .map(|t| t.name.as_str())
}

/// System catalogs and views: the same on every shard, any shard may answer.
fn is_catalog(schema: Option<&str>, name: &str) -> bool {
    match schema {
        Some(s) => s == "pg_catalog" || s == "information_schema",
        None => name.starts_with("pg_"),
    }
}

fn on_default_shard(table: &str, map: &ShardMap) -> Route {
    route_to(
        Target::One(map.default_shard),
        Reason::UnshardedTable {
            table: table.to_owned(),
        },
    )
}

/// A multi-row INSERT whose rows belong to several shards: each shard gets its own rows
/// (the session splits the text), when nothing else in the statement needs a shard.
fn split_insert(
    st: &Statement,
    row_shards: Vec<ShardId>,
    sharded: usize,
) -> Result<Route, RouteError> {
    let ins = st
        .insert
        .as_ref()
        .ok_or_else(|| unsupported("INSERT without VALUES".into()))?;
    if sharded != 1 || st.tables.len() != 1 {
        return Err(unsupported(format!(
            "a multi-row INSERT into \"{}\" with rows on several shards that also reads other tables",
            ins.table
        )));
    }
    if ins.skips_rows && ins.returning {
        // which row a RETURNING row belongs to could not be told when some insert nothing
        return Err(unsupported(format!(
            "INSERT … ON CONFLICT DO NOTHING RETURNING into \"{}\" with rows on several shards",
            ins.table
        )));
    }
    let mut shards = row_shards.clone();
    shards.sort_unstable();
    shards.dedup();
    Ok(route_to(
        Target::Scatter(
            shards.clone(),
            Merge::InsertSplit(std::sync::Arc::new(row_shards)),
        ),
        Reason::SplitInsert {
            table: ins.table.clone(),
            shards: shards.len(),
        },
    ))
}

/// Pin by the key of every INSERT row; when the rows belong to several shards, the
/// shard of each row instead.
fn insert_rows<'s>(
    st: &'s Statement,
    occ: &'s TableOccurrence,
    rule: &'s TableRule,
    input: &RouteInput<'_>,
    map: &ShardMap,
    chosen: &mut Option<Pin<'s>>,
) -> Result<Option<Vec<ShardId>>, RouteError> {
    let missing = || RouteError::InsertKey {
        table: occ.name.clone(),
        column: rule.key.clone(),
    };
    let Some(ins) = &st.insert else {
        return Err(unsupported(format!(
            "INSERT into sharded table \"{}\" without VALUES",
            occ.name
        )));
    };
    let position = match &ins.columns {
        Some(columns) => columns.iter().position(|c| *c == rule.key),
        None => Some(input.ordinals.key_ordinal(&occ.name).ok_or_else(|| {
            RouteError::KeyOrdinalUnknown {
                table: occ.name.clone(),
            }
        })?),
    };
    let position = position.ok_or_else(missing)?;
    let mut located = Vec::with_capacity(ins.rows.len());
    for row in &ins.rows {
        let value = row
            .get(position)
            .and_then(Option::as_ref)
            .ok_or_else(missing)?;
        located.push(locate(value, occ, rule, input, map)?);
    }
    if located
        .iter()
        .all(|(_, s)| Some(s) == located.first().map(|(_, s)| s))
    {
        for (slot, shard) in located {
            pin(chosen, occ, rule, slot, shard, map)?;
        }
        return Ok(None);
    }
    Ok(Some(located.into_iter().map(|(_, s)| s).collect()))
}

/// Record that `occ` needs `shard`; refuse if an earlier occurrence needs another.
fn pin<'s>(
    chosen: &mut Option<Pin<'s>>,
    occ: &'s TableOccurrence,
    rule: &'s TableRule,
    slot: u32,
    shard: ShardId,
    map: &ShardMap,
) -> Result<(), RouteError> {
    match chosen {
        None => {
            *chosen = Some(Pin {
                shard,
                slot,
                table: &occ.name,
                column: &rule.key,
            });
            Ok(())
        }
        Some(p) if p.shard == shard => Ok(()),
        Some(p) => Err(RouteError::CrossShard {
            detail: format!(
                "{}.{} in slot {} is on shard {}, {}.{} in slot {} is on shard {}",
                p.table,
                p.column,
                p.slot,
                map.shard_name(p.shard),
                occ.name,
                rule.key,
                slot,
                map.shard_name(shard)
            ),
        }),
    }
}

/// Slot and shard of a key value written in the statement or bound as a parameter.
fn locate(
    value: &ValueExpr,
    occ: &TableOccurrence,
    rule: &TableRule,
    input: &RouteInput<'_>,
    map: &ShardMap,
) -> Result<(u32, ShardId), RouteError> {
    let bad = |source: KeyError| RouteError::BadKey {
        table: occ.name.clone(),
        column: rule.key.clone(),
        source,
    };
    let null = || RouteError::NullKey {
        table: occ.name.clone(),
        column: rule.key.clone(),
    };
    let incompatible = |what: String| {
        unsupported(format!(
            "{what} as the value of shard key {}.{} ({}): its conversion may differ from the key's; write the value as a plain literal or parameter",
            occ.name,
            rule.key,
            rule.key_type.sql_name()
        ))
    };
    let key: KeyValue = match value {
        ValueExpr::Literal(text, ty) => {
            if !type_fits(*ty, rule.key_type) {
                return Err(incompatible(format!("a {ty:?} literal")));
            }
            rule.key_type.parse_text(text).map_err(bad)?
        }
        ValueExpr::Null => return Err(null()),
        ValueExpr::Param(n, ty) => {
            if !type_fits(*ty, rule.key_type) {
                return Err(incompatible(format!("${n} cast to {ty:?}")));
            }
            let oid = input.params.param_type(*n);
            if !oid_fits(oid, rule.key_type) {
                return Err(incompatible(format!("${n} declared as type OID {oid}")));
            }
            match input.params.param(*n) {
                None => return Err(RouteError::MissingParam(*n)),
                Some(Param::Null) => return Err(null()),
                Some(Param::Text(bytes)) => match std::str::from_utf8(bytes) {
                    Ok(text) => rule.key_type.parse_text(text).map_err(bad)?,
                    Err(_) => {
                        return Err(bad(KeyError::InvalidText {
                            ty: rule.key_type.sql_name(),
                            value: String::from_utf8_lossy(&bytes[..bytes.len().min(64)])
                                .into_owned(),
                        }));
                    }
                },
                Some(Param::Binary(bytes)) => rule.key_type.parse_binary(bytes).map_err(bad)?,
            }
        }
    };
    Ok(map.locate(&key))
}

/// Whether a value of this syntactic type reaches the key column through the key type's
/// own input function (an uncast string takes the column's type; a cast must be to the
/// key's own type family).
fn type_fits(ty: ValueType, key: KeyType) -> bool {
    match ty {
        ValueType::Unknown => true,
        ValueType::Integer => matches!(key, KeyType::SmallInt | KeyType::Integer | KeyType::BigInt),
        ValueType::Text => key == KeyType::Text,
        ValueType::Uuid => key == KeyType::Uuid,
    }
}

/// Whether a parameter declared with this type OID is read by the key parsers as
/// Postgres would read it: unspecified (0) and `unknown` (705) take the column's type;
/// otherwise the declared type must be of the key's family.
fn oid_fits(oid: u32, key: KeyType) -> bool {
    match oid {
        0 | 705 => true,
        20 | 21 | 23 => matches!(key, KeyType::SmallInt | KeyType::Integer | KeyType::BigInt),
        25 | 1043 => key == KeyType::Text,
        2950 => key == KeyType::Uuid,
        _ => false,
    }
}
