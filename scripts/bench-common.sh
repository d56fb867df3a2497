# Shared by the benchmark scripts (sourced, not run): a work directory removed at exit,
# background processes stopped at exit (newest first), `pgshard dev` clusters whose
# Postgres servers are stopped at exit even if `pgshard dev` itself was killed, and
# helpers for ports and the postgres user. Needs $PGSHARD and $BIN (Postgres' bin
# directory) set by the caller.

PIDS=()     # background processes to stop, newest last
DEV_DIRS=() # pgshard dev directories whose Postgres servers must be down at exit

# Create $WORK (/tmp/NAME.XXXXXX) and arrange for everything to be cleaned up at exit.
bench_workdir() {
    WORK=$(mktemp -d "/tmp/$1.XXXXXX")
    chmod 755 "$WORK"
    trap bench_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

bench_cleanup() {
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
        for data in "$dir"/shard*/data "$dir"/spare*/data; do
            if [[ -f "$data/postmaster.pid" ]]; then
                as_pg "$BIN/pg_ctl" -D "$data" -m immediate -w stop >/dev/null 2>&1 || true
            fi
        done
    done
    rm -rf "$WORK"
    exit "$rc"
}

# Run a command as the postgres user when root (Postgres and pgbouncer refuse root).
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

# Start `pgshard dev` with N shards in DIR (more arguments are passed on, e.g.
# --spare 1); wait until it serves.
start_dev() {
    local n=$1 dir=$2 port
    shift 2
    port=$(free_port)
    DEV_DIRS+=("$dir")
    "$PGSHARD" dev --shards "$n" --dir "$dir" --listen "127.0.0.1:$port" "$@" >"$dir.log" 2>&1 &
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
