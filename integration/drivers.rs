//! Real drivers through the proxy: psycopg 3 (Python) and node-postgres (JavaScript).
//!
//! Each test starts shards and the proxy, creates its tables through the proxy, runs one
//! program from `integration/drivers/` against the proxy URL (the program checks every
//! value it reads and exits non-zero on a mismatch), then looks at every shard directly:
//! each row the program left must sit on the shard that owns its key, computed inside
//! Postgres with the partition hash, and nowhere else.
//!
//! The drivers are installed on first use into a cache kept across runs
//! (`$HOME/.cache/pgshard-drivers`): a Python venv with `psycopg[binary]` and an npm
//! prefix with `pg`, each built in a scratch directory and renamed into place, so runs
//! sharing the cache never see half an install. When Python's venv or npm is missing
//! the tests say so loudly and skip, unless `PGSHARD_REQUIRE_DRIVERS` is set
//! (`scripts/test.sh` installs both and sets it): then they fail.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use pgshard::devcluster::shardmap;
use pgshard::sharding::{KeyValue, slot_of};

use crate::harness::{Cluster, Proxy, SLOTS};

/// psycopg 3 with its bundled libpq (the binary wheel).
const PSYCOPG: &str = "psycopg[binary]==3.3.9";
/// node-postgres.
const NODE_PG: &str = "pg@8.23.1";
/// How long one driver program may run.
const PROGRAM_TIMEOUT: Duration = Duration::from_secs(180);
/// The seed `PARTITION BY HASH` hashes keys with (`HASH_PARTITION_SEED`).
const PARTITION_SEED: &str = "8816678312871386365";

/// A sharded table a driver program writes: name, key column, key type, hash function.
struct Sharded {
    name: &'static str,
    key: &'static str,
    key_type: &'static str,
    hash_fn: &'static str,
}

impl Sharded {
    const fn bigint(name: &'static str) -> Sharded {
        Sharded {
            name,
            key: "id",
            key_type: "bigint",
            hash_fn: "hashint8extended",
        }
    }

    const fn uuid(name: &'static str) -> Sharded {
        Sharded {
            name,
            key: "token",
            key_type: "uuid",
            hash_fn: "uuid_hash_extended",
        }
    }

    fn toml(&self) -> String {
        format!(
            "[[tables]]\nname = \"{}\"\nkey = \"{}\"\ntype = \"{}\"\n",
            self.name, self.key, self.key_type
        )
    }
}

/// Columns of the `*_items` tables: one of each type the programs round-trip.
const ITEMS_COLUMNS: &str = "id bigint PRIMARY KEY, n int, big bigint, label text, \
     amount numeric(12,3), at timestamptz, token uuid, flag bool";
/// Columns of the `*_tokens` tables.
const TOKENS_COLUMNS: &str = "token uuid PRIMARY KEY, note text";

/// Start `shards` shards and a proxy sharding `items` and `tokens`, with both tables
/// created through the proxy.
async fn setup(shards: usize, items: &Sharded, tokens: &Sharded) -> (Cluster, Proxy) {
    let cluster = Cluster::start(shards).await;
    let toml = cluster.shardmap_toml(&(items.toml() + &tokens.toml()), 4);
    let proxy = Proxy::start(&toml).await;
    proxy
        .client()
        .await
        .batch_execute(&format!(
            "CREATE TABLE {} ({ITEMS_COLUMNS}); CREATE TABLE {} ({TOKENS_COLUMNS})",
            items.name, tokens.name
        ))
        .await
        .unwrap_or_else(|e| panic!("create the driver tables through the proxy: {e}"));
    (cluster, proxy)
}

/// Whether a missing driver toolchain fails the test instead of skipping it.
fn drivers_required() -> bool {
    let set = |name: &str| {
        std::env::var(name)
            .map(|v| !v.is_empty() && v != "0" && v != "false")
            .unwrap_or(false)
    };
    set("PGSHARD_REQUIRE_DRIVERS")
}

/// The toolchain for a test, or `None` after a loud skip message (a panic when drivers
/// are required).
fn toolchain_or_skip(test: &str, found: &Result<PathBuf, String>) -> Option<PathBuf> {
    match found {
        Ok(path) => Some(path.clone()),
        Err(why) if drivers_required() => panic!("{test}: driver toolchain unavailable: {why}"),
        Err(why) => {
            eprintln!(
                "\n{bar}\nSKIPPED {test}: driver toolchain unavailable:\n{why}\n\
                 (scripts/test.sh installs it; set PGSHARD_REQUIRE_DRIVERS=1 to fail instead)\n{bar}\n",
                bar = "!".repeat(78)
            );
            None
        }
    }
}

/// Where installed drivers are kept across runs.
fn cache_root() -> PathBuf {
    match std::env::var_os("HOME") {
        Some(home) if !home.is_empty() => PathBuf::from(home).join(".cache/pgshard-drivers"),
        _ => Path::new(env!("CARGO_TARGET_TMPDIR")).join("pgshard-drivers"),
    }
}

