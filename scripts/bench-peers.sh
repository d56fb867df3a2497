#!/usr/bin/env bash
# Compare pgshard with its peers on one machine, using pgbench's read-only (-S) workload:
#
#   direct     pgbench straight to one Postgres
#   socat      a plain TCP relay (socat) in front of that Postgres
#   pgbouncer  pgbouncer, transaction pooling, same pool size as pgshard
#   pgshard-1  pgshard with one shard
#   pgshard-2  pgshard with two shards, pgbench_accounts sharded on aid (integer)
#
# Every mode (simple, extended, prepared) runs against every target, interleaved
# (for each round, for each mode, each target in turn), and BENCHMARKS.md gets the
# median TPS per target and its ratios to direct and to pgbouncer.
#
# Settings (environment): DURATION (seconds per run, default 20), ROUNDS (default 3),
# CLIENTS (default 16), THREADS (default 2), SCALE (pgbench scale, default 1),
# PGSHARD (binary, default target/release/pgshard, built when missing),
# OUT (report file, default BENCHMARKS.md), MODES and TARGETS (space-separated subsets,
# e.g. MODES="simple extended"), PGSHARD_BASE (a second pgshard binary, e.g. an older
# build: adds target pgshard-base, one shard like pgshard-1, to measure a change's cost),
# PGSHARD_BASE_NOTE (what that build is, for the report), SCATTER (0: skip the scatter
# section).
#
# Needs root (or sudo) only to install missing packages (postgresql, pgbouncer, socat)
# and, as root, to run Postgres and pgbouncer as the postgres user.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-20}
ROUNDS=${ROUNDS:-3}
CLIENTS=${CLIENTS:-16}
THREADS=${THREADS:-2}
SCALE=${SCALE:-1}
PGSHARD=${PGSHARD:-${CARGO_TARGET_DIR:-target}/release/pgshard}
OUT=${OUT:-BENCHMARKS.md}
read -r -a MODES <<<"${MODES:-simple extended prepared}"
read -r -a TARGETS <<<"${TARGETS:-direct socat pgbouncer pgshard-1 pgshard-2}"
PGSHARD_BASE=${PGSHARD_BASE:-}
if [[ -n "$PGSHARD_BASE" && " ${TARGETS[*]} " != *" pgshard-base "* ]]; then
    TARGETS+=(pgshard-base)
fi
for target in "${TARGETS[@]}"; do
    case $target in
    direct | socat | pgbouncer | pgshard-1 | pgshard-2) ;;
    pgshard-base) [[ -n "$PGSHARD_BASE" ]] || { echo "error: target pgshard-base needs PGSHARD_BASE" >&2; exit 2; } ;;
    *) echo "error: unknown target $target (direct socat pgbouncer pgshard-1 pgshard-2 pgshard-base)" >&2; exit 2 ;;
    esac
done

source scripts/ensure-postgres.sh
BIN=$(pg_bin_dir)

# ---------------------------------------------------------------- setup and cleanup

source scripts/bench-common.sh
bench_workdir bench-peers

apt_install() {
    echo "==> installing $* (apt-get)"
    as_root apt-get update
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"
}

command -v socat >/dev/null 2>&1 || apt_install socat
command -v pgbouncer >/dev/null 2>&1 || [[ -x /usr/sbin/pgbouncer ]] || apt_install pgbouncer
PGBOUNCER=$(command -v pgbouncer || echo /usr/sbin/pgbouncer)

if [[ ! -x "$PGSHARD" ]]; then
    echo "==> cargo build --release"
    cargo build --release
fi

# Port of shard number I (0-based) in a generated shard map.
shard_port() {
    grep -E '^url = "postgres://' "$1" | sed -n "$(($2 + 1))p" | sed -E 's/.*:([0-9]+)\/.*/\1/'
}

# Copy a dev map with a new listen port and pgbench_accounts sharded; serve it (with
# binary BIN, default $PGSHARD).
serve_map() {
    local src=$1 dst=$2 port=$3 bin=${4:-$PGSHARD}
    sed -E "s/^listen = .*/listen = \"127.0.0.1:$port\"/" "$src" >"$dst"
    cat >>"$dst" <<'EOF'

[[tables]]
name = "pgbench_accounts"
key = "aid"
type = "integer"

[[tables]]
name = "bench_accounts"
key = "aid"
type = "bigint"
EOF
    if [[ "$bin" != "$PGSHARD" ]]; then
        # an older binary may not know settings newer maps carry
        sed -i '/^admin = /d' "$dst"
    fi
    "$bin" check -c "$dst" >/dev/null
    "$bin" serve -c "$dst" >"$dst.log" 2>&1 &
    PIDS+=($!)
    SERVED_PID=$!
    wait_port "$port" "pgshard serve -c $dst"
}

