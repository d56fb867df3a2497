//! `pgshard rebalance plan`: what adding or removing shards would move.
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::config::validate::format_range;
use crate::config::{self, PgUrl};
use crate::rebalance::{Estimate, Layout, Plan, ShardChange, VerifyReport, estimate, plan, verify};

/// Slot ranges printed per move in the text output.
const SHOWN_RANGES: usize = 12;

/// `pgshard rebalance …`
#[derive(Debug, Subcommand)]
pub enum RebalanceAction {
    /// Show the target slot map and what moves, source → destination, without touching
    /// any data. Only slots that must move do: those of removed shards, and those the
    /// consistent-hash ring gives to added shards; nothing moves between shards that stay.
    Plan(PlanArgs),
    /// Check that every row of every sharded table lives on the shard that owns its slot
    /// (each shard counts its rows per slot); exit 0 if so, 1 with a report if not, 2
    /// if a shard cannot be checked.
    Verify {
        /// shard map file
        #[arg(short, long, default_value = "shardmap.toml")]
        config: PathBuf,
        /// print the report as JSON
        #[arg(long)]
        json: bool,
    },
}

/// Arguments of `pgshard rebalance plan`.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// shard map file
    #[arg(short, long, default_value = "shardmap.toml")]
    pub config: PathBuf,
    /// a shard to add, as NAME=URL (repeatable); its ring weight is 1
    #[arg(long = "add-shard", value_name = "NAME=URL")]
    pub add: Vec<String>,
    /// a shard to remove: all its slots move to the others (repeatable)
    #[arg(long = "remove-shard", value_name = "NAME")]
    pub remove: Vec<String>,
    /// print the plan as JSON
    #[arg(long)]
    pub json: bool,
    /// do not connect to the shards to count the rows and bytes that move
    #[arg(long)]
    pub no_estimate: bool,
}

/// Run `pgshard rebalance …`.
pub fn run(action: RebalanceAction) -> ExitCode {
    match action {
        RebalanceAction::Plan(args) => match plan_text(&args) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("pgshard rebalance plan: {e}");
                ExitCode::from(1)
            }
        },
        RebalanceAction::Verify { config, json } => run_verify(&config, json),
    }
}

fn run_verify(path: &Path, json: bool) -> ExitCode {
    let config = match config::load(path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("pgshard rebalance verify: {e}");
            return ExitCode::from(2);
        }
    };
    let report = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
        .and_then(|rt| rt.block_on(verify(&config)).map_err(|e| e.to_string()));
    let report = match report {
        Ok(report) => report,
        Err(e) => {
            eprintln!("pgshard rebalance verify: {e}");
            return ExitCode::from(2);
        }
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        print!("{}", render_verify(&report, config.shards.len()));
    }
    if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn render_verify(report: &VerifyReport, shards: usize) -> String {
    let mut out = format!(
        "checked {} rows: {} sharded tables on {} shards\n",
        report.rows,
        report.tables_checked / shards.max(1),
        shards
    );
    if report.ok() {
        out.push_str("ok: every row is on the shard that owns its slot\n");
        return out;
    }
    let wrong: u64 = report.misplaced.iter().map(|m| m.rows).sum();
    out.push_str(&format!(
        "MISPLACED: {wrong} rows in {} slots are on a shard that does not own them\n",
        report.misplaced.len()
    ));
    for m in &report.misplaced {
        out.push_str(&format!(
            "  {} {}: slot {} ({} rows) belongs to {}\n",
            m.shard, m.table, m.slot, m.rows, m.owner
        ));
    }
    out
}

/// The plan for `args`, rendered as text or JSON.
fn plan_text(args: &PlanArgs) -> Result<String, String> {
    let changes = changes(&args.add, &args.remove)?;
    let config = config::load(&args.config).map_err(|e| e.to_string())?;
    let layout = layout(&config);
    let plan = plan(&layout, &changes).map_err(|e| e.to_string())?;
    let estimate = if args.no_estimate {
        None
    } else {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the async runtime: {e}"))?;
        let counted = runtime.block_on(estimate(&config, &plan)).map_err(|e| {
            format!("counting the rows that move: {e} (--no-estimate plans without connecting)")
        })?;
        Some(counted)
    };
    if args.json {
        let value = serde_json::json!({ "plan": plan, "estimate": estimate });
        return serde_json::to_string_pretty(&value)
            .map(|s| s + "\n")
            .map_err(|e| e.to_string());
    }
    Ok(render(&plan, &layout, &args.config, estimate.as_ref()))
}

/// `--add-shard NAME=URL` and `--remove-shard NAME` as changes; URLs are checked.
fn changes(add: &[String], remove: &[String]) -> Result<Vec<ShardChange>, String> {
    let mut out = Vec::new();
    for spec in add {
        let (name, url) = spec
            .split_once('=')
            .ok_or_else(|| format!("--add-shard {spec}: expected NAME=URL"))?;
        if name.is_empty() {
            return Err(format!("--add-shard {spec}: the shard name is empty"));
        }
        PgUrl::parse(url).map_err(|e| format!("--add-shard {name}: {e}"))?;
        out.push(ShardChange::Add {
            name: name.to_owned(),
            weight: 1,
        });
    }
    for name in remove {
        out.push(ShardChange::Remove { name: name.clone() });
    }
    Ok(out)
}