/// A directory name for a package spec: `psycopg[binary]==3.3.9` → `psycopg-binary-3.3.9`.
fn dir_name(spec: &str) -> String {
    spec.split(|c: char| !(c.is_ascii_alphanumeric() || c == '.'))
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join("-")
}

/// Run a setup command; its output goes into the error.
fn run_setup(cmd: &mut std::process::Command) -> Result<(), String> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{shown}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{shown} exited with {}:\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// `final_dir` when `works(final_dir)`; otherwise built by `build` in a scratch directory
/// next to it and renamed into place (a broken install is replaced).
fn cached_install(
    final_dir: PathBuf,
    works: impl Fn(&Path) -> bool,
    build: impl FnOnce(&Path) -> Result<(), String>,
) -> Result<PathBuf, String> {
    if works(&final_dir) {
        return Ok(final_dir);
    }
    let parent = final_dir
        .parent()
        .ok_or_else(|| format!("{} has no parent", final_dir.display()))?;
    std::fs::create_dir_all(parent).map_err(|e| format!("create {}: {e}", parent.display()))?;
    let scratch = parent.join(format!(
        ".build-{}-{}",
        std::process::id(),
        final_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    ));
    let _ = std::fs::remove_dir_all(&scratch);
    let started = Instant::now();
    let built = build(&scratch);
    if let Err(e) = built {
        let _ = std::fs::remove_dir_all(&scratch);
        return Err(e);
    }
    if works(&final_dir) {
        // another run finished first
        let _ = std::fs::remove_dir_all(&scratch);
    } else {
        let _ = std::fs::remove_dir_all(&final_dir);
        if let Err(e) = std::fs::rename(&scratch, &final_dir) {
            let _ = std::fs::remove_dir_all(&scratch);
            if !works(&final_dir) {
                return Err(format!("install into {}: {e}", final_dir.display()));
            }
        }
    }
    if !works(&final_dir) {
        return Err(format!(
            "{} does not work after installing",
            final_dir.display()
        ));
    }
    eprintln!(
        "installed {} in {:.1}s",
        final_dir.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(final_dir)
}

/// The Python interpreter of a venv holding psycopg 3, installed on first use.
fn psycopg_python() -> &'static Result<PathBuf, String> {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let python = |venv: &Path| venv.join("bin/python");
        let works = |venv: &Path| {
            std::process::Command::new(python(venv))
                .args(["-c", "import psycopg, psycopg_binary"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
        };
        let venv = cached_install(
            cache_root().join(format!("venv-{}", dir_name(PSYCOPG))),
            works,
            |scratch| {
                run_setup(
                    std::process::Command::new("python3")
                        .args(["-m", "venv"])
                        .arg(scratch),
                )
                .map_err(|e| {
                    format!("python3 -m venv (Debian: apt-get install python3-venv): {e}")
                })?;
                run_setup(
                    std::process::Command::new(python(scratch))
                        .args([
                            "-m",
                            "pip",
                            "install",
                            "--quiet",
                            "--disable-pip-version-check",
                        ])
                        .arg(PSYCOPG),
                )
            },
        )?;
        Ok(python(&venv))
    })
}

