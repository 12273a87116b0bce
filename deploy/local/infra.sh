#!/usr/bin/env bash
# Local infrastructure for Strata development and tests: PostgreSQL and Redis.
#
#   deploy/local/infra.sh up      start (or reuse) both servers, write .strata/infra.env
#   deploy/local/infra.sh down    stop the private servers this script started
#   deploy/local/infra.sh status  show what is running
#
# `up` is idempotent. For each of PostgreSQL and Redis, independently:
#   - if DATABASE_URL / REDIS_URL is set in the environment and answers, it is used as is;
#   - otherwise a private server is started (or reused if it is already running), bound to
#     127.0.0.1 only, with all its state under <repo>/.strata/:
#       .strata/pg/data    the PostgreSQL cluster      .strata/pg/log   its log
#       .strata/pg/run     its unix socket             .strata/redis/   Redis pid, log, config
#     Missing server packages are installed with apt-get (Debian/Ubuntu).
# Then .strata/infra.env gets exactly two lines, DATABASE_URL=... and REDIS_URL=..., without
# `export`, so that both `set -a; . .strata/infra.env; set +a` and make's `include` read it.
#
# Environment: STRATA_PG_PORT (default 54329), STRATA_REDIS_PORT (default 63799),
#              DATABASE_URL, REDIS_URL (see above),
#              STRATA_PG_FALLBACK_DIR (default /var/tmp; see prepare_pg_dir, root only).
#
# As root, PostgreSQL runs as the `postgres` OS user (it refuses to run as root); Redis runs
# as the calling user.
#
# `down` only ever stops the servers that live under this checkout's .strata/; it never
# touches a server it did not start.
set -euo pipefail

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
ROOT=$(cd -- "$SCRIPT_DIR/../.." && pwd -P)
STATE="$ROOT/.strata"
PG_LINK="$STATE/pg"          # a directory, or a symlink to one (see prepare_pg_dir)
REDIS_DIR="$STATE/redis"
REDIS_CONF="$REDIS_DIR/redis.conf"
REDIS_PIDFILE="$REDIS_DIR/redis.pid"
ENV_FILE="$STATE/infra.env"

PG_PORT="${STRATA_PG_PORT:-54329}"
REDIS_PORT="${STRATA_REDIS_PORT:-63799}"
PG_USER=strata
PG_DB=strata
# OS user that owns and runs the private cluster when this script runs as root.
PG_OS_USER=postgres

APT_UPDATED=0

log() { printf 'infra: %s\n' "$*"; }
warn() { printf 'infra: warning: %s\n' "$*" >&2; }
die() { printf 'infra: error: %s\n' "$*" >&2; exit 1; }

is_root() { [ "$(id -u)" -eq 0 ]; }

usage() {
    echo "usage: $0 up|down|status" >&2
    exit 2
}

check_port() {
    case "$2" in
        '' | *[!0-9]*) die "$1 must be a TCP port number, got '$2'" ;;
    esac
    if [ "$2" -lt 1 ] || [ "$2" -gt 65535 ]; then die "$1 must be between 1 and 65535, got '$2'"; fi
}

# Hide the password of a URL before printing it.
redact() { printf '%s' "$1" | sed -E 's#^([a-z+]+://[^:/@]*):[^@/]*@#\1:***@#'; }

# Run a command with a time limit when `timeout` exists.
with_timeout() {
    local secs="$1"
    shift
    if command -v timeout >/dev/null 2>&1; then
        timeout "$secs" "$@"
    else
        "$@"
    fi
}

# --- package installation ----------------------------------------------------------------

as_root() {
    if is_root; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -n "$@"
    else
        die "need root to run: $* (not root, and sudo is not installed)"
    fi
}

# apt_install PKG... — `apt-get update` runs at most once per invocation of this script.
# fd 9 (the lock, see main) is closed so that services started by the packages' install
# scripts do not inherit it.
apt_install() {
    command -v apt-get >/dev/null 2>&1 ||
        die "cannot install $*: apt-get not found; install it by hand or set DATABASE_URL / REDIS_URL"
    local aptlog="$STATE/apt.log"
    if [ "$APT_UPDATED" -eq 0 ]; then
        log "apt-get update (output in $aptlog)"
        if ! as_root env DEBIAN_FRONTEND=noninteractive \
            apt-get -o DPkg::Lock::Timeout=300 update >>"$aptlog" 2>&1 9>&-; then
            tail -n 20 "$aptlog" >&2 || true
            die "apt-get update failed (see $aptlog)"
        fi
        APT_UPDATED=1
    fi
    log "apt-get install $*"
    if ! as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get -o DPkg::Lock::Timeout=300 install -y --no-install-recommends "$@" \
        >>"$aptlog" 2>&1 </dev/null 9>&-; then
        tail -n 20 "$aptlog" >&2 || true
        die "apt-get install $* failed (see $aptlog)"
    fi
}