fn layout(config: &config::Config) -> Layout {
    let map = &config.map;
    Layout {
        shards: config
            .shards
            .iter()
            .map(|s| (s.name.clone(), s.weight))
            .collect(),
        owner: map.slot_owner.clone(),
        vnodes: map.vnodes,
    }
}

fn render(plan: &Plan, layout: &Layout, map_path: &Path, estimate: Option<&Estimate>) -> String {
    let mut out = String::new();
    let before: Vec<&str> = layout.shards.iter().map(|(n, _)| n.as_str()).collect();
    out.push_str(&format!(
        "map {}: {} shards ({}) → {} shards ({}), {} slots\n",
        map_path.display(),
        before.len(),
        before.join(", "),
        plan.shards.len(),
        plan.shards.join(", "),
        plan.total_slots
    ));
    out.push_str(&format!(
        "moving {} of {} slots ({:.1} %)\n",
        plan.moved_slots,
        plan.total_slots,
        plan.moved_share() * 100.0
    ));
    for m in &plan.moves {
        let mut ranges: Vec<String> = m
            .ranges
            .iter()
            .take(SHOWN_RANGES)
            .map(|&(lo, hi)| format_range(lo, hi))
            .collect();
        if m.ranges.len() > SHOWN_RANGES {
            ranges.push(format!(
                "… {} more ranges (--json lists all)",
                m.ranges.len() - SHOWN_RANGES
            ));
        }
        out.push_str(&format!(
            "  {} → {}: {} slots ({:.1} %): {}\n",
            m.from,
            m.to,
            m.slots,
            f64::from(m.slots) * 100.0 / f64::from(plan.total_slots.max(1)),
            ranges.join(", ")
        ));
    }
    if let Some(e) = estimate {
        out.push_str(&format!(
            "rows moving: {} of {} ({:.1} %), {} of {} bytes\n",
            e.moved_rows(),
            e.total_rows,
            e.moved_rows() as f64 * 100.0 / (e.total_rows.max(1) as f64),
            e.moved_bytes(),
            e.total_bytes
        ));
        for m in &e.moves {
            out.push_str(&format!(
                "  {} → {} {}: {} rows, {} bytes\n",
                m.from, m.to, m.table, m.rows, m.bytes
            ));
        }
    }
    out.push_str("after:\n");
    for (i, name) in plan.shards.iter().enumerate() {
        let n = plan.owner.iter().filter(|&&o| o == i).count();
        out.push_str(&format!(
            "  {name}: {n} slots ({:.1} %)\n",
            n as f64 * 100.0 / f64::from(plan.total_slots.max(1))
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(add: &[&str], remove: &[&str], json: bool) -> PlanArgs {
        PlanArgs {
            config: PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/src/config/testdata/base.toml"
            )),
            add: add.iter().map(|s| s.to_string()).collect(),
            remove: remove.iter().map(|s| s.to_string()).collect(),
            json,
            no_estimate: true,
        }
    }

    #[test]
    fn plan_of_a_map_file_as_text_and_json() {
        let text = plan_text(&args(&["s9=postgres://u@h:5433/app"], &[], false)).unwrap();
        assert!(text.contains("moving "), "{text}");
        assert!(text.contains(" → s9: "), "{text}");
        assert!(text.contains("  s9: "), "{text}");
        let json: serde_json::Value =
            serde_json::from_str(&plan_text(&args(&["s9=postgres://u@h/app"], &[], true)).unwrap())
                .unwrap();
        assert!(json["estimate"].is_null());
        let json = &json["plan"];
        let moves = json["moves"].as_array().unwrap();
        assert!(!moves.is_empty());
        assert!(moves.iter().all(|m| m["to"] == "s9"));
        let moved: u64 = moves.iter().map(|m| m["slots"].as_u64().unwrap()).sum();
        assert_eq!(json["moved_slots"].as_u64(), Some(moved));
        let err = plan_text(&args(&[], &["nope"], false)).unwrap_err();
        assert!(err.contains("\"nope\" is not in the map"), "{err}");
    }

    #[test]
    fn shard_specs_are_checked() {
        assert!(
            changes(&["s2".into()], &[])
                .unwrap_err()
                .contains("NAME=URL")
        );
        assert!(
            changes(&["=postgres://h/db".into()], &[])
                .unwrap_err()
                .contains("empty")
        );
        assert!(changes(&["s2=mysql://h/db".into()], &[]).is_err());
        assert_eq!(
            changes(&["s2=postgres://u@h:5433/db".into()], &["s0".into()]).unwrap(),
            vec![
                ShardChange::Add {
                    name: "s2".into(),
                    weight: 1
                },
                ShardChange::Remove { name: "s0".into() }
            ]
        );
    }
}
