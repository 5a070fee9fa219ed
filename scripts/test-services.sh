#!/usr/bin/env bash
# Runs a command (the test suite) against real PostgreSQL and Redis.
#
# DATABASE_URL / REDIS_URL are used when set and reachable. Otherwise throwaway instances are
# started on free loopback ports with their files under var/test-services/ and stopped when the
# command ends. Missing server packages (redis-server) and the browser for page tests (chromium)
# are installed from Debian's packages when running as root. Never falls back to SQLite.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=.venv/bin/python
# One folder per run, so that runs side by side (two terminals, CI and a developer) never share
# a data directory.
mkdir -p "$ROOT/var/test-services"
STATE=$(mktemp -d "$ROOT/var/test-services/run.XXXXXX")
chmod 755 "$STATE"

say() { echo "test-services: $*"; }
die() { echo "test-services: $*" >&2; exit 1; }

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

apt_install() {
  # Installs Debian packages; only as root, and refreshes the package lists once if needed.
  [ "$(id -u)" = 0 ] || die "$* missing and not root: install $* (Debian packages)"
  command -v apt-get >/dev/null || die "$* missing and no apt-get to install it"
  say "installing $* from Debian's packages"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -qq --no-install-recommends "$@" >"$STATE/apt.log" 2>&1; then
    apt-get update -qq >>"$STATE/apt.log" 2>&1 || true
    apt-get install -y -qq --no-install-recommends "$@" >>"$STATE/apt.log" 2>&1 \
      || die "could not install $* (see $STATE/apt.log)"
  fi
}

pg_reachable() {
  "$PY" - "$1" <<'PYEOF' >/dev/null 2>&1
import sys, psycopg
psycopg.connect(sys.argv[1], connect_timeout=3).close()
PYEOF
}

redis_reachable() {
  "$PY" - "$1" <<'PYEOF' >/dev/null 2>&1
import sys, redis
redis.Redis.from_url(sys.argv[1], socket_connect_timeout=3).ping()
PYEOF
}

cleanup_steps=()
cleanup() {
  # Newest first: stop the servers before their folders go.
  local i
  for ((i = ${#cleanup_steps[@]} - 1; i >= 0; i--)); do eval "${cleanup_steps[i]}" || true; done
}
trap cleanup EXIT
cleanup_steps+=("rm -rf $STATE")

start_postgres() {
  local bindir=""
  if command -v pg_config >/dev/null 2>&1; then bindir=$(pg_config --bindir); fi
  if [ -z "$bindir" ] || [ ! -x "$bindir/initdb" ]; then
    bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  fi
  [ -n "$bindir" ] && [ -x "$bindir/initdb" ] || die "PostgreSQL server binaries (initdb) not found; install postgresql"

  local data="$STATE/pg" as=()
  if [ "$(id -u)" = 0 ]; then
    # PostgreSQL refuses to run as root: run it as the postgres user, with files it can reach.
    id postgres >/dev/null 2>&1 || useradd --system --home-dir /nonexistent --shell /usr/sbin/nologin postgres
    # (From / so that the postgres user is not left in a folder it may not enter.)
    as=(env -C / runuser -u postgres --)
    if ! "${as[@]}" test -x "$STATE"; then
      data=$(mktemp -d /tmp/escapement-pg.XXXXXX)
    fi
  fi
  rm -rf "$data" && mkdir -p "$data"
  if [ "$(id -u)" = 0 ]; then chown postgres "$data"; fi
  local port
  port=$(free_port)
  "${as[@]}" "$bindir/initdb" -D "$data/cluster" -U escapement --auth=trust -E UTF8 --no-sync >"$STATE/initdb.log" 2>&1 \
    || die "initdb failed (see $STATE/initdb.log)"
  # Throwaway cluster: durability off for speed; nothing here outlives the run.
  "${as[@]}" "$bindir/pg_ctl" -D "$data/cluster" -l "$data/server.log" -w -t 30 \
    -o "-p $port -k $data -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
    start >/dev/null || die "PostgreSQL did not start (see $data/server.log)"
  cleanup_steps+=("${as[*]} $bindir/pg_ctl -D $data/cluster -m immediate stop >/dev/null 2>&1; rm -rf $data")
  "${as[@]}" "$bindir/createdb" -h 127.0.0.1 -p "$port" -U escapement escapement
  export DATABASE_URL="postgres://escapement@127.0.0.1:$port/escapement"
  say "started PostgreSQL $("$bindir/postgres" --version | awk '{print $3}') on 127.0.0.1:$port"
}

start_redis() {
  command -v redis-server >/dev/null 2>&1 || apt_install redis-server
  local port dir="$STATE/redis"
  port=$(free_port)
  rm -rf "$dir" && mkdir -p "$dir"
  redis-server --port "$port" --bind 127.0.0.1 --daemonize yes --dir "$dir" --pidfile "$dir/redis.pid" \
    --logfile "$dir/redis.log" --save "" --appendonly no >/dev/null
  cleanup_steps+=("kill \$(cat $dir/redis.pid) 2>/dev/null")
  local tries=0
  until redis_reachable "redis://127.0.0.1:$port/0"; do
    tries=$((tries + 1))
    [ $tries -lt 50 ] || die "Redis did not start (see $dir/redis.log)"
    sleep 0.1
  done
  export REDIS_URL="redis://127.0.0.1:$port/0"
  say "started Redis $(redis-server --version | awk '{print $3}' | cut -d= -f2) on 127.0.0.1:$port"
}

if [ -n "${DATABASE_URL:-}" ] && pg_reachable "$DATABASE_URL"; then
  say "using PostgreSQL from DATABASE_URL"
else
  [ -n "${DATABASE_URL:-}" ] && say "DATABASE_URL is set but not reachable; starting a throwaway PostgreSQL"
  start_postgres
fi

if [ -n "${REDIS_URL:-}" ] && redis_reachable "$REDIS_URL"; then
  say "using Redis from REDIS_URL"
else
  [ -n "${REDIS_URL:-}" ] && say "REDIS_URL is set but not reachable; starting a throwaway Redis"
  start_redis
fi

export CHROMIUM_PATH="${CHROMIUM_PATH:-$(command -v chromium || command -v chromium-browser || true)}"
if [ -z "$CHROMIUM_PATH" ]; then
  apt_install chromium
  CHROMIUM_PATH=$(command -v chromium)
fi

"$@"
