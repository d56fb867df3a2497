//! `pgshard route`: explain the routing of a statement.
use std::path::Path;
use std::process::ExitCode;

use crate::config::{self, ShardMap, UnparsedPolicy};
use crate::router::{self, NoOrdinals, NoParams, RouteError, RouteInput, Target};
use crate::sql;

/// What `pgshard route` found out about a statement.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Explained {
    /// routed: shard names and the reason
    Routed {
        /// shard names
        shards: Vec<String>,
        /// why
        reason: String,
        /// how the session merges the shards' replies: `Some("concatenate")` for a
        /// scatter read, None when one shard answers (or each runs the same DDL)
        merge: Option<String>,
        /// the text the shards run, when a merge plan rewrote it
        shard_sql: Option<String>,
    },
    /// the shard is decided by the value of `$n`, known only at Bind time
    DependsOnParam(usize),
    /// an INSERT without column list: the key position comes from the catalog at run time
    DependsOnCatalog(String),
    /// refused
    Refused(RouteError),
}

/// Run the subcommand: print the shards and the reason, or the error and exit 1 (2 if
/// the map cannot be read).
pub fn run(config: &Path, json: bool, sql: &str) -> ExitCode {
    let c = match config::load(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return super::check::exit_code(&e);
        }
    };
    let explained = explain(&c.map, c.server.unparsed, sql);
    let text = if json {
        render_json(&explained)
    } else {
        render_text(&explained)
    };
    say!("{text}");
    match explained {
        Explained::Refused(_) => ExitCode::FAILURE,
        _ => ExitCode::SUCCESS,
    }
}

/// Route `sql` without parameters or catalog knowledge.
pub(crate) fn explain(map: &ShardMap, policy: UnparsedPolicy, sql: &str) -> Explained {
    let analysis = sql::analyze(sql);
    let input = RouteInput {
        sql,
        analysis: &analysis,
        params: &NoParams,
        ordinals: &NoOrdinals,
    };
    match router::route(&input, map, policy) {
        Ok(route) => {
            let merge = match &route.target {
                Target::Scatter(_, m) => Some(m.name()),
                _ => None,
            };
            let shard_sql = match &route.target {
                Target::Scatter(_, router::Merge::Plan(p)) => p.shard_sql.clone(),
                _ => None,
            };
            let shards = match route.target {
                Target::One(id) => vec![map.shard_name(id).to_owned()],
                Target::Any => vec![map.shard_name(map.default_shard).to_owned()],
                // one of them, chosen by the session (round-robin outside a transaction)
                Target::OneCopy => map.shard_names.clone(),
                Target::AllCopies => map.shard_names.clone(),
                Target::All => map.shard_names.clone(),
                Target::Scatter(set, _) => set
                    .iter()
                    .map(|id| map.shard_name(*id).to_owned())
                    .collect(),
            };
            Explained::Routed {
                shards,
                reason: route.reason.to_string(),
                merge,
                shard_sql,
            }
        }
        Err(RouteError::MissingParam(n)) => Explained::DependsOnParam(n),
        Err(RouteError::KeyOrdinalUnknown { table }) => Explained::DependsOnCatalog(table),
        Err(e) => Explained::Refused(e),
    }
}

const PARAM_NOTE: &str = "the shard key is bound to a parameter; the proxy routes at Bind time (other checks run then too)";

fn render_text(e: &Explained) -> String {
    match e {
        Explained::Routed {
            shards,
            reason,
            merge,
            shard_sql,
        } => {
            let mut text = format!("shards: {}\nreason: {reason}", shards.join(", "));
            if let Some(merge) = merge {
                text.push_str(&format!("\nmerge: {merge}"));
            }
            if let Some(sql) = shard_sql {
                text.push_str(&format!("\nshards run: {sql}"));
            }
            text
        }
        Explained::DependsOnParam(n) => format!("shards: depends on ${n}\nreason: {PARAM_NOTE}"),
        Explained::DependsOnCatalog(table) => format!(
            "shards: depends on the position of the shard key column of \"{table}\"\nreason: INSERT without a column list; the proxy looks the position up in the catalog"
        ),
        Explained::Refused(err) => format!("error: {err}"),
    }
}