# --- PostgreSQL ----------------------------------------------------------------------------

PGBIN=""      # server binaries of the private cluster
PG_REAL=""    # resolved directory behind .strata/pg
PGDATA=""
PSQL=""       # a psql client
PRIVATE_PG_URL="postgres://$PG_USER@127.0.0.1:$PG_PORT/$PG_DB"

# Highest installed server version's bin directory, or nothing.
highest_pg_bindir() {
    local d best=""
    for d in /usr/lib/postgresql/*/bin; do
        if [ -x "$d/postgres" ] && [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then
            best="$best$d"$'\n'
        fi
    done
    [ -n "$best" ] || return 0
    printf '%s' "$best" | sort -V | tail -n 1
}

find_psql() {
    local d
    if command -v psql >/dev/null 2>&1; then
        PSQL=psql
        return 0
    fi
    for d in $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -rV); do
        if [ -x "$d/psql" ]; then
            PSQL="$d/psql"
            return 0
        fi
    done
    return 1
}

ensure_psql() {
    find_psql && return 0
    apt_install postgresql-client
    find_psql || die "psql not found after installing postgresql-client"
}

# Install PostgreSQL when no server is installed at all. This comes before anything else so
# that the package, not this script, creates the `postgres` OS user.
ensure_pg_installed() {
    [ -z "$(highest_pg_bindir)" ] || return 0
    # postgresql-contrib provides pg_stat_statements (on Debian 12 it is already part of
    # postgresql-15; installing contrib is harmless there).
    apt_install postgresql postgresql-contrib
    [ -n "$(highest_pg_bindir)" ] || die "no PostgreSQL server under /usr/lib/postgresql/*/bin after installing it"
}

# Pick the server binaries for the cluster (sets PGBIN) and make sure pg_stat_statements,
# which the configuration preloads, is installed for that version.
ensure_pg_server() {
    local ver=""
    if [ -f "$PG_REAL/data/PG_VERSION" ]; then
        # An existing cluster must be run by the major version that created it.
        ver=$(cat "$PG_REAL/data/PG_VERSION")
        PGBIN="/usr/lib/postgresql/$ver/bin"
        [ -x "$PGBIN/postgres" ] || die "the cluster in $PG_REAL/data was created by PostgreSQL $ver," \
            "which is not installed any more; remove it with 'make clean-db'"
    else
        PGBIN=$(highest_pg_bindir)
        [ -n "$PGBIN" ] || die "no PostgreSQL server under /usr/lib/postgresql/*/bin"
        ver=$(basename "$(dirname "$PGBIN")")
    fi
    # shared_preload_libraries = 'pg_stat_statements' makes the server refuse to start without it.
    if [ ! -f "/usr/lib/postgresql/$ver/lib/pg_stat_statements.so" ]; then
        apt_install postgresql-contrib
        [ -f "/usr/lib/postgresql/$ver/lib/pg_stat_statements.so" ] ||
            die "pg_stat_statements is not available for PostgreSQL $ver"
    fi
    if [ -x "$PGBIN/psql" ]; then PSQL="$PGBIN/psql"; else ensure_psql; fi
}

# Run a command as the OS user that owns the cluster: PostgreSQL refuses to run as root, so
# as root this is the `postgres` user; otherwise it is the current user. It runs from / so
# that the postgres user never needs access to the caller's working directory.
as_pg() {
    if is_root; then
        if command -v runuser >/dev/null 2>&1; then
            (cd / && runuser -u "$PG_OS_USER" -- "$@")
        else
            local cmd
            cmd=$(printf '%q ' "$@")
            (cd / && su "$PG_OS_USER" -s /bin/sh -c "$cmd")
        fi
    else
        "$@"
    fi
}

ensure_pg_os_user() {
    is_root || return 0
    id -u "$PG_OS_USER" >/dev/null 2>&1 && return 0
    log "creating OS user $PG_OS_USER"
    useradd -r -m "$PG_OS_USER"
}

# Can the postgres OS user reach (traverse into) this directory?
pg_user_can_reach() { as_pg test -x "$1" 2>/dev/null; }

