#!/usr/bin/env bash
# Runs the qcluster and integration tests against a throwaway PostgreSQL and Redis.
#
# Both servers live in one temporary directory, listen on 127.0.0.1 only, and are stopped
# (and the directory removed) on every exit path. Extra arguments go to pytest, e.g.
#   bash .ci/integration.sh tests/test_integration_servers.py -x
# or, after --exec, name a command to run with the servers instead of the tests, e.g.
#   bash .ci/integration.sh --exec .venv/bin/python bench/run.py
#
# Tunables (environment): WEBHOOKS_CI_PG_PORT (default 54329), WEBHOOKS_CI_REDIS_PORT
# (default 63799), WEBHOOKS_CI_PYTEST_TIMEOUT in seconds (default 1200).

# The teardown functions are reached only through the EXIT trap, which shellcheck 0.9 cannot
# follow (it reports them as unreachable).
# shellcheck disable=SC2317
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$PWD
PYTHON=$REPO/.venv/bin/python

log() { printf '[integration] %s\n' "$*" >&2; }
die() {
    log "ERROR: $*"
    exit 1
}

[[ -x $PYTHON ]] || die "$PYTHON not found: run 'make venv' (or 'make test-integration') first"

is_root() { [[ $(id -u) -eq 0 ]]; }

# ---------------------------------------------------------------------------------------------
# System packages
# ---------------------------------------------------------------------------------------------

# libpq-dev ships a pg_config that reports the server bindir even when no server is installed,
# so the postgres binary itself has to be checked.
find_pg_bindir() {
    local dir candidate
    if command -v pg_config >/dev/null 2>&1; then
        dir=$(pg_config --bindir 2>/dev/null || true)
        if [[ -n $dir && -x $dir/postgres && -x $dir/initdb ]]; then
            printf '%s\n' "$dir"
            return 0
        fi
    fi
    candidate=$(find /usr/lib/postgresql -mindepth 3 -maxdepth 3 -path '*/bin/postgres' \
        2>/dev/null | sort -V | tail -n 1)
    if [[ -n $candidate ]]; then
        dirname "$candidate"
        return 0
    fi
    if command -v postgres >/dev/null 2>&1 && command -v initdb >/dev/null 2>&1; then
        dirname "$(command -v postgres)"
        return 0
    fi
    return 1
}

missing=()
find_pg_bindir >/dev/null || missing+=(postgresql)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v node >/dev/null 2>&1 || missing+=(nodejs)

