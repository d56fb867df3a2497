//! `pgshard rebalance plan`: what adding or removing shards would move.
use std::io::IsTerminal;
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
    /// Move the data online: copy the moving slots while clients keep writing, cut each
    /// group of slots over (the proxies hold its statements for a moment), verify, and
    /// clean up. Resumable: after a crash or kill, run it again (with the same shard
    /// arguments, or none) and it continues where it stopped.
    Apply(ApplyArgs),
    /// Where a running or interrupted rebalance stands.
    Status {
        /// shard map file
        #[arg(short, long, default_value = "shardmap.toml")]
        config: PathBuf,
        /// admin URL of a proxy to ask which slots it holds (repeatable; default: the
        /// map's listen address, database `pgshard`, first admin user with a plain password)
        #[arg(long = "proxy", value_name = "URL")]
        proxies: Vec<String>,
    },
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

/// The map and the shards to add or remove, shared by `plan` and `apply`.
#[derive(Debug, Args)]
pub struct ShardChanges {
    /// shard map file (`apply` rewrites it at each step; every proxy must serve it)
    #[arg(short, long, default_value = "shardmap.toml")]
    pub config: PathBuf,
    /// a shard to add, as NAME=URL (repeatable); its ring weight is 1
    #[arg(long = "add-shard", value_name = "NAME=URL")]
    pub add: Vec<String>,
    /// a shard to remove: all its slots move to the others (repeatable)
    #[arg(long = "remove-shard", value_name = "NAME")]
    pub remove: Vec<String>,
}

/// Arguments of `pgshard rebalance plan`.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// the map and the changes
    #[command(flatten)]
    pub shards: ShardChanges,
    /// print the plan as JSON
    #[arg(long)]
    pub json: bool,
    /// do not connect to the shards to count the rows and bytes that move
    #[arg(long)]
    pub no_estimate: bool,
}

/// Arguments of `pgshard rebalance apply`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// the map and the changes
    #[command(flatten)]
    pub shards: ShardChanges,
    /// admin URL of a proxy serving the map, e.g. postgres://admin:admin@127.0.0.1:6432/pgshard
    /// (repeatable; default: the map's listen address, database `pgshard`, first user with
    /// admin = true and a plain password)
    #[arg(long = "proxy", value_name = "URL")]
    pub proxies: Vec<String>,
    /// no proxy serves the map: move without holding or reloading (only safe when
    /// nothing writes to the cluster)
    #[arg(long, conflicts_with = "proxies")]
    pub offline: bool,
    /// do not ask for confirmation
    #[arg(long)]
    pub yes: bool,
    /// longest a cutover may hold a slot group's statements; past it the cutover is
    /// rolled back, the old owner keeps serving, and the group is tried again later
    #[arg(long, default_value_t = 2000, value_name = "MS")]
    pub hold_timeout_ms: u64,
    /// rows per cutover group: smaller groups mean shorter holds and more cutovers
    #[arg(long, default_value_t = 10_000, value_name = "ROWS")]
    pub group_rows: u64,
    /// attempts per group before stopping (the state is kept; re-run to continue)
    #[arg(long, default_value_t = 5)]
    pub attempts: u32,
    /// print the final summary as JSON on stdout
    #[arg(long)]
    pub json: bool,
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
        RebalanceAction::Apply(args) => run_apply(&args),
        RebalanceAction::Status { config, proxies } => run_status(&config, &proxies),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

/// The admin URL of the proxy serving `config`: its listen address (loopback when it
/// listens on every address), database `pgshard`, the first admin user with a plain
/// password.
fn default_proxy(config: &config::Config) -> Result<String, String> {
    use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
    let user = config
        .users
        .iter()
        .filter(|u| u.admin)
        .find_map(|u| match &u.secret {
            config::UserSecret::Plain(p) => Some((u.name.clone(), p.clone())),
            _ => None,
        })
        .ok_or(
            "no [[users]] entry with admin = true has a plain password to reach the proxy's \
                admin database: give --proxy URL (or --offline)",
        )?;
    let listen = config.server.listen;
    let host = if listen.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else if listen.is_ipv6() {
        format!("[{}]", listen.ip())
    } else {
        listen.ip().to_string()
    };
    Ok(format!(
        "postgres://{}:{}@{host}:{}/pgshard",
        utf8_percent_encode(&user.0, NON_ALPHANUMERIC),
        utf8_percent_encode(&user.1, NON_ALPHANUMERIC),
        listen.port()
    ))
}

