# Sourced by scripts/test.sh and scripts/demo.sh: make sure the Postgres server binaries
# (initdb, pg_ctl, postgres), psql and pgbench are installed, installing the Debian
# packages if they are not, and export PG_BIN when initdb is not on PATH.
#
# Debian 12: initdb, pg_ctl, postgres and pgbench ship in postgresql-<major> (pulled in by
# `postgresql`); psql in postgresql-client-<major>; /usr/bin/psql and /usr/bin/pgbench are
# version-selecting wrappers from postgresql-client-common. postgresql-contrib is only a
# transitional package there, kept for older releases. Installing the packages also
# creates and starts a "main" cluster on port 5432; nothing here uses it.

# Print the real bin directory of the Postgres server binaries, or nothing.
pg_bin_dir() {
    if [[ -n "${PG_BIN:-}" && -x "$PG_BIN/initdb" ]]; then
        echo "$PG_BIN"
    elif command -v initdb >/dev/null 2>&1; then
        dirname "$(readlink -f "$(command -v initdb)")"
    else
        local initdb
        initdb=$(ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n 1 || true)
        if [[ -n "$initdb" ]]; then dirname "$initdb"; fi
    fi
}

# Run as root: directly, or through sudo.
as_root() {
    if [[ "$(id -u)" == 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        echo "error: need root (or sudo) to run: $*" >&2
        return 1
    fi
}

ensure_postgres() {
    local bin
    bin=$(pg_bin_dir)
    if [[ -z "$bin" || ! -x "$bin/pgbench" ]] || ! command -v psql >/dev/null 2>&1; then
        echo "==> installing PostgreSQL (apt-get install postgresql postgresql-contrib)"
        as_root apt-get update
        as_root env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y --no-install-recommends postgresql postgresql-contrib
        bin=$(pg_bin_dir)
    fi
    if [[ -z "$bin" ]]; then
        echo "error: no initdb found after installing postgresql" >&2
        return 1
    fi
    if ! command -v initdb >/dev/null 2>&1; then
        export PG_BIN="$bin"
    fi
    local tool
    for tool in initdb pg_ctl postgres psql pgbench; do
        if [[ ! -x "$bin/$tool" ]] && ! command -v "$tool" >/dev/null 2>&1; then
            echo "error: $tool is missing (looked in $bin and PATH)" >&2
            return 1
        fi
    done
    echo "==> PostgreSQL: $("$bin/postgres" --version) in $bin${PG_BIN:+ (PG_BIN)}"
}

ensure_postgres