pg_running() {
    [ -f "$PGDATA/PG_VERSION" ] || return 1
    as_pg "$PGBIN/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1
}

# Port of the running private cluster (4th line of postmaster.pid), else the configured one.
pg_running_port() {
    local p
    p=$(sed -n 4p "$PGDATA/postmaster.pid" 2>/dev/null || true)
    case "$p" in '' | *[!0-9]*) p=$PG_PORT ;; esac
    printf '%s' "$p"
}

# Decide where the cluster's files live; sets PG_REAL and PGDATA.
#
# Normally that is .strata/pg itself. As root, though, the server runs as the `postgres` user,
# which must be able to traverse every parent directory of the checkout. That is often not
# the case: a checkout under /root, or under a private `mktemp -d` directory (mode 0700) such
# as /tmp/tmp.XXXX/clone. Rather than loosening the permissions of directories this script
# does not own (chmod o+x on /root or on someone's temp dir is a security change that other
# tools may also revert), the cluster then lives in a directory of its own under /var/tmp
# (world-traversable, sticky, and not wiped at boot), named after a hash of the checkout's
# path, and .strata/pg is a symlink to it. Everything given to the server (data directory,
# log, socket directory) uses the resolved path, which the postgres user can reach.
prepare_pg_dir() {
    if is_root; then
        ensure_pg_os_user
        # .strata is ours: let other users traverse it (not list it), whatever root's umask.
        chmod go+x "$STATE"
    fi
    if [ -L "$PG_LINK" ] || [ -d "$PG_LINK" ]; then
        PG_REAL=$(readlink -f "$PG_LINK") || die "cannot resolve $PG_LINK"
        [ -d "$PG_REAL" ] || mkdir -p "$PG_REAL"   # symlink whose target was cleaned away
    elif ! is_root || pg_user_can_reach "$STATE"; then
        mkdir -p "$PG_LINK"
        PG_REAL="$PG_LINK"
    else
        local base hash
        base="${STRATA_PG_FALLBACK_DIR:-/var/tmp}"
        hash=$(printf '%s' "$ROOT" | sha256sum | cut -c1-12)
        PG_REAL="$base/strata-pg-$hash"
        if [ -e "$PG_REAL" ]; then
            # Left over from an earlier checkout at the same path whose .strata was deleted:
            # stop it if it still runs, then start afresh.
            PGDATA="$PG_REAL/data"
            if [ -f "$PGDATA/PG_VERSION" ] &&
                [ -x "/usr/lib/postgresql/$(cat "$PGDATA/PG_VERSION")/bin/pg_ctl" ]; then
                PGBIN="/usr/lib/postgresql/$(cat "$PGDATA/PG_VERSION")/bin"
                if pg_running; then
                    as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m fast -w -t 60 stop >/dev/null 2>&1 || true
                fi
            fi
            rm -rf "$PG_REAL"
        fi
        mkdir -p "$PG_REAL"
        ln -s "$PG_REAL" "$PG_LINK"
        log "postgres: $ROOT is not reachable by the $PG_OS_USER user; the cluster lives in $PG_REAL (.strata/pg links to it)"
    fi
    PGDATA="$PG_REAL/data"
    mkdir -p "$PG_REAL/log" "$PG_REAL/run"
    if is_root; then
        chown -R "$PG_OS_USER": "$PG_REAL"
        chmod 700 "$PG_REAL"
        as_pg test -w "$PG_REAL" ||
            die "the $PG_OS_USER user cannot write to $PG_REAL; make its parent directories traversable" \
                "(chmod o+x) or remove .strata/pg to let this script choose another place"
    fi
}

