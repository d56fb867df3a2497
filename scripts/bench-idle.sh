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
# Settings (environment): CLIENTS (default 10000), CONCURRENCY (logins in flight,
# default 200), PGSHARD (binary, default $CARGO_TARGET_DIR/release/pgshard or
# target/release/pgshard, built when missing), LIMIT_MIB (pass mark, default 200).
#
# Needs root (or sudo) only to install PostgreSQL when it is missing and, as root, to
# run Postgres as the postgres user (which `pgshard dev` does itself).
set -euo pipefail
cd "$(dirname "$0")/.."

CLIENTS=${CLIENTS:-10000}
CONCURRENCY=${CONCURRENCY:-200}
LIMIT_MIB=${LIMIT_MIB:-200}
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

WORK=$(mktemp -d /tmp/bench-idle.XXXXXX)
chmod 755 "$WORK"
PIDS=()      # background processes to stop, newest last
DEV_DIRS=()  # pgshard dev directories whose Postgres servers must be down at exit

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    local i pid
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        pid=${PIDS[i]}
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.2
        done
        kill -KILL "$pid" 2>/dev/null || true
    done
    # `pgshard dev` stops its shards on Ctrl-C; make sure, in case it was killed.
    local dir data
    for dir in "${DEV_DIRS[@]}"; do
        for data in "$dir"/shard*/data; do
            if [[ -f "$data/postmaster.pid" ]]; then
                as_pg "$BIN/pg_ctl" -D "$data" -m immediate -w stop >/dev/null 2>&1 || true
            fi
        done
    done
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Run a command as the postgres user when root (Postgres refuses root).
as_pg() {
    if [[ "$(id -u)" == 0 ]]; then
        setpriv --reuid=postgres --regid=postgres --init-groups "$@"
    else
        "$@"
    fi
}

# A TCP port nothing listens on.
free_port() {
    local p
    while :; do
        p=$((20000 + RANDOM % 20000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return
        fi
    done
}

wait_port() {
    local port=$1 name=$2
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        sleep 0.2
    done
    echo "error: $name did not listen on port $port" >&2
    return 1
}

# Start `pgshard dev` with N shards in DIR; wait until it serves.
start_dev() {
    local n=$1 dir=$2 port
    port=$(free_port)
    DEV_DIRS+=("$dir")
    "$PGSHARD" dev --shards "$n" --dir "$dir" --listen "127.0.0.1:$port" >"$dir.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 300); do
        if grep -q "Ctrl-C stops" "$dir.log"; then return 0; fi
        if ! kill -0 "${PIDS[-1]}" 2>/dev/null; then break; fi
        sleep 0.2
    done
    echo "error: pgshard dev --shards $n did not come up:" >&2
    cat "$dir.log" >&2
    return 1
}

# ---------------------------------------------------------------- cluster and proxy

echo "==> one-shard cluster (pgshard dev)"
start_dev 1 "$WORK/one"

# The dev proxy keeps the default max_clients (10000): serve a copy of the map with
# room for every idle client plus the checking connections, in a process of its own.
PORT=$(free_port)
MAX_CLIENTS=$((CLIENTS + 100))
sed -E -e "s/^listen = .*/listen = \"127.0.0.1:$PORT\"/" \
    -e "/^\[server\]/a max_clients = $MAX_CLIENTS" \
    "$WORK/one/shardmap.toml" >"$WORK/idle.toml"
"$PGSHARD" check -c "$WORK/idle.toml" >/dev/null
# Started without a shell function in between, so that $! is the proxy itself.
RUST_LOG=${RUST_LOG:-warn} "$PGSHARD" serve -c "$WORK/idle.toml" >"$WORK/serve.log" 2>&1 &
PROXY_PID=$!
PIDS+=("$PROXY_PID")
wait_port "$PORT" "pgshard serve -c $WORK/idle.toml"
echo "    proxy pid $PROXY_PID on 127.0.0.1:$PORT, max_clients $MAX_CLIENTS; $("$PGSHARD" --version)"

# ---------------------------------------------------------------- measurement

echo "==> $CLIENTS idle clients"
status=0
python3 scripts/idle_clients.py --port "$PORT" --pid "$PROXY_PID" --clients "$CLIENTS" \
    --concurrency "$CONCURRENCY" | tee "$WORK/idle.out" || status=$?

if ! kill -0 "$PROXY_PID" 2>/dev/null; then
    echo "error: the proxy exited during the run:" >&2
    tail -n 20 "$WORK/serve.log" >&2
    exit 1
fi

RESULT=$(grep '^RESULT ' "$WORK/idle.out" || true)
if [[ -z "$RESULT" ]]; then
    echo "error: idle_clients.py reported nothing" >&2
    exit 1
fi
IDLE_KIB=$(sed -E 's/.* idle_rss_kib=([0-9]+).*/\1/' <<<"$RESULT")
if ((IDLE_KIB < LIMIT_MIB * 1024)); then
    echo "==> PASS: VmRSS $((IDLE_KIB / 1024)) MiB with $CLIENTS idle clients (< $LIMIT_MIB MiB)"
else
    echo "==> FAIL: VmRSS $((IDLE_KIB / 1024)) MiB with $CLIENTS idle clients (limit $LIMIT_MIB MiB)"
    status=1
fi
if grep -qiE "warn|error" "$WORK/serve.log"; then
    echo "    proxy log (last lines):"
    grep -iE "warn|error" "$WORK/serve.log" | tail -n 5 | sed 's/^/      /'
fi
exit "$status"
