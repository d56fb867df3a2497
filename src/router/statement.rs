//! Routing of one analysed statement.

use crate::config::{ShardMap, TableRule};
use crate::sharding::{KeyError, KeyValue, ShardId};
use crate::sql::{Role, Statement, StatementKind, TableOccurrence, ValueExpr};

use super::{Param, Reason, Route, RouteError, RouteInput, Target};

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
        StatementKind::Copy { .. } => match sharded() {
            Some(t) => Err(unsupported(format!(
                "COPY of sharded table \"{}\" (yet)",
                t.name
            ))),
            None => Ok(route_to(Target::Any, Reason::NoShardedTable)),
        },
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
            None => Ok(route_to(Target::Any, Reason::NoShardedTable)),
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

/// Every occurrence of a sharded table must be pinned by its own key, all to one shard.
fn dml(st: &Statement, input: &RouteInput<'_>, map: &ShardMap) -> Result<Route, RouteError> {
    let mut chosen: Option<Pin<'_>> = None;
    for occ in &st.tables {
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
            Role::Insert => insert_rows(st, occ, rule, input, map, &mut chosen)?,
            Role::Read | Role::Write => {
                let value = occ
                    .equalities
                    .iter()
                    .find(|(column, _)| *column == rule.key)
                    .map(|(_, v)| v)
                    .ok_or_else(|| RouteError::NoShardKey {
                        table: occ.name.clone(),
                        column: rule.key.clone(),
                    })?;
                let (slot, shard) = locate(value, occ, rule, input, map)?;
                pin(&mut chosen, occ, rule, slot, shard, map)?;
            }
        }
    }
    Ok(match chosen {
        Some(p) => route_to(
            Target::One(p.shard),
            Reason::ShardKey {
                table: p.table.to_owned(),
                column: p.column.to_owned(),
                slot: p.slot,
            },
        ),
        None => route_to(Target::Any, Reason::NoShardedTable),
    })
}

/// Pin by the key of every INSERT row.
fn insert_rows<'s>(
    st: &'s Statement,
    occ: &'s TableOccurrence,
    rule: &'s TableRule,
    input: &RouteInput<'_>,
    map: &ShardMap,
    chosen: &mut Option<Pin<'s>>,
) -> Result<(), RouteError> {
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
    for row in &ins.rows {
        let value = row
            .get(position)
            .and_then(Option::as_ref)
            .ok_or_else(missing)?;
        let (slot, shard) = locate(value, occ, rule, input, map)?;
        pin(chosen, occ, rule, slot, shard, map)?;
    }
    Ok(())
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
    let key: KeyValue = match value {
        ValueExpr::Literal(text) => rule.key_type.parse_text(text).map_err(bad)?,
        ValueExpr::Null => return Err(null()),
        ValueExpr::Param(n) => match input.params.param(*n) {
            None => return Err(RouteError::MissingParam(*n)),
            Some(Param::Null) => return Err(null()),
            Some(Param::Text(bytes)) => match std::str::from_utf8(bytes) {
                Ok(text) => rule.key_type.parse_text(text).map_err(bad)?,
                Err(_) => {
                    return Err(bad(KeyError::InvalidText {
                        ty: rule.key_type.sql_name(),
                        value: String::from_utf8_lossy(&bytes[..bytes.len().min(64)]).into_owned(),
                    }));
                }
            },
            Some(Param::Binary(bytes)) => rule.key_type.parse_binary(bytes).map_err(bad)?,
            Some(Param::ForeignBinary { oid }) => {
                return Err(RouteError::Unsupported {
                    what: format!(
                        "a binary parameter of type OID {oid} for shard key {}.{} (send it as {} or in text format)",
                        occ.name,
                        rule.key,
                        rule.key_type.sql_name()
                    ),
                });
            }
        },
    };
    Ok(map.locate(&key))
}