# (Re)write this script's block at the end of postgresql.conf, so that a changed
# STRATA_PG_PORT or a changed setting takes effect at the next start.
write_pg_conf() {
    local conf="$PGDATA/postgresql.conf" sockdir="$PG_REAL/run" tmp sq="'"
    # A unix socket path is limited to ~107 bytes; with a very deep checkout, go TCP-only
    # (everything here connects over 127.0.0.1 anyway).
    if [ "${#sockdir}" -gt 90 ]; then sockdir=""; fi
    sockdir=${sockdir//$sq/$sq$sq}
    tmp=$(mktemp)
    awk '/^# BEGIN strata infra.sh/{skip=1} !skip{print} /^# END strata infra.sh/{skip=0}' "$conf" >"$tmp"
    cat >>"$tmp" <<EOF
# BEGIN strata infra.sh (rewritten by deploy/local/infra.sh at every start; edit it there)
# 'make run' keeps its data here, so the cluster keeps PostgreSQL's durability defaults
# (fsync, synchronous_commit and full_page_writes on): an acknowledged commit survives a
# crash. Test databases (created by the test kit) turn synchronous_commit off for
# themselves only, which risks nothing but their own last commits.
port = $PG_PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$sockdir'
shared_preload_libraries = 'pg_stat_statements'
pg_stat_statements.track = all
max_connections = 300
# Sized for the ledger benchmark (tens of millions of rows) on a 24 GiB machine: its hot
# indexes stay in shared buffers, and bulk ingest neither waits on WAL buffers nor
# triggers a checkpoint every few seconds.
shared_buffers = 1GB
wal_buffers = 32MB
max_wal_size = 4GB
checkpoint_timeout = 15min
log_min_messages = warning
# END strata infra.sh
EOF
    cat "$tmp" >"$conf" # keeps the file's owner
    rm -f "$tmp"
}

init_pg_cluster() {
    local initlog="$PG_REAL/log/initdb.log"
    log "postgres: initialising a new cluster in $PGDATA"
    if ! as_pg "$PGBIN/initdb" -D "$PGDATA" -U "$PG_USER" --auth=trust -E UTF8 --locale=C.UTF-8 \
        >"$initlog" 2>&1; then
        # initdb removes what it created when it fails.
        warn "initdb with --locale=C.UTF-8 failed, retrying with --locale=C"
        if ! as_pg "$PGBIN/initdb" -D "$PGDATA" -U "$PG_USER" --auth=trust -E UTF8 --locale=C \
            >>"$initlog" 2>&1; then
            tail -n 20 "$initlog" >&2 || true
            die "initdb failed (see $initlog)"
        fi
    fi
}

pg_isready_at() { "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$1" -t 3 >/dev/null 2>&1; }

psql_private() {
    local port="$1"
    shift
    PGCONNECT_TIMEOUT=10 "$PSQL" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U "$PG_USER" "$@"
}

start_private_pg() {
    ensure_pg_installed
    prepare_pg_dir
    ensure_pg_server
    local port how where=" (data: $PGDATA)"
    if pg_running; then
        port=$(pg_running_port)
        how="reused running private server"
    elif pg_isready_at "$PG_PORT"; then
        port=$PG_PORT
        psql_private "$port" -d postgres -Atc 'select 1' >/dev/null 2>&1 ||
            die "127.0.0.1:$PG_PORT is taken by a PostgreSQL server this script did not start, and it" \
                "does not accept user '$PG_USER'; set STRATA_PG_PORT to a free port"
        how="reused server already listening (not started by this script)"
        where=""
    else
        [ -f "$PGDATA/PG_VERSION" ] || init_pg_cluster
        write_pg_conf
        local startlog="$PG_REAL/log/pg_ctl.log"
        # fd 9 (the lock) must not leak into the server.
        if ! as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -l "$PG_REAL/log/postgres.log" -w -t 60 start \
            >"$startlog" 2>&1 9>&-; then
            cat "$startlog" >&2 || true
            tail -n 20 "$PG_REAL/log/postgres.log" >&2 || true
            die "PostgreSQL did not start (log: $PG_REAL/log/postgres.log)"
        fi
        port=$PG_PORT
        how="started private server"
    fi
    if [ "$(psql_private "$port" -d postgres -Atc "select count(*) from pg_database where datname = '$PG_DB'")" != 1 ]; then
        psql_private "$port" -d postgres -c "create database $PG_DB" >/dev/null
    fi
    case "$(psql_private "$port" -d "$PG_DB" -Atc 'show shared_preload_libraries')" in
        *pg_stat_statements*) ;;
        *) warn "pg_stat_statements is not in shared_preload_libraries of the server on port $port" ;;
    esac
    PG_URL="postgres://$PG_USER@127.0.0.1:$port/$PG_DB"
    log "postgres: $how at $PG_URL$where"
}

resolve_pg() {
    if [ -n "${DATABASE_URL:-}" ] && [ "$DATABASE_URL" != "$PRIVATE_PG_URL" ]; then
        ensure_psql
        if PGCONNECT_TIMEOUT=5 with_timeout 15 "$PSQL" "$DATABASE_URL" -X -q -Atc 'select 1' >/dev/null 2>&1; then
            PG_URL=$DATABASE_URL
            log "postgres: reused DATABASE_URL from the environment ($(redact "$DATABASE_URL"))"
            return 0
        fi
        log "postgres: DATABASE_URL from the environment ($(redact "$DATABASE_URL")) does not answer; using a private server"
    fi
    start_private_pg
}

