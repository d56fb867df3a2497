//! Routing of COPY. `COPY t FROM STDIN` into a sharded table opens the same COPY on
//! every shard and sends each row to the shard of its key ([`CopyIn`]); into a reference
//! table every row goes to every shard. `COPY t TO STDOUT` of a sharded table, and
//! `COPY (SELECT …) TO STDOUT` whose SELECT is a plain scan across shards, concatenate
//! the shards' rows ([`Merge::CopyOut`]). A map of one shard needs none of this.

use std::sync::Arc;

use crate::config::{ShardMap, TableRule};
use crate::sharding::KeyType;
use crate::sharding::copy::{CopyFormat, CopyOptions};
use crate::sql::{CopySpec, Statement, StatementKind};

use super::{Merge, Reason, Route, RouteError, RouteInput, Target};

/// A COPY FROM STDIN whose rows are spread over every shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyIn {
    /// the table
    pub table: String,
    /// where each row's key is; `None` for a reference table (every row to every shard,
    /// the data forwarded as it comes, in any format)
    pub key: Option<CopyKey>,
    /// how rows and fields are written (meaningful only with a key)
    pub options: CopyOptions,
}

/// The shard key of a COPY's rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyKey {
    /// key column name
    pub column: String,
    /// its type
    pub key_type: KeyType,
    /// its field number in each row (0-based)
    pub position: usize,
}

/// Where a COPY runs. `select` routes a `COPY (SELECT …)`'s query as a SELECT;
/// `otherwise` routes what needs no COPY across shards (unsharded tables, reads of
/// reference tables).
pub(super) fn route(
    st: &Statement,
    input: &RouteInput<'_>,
    map: &ShardMap,
    select: impl FnOnce(&Statement) -> Result<Route, RouteError>,
    otherwise: impl FnOnce() -> Result<Route, RouteError>,
) -> Result<Route, RouteError> {
    let from = st.kind == StatementKind::Copy { from: true };
    let Some(spec) = &st.copy else {
        return otherwise();
    };
    if spec.query {
        return copy_query(st, spec, select);
    }
    let Some(table) = st.tables.first() else {
        return otherwise();
    };
    let all = (0..map.shard_count()).collect::<Vec<_>>();
    let reason = |how: &'static str| Reason::Copy {
        table: table.name.clone(),
        shards: map.shard_count(),
        how,
    };
    if let Some(rule) = map.table(&table.name) {
        if !spec.stdio {
            return Err(unsupported(format!(
                "COPY of sharded table \"{}\" to or from a file or program on the server (each shard holds only part of its rows): use STDIN/STDOUT (psql's \\copy)",
                table.name
            )));
        }
        if map.shard_count() == 1 {
            return Ok(route_to(Target::One(0), reason("one shard")));
        }
        let format = format_of(spec)?;
        if !from {
            if format.is_none() {
                return Err(binary_out(&table.name));
            }
            return Ok(route_to(
                Target::Scatter(
                    all,
                    Merge::CopyOut {
                        skip_header: spec.header,
                    },
                ),
                reason("rows of every shard concatenated"),
            ));
        }
        let Some(format) = format else {
            return Err(unsupported(format!(
                "COPY FROM STDIN in binary format into sharded table \"{}\": use text or CSV",
                table.name
            )));
        };
        check_encoding(spec)?;
        let position = key_position(spec, rule, input)?;
        let options = options(spec, format, &rule.key)?;
        return Ok(route_to(
            Target::Scatter(
                all,
                Merge::CopyIn(Arc::new(CopyIn {
                    table: table.name.clone(),
                    key: Some(CopyKey {
                        column: rule.key.clone(),
                        key_type: rule.key_type,
                        position,
                    }),
                    options,
                })),
            ),
            reason("each row to the shard of its key"),
        ));
    }
    if from && map.is_replicated(&table.name) {
        if !spec.stdio {
            return Err(unsupported(format!(
                "COPY into reference table \"{}\" from a file or program on the server: use STDIN (psql's \\copy)",
                table.name
            )));
        }
        if map.shard_count() == 1 {
            return Ok(route_to(Target::One(0), reason("one shard")));
        }
        return Ok(route_to(
            Target::Scatter(
                all,
                Merge::CopyIn(Arc::new(CopyIn {
                    table: table.name.clone(),
                    key: None,
                    options: CopyOptions::defaults(CopyFormat::Text),
                })),
            ),
            reason("every row to every shard"),
        ));
    }
    otherwise()
}