psql_direct() { # PORT, then psql arguments
    local port=$1
    shift
    psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres -d app "$@"
}

psql_proxy() { # PORT, then psql arguments
    local port=$1
    shift
    PGPASSWORD=app psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U app -d app "$@"
}

# ---------------------------------------------------------------- clusters and proxies

echo "==> one-shard cluster (direct, socat, pgbouncer, pgshard-1)"
start_dev 1 "$WORK/one"
DIRECT_PORT=$(shard_port "$WORK/one/shardmap.toml" 0)
POOL=$(sed -nE 's/^pool_size = ([0-9]+).*/\1/p' "$WORK/one/shardmap.toml")
POOL=${POOL:-10}
echo "    shard on $DIRECT_PORT, pool size $POOL"
pgbench -q -i -s "$SCALE" -h 127.0.0.1 -p "$DIRECT_PORT" -U postgres app >"$WORK/init-one.log" 2>&1 ||
    { cat "$WORK/init-one.log" >&2; exit 1; }

SOCAT_PORT=$(free_port)
socat "TCP-LISTEN:$SOCAT_PORT,bind=127.0.0.1,reuseaddr,fork" "TCP:127.0.0.1:$DIRECT_PORT" &
PIDS+=($!)
wait_port "$SOCAT_PORT" socat

BOUNCER_PORT=$(free_port)
mkdir "$WORK/pgbouncer"
cat >"$WORK/pgbouncer/pgbouncer.ini" <<EOF
[databases]
app = host=127.0.0.1 port=$DIRECT_PORT dbname=app user=postgres

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $BOUNCER_PORT
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $WORK/pgbouncer/userlist.txt
pool_mode = transaction
default_pool_size = $POOL
max_client_conn = 200
logfile = $WORK/pgbouncer/pgbouncer.log
EOF
echo '"app" "app"' >"$WORK/pgbouncer/userlist.txt"
if [[ "$(id -u)" == 0 ]]; then chown -R postgres: "$WORK/pgbouncer"; fi
# Started without a shell function in between, so that $! is pgbouncer itself.
if [[ "$(id -u)" == 0 ]]; then
    setpriv --reuid=postgres --regid=postgres --init-groups \
        "$PGBOUNCER" "$WORK/pgbouncer/pgbouncer.ini" >"$WORK/pgbouncer.out" 2>&1 &
else
    "$PGBOUNCER" "$WORK/pgbouncer/pgbouncer.ini" >"$WORK/pgbouncer.out" 2>&1 &
fi
PIDS+=($!)
BOUNCER_PID=$!
wait_port "$BOUNCER_PORT" pgbouncer

ONE_PORT=$(free_port)
serve_map "$WORK/one/shardmap.toml" "$WORK/one-bench.toml" "$ONE_PORT"
ONE_PID=$SERVED_PID
if [[ -n "$PGSHARD_BASE" ]]; then
    BASE_PORT=$(free_port)
    serve_map "$WORK/one/shardmap.toml" "$WORK/one-base.toml" "$BASE_PORT" "$PGSHARD_BASE"
    BASE_PID=$SERVED_PID
    echo "    pgshard-base: $("$PGSHARD_BASE" --version) on $BASE_PORT"
fi

echo "==> two-shard cluster (pgshard-2)"
start_dev 2 "$WORK/two"
S0_PORT=$(shard_port "$WORK/two/shardmap.toml" 0)
S1_PORT=$(shard_port "$WORK/two/shardmap.toml" 1)
TWO_PORT=$(free_port)
serve_map "$WORK/two/shardmap.toml" "$WORK/two-bench.toml" "$TWO_PORT"
TWO_PID=$SERVED_PID

# Tables on both shards (pgbench's own DDL); branches and tellers are unsharded, so
# they live on the default shard (s0) only; accounts go through pgshard, which sends
# each row of a multi-row INSERT to the shard owning its aid.
for port in "$S0_PORT" "$S1_PORT"; do
    pgbench -q -i -I dt -s "$SCALE" -h 127.0.0.1 -p "$port" -U postgres app >>"$WORK/init-two.log" 2>&1 ||
        { cat "$WORK/init-two.log" >&2; exit 1; }