# --- Redis -------------------------------------------------------------------------------

PRIVATE_REDIS_URL="redis://127.0.0.1:$REDIS_PORT"

ensure_redis_cli() {
    command -v redis-cli >/dev/null 2>&1 || apt_install redis-tools
}

ensure_redis_server() {
    command -v redis-server >/dev/null 2>&1 || apt_install redis-server
    ensure_redis_cli
}

redis_ping_port() {
    [ "$(with_timeout 5 redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null)" = PONG ]
}

# PID of the private Redis if its pidfile names a live redis-server process.
redis_private_pid() {
    local pid
    [ -f "$REDIS_PIDFILE" ] || return 1
    pid=$(tr -dc '0-9' <"$REDIS_PIDFILE")
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q redis-server || return 1
    printf '%s' "$pid"
}

# Port in the private config, else the requested one.
redis_private_port() {
    local p=""
    [ -f "$REDIS_CONF" ] && p=$(awk '$1 == "port" {print $2}' "$REDIS_CONF")
    case "$p" in '' | *[!0-9]*) p=$REDIS_PORT ;; esac
    printf '%s' "$p"
}

# Process id reported by the Redis server answering on a port.
redis_server_pid_at() {
    with_timeout 5 redis-cli -h 127.0.0.1 -p "$1" info server 2>/dev/null |
        tr -d '\r' | awk -F: '$1 == "process_id" {print $2}'
}

start_private_redis() {
    ensure_redis_server
    mkdir -p "$REDIS_DIR"
    local how where port=$REDIS_PORT
    where=" (dir: $REDIS_DIR)"
    if redis_private_pid >/dev/null && redis_ping_port "$(redis_private_port)"; then
        port=$(redis_private_port)
        how="reused running private server"
    elif redis_ping_port "$REDIS_PORT"; then
        how="reused server already listening (not started by this script)"
        where=""
    else
        # A config file rather than flags, so that paths with spaces survive.
        cat >"$REDIS_CONF" <<EOF
# Written by deploy/local/infra.sh at every start.
port $REDIS_PORT
bind 127.0.0.1
save ""
appendonly no
daemonize yes
pidfile "$REDIS_PIDFILE"
logfile "$REDIS_DIR/redis.log"
dir "$REDIS_DIR"
EOF
        rm -f "$REDIS_PIDFILE"
        redis-server "$REDIS_CONF" </dev/null >/dev/null 2>&1 9>&- ||
            die "redis-server failed to start (log: $REDIS_DIR/redis.log)"
        local _
        for _ in $(seq 1 50); do
            redis_ping_port "$REDIS_PORT" && break
            sleep 0.2
        done
        if ! redis_ping_port "$REDIS_PORT"; then
            tail -n 20 "$REDIS_DIR/redis.log" >&2 || true
            die "Redis did not answer PING on 127.0.0.1:$REDIS_PORT within 10 s (log: $REDIS_DIR/redis.log)"
        fi
        how="started private server"
    fi
    REDIS_URL_OUT="redis://127.0.0.1:$port"
    log "redis:    $how at $REDIS_URL_OUT$where"
}

resolve_redis() {
    if [ -n "${REDIS_URL:-}" ] && [ "$REDIS_URL" != "$PRIVATE_REDIS_URL" ]; then
        ensure_redis_cli
        if [ "$(with_timeout 5 redis-cli -u "$REDIS_URL" ping 2>/dev/null)" = PONG ]; then
            REDIS_URL_OUT=$REDIS_URL
            log "redis:    reused REDIS_URL from the environment ($(redact "$REDIS_URL"))"
            return 0
        fi
        log "redis:    REDIS_URL from the environment ($(redact "$REDIS_URL")) does not answer; using a private server"
    fi
    start_private_redis
}

# --- commands ----------------------------------------------------------------------------

# A value for infra.env: bare when it is safe both for make and for the shell, else
# single-quoted for the shell (which is how the Makefile reads it).
env_value() {
    case "$1" in
        *[!A-Za-z0-9@%:/._?=+,~-]*) printf "'%s'" "${1//\'/\'\\\'\'}" ;;
        *) printf '%s' "$1" ;;
    esac
}

