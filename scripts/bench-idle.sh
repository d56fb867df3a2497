#!/usr/bin/env bash
# Memory of idle clients: how much resident memory pgshard needs per connected client
# that sits idle (logged in, no query running) — the cost of a large fleet of
# application connections that mostly wait.
#
# Starts a one-shard cluster with `pgshard dev`, serves a copy of its shard map with
# `pgshard serve` (its own process, so its /proc/PID/status is the proxy alone, with
# max_clients raised above CLIENTS), then scripts/idle_clients.py opens CLIENTS
# connections, logs each in (SCRAM, user app) and holds them idle. It prints VmRSS
# before and with the clients connected, VmHWM, the growth per client, and runs one
# query on a fresh connection to show the proxy still serves.
#
# Two passes, each with a freshly started proxy: "idle" (logged in, never queried) and
# "after-query" (each connection ran WARM_SQL once before idling, so the session's
# buffers have been written to, as in a pool of used connections). The pass mark
# applies to the idle pass.
#
# Settings (environment): CLIENTS (default 10000), CONCURRENCY (logins in flight,
# default 200), PGSHARD (binary, default $CARGO_TARGET_DIR/release/pgshard or
# target/release/pgshard, built when missing), LIMIT_MIB (pass mark, default 200),
# WARM_SQL (default "SELECT * FROM accounts", the 100-row demo table).
#
# Needs root (or sudo) only to install PostgreSQL when it is missing and, as root, to
# run Postgres as the postgres user (which `pgshard dev` does itself).
set -euo pipefail
cd "$(dirname "$0")/.."

CLIENTS=${CLIENTS:-10000}
CONCURRENCY=${CONCURRENCY:-200}
LIMIT_MIB=${LIMIT_MIB:-200}
WARM_SQL=${WARM_SQL:-SELECT * FROM accounts}
PGSHARD=${PGSHARD:-${CARGO_TARGET_DIR:-target}/release/pgshard}

# Both the proxy and the client process hold one descriptor per client, plus a margin
# for backend connections, the listener and the runtime.
NEED_FDS=$((CLIENTS + 256))
if ! ulimit -n 65536 2>/dev/null; then
    HARD=$(ulimit -Hn)
    if [[ "$HARD" != unlimited ]] && ((HARD < NEED_FDS)); then
        echo "error: CLIENTS=$CLIENTS needs $NEED_FDS open files per process, but the hard" >&2
        echo "       limit is $HARD and cannot be raised here (run as root, or raise it" >&2
        echo "       in /etc/security/limits.conf), or lower CLIENTS" >&2
        exit 1
    fi
    ulimit -n "$HARD"
fi
echo "==> open files limit: $(ulimit -n)"

source scripts/ensure-postgres.sh
BIN=$(pg_bin_dir)

if [[ ! -x "$PGSHARD" ]]; then
    echo "==> cargo build --release"
    cargo build --release
fi

# ---------------------------------------------------------------- setup and cleanup

source scripts/bench-common.sh
bench_workdir bench-idle

# ---------------------------------------------------------------- cluster and proxy

echo "==> one-shard cluster (pgshard dev)"
start_dev 1 "$WORK/one"

# The dev proxy keeps the default max_clients (10000): serve a copy of the map with
# room for every idle client plus the checking connections, in a process of its own.
MAX_CLIENTS=$((CLIENTS + 100))

# One pass with a freshly started proxy (so one pass's freed memory does not hide the
# next one's): NAME, then extra idle_clients.py arguments. Prints the RESULT line into
# $WORK/NAME.result.
measure() {
    local name=$1 port pid rc=0
    shift
    port=$(free_port)
    sed -E -e "s/^listen = .*/listen = \"127.0.0.1:$port\"/" \
        -e "/^\[server\]/a max_clients = $MAX_CLIENTS" \
        "$WORK/one/shardmap.toml" >"$WORK/$name.toml"
    "$PGSHARD" check -c "$WORK/$name.toml" >/dev/null
    RUST_LOG=${RUST_LOG:-warn} "$PGSHARD" serve -c "$WORK/$name.toml" >"$WORK/$name.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    wait_port "$port" "pgshard serve -c $WORK/$name.toml"
    echo "==> $name: $CLIENTS clients, proxy pid $pid on 127.0.0.1:$port, max_clients $MAX_CLIENTS"
    python3 scripts/idle_clients.py --port "$port" --pid "$pid" --clients "$CLIENTS" \
        --concurrency "$CONCURRENCY" "$@" | tee "$WORK/$name.out" || rc=$?
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "error: the proxy exited during the run:" >&2
        tail -n 20 "$WORK/$name.log" >&2
        return 1
    fi
    if grep -qiE "warn|error" "$WORK/$name.log"; then
        echo "    proxy log (last lines):"
        grep -iE "warn|error" "$WORK/$name.log" | tail -n 5 | sed 's/^/      /'
    fi
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.2
    done
    grep '^RESULT ' "$WORK/$name.out" >"$WORK/$name.result" || true
    return "$rc"
}

# ---------------------------------------------------------------- measurement

echo "    $("$PGSHARD" --version)"
status=0
# Logged in, never queried: the floor.
measure idle || status=$?
# Each connection ran one query first (buffers written, as in a pool of used
# connections that went idle).
measure after-query --warm-sql "$WARM_SQL" || status=$?

echo
echo "==> summary ($CLIENTS clients; pass mark: VmRSS < $LIMIT_MIB MiB for the idle pass)"
for name in idle after-query; do
    RESULT=$(cat "$WORK/$name.result" 2>/dev/null || true)
    if [[ -z "$RESULT" ]]; then
        echo "    $name: no result"
        status=1
        continue
    fi
    field() { sed -E "s/.* $1=([0-9.]+).*/\1/" <<<"$RESULT"; }
    printf '    %-12s opened %s, VmRSS %s MiB (baseline %s MiB), VmHWM %s MiB, %s KiB/client\n' \
        "$name" "$(field opened)" "$(($(field idle_rss_kib) / 1024))" \
        "$(($(field baseline_rss_kib) / 1024))" "$(($(field idle_hwm_kib) / 1024))" "$(field per_client_kib)"
done
IDLE_KIB=$(sed -E 's/.* idle_rss_kib=([0-9]+).*/\1/' "$WORK/idle.result" 2>/dev/null || echo 0)
if ((IDLE_KIB > 0 && IDLE_KIB < LIMIT_MIB * 1024)); then
    echo "==> PASS: VmRSS $((IDLE_KIB / 1024)) MiB with $CLIENTS idle clients (< $LIMIT_MIB MiB)"
else
    echo "==> FAIL: VmRSS $((IDLE_KIB / 1024)) MiB with $CLIENTS idle clients (limit $LIMIT_MIB MiB)"
    status=1
fi
exit "$status"