done
psql_direct "$S0_PORT" -c "
    INSERT INTO pgbench_branches (bid, bbalance) SELECT g, 0 FROM generate_series(1, $SCALE) g;
    INSERT INTO pgbench_tellers (tid, bid, tbalance)
        SELECT g, (g - 1) / 10 + 1, 0 FROM generate_series(1, 10 * $SCALE) g;"
ROWS=$((100000 * SCALE))
awk -v rows="$ROWS" 'BEGIN {
    for (start = 1; start <= rows; start += 1000) {
        printf "INSERT INTO pgbench_accounts (aid, bid, abalance, filler) VALUES "
        for (aid = start; aid < start + 1000 && aid <= rows; aid++) {
            printf "%s(%d, %d, 0, %s)", (aid == start ? "" : ", "), aid, int((aid - 1) / 100000) + 1, "'\'''\''"
        }
        print ";"
    }
}' >"$WORK/accounts.sql"
psql_proxy "$TWO_PORT" -f "$WORK/accounts.sql"
for port in "$S0_PORT" "$S1_PORT"; do
    pgbench -q -i -I vp -s "$SCALE" -h 127.0.0.1 -p "$port" -U postgres app >>"$WORK/init-two.log" 2>&1 ||
        { cat "$WORK/init-two.log" >&2; exit 1; }
done

# Check the split: every row once, on both shards; unsharded tables only on s0.
N0=$(psql_direct "$S0_PORT" -At -c "SELECT count(*) FROM pgbench_accounts")
N1=$(psql_direct "$S1_PORT" -At -c "SELECT count(*) FROM pgbench_accounts")
B1=$(psql_direct "$S1_PORT" -At -c "SELECT (SELECT count(*) FROM pgbench_branches) + (SELECT count(*) FROM pgbench_tellers)")
NP=$(psql_proxy "$TWO_PORT" -At -c "SELECT count(*) FROM pgbench_accounts")
echo "    pgbench_accounts: s0 $N0 rows, s1 $N1 rows, $NP through pgshard; branches+tellers on s1: $B1"
if [[ $((N0 + N1)) != "$ROWS" || "$NP" != "$ROWS" || "$N0" == 0 || "$N1" == 0 || "$B1" != 0 ]]; then
    echo "error: the two-shard load is wrong" >&2
    exit 1
fi

# ---------------------------------------------------------------- runs

target_args() { # print "PORT USER PASSWORD" of a target
    case $1 in
    direct) echo "$DIRECT_PORT postgres -" ;;
    socat) echo "$SOCAT_PORT postgres -" ;;
    pgbouncer) echo "$BOUNCER_PORT app app" ;;
    pgshard-1) echo "$ONE_PORT app app" ;;
    pgshard-2) echo "$TWO_PORT app app" ;;
    pgshard-base) echo "$BASE_PORT app app" ;;
    esac
}

# The proxy process of a target (none for direct; socat forks per connection).
target_pid() {
    case $1 in
    pgbouncer) echo "$BOUNCER_PID" ;;
    pgshard-1) echo "$ONE_PID" ;;
    pgshard-2) echo "$TWO_PID" ;;
    pgshard-base) echo "${BASE_PID:-}" ;;
    esac
}

# CPU time (user + system, clock ticks) a process has used so far; empty once it is gone.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || true; }
TICK=$(getconf CLK_TCK)

