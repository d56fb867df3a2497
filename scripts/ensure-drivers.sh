# Sourced by scripts/test.sh: make sure the driver tests (integration/drivers.rs) can
# install their drivers, installing the Debian packages if they cannot:
# - python3 with a working venv module (Debian ships ensurepip in python3-venv);
# - node and npm (Debian: nodejs, npm).
# The drivers themselves (psycopg[binary] from PyPI, pg from npm) are installed by the
# tests, once, into ~/.cache/pgshard-drivers. PGSHARD_REQUIRE_DRIVERS=1 makes those tests
# fail instead of skipping when the install does not work.
# Needs as_root from scripts/ensure-postgres.sh.

ensure_drivers() {
    local packages=()
    if ! command -v python3 >/dev/null 2>&1; then
        packages+=(python3 python3-venv)
    elif ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
        packages+=(python3-venv)
    fi
    if ! command -v node >/dev/null 2>&1; then
        packages+=(nodejs)
    fi
    if ! command -v npm >/dev/null 2>&1; then
        packages+=(npm)
    fi
    if ((${#packages[@]})); then
        echo "==> installing driver toolchains (apt-get install ${packages[*]})"
        if ! { as_root apt-get update &&
            as_root env DEBIAN_FRONTEND=noninteractive \
                apt-get install -y --no-install-recommends "${packages[@]}"; }; then
            echo "==> WARNING: could not install ${packages[*]}; the driver tests will say so and skip" >&2
            return 0
        fi
    fi
    if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1 ||
        ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
        echo "==> WARNING: driver toolchains incomplete; the driver tests will say so and skip" >&2
        return 0
    fi
    export PGSHARD_REQUIRE_DRIVERS=1
    echo "==> driver toolchains: $(python3 --version 2>&1), node $(node --version), npm $(npm --version)"
}

ensure_drivers
