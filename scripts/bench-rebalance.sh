#!/usr/bin/env bash
# Online rebalance under load: how fast `pgshard rebalance apply` copies, and the longest
# a client waits while slots are cut over.
#
# Starts `pgshard dev --shards 2 --spare 1` (two shards behind the proxy, one server
# outside the map), loads ROWS rows into the sharded `accounts` table through the proxy
# (COPY, split by the proxy), then runs pgbench through the proxy — CLIENTS clients, a
# point SELECT and a point UPDATE of random accounts per transaction, every transaction's
# latency logged — and, after WARMUP seconds, adds the spare server with
# `pgshard rebalance apply --add-shard s2=… --yes --json`. Prints the apply summary (copy
# rows/s and MB/s, cutovers, longest hold), pgbench's TPS, failed transactions and the
# longest transaction latency during the run (the longest stall a client saw), and
# `pgshard rebalance verify`. Results also go to $OUT (default BENCHMARKS-rebalance.txt).
#
# Settings (environment): ROWS (default 1000000), CLIENTS (default 8), WARMUP (default
# 5 s), DURATION (pgbench seconds, default 60; must outlast the apply), GROUP_ROWS
# (rows per cutover group, default 10000), PGSHARD (binary, default
# $CARGO_TARGET_DIR/release/pgshard or target/release/pgshard, built when missing).
set -euo pipefail
cd "$(dirname "$0")/.."

ROWS=${ROWS:-1000000}
CLIENTS=${CLIENTS:-8}
WARMUP=${WARMUP:-5}
DURATION=${DURATION:-60}
GROUP_ROWS=${GROUP_ROWS:-10000}
OUT=${OUT:-BENCHMARKS-rebalance.txt}
PGSHARD=${PGSHARD:-${CARGO_TARGET_DIR:-target}/release/pgshard}

source scripts/ensure-postgres.sh
BIN=$(pg_bin_dir)
if [[ ! -x "$PGSHARD" ]]; then
    echo "==> cargo build --release"
    cargo build --release
fi
PGSHARD=$(realpath "$PGSHARD")

source scripts/bench-common.sh
bench_workdir bench-rebalance

echo "==> pgshard dev --shards 2 --spare 1"
start_dev 2 "$WORK/dev" --spare 1
PROXY=$(grep -o 'connect:   psql "[^"]*"' "$WORK/dev.log" | sed 's/connect:   psql "//; s/"$//')
ADD=$(grep -o 'add it:    pgshard rebalance apply -c [^ ]* --add-shard [^ ]*' "$WORK/dev.log" | sed 's/.*--add-shard //')
MAP="$WORK/dev/shardmap.toml"
echo "    proxy $PROXY, adding $ADD"

echo "==> loading $ROWS accounts through the proxy (COPY)"
seq 101 "$ROWS" | awk '{ printf "%d\taccount %d\t%d\n", $1, $1, $1 % 1000 }' |
    "$BIN/psql" -X -q "$PROXY" -c "COPY accounts (aid, name, balance) FROM STDIN"

cat >"$WORK/tx.sql" <<SQL
\set aid random(1, $ROWS)
SELECT balance FROM accounts WHERE aid = :aid;
UPDATE accounts SET balance = balance + 1 WHERE aid = :aid;
SQL

echo "==> pgbench -c $CLIENTS -T $DURATION through the proxy; apply after ${WARMUP}s"
mkdir -p "$WORK/log"
(cd "$WORK/log" && "$BIN/pgbench" -n -M extended -c "$CLIENTS" -j 2 -T "$DURATION" \
    -f "$WORK/tx.sql" -l "$PROXY" >"$WORK/pgbench.out" 2>&1) &
BENCH_PID=$!
sleep "$WARMUP"
START=$(date +%s.%N)
"$PGSHARD" rebalance apply -c "$MAP" --add-shard "$ADD" --yes --json \
    --group-rows "$GROUP_ROWS" >"$WORK/apply.json" 2>"$WORK/apply.log" || {
    cat "$WORK/apply.log" >&2
    exit 1
}
END=$(date +%s.%N)
wait "$BENCH_PID" || true

# pgbench -l: client, transaction no, latency (µs), script, epoch s, µs
read -r TXS MAX_US MAX_AT < <(cat "$WORK"/log/pgbench_log.* |
    awk '{ n++; if ($3 > m) { m = $3; at = $5 } } END { print n, m, at }')
START_S=${START%.*}
SLOWEST=$(cat "$WORK"/log/pgbench_log.* | sort -k3,3nr | awk "NR <= 5" |
    awk -v s="$START" '{ printf "    %d ms, ending %.2f s after apply started\n", $3 / 1000, $5 + $6 / 1e6 - s }')
VERIFY=$("$PGSHARD" rebalance verify -c "$MAP" | tail -1)

{
    echo "pgshard rebalance under load: $ROWS rows in accounts, 2 → 3 shards, pgbench -c $CLIENTS"
    echo "machine: $(nproc) cores, $(uname -sr), $("$BIN/postgres" --version)"
    echo
    echo "apply (wall $(awk -v a="$START" -v b="$END" 'BEGIN { printf "%.1f", b - a }') s):"
    grep -v '^ *"verify"' "$WORK/apply.json" | sed -n '1,12p'
    echo
    echo "apply log:"
    grep 'pgshard rebalance:' "$WORK/apply.log" | sed 's/^/  /'
    echo
    echo "pgbench during the run:"
    grep -E 'tps|failed|latency average' "$WORK/pgbench.out" | sed 's/^/  /'
    echo "  transactions logged: $TXS; longest: $((MAX_US / 1000)) ms ($((MAX_AT - START_S)) s after apply started)"
    echo "  slowest transactions:"
    echo "$SLOWEST"
    echo
    echo "verify: $VERIFY"
} | tee "$OUT"