LOAD=$(cut -d ' ' -f 1-3 /proc/loadavg)
RESULTS="$WORK/results.txt" # round mode target tps latency_ms status
: >"$RESULTS"
# the proxy's CPU time per transaction: TPS moves with whatever else the shared cores run,
# the CPU a proxy spends on one transaction much less
CPU_RESULTS="$WORK/cpu.txt" # mode target cpu_us_per_transaction (successful runs)
: >"$CPU_RESULTS"
for round in $(seq "$ROUNDS"); do
    for mode in "${MODES[@]}"; do
        for target in "${TARGETS[@]}"; do
            read -r port user password < <(target_args "$target")
            log="$WORK/run-$round-$mode-$target.log"
            status=ok
            if [[ "$password" == - ]]; then unset PGPASSWORD; else export PGPASSWORD=$password; fi
            pid=$(target_pid "$target")
            before=""
            if [[ -n "$pid" ]]; then before=$(cpu_ticks "$pid"); fi
            pgbench -n -S -c "$CLIENTS" -j "$THREADS" -T "$DURATION" -M "$mode" \
                -h 127.0.0.1 -p "$port" -U "$user" app >"$log" 2>&1 || status=failed
            unset PGPASSWORD
            tps=$(sed -nE 's/^tps = ([0-9.]+).*/\1/p' "$log" | head -n 1)
            lat=$(sed -nE 's/^latency average = ([0-9.]+) ms.*/\1/p' "$log" | head -n 1)
            if grep -qE "^number of failed transactions: [1-9]" "$log"; then status=failed; fi
            cpu=-
            txns=$(sed -nE 's/^number of transactions actually processed: ([0-9]+).*/\1/p' "$log" | head -n 1)
            after=""
            if [[ -n "$before" ]]; then after=$(cpu_ticks "$pid"); fi
            if [[ -n "$after" && $status == ok && -n "$txns" && "$txns" != 0 ]]; then
                cpu=$(awk -v a="$before" -v b="$after" -v t="$TICK" -v n="$txns" \
                    'BEGIN { printf "%.1f", (b - a) * 1000000 / t / n }')
                echo "$mode $target $cpu" >>"$CPU_RESULTS"
            fi
            echo "$round $mode $target ${tps:--} ${lat:--} $status" >>"$RESULTS"
            printf '    round %s %-8s %-10s tps %10s  latency %8s ms  proxy CPU %6s µs/txn  %s\n' \
                "$round" "$mode" "$target" "${tps:--}" "${lat:--}" "$cpu" "$status"
            if [[ $status != ok ]]; then
                grep -m 3 -iE "error|abort" "$log" | sed 's/^/      /' || true
                cp "$log" "$WORK/failed-$mode-$target.log"
            fi
        done
    done
done

# ---------------------------------------------------------------- scatter over two shards

# `pgshard bench`: statements that need both shards, through pgshard-2, against the same
# statement sent straight to each shard (which answers for its half of the rows): the
# proxy's cost of a scatter is its latency over the slower shard's. One client, so the
# latencies are those of one statement at a time.
SCATTER=${SCATTER:-1}
SCATTER_ROWS=${SCATTER_ROWS:-100000}
SCATTER_SECONDS=${SCATTER_SECONDS:-5}
if [[ "$SCATTER" == 1 ]]; then
echo "==> scatter: pgshard bench on pgshard-2 and each shard directly"
"$PGSHARD" bench --quiet --setup --rows "$SCATTER_ROWS" --clients 1 \
    --duration "${SCATTER_SECONDS}s" --rounds "$ROUNDS" --protocol extended \
    --workload scatter-count,scatter-top-n \
    --target "pgshard-2=postgres://app:app@127.0.0.1:$TWO_PORT/app" \
    --target "s0=postgres://postgres@127.0.0.1:$S0_PORT/app" \
    --target "s1=postgres://postgres@127.0.0.1:$S1_PORT/app" \
    --json "$WORK/scatter.json" --svg "${OUT%.md}-scatter.svg" | tee "$WORK/scatter.txt"
# p50 of pgshard-2 over the larger p50 of the two shards, per workload
python3 - "$WORK/scatter.json" >"$WORK/scatter-ratio.md" <<'PY'
import json, sys
reports = json.load(open(sys.argv[1]))
print("| workload | pgshard-2 p50 (ms) | s0 p50 (ms) | s1 p50 (ms) | pgshard-2 / slower shard |")
print("|---|---:|---:|---:|---:|")
for r in reports:
    t = {x["name"]: x for x in r["targets"]}
    p, a, b = (t[n]["p50_us"] / 1000 for n in ("pgshard-2", "s0", "s1"))
    print(f"| {r['workload']} | {p:.3f} | {a:.3f} | {b:.3f} | {p / max(a, b):.2f} |")
PY
fi

# ---------------------------------------------------------------- report