/// The `node_modules` directory of an npm prefix holding node-postgres, installed on
/// first use.
fn node_pg_modules() -> &'static Result<PathBuf, String> {
    static MODULES: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    MODULES.get_or_init(|| {
        let works = |prefix: &Path| {
            std::process::Command::new("node")
                .args(["-e", "require('pg')"])
                .env("NODE_PATH", prefix.join("node_modules"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
        };
        let prefix = cached_install(
            cache_root().join(format!("npm-{}", dir_name(NODE_PG))),
            works,
            |scratch| {
                run_setup(
                    std::process::Command::new("npm")
                        .args([
                            "install",
                            "--no-audit",
                            "--no-fund",
                            "--no-save",
                            "--prefix",
                        ])
                        .arg(scratch)
                        .arg(NODE_PG),
                )
                .map_err(|e| format!("npm (Debian: apt-get install nodejs npm): {e}"))
            },
        )?;
        Ok(prefix.join("node_modules"))
    })
}

/// Path of a program in `integration/drivers/`.
fn program(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("integration/drivers")
        .join(name)
}

/// Run a driver program to completion; its stdout when it succeeds, else a panic with
/// its whole output.
async fn run_program(mut cmd: tokio::process::Command, what: &str) -> String {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let started = Instant::now();
    let child = cmd.spawn().unwrap_or_else(|e| panic!("start {what}: {e}"));
    let out = tokio::time::timeout(PROGRAM_TIMEOUT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {PROGRAM_TIMEOUT:?}"))
        .unwrap_or_else(|e| panic!("wait for {what}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{what} exited with {}:\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
        out.status
    );
    eprintln!(
        "{what} passed in {:.1}s:\n{}",
        started.elapsed().as_secs_f64(),
        stdout
            .lines()
            .filter(|l| !l.starts_with("KEYS "))
            .collect::<Vec<_>>()
            .join("\n")
    );
    stdout
}

/// The keys a program reports it left in `table` (`KEYS <table> k1,k2,…`).
fn reported_keys(stdout: &str, table: &str) -> BTreeSet<String> {
    let prefix = format!("KEYS {table}");
    let line = stdout
        .lines()
        .find(|l| l.split(' ').take(2).eq(prefix.split(' ')))
        .unwrap_or_else(|| panic!("no `{prefix} …` line in:\n{stdout}"));
    line[prefix.len()..]
        .trim()
        .split(',')
        .filter(|k| !k.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Every row of `table` on every shard sits on the shard owning its slot, and the keys
/// found are exactly `expected`.
async fn assert_rows_on_owning_shards(
    cluster: &Cluster,
    table: &Sharded,
    expected: &BTreeSet<String>,
) {
    let owners = shardmap::contiguous_slots(cluster.len(), SLOTS);
    let mask = SLOTS - 1;
    // the PARTITION BY HASH remainder, computed by the shard itself
    let sql = format!(
        "SELECT {key}::text, ((({hash}({key}, {PARTITION_SEED}) & {mask}) + \
         (x'49a0f4dd15e5a8e3'::bigint & {mask})) & {mask})::int FROM {name}",
        key = table.key,
        hash = table.hash_fn,
        name = table.name,
    );
    let mut found = BTreeSet::new();
    let mut per_shard = Vec::new();
    for i in 0..cluster.len() {
        let rows = cluster
            .shard(i)
            .client("app")
            .await
            .query(&sql, &[])
            .await
            .unwrap_or_else(|e| panic!("read {} on shard {i}: {e}", table.name));
        per_shard.push(rows.len());
        for row in rows {
            let key: String = row.get(0);
            let slot: i32 = row.get(1);
            let owner = owners[slot as usize];
            assert_eq!(
                owner, i,
                "{} key {key} (slot {slot}) is on shard {i}, but slot {slot} belongs to shard {owner}",
                table.name
            );
            assert!(
                found.insert(key.clone()),
                "{} key {key} is on two shards",
                table.name
            );
        }
    }
    assert_eq!(
        &found, expected,
        "{}: keys on the shards differ from the keys the program kept",
        table.name
    );
    assert!(
        per_shard.iter().filter(|&&n| n > 0).count() == cluster.len(),
        "{}: every shard should hold some rows, got {per_shard:?}",
        table.name
    );
}

/// `count` bigint keys from `from` upwards that live on `shard`, by the proxy's own hash
/// (the placement check afterwards verifies it against Postgres).
fn keys_on_shard(shards: usize, shard: usize, from: i64, count: usize) -> Vec<i64> {
    let owners = shardmap::contiguous_slots(shards, SLOTS);
    (from..)
        .filter(|&k| owners[slot_of(KeyValue::Int(k).partition_hash(), SLOTS) as usize] == shard)
        .take(count)
        .collect()
}

/// Run `psycopg_check.py` over 3 shards and check where its rows landed;
/// `known_limits` adds the steps pgshard is known to refuse.
async fn psycopg_over_three_shards(test: &str, known_limits: bool) {
    let Some(python) = toolchain_or_skip(test, psycopg_python()) else {
        return;
    };
    let items = Sharded::bigint("py_items");
    let tokens = Sharded::uuid("py_tokens");
    let (cluster, proxy) = setup(3, &items, &tokens).await;
    let one_shard: Vec<String> = keys_on_shard(cluster.len(), 1, 1000, 40)
        .iter()
        .map(i64::to_string)
        .collect();
    let mut cmd = tokio::process::Command::new(python);
    cmd.arg(program("psycopg_check.py"))
        .arg(proxy.url("app", "app"))
        .args([items.name, tokens.name])
        .arg(one_shard.join(","))
        .env("PGSHARD_KNOWN_LIMITS", if known_limits { "1" } else { "0" });
    let stdout = run_program(cmd, "psycopg_check.py").await;
    for table in [&items, &tokens] {
        assert_rows_on_owning_shards(&cluster, table, &reported_keys(&stdout, table.name)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg3_round_trips_types_transactions_prepared_and_cancel() {
    psycopg_over_three_shards("psycopg 3", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg3_executemany_with_rows_on_several_shards() {
    psycopg_over_three_shards("psycopg 3 executemany across shards", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_postgres_round_trips_types_transactions_and_prepared() {
    let Some(modules) = toolchain_or_skip("node-postgres", node_pg_modules()) else {
        return;
    };
    let items = Sharded::bigint("js_items");
    let tokens = Sharded::uuid("js_tokens");
    let (cluster, proxy) = setup(2, &items, &tokens).await;
    let mut cmd = tokio::process::Command::new("node");
    cmd.arg(program("pg_check.js"))
        .arg(proxy.url("app", "app"))
        .args([items.name, tokens.name])
        .env("NODE_PATH", modules);
    let stdout = run_program(cmd, "pg_check.js").await;
    for table in [&items, &tokens] {
        assert_rows_on_owning_shards(&cluster, table, &reported_keys(&stdout, table.name)).await;
    }
}