if ((${#missing[@]})); then
    log "installing missing system packages: ${missing[*]}"
    if is_root; then
        SUDO=()
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO=(sudo -n)
    else
        die "missing ${missing[*]} and not root (no passwordless sudo): install them first"
    fi
    # Without a policy-rc.d, the packages' postinst scripts start system-wide postgres (5432)
    # and redis (6379) daemons that would outlive this run; exit 101 tells them not to.
    added_policy=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee /usr/sbin/policy-rc.d >/dev/null
        "${SUDO[@]}" chmod 755 /usr/sbin/policy-rc.d
        added_policy=1
    fi
    install_rc=0
    {
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
            "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
                --no-install-recommends "${missing[@]}" </dev/null
    } || install_rc=$?
    if ((added_policy)); then
        "${SUDO[@]}" rm -f /usr/sbin/policy-rc.d
    fi
    ((install_rc == 0)) || die "apt-get failed (exit $install_rc)"
fi

PG_BINDIR=$(find_pg_bindir) || die "PostgreSQL server binaries still not found after install"
REDIS_SERVER=$(command -v redis-server) || die "redis-server still not found after install"
log "postgres: $("$PG_BINDIR/postgres" --version)"
log "redis:    $("$REDIS_SERVER" --version)"
log "node:     $(node --version)"

# ---------------------------------------------------------------------------------------------
# Ports
# ---------------------------------------------------------------------------------------------

# A fixed default keeps logs and docs predictable; probing onwards copes with a second run or
# an unrelated service holding the port on a developer machine.
free_port() {
    "$PYTHON" - "$1" <<'EOF'
import socket, sys

start = int(sys.argv[1])
for port in range(start, start + 50):
    with socket.socket() as s:
        # Same option the servers set, so lingering TIME_WAIT sockets do not count as busy.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
        print(port)
        sys.exit(0)
sys.exit(f"no free port in {start}..{start + 49}")
EOF
}

PG_PORT=$(free_port "${WEBHOOKS_CI_PG_PORT:-54329}")
REDIS_PORT=$(free_port "${WEBHOOKS_CI_REDIS_PORT:-63799}")
[[ $REDIS_PORT != "$PG_PORT" ]] || REDIS_PORT=$(free_port $((PG_PORT + 1)))

# ---------------------------------------------------------------------------------------------
# Cleanup: installed before anything is started, so every exit path runs it.
# ---------------------------------------------------------------------------------------------

WORKDIR=$(mktemp -d "${TMPDIR:-/tmp}/webhooks-ci.XXXXXX")
PGDIR=$WORKDIR/pg
PGDATA=$PGDIR/data
REDIS_DIR=$WORKDIR/redis
PG_STARTED=0
REDIS_STARTED=0
# Every process pytest spawns inherits this marker, so strays (say a qcluster a test failed to
# stop) can be found by it and nothing else on the machine is touched.
RUN_ID="webhooks-ci-$$-$RANDOM$RANDOM"

# postgres refuses to run as root, so as root the cluster belongs to the postgres OS user
# (created by the Debian package) or, failing that, to nobody.
if is_root; then
    if id postgres >/dev/null 2>&1; then PG_OS_USER=postgres; else PG_OS_USER=nobody; fi
else
    PG_OS_USER=$(id -un)
fi

as_pg() {
    if is_root; then
        # The cwd may be unreadable for that user; initdb and pg_ctl complain about that.
        (cd "$PGDIR" && runuser -u "$PG_OS_USER" -- "$@")
    else
        "$@"
    fi
}

wait_gone() { # pid, seconds
    local i
    for ((i = 0; i < $2 * 10; i++)); do
        kill -0 "$1" 2>/dev/null || return 0
        sleep 0.1
    done
    return 1
}

reap_strays() {
    local environ pid strays=()
    for environ in /proc/[0-9]*/environ; do
        pid=${environ#/proc/}
        pid=${pid%/environ}
        [[ $pid != "$$" ]] || continue
        if grep -qzx "WEBHOOKS_CI_RUN_ID=$RUN_ID" "$environ" 2>/dev/null; then
            strays+=("$pid")
        fi
    done
    ((${#strays[@]})) || return 0
    for pid in "${strays[@]}"; do
        log "stopping stray process $pid: $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)"
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${strays[@]}"; do
        wait_gone "$pid" 5 || kill -KILL "$pid" 2>/dev/null || true
    done
}

stop_postgres() {
    local pid
    ((PG_STARTED)) || return 0
    PG_STARTED=0
    # Immediate mode: the data is thrown away anyway, so skip the shutdown checkpoint.
    as_pg "$PG_BINDIR/pg_ctl" stop -D "$PGDATA" -m immediate -w -t 20 >/dev/null 2>&1 || true
    if [[ -f $PGDATA/postmaster.pid ]]; then
        pid=$(head -n 1 "$PGDATA/postmaster.pid" 2>/dev/null || true)
        if [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null; then
            log "postgres $pid survived pg_ctl stop; killing it"
            kill -KILL "$pid" 2>/dev/null || true
            wait_gone "$pid" 5 || true
        fi
    fi
}

stop_redis() {
    local pid
    ((REDIS_STARTED)) || return 0
    REDIS_STARTED=0
    pid=$(cat "$REDIS_DIR/redis.pid" 2>/dev/null || true)
    [[ $pid =~ ^[0-9]+$ ]] || return 0
    kill -TERM "$pid" 2>/dev/null || true
    wait_gone "$pid" 10 || kill -KILL "$pid" 2>/dev/null || true
}

show_logs() {
    local f
    for f in "$PGDIR/postgres.log" "$REDIS_DIR/redis.log"; do
        [[ -s $f ]] || continue
        log "---- last lines of $(basename "$f") ----"
        tail -n 40 "$f" >&2 || true
    done
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    # Output into a closed pipe (`... 2>&1 | head`) must not cut the teardown short: writes
    # then fail quietly instead of killing the script before the servers are stopped.
    trap '' PIPE
    set +e
    # The marker must not reach the helper commands below, or they would look like strays.
    export -n WEBHOOKS_CI_RUN_ID 2>/dev/null
    ((rc == 0)) || show_logs
    reap_strays
    stop_redis
    stop_postgres
    rm -rf "$WORKDIR"
    log "servers stopped, $WORKDIR removed (exit $rc)"
    exit "$rc"
}
trap cleanup EXIT
# Turning signals into exits routes them through the EXIT trap with the usual status codes.
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 141' PIPE

# ---------------------------------------------------------------------------------------------
# PostgreSQL
# ---------------------------------------------------------------------------------------------

mkdir -p "$PGDIR" "$REDIS_DIR"
# mktemp makes the directory 0700; the postgres OS user must be able to reach its subdir.
chmod 755 "$WORKDIR"
if is_root; then chown "$PG_OS_USER:" "$PGDIR"; fi

log "initdb in $PGDATA (as $PG_OS_USER)"
# -U postgres: the role the settings default to exists whoever runs initdb.
as_pg "$PG_BINDIR/initdb" -D "$PGDATA" -U postgres --auth=trust --encoding=UTF8 --locale=C \
    --no-sync >"$PGDIR/initdb.log" 2>&1 || {
    cat "$PGDIR/initdb.log" >&2
    die "initdb failed"
}

# TCP on loopback only and no unix socket: nothing else on the machine can collide with it,
# and the durability settings are pointless for a database deleted after the run.
cat >>"$PGDATA/postgresql.conf" <<EOF

# webhooks CI
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = ''
fsync = off
full_page_writes = off
synchronous_commit = off
max_connections = 100
EOF

log "starting postgres on 127.0.0.1:$PG_PORT"
PG_STARTED=1
as_pg "$PG_BINDIR/pg_ctl" start -D "$PGDATA" -l "$PGDIR/postgres.log" -w -t 60 >/dev/null ||
    die "pg_ctl start failed"

for ((i = 0; i < 100; i++)); do
    "$PG_BINDIR/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres && break
    sleep 0.2
done
"$PG_BINDIR/pg_isready" -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres >&2 || die "postgres is not ready"

PG_USER=postgres
DB_NAME=webhooks_test
# pytest-django creates (and recreates) the test database itself; creating it here as well
# makes the server usable right away, e.g. for a qcluster started by hand.
"$PG_BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" \
    -d postgres -c "CREATE DATABASE $DB_NAME" >/dev/null

# ---------------------------------------------------------------------------------------------
# Redis
# ---------------------------------------------------------------------------------------------

log "starting redis on 127.0.0.1:$REDIS_PORT"
REDIS_STARTED=1
"$REDIS_SERVER" --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no \
    --daemonize yes --dir "$REDIS_DIR" --pidfile "$REDIS_DIR/redis.pid" \
    --logfile "$REDIS_DIR/redis.log" || die "redis-server failed to start"

redis_ping() {
    if command -v redis-cli >/dev/null 2>&1; then
        [[ $(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]
    else
        "$PYTHON" -c 'import redis, sys; redis.Redis(port=int(sys.argv[1])).ping()' \
            "$REDIS_PORT" >/dev/null 2>&1
    fi
}
for ((i = 0; i < 100; i++)); do
    redis_ping && break
    sleep 0.1
done
redis_ping || die "redis does not answer PING"

# ---------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------

export WEBHOOKS_TEST_POSTGRES_DSN_HOST=127.0.0.1
export WEBHOOKS_TEST_POSTGRES_PORT=$PG_PORT
export WEBHOOKS_TEST_POSTGRES_USER=$PG_USER
export WEBHOOKS_TEST_POSTGRES_PASSWORD=""
# tests/settings.py uses this name both as NAME and as the test database name, so a qcluster
# subprocess inheriting the environment opens the database pytest-django created.
export WEBHOOKS_TEST_DB_NAME=$DB_NAME
export WEBHOOKS_TEST_REDIS_PORT=$REDIS_PORT
export WEBHOOKS_CI_RUN_ID=$RUN_ID
export PYTHONUNBUFFERED=1

PYTEST_TIMEOUT=${WEBHOOKS_CI_PYTEST_TIMEOUT:-1200}

# `--exec CMD ARGS...` runs CMD with the servers up instead of the tests (make bench uses it
# for the PostgreSQL + Redis figures).
if [[ ${1:-} == --exec ]]; then
    shift
    log "running with the servers: $*"
    rc=0
    "$@" || rc=$?
    exit "$rc"
fi

log "pytest -m 'qcluster or integration or portable'${*:+ $*} (timeout ${PYTEST_TIMEOUT}s)"
# SIGINT (not TERM) on timeout so pytest still runs fixture teardown; --foreground keeps pytest
# in the terminal's process group so Ctrl-C reaches it directly.
rc=0
timeout --foreground -s INT -k 60 "$PYTEST_TIMEOUT" \
    "$PYTHON" -m pytest -m "qcluster or integration or portable" -p no:cacheprovider "$@" || rc=$?

case $rc in
0) log "integration tests passed" ;;
5) log "pytest collected no qcluster/integration tests: treated as a failure" ;;
124) log "pytest did not finish within ${PYTEST_TIMEOUT}s" ;;
*) log "pytest failed (exit $rc)" ;;
esac
exit "$rc"