# Median of the successful runs' column COL (4 = tps, 5 = latency) for MODE TARGET,
# printed with printf format FMT.
median() {
    awk -v m="$1" -v t="$2" -v c="$3" '$2 == m && $3 == t && $6 == "ok" { print $c }' "$RESULTS" |
        sort -g | awk -v f="$4\n" '{ v[NR] = $1 } END {
            if (NR == 0) { print "-"; exit }
            if (NR % 2) printf f, v[(NR + 1) / 2]; else printf f, (v[NR / 2] + v[NR / 2 + 1]) / 2
        }'
}
# Median CPU µs per transaction of MODE TARGET's successful runs ("-" when not measured).
median_cpu() {
    awk -v m="$1" -v t="$2" '$1 == m && $2 == t { print $3 }' "$CPU_RESULTS" |
        sort -g | awk '{ v[NR] = $1 } END {
            if (NR == 0) { print "-"; exit }
            if (NR % 2) printf "%.1f\n", v[(NR + 1) / 2]; else printf "%.1f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2
        }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b == 0) print "-"; else printf "%.2f\n", a / b }'; }

PG_VERSION=$("$BIN/postgres" --version)
BOUNCER_VERSION=$("$PGBOUNCER" --version 2>&1 | head -n 1)
SOCAT_VERSION=$(socat -V 2>/dev/null | sed -n 's/^socat version \([^ ]*\).*/socat \1/p' | head -n 1)
PGSHARD_VERSION=$("$PGSHARD" --version)
CPU=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
MEM=$(free -h | awk '/^Mem:/ { print $2 }')
SHORT=""
if [[ "$DURATION" != 20 || "$ROUNDS" != 3 ]]; then
    SHORT="**These numbers are from a short smoke run (DURATION=$DURATION, ROUNDS=$ROUNDS).** A full run is