lock_state() {
    mkdir -p "$STATE"
    if command -v flock >/dev/null 2>&1; then
        exec 9>"$STATE/.infra.lock"
        flock -w 600 9 || die "another infra.sh is still running (lock: $STATE/.infra.lock)"
    fi
}

cmd_up() {
    lock_state
    PG_URL=""
    REDIS_URL_OUT=""
    resolve_pg
    resolve_redis
    local tmp="$ENV_FILE.tmp.$$"
    {
        printf 'DATABASE_URL=%s\n' "$(env_value "$PG_URL")"
        printf 'REDIS_URL=%s\n' "$(env_value "$REDIS_URL_OUT")"
    } >"$tmp"
    mv -f "$tmp" "$ENV_FILE"
}

stop_private_pg() {
    if [ ! -L "$PG_LINK" ] && [ ! -d "$PG_LINK" ]; then
        log "postgres: no private cluster"
        return 0
    fi
    PG_REAL=$(readlink -f "$PG_LINK" || true)
    PGDATA="$PG_REAL/data"
    if [ ! -f "$PGDATA/PG_VERSION" ]; then
        log "postgres: no private cluster"
        return 0
    fi
    PGBIN="/usr/lib/postgresql/$(cat "$PGDATA/PG_VERSION")/bin"
    if [ ! -x "$PGBIN/pg_ctl" ]; then
        log "postgres: PostgreSQL $(cat "$PGDATA/PG_VERSION") is not installed, so its cluster is not running"
        return 0
    fi
    if pg_running; then
        as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m fast -w -t 60 stop >/dev/null ||
            die "pg_ctl stop failed for $PGDATA"
        log "postgres: stopped private server ($PGDATA)"
    else
        log "postgres: private server not running"
    fi
}

stop_private_redis() {
    local pid port _
    if ! pid=$(redis_private_pid); then
        rm -f "$REDIS_PIDFILE"
        log "redis:    private server not running"
        return 0
    fi
    port=$(redis_private_port)
    if [ "$(redis_server_pid_at "$port")" = "$pid" ]; then
        with_timeout 10 redis-cli -h 127.0.0.1 -p "$port" shutdown nosave >/dev/null 2>&1 || true
    else
        kill -TERM "$pid" 2>/dev/null || true # no save points are configured: nothing is saved
    fi
    for _ in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.2
    done
    kill -0 "$pid" 2>/dev/null && die "Redis (pid $pid) did not stop"
    rm -f "$REDIS_PIDFILE"
    log "redis:    stopped private server (port $port)"
}

cmd_down() {
    [ -d "$STATE" ] || {
        log "nothing to stop (no $STATE)"
        return 0
    }
    lock_state
    stop_private_pg
    stop_private_redis
    rm -f "$ENV_FILE"
}

cmd_status() {
    local pid port
    if { [ -L "$PG_LINK" ] || [ -d "$PG_LINK" ]; } &&
        PG_REAL=$(readlink -f "$PG_LINK") && PGDATA="$PG_REAL/data" && [ -f "$PGDATA/PG_VERSION" ]; then
        PGBIN="/usr/lib/postgresql/$(cat "$PGDATA/PG_VERSION")/bin"
        if [ -x "$PGBIN/pg_ctl" ] && pg_running; then
            pid=$(sed -n 1p "$PGDATA/postmaster.pid" 2>/dev/null || true)
            log "postgres: private server running at postgres://$PG_USER@127.0.0.1:$(pg_running_port)/$PG_DB (pid $pid, data: $PGDATA)"
        else
            log "postgres: private server stopped (data: $PGDATA)"
        fi
    else
        log "postgres: no private cluster"
    fi
    if pid=$(redis_private_pid); then
        port=$(redis_private_port)
        if redis_ping_port "$port"; then
            log "redis:    private server running at redis://127.0.0.1:$port (pid $pid)"
        else
            log "redis:    private server process $pid exists but does not answer on port $port"
        fi
    else
        log "redis:    private server stopped"
    fi
    if [ -f "$ENV_FILE" ]; then
        log "$ENV_FILE:"
        sed -E 's#^#    #; s#(://[^:/@]*):[^@/]*@#\1:***@#' "$ENV_FILE"
    else
        log "no $ENV_FILE (run: $0 up)"
    fi
}

check_port STRATA_PG_PORT "$PG_PORT"
check_port STRATA_REDIS_PORT "$REDIS_PORT"

case "${1:-}" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    *) usage ;;
esac