fn run_apply(args: &ApplyArgs) -> ExitCode {
    match apply_inner(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pgshard rebalance apply: {e}");
            ExitCode::from(1)
        }
    }
}

fn apply_inner(args: &ApplyArgs) -> Result<ExitCode, String> {
    let shards = &args.shards;
    let changes = changes(&shards.add, &shards.remove)?;
    let config = config::load(&shards.config).map_err(|e| e.to_string())?;
    let add: Vec<(String, String)> = shards
        .add
        .iter()
        .filter_map(|spec| spec.split_once('='))
        .map(|(n, u)| (n.to_owned(), u.to_owned()))
        .collect();
    let proxies = if args.offline {
        Vec::new()
    } else if args.proxies.is_empty() {
        vec![default_proxy(&config)?]
    } else {
        args.proxies.clone()
    };
    let resuming =
        crate::rebalance::state::load(&crate::rebalance::state::path_for(&shards.config))?
            .is_some();
    if !resuming && !changes.is_empty() {
        let plan = plan(&layout(&config), &changes).map_err(|e| e.to_string())?;
        eprint!("{}", render(&plan, &layout(&config), &shards.config, None));
        if !args.yes {
            if !std::io::stdin().is_terminal() {
                return Err("not a terminal: add --yes to run without confirmation".into());
            }
            eprint!("move these slots now? [y/N] ");
            let mut answer = String::new();
            let _ = std::io::stdin().read_line(&mut answer);
            if !matches!(answer.trim(), "y" | "Y" | "yes") {
                eprintln!("nothing moved");
                return Ok(ExitCode::from(1));
            }
        }
    }
    let opts = crate::rebalance::Options {
        map_path: shards.config.clone(),
        add,
        remove: shards.remove.clone(),
        proxies,
        hold_timeout: std::time::Duration::from_millis(args.hold_timeout_ms.max(1)),
        group_rows: args.group_rows.max(1),
        attempts: args.attempts.max(1),
        bars: true,
        pause_at: std::env::var("PGSHARD_REBALANCE_PAUSE").ok(),
    };
    let rt = runtime()?;
    let summary = rt.block_on(async {
        let cancel = tokio_util::sync::CancellationToken::new();
        let on_signal = cancel.clone();
        tokio::spawn(async move {
            super::serve::wait_for_signal().await;
            eprintln!(
                "pgshard rebalance: interrupted: finishing the current step, then cleaning up"
            );
            on_signal.cancel();
        });
        crate::rebalance::apply(&opts, &cancel).await
    });
    let summary = summary.map_err(|e| e.to_string())?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&summary).unwrap_or_default()
        );
    } else {
        print!("{}", render_summary(&summary));
    }
    Ok(ExitCode::SUCCESS)
}

fn render_summary(s: &crate::rebalance::Summary) -> String {
    let secs = s.copy_seconds.max(1e-9);
    let mut out = format!(
        "done in {:.1} s: map epoch {}\n\
         copied {} rows ({:.1} MB) in {:.1} s: {:.0} rows/s, {:.1} MB/s\n\
         {} cutovers moved {} rows; longest hold {} ms; {} cutovers retried\n",
        s.seconds,
        s.epoch,
        s.copied_rows,
        s.copied_bytes as f64 / 1e6,
        s.copy_seconds,
        s.copied_rows as f64 / secs,
        s.copied_bytes as f64 / 1e6 / secs,
        s.cutovers,
        s.moved_rows,
        s.longest_hold_ms,
        s.aborted_cutovers
    );
    if let Some(v) = &s.verify {
        out.push_str(&format!(
            "verified: {} rows, every one on the shard that owns its slot\n",
            v.rows
        ));
    }
    out
}

fn run_status(path: &Path, proxies: &[String]) -> ExitCode {
    match status_text(path, proxies) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pgshard rebalance status: {e}");
            ExitCode::from(2)
        }
    }
}