\`scripts/bench-peers.sh\` with the defaults (DURATION=20, ROUNDS=3). Runs this short are noisy (on a shared
machine, repeated smoke runs differ by tens of percent for one target): compare full runs only.
"
fi

{
    echo "# Benchmarks: pgshard and its peers"
    echo
    echo "Generated by \`scripts/bench-peers.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC')."
    echo
    [[ -n "$SHORT" ]] && echo "$SHORT"
    echo "pgbench's read-only workload (\`-S\`: one \`SELECT abalance FROM pgbench_accounts WHERE aid = :aid\`"
    echo "per transaction) at scale $SCALE, the same machine running Postgres, the proxy and pgbench."
    echo "Targets:"
    echo
    echo "- **direct**: pgbench straight to one Postgres."
    echo "- **socat**: a plain TCP relay in front of it (\`socat TCP-LISTEN:<port>,fork TCP:<postgres>\`): the cost of one extra hop."
    echo "- **pgbouncer**: transaction pooling, \`default_pool_size = $POOL\` (pgshard's \`pool_size\`), SCRAM client login."
    echo "- **pgshard-1**: pgshard with one shard (the same Postgres), \`pool_size = $POOL\`."
    echo "- **pgshard-2**: pgshard with two shards (two more Postgres servers on the same machine, so"
    echo "  $POOL backend connections per shard, twice as many as pgshard-1 and pgbouncer),"
    echo "  \`pgbench_accounts\` sharded on \`aid integer\` ($N0 rows on s0, $N1 on s1); branches and tellers on s0 only."
    if [[ -n "$PGSHARD_BASE" ]]; then
        echo "- **pgshard-base**: like pgshard-1, served by another build: ${PGSHARD_BASE_NOTE:-$("$PGSHARD_BASE" --version) (\`$PGSHARD_BASE\`)}."
    fi
    echo
    echo "## Machine"
    echo
    echo "- CPU: $CPU, \`nproc\` = $(nproc)"
    echo "- Memory: $MEM"
    echo "- Kernel: $(uname -sr)"
    echo "- $PG_VERSION; $BOUNCER_VERSION; ${SOCAT_VERSION:-socat}; $PGSHARD_VERSION"
    echo "- Load average when the runs started: $LOAD (Postgres, the proxies and pgbench share the cores)"
    echo "- Postgres servers started by \`pgshard dev\` (initdb defaults)."
    echo
    echo "## Commands"
    echo
    echo '```sh'
    echo "# load, one shard (direct, socat, pgbouncer, pgshard-1)"
    echo "pgbench -i -s $SCALE -h 127.0.0.1 -p <postgres> -U postgres app"
    echo "# load, two shards: pgbench's tables on both shards, branches and tellers on s0,"
    echo "# accounts through pgshard (multi-row INSERTs of 1000 rows, split per shard), then"
    echo "pgbench -i -I dt -s $SCALE ...   # on each shard, before the INSERTs"
    echo "pgbench -i -I vp -s $SCALE ...   # on each shard, after them (vacuum, primary keys)"
    echo "# each run (rounds interleaved: for each round, for each mode, each target in turn)"
    echo "pgbench -n -S -c $CLIENTS -j $THREADS -T $DURATION -M {simple|extended|prepared} -h 127.0.0.1 -p <target> -U <user> app"
    echo '```'
    echo
    echo "\`-n\` skips pgbench's VACUUM before each run (tables are vacuumed once, right after the load)."
    echo "*Proxy CPU µs/txn* is the proxy process's user + system CPU time during a run (from"
    echo "\`/proc/<pid>/stat\`) over the transactions pgbench completed: the proxy's cost per transaction,"
    echo "which moves much less than TPS with whatever else the shared cores run."
    echo "$ROUNDS round(s) of $DURATION s per mode and target; tables show the median TPS and the median"
    echo "average latency of the successful runs."
    for mode in "${MODES[@]}"; do
        echo
        echo "## -M $mode"
        echo
        echo "| target | TPS (median) | latency avg (ms) | vs direct | vs pgbouncer | proxy CPU µs/txn |"
        echo "|---|---:|---:|---:|---:|---:|"
        d=$(median "$mode" direct 4 %.0f)
        b=$(median "$mode" pgbouncer 4 %.0f)
        for target in "${TARGETS[@]}"; do
            t=$(median "$mode" "$target" 4 %.0f)
            l=$(median "$mode" "$target" 5 %.3f)
            rd=$(ratio "$t" "$d")
            rb=$(ratio "$t" "$b")
            if [[ "$t" == - ]]; then t="failed"; fi
            echo "| $target | $t | $l | $rd | $rb | $(median_cpu "$mode" "$target") |"
        done
    done
    if grep -q " failed$" "$RESULTS"; then
        echo
        echo "## Failed runs"
        echo
        echo "A failed run (pgbench exit status not 0, or failed transactions) counts in no median."
        echo
        for f in "$WORK"/failed-*.log; do
            name=$(basename "$f" .log)
            echo "- ${name#failed-}: \`$(grep -m 1 -iE "error|abort" "$f" | sed 's/`//g' || echo "see pgbench output")\`"
        done
        if grep -q "^[0-9]* prepared pgbouncer .* failed$" "$RESULTS"; then
            echo
            echo "pgbouncer before 1.21 does not follow protocol-level prepared statements in transaction"
            echo "pooling (1.21 added \`max_prepared_statements\`): a statement prepared on one server connection"
            echo "is missing, or already exists, on the next, so \`-M prepared\` fails through it. (Once"
            echo "earlier rounds have left the statement on every server connection, a later round may"
            echo "even reach a high TPS while its prepares fail: such a run is counted as failed, since"
            echo "its errors show the workload is not served as written.)"
        fi
    fi
    if [[ "$SCATTER" == 1 ]]; then
    echo
    echo "## Scatter over two shards"
    echo
    echo "\`pgshard bench\` with one client, $SCATTER_ROWS rows in \`bench_accounts\` (sharded on \`aid bigint\`,"
    echo "loaded through pgshard-2 by \`--setup\`), $ROUNDS interleaved rounds of $SCATTER_SECONDS s: the statement"
    echo "through pgshard-2 (both shards, merged by pgshard) against the same statement sent straight to"
    echo "each shard (its half of the rows). The last column is the proxy's scatter latency over the"
    echo "slower shard's, medians of p50. Chart: [$(basename "${OUT%.md}")-scatter.svg]($(basename "${OUT%.md}")-scatter.svg)."
    echo
    cat "$WORK/scatter-ratio.md"
    echo
    echo '```'
    echo "pgshard bench --setup --rows $SCATTER_ROWS --clients 1 --duration ${SCATTER_SECONDS}s --rounds $ROUNDS --protocol extended \\"
    echo "    --workload scatter-count,scatter-top-n --target pgshard-2=<proxy> --target s0=<shard 0> --target s1=<shard 1>"
    echo
    cat "$WORK/scatter.txt"
    echo '```'
    fi
    echo
    echo "## All runs"
    echo
    echo "| round | mode | target | TPS | latency avg (ms) | status |"
    echo "|---:|---|---|---:|---:|---|"
    awk '{ printf "| %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6 }' "$RESULTS"
} >"$OUT"
echo "==> wrote $OUT"