fn render_json(e: &Explained) -> String {
    let v = match e {
        Explained::Routed {
            shards,
            reason,
            merge,
            shard_sql,
        } => match merge {
            Some(merge) => match shard_sql {
                Some(sql) => {
                    serde_json::json!({ "shards": shards, "reason": reason, "merge": merge, "shard_sql": sql })
                }
                None => serde_json::json!({ "shards": shards, "reason": reason, "merge": merge }),
            },
            None => serde_json::json!({ "shards": shards, "reason": reason }),
        },
        Explained::DependsOnParam(n) => serde_json::json!({
            "shards": format!("depends on ${n}"),
            "param": n,
            "reason": PARAM_NOTE,
        }),
        Explained::DependsOnCatalog(table) => serde_json::json!({
            "shards": format!("depends on the key position of \"{table}\""),
            "reason": "INSERT without a column list; the proxy looks the position up in the catalog",
        }),
        Explained::Refused(err) => serde_json::json!({
            "error": err.to_string(),
            "sqlstate": err.sqlstate().0,
        }),
    };
    v.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> ShardMap {
        config::parse(include_str!("../config/testdata/base.toml"), "t")
            .expect("test map parses")
            .map
    }

    #[test]
    fn keyed_select_names_one_shard() {
        let m = map();
        let e = explain(
            &m,
            UnparsedPolicy::Refuse,
            "SELECT * FROM accounts WHERE aid = 5",
        );
        let Explained::Routed {
            shards,
            reason,
            merge: None,
            shard_sql: None,
        } = &e
        else {
            panic!("{e:?}")
        };
        assert_eq!(shards.len(), 1);
        assert!(
            reason.starts_with("accounts.aid = value in slot "),
            "{reason}"
        );
        let json: serde_json::Value = serde_json::from_str(&render_json(&e)).unwrap();
        assert_eq!(json["shards"][0], shards[0].as_str());
    }

    #[test]
    fn param_key_depends_on_bind() {
        let e = explain(
            &map(),
            UnparsedPolicy::Refuse,
            "SELECT abalance FROM accounts WHERE aid = $1",
        );
        assert_eq!(e, Explained::DependsOnParam(1));
        assert!(render_text(&e).starts_with("shards: depends on $1\n"));
    }

    #[test]
    fn ddl_names_every_shard_and_no_table_names_default() {
        let m = map();
        let e = explain(
            &m,
            UnparsedPolicy::Refuse,
            "CREATE INDEX ON accounts (abalance)",
        );
        assert_eq!(
            render_text(&e),
            "shards: s0, s1\nreason: DDL: broadcast to all shards"
        );
        let e = explain(&m, UnparsedPolicy::Refuse, "SELECT 1");
        let json: serde_json::Value = serde_json::from_str(&render_json(&e)).unwrap();
        assert_eq!(json["shards"], serde_json::json!(["s0"]));
    }

    #[test]
    fn refusal_prints_error_and_sqlstate() {
        let e = explain(&map(), UnparsedPolicy::Refuse, "DELETE FROM accounts");
        assert!(matches!(
            e,
            Explained::Refused(RouteError::NoShardKey { .. })
        ));
        assert!(render_text(&e).starts_with("error: statement on sharded table \"accounts\""));
        let json: serde_json::Value = serde_json::from_str(&render_json(&e)).unwrap();
        assert_eq!(json["sqlstate"], "0A000");

        let e = explain(
            &map(),
            UnparsedPolicy::Refuse,
            "SELECT string_agg(name, ',') FROM accounts",
        );
        assert_eq!(
            render_text(&e),
            "error: statement on sharded table \"accounts\" without a single shard key needs several shards, and aggregate function string_agg() across shards is not supported yet: add \"WHERE aid = <value>\""
        );
    }

    #[test]
    fn scatter_read_names_its_shards_and_merge() {
        let m = map();
        let e = explain(&m, UnparsedPolicy::Refuse, "SELECT * FROM accounts");
        assert_eq!(
            render_text(&e),
            "shards: s0, s1\nreason: accounts.aid: no key, runs on 2 shards, replies merged\nmerge: concatenate"
        );
        let json: serde_json::Value = serde_json::from_str(&render_json(&e)).unwrap();
        assert_eq!(json["shards"], serde_json::json!(["s0", "s1"]));
        assert_eq!(json["merge"], "concatenate");
        assert!(
            json["reason"].as_str().unwrap().contains("no key"),
            "{json}"
        );
        // one shard: no merge line
        let e = explain(
            &m,
            UnparsedPolicy::Refuse,
            "SELECT * FROM accounts WHERE aid = 5",
        );
        assert!(!render_text(&e).contains("merge"), "{e:?}");
        let json: serde_json::Value = serde_json::from_str(&render_json(&e)).unwrap();
        assert!(json.get("merge").is_none(), "{json}");
    }
}