/// `COPY (SELECT …) TO`: routed as the SELECT; across shards only a plain scan.
fn copy_query(
    st: &Statement,
    spec: &CopySpec,
    select: impl FnOnce(&Statement) -> Result<Route, RouteError>,
) -> Result<Route, RouteError> {
    let mut query = st.clone();
    query.kind = StatementKind::Select;
    query.command = "SELECT";
    let route = select(&query)?;
    match route.target {
        Target::Scatter(shards, Merge::Concatenate) => {
            if format_of(spec)?.is_none() {
                return Err(binary_out("(SELECT …)"));
            }
            Ok(Route {
                target: Target::Scatter(
                    shards,
                    Merge::CopyOut {
                        skip_header: spec.header,
                    },
                ),
                reason: route.reason,
            })
        }
        Target::Scatter(_, merge) => Err(unsupported(format!(
            "COPY (SELECT …) TO on several shards whose rows must be merged ({}): only a plain scan of one sharded table (no ORDER BY, LIMIT, DISTINCT, GROUP BY or aggregates) is streamed; add a shard key condition or run the SELECT itself",
            merge.name()
        ))),
        _ => Ok(route),
    }
}

fn binary_out(what: &str) -> RouteError {
    unsupported(format!(
        "COPY {what} TO STDOUT in binary format from several shards (each shard's data carries its own header and trailer): use text or CSV"
    ))
}

/// The format of a COPY; `None` for binary.
fn format_of(spec: &CopySpec) -> Result<Option<CopyFormat>, RouteError> {
    match spec.format.as_deref() {
        None | Some("text") => Ok(Some(CopyFormat::Text)),
        Some("csv") => Ok(Some(CopyFormat::Csv)),
        Some("binary") => Ok(None),
        Some(other) => Err(unsupported(format!("COPY format \"{other}\""))),
    }
}

/// Key values are hashed as the bytes the shards store: the data must be UTF-8.
fn check_encoding(spec: &CopySpec) -> Result<(), RouteError> {
    if let Some(other) = &spec.other {
        return Err(unsupported(format!(
            "COPY option {other} on a sharded table"
        )));
    }
    match spec.encoding.as_deref().map(|e| e.to_ascii_lowercase()) {
        None => Ok(()),
        Some(e) if matches!(e.as_str(), "utf8" | "utf-8" | "unicode" | "sql_ascii") => Ok(()),
        Some(e) => Err(unsupported(format!(
            "COPY with ENCODING '{e}' into a sharded table (pgshard reads keys as UTF-8)"
        ))),
    }
}

/// The key's field number: its place in the column list, or in the table's columns.
fn key_position(
    spec: &CopySpec,
    rule: &TableRule,
    input: &RouteInput<'_>,
) -> Result<usize, RouteError> {
    match &spec.columns {
        Some(columns) => columns.iter().position(|c| *c == rule.key).ok_or_else(|| {
            unsupported(format!(
                "COPY into sharded table \"{}\" without its shard key column \"{}\" in the column list",
                rule.name, rule.key
            ))
        }),
        None => input.ordinals.copy_key_ordinal(&rule.name).ok_or_else(|| {
            RouteError::KeyOrdinalUnknown {
                table: rule.name.clone(),
            }
        }),
    }
}

/// The splitting options, from the statement's (Postgres checks them when the shards
/// start the COPY; one-byte characters are needed here too).
fn options(spec: &CopySpec, format: CopyFormat, key: &str) -> Result<CopyOptions, RouteError> {
    let mut o = CopyOptions::defaults(format);
    let byte = |c: char, what: &str| {
        u8::try_from(c)
            .ok()
            .filter(u8::is_ascii)
            .ok_or_else(|| unsupported(format!("a COPY {what} that is not one ASCII character")))
    };
    if let Some(c) = spec.delimiter {
        o.delimiter = byte(c, "delimiter")?;
    }
    if let Some(n) = &spec.null {
        o.null = n.as_bytes().to_vec();
    }
    if let Some(c) = spec.quote {
        o.quote = byte(c, "quote")?;
        o.escape = o.quote;
    }
    if let Some(c) = spec.escape {
        o.escape = byte(c, "escape")?;
    }
    o.header = spec.header;
    o.key_force_not_null = spec.force_not_null.iter().any(|c| c == key);
    o.key_force_null = spec.force_null.iter().any(|c| c == key);
    Ok(o)
}

fn route_to(target: Target, reason: Reason) -> Route {
    Route { target, reason }
}

fn unsupported(what: String) -> RouteError {
    RouteError::Unsupported { what }
}