fn status_text(path: &Path, proxies: &[String]) -> Result<String, String> {
    use crate::rebalance::{proxies::Proxies, shard::ShardClient, sql, state};
    let config = config::load(path).map_err(|e| e.to_string())?;
    let map = &config.map;
    let mut out = format!(
        "map {}: epoch {}, {} shards\n",
        path.display(),
        map.epoch,
        map.shard_count()
    );
    let state_path = state::path_for(path);
    if state::is_running(path) {
        out.push_str("a `pgshard rebalance apply` is running now\n");
    }
    match state::load(&state_path)? {
        None => out.push_str("no rebalance in progress\n"),
        Some(st) => {
            let target = st.target_owner(map.slots);
            let left = (0..map.slots)
                .filter(|&s| {
                    target[s as usize].is_some_and(|t| t != map.shard_name(map.shard_of_slot(s)))
                })
                .count();
            let adds: Vec<&str> = st.add.iter().map(|(n, _)| n.as_str()).collect();
            out.push_str(&format!(
                "rebalance {} in progress ({}): add [{}] remove [{}]\n  last step: {}\n  \
                 cutovers done: {}; slots still to move: {left}\n",
                st.id,
                state_path.display(),
                adds.join(", "),
                st.remove.join(", "),
                st.step,
                st.cutovers_done
            ));
            if let Some(c) = &st.cutover {
                out.push_str(&format!(
                    "  cutover in flight: {} slots {} → {} ({:?}); `rebalance apply` settles it\n",
                    c.slots.len(),
                    c.from,
                    c.to,
                    c.stage
                ));
            }
        }
    }
    let rt = runtime()?;
    rt.block_on(async {
        for shard in &config.shards {
            let line = match ShardClient::connect(shard).await {
                Err(e) => format!("unreachable: {e}"),
                Ok(c) => {
                    let schema = c
                        .value(&format!(
                            "SELECT 'yes' FROM pg_namespace WHERE nspname = '{}'",
                            sql::SCHEMA
                        ))
                        .await
                        .ok()
                        .flatten()
                        .is_some();
                    let prepared = c
                        .value("SELECT count(*)::text FROM pg_prepared_xacts WHERE gid LIKE 'pgshard\\_rb\\_%'")
                        .await
                        .ok()
                        .flatten()
                        .unwrap_or_default();
                    format!(
                        "{}; {prepared} prepared cutover transactions",
                        if schema {
                            "capture/staging objects present"
                        } else {
                            "clean"
                        }
                    )
                }
            };
            out.push_str(&format!("  shard {}: {line}\n", shard.name));
        }
        let urls = if proxies.is_empty() {
            default_proxy(&config).map(|u| vec![u]).unwrap_or_default()
        } else {
            proxies.to_vec()
        };
        for url in urls {
            let shown = crate::rebalance::proxies::redact(&url);
            match Proxies::connect(std::slice::from_ref(&url)).await {
                Err(e) => out.push_str(&format!("  proxy {shown}: {e}\n")),
                Ok(mut p) => match (p.epochs().await, p.held().await) {
                    (Ok(e), Ok(h)) => out.push_str(&format!(
                        "  proxy {shown}: epoch {}, held slots: {}\n",
                        e.first().copied().unwrap_or(0),
                        h.first()
                            .map(|(_, r)| if r.is_empty() { "none" } else { r.as_str() })
                            .unwrap_or("none")
                    )),
                    (Err(e), _) | (_, Err(e)) => out.push_str(&format!("  proxy {shown}: {e}\n")),
                },
            }
        }
    });
    Ok(out)
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
    let changes = changes(&args.shards.add, &args.shards.remove)?;
    let config = config::load(&args.shards.config).map_err(|e| e.to_string())?;
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
    Ok(render(
        &plan,
        &layout,
        &args.shards.config,
        estimate.as_ref(),
    ))
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
            shards: ShardChanges {
                config: PathBuf::from(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/src/config/testdata/base.toml"
                )),
                add: add.iter().map(|s| s.to_string()).collect(),
                remove: remove.iter().map(|s| s.to_string()).collect(),
            },
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
