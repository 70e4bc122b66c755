#!/usr/bin/env bash
# Starts a throwaway local PostgreSQL for development and the test suite,
# installing the OS package if it is missing. Idempotent: a second run finds
# the server up and prints the same URL.
#
#   eval "$(scripts/start-postgres.sh --export)"   # sets CASESYNC_TEST_DATABASE_URL
#   scripts/start-postgres.sh                      # prints the URL
#
# Settings (environment): CASESYNC_PG_PORT (5433), CASESYNC_PG_DATA
# (/tmp/casesync-pg), CASESYNC_PG_USER / CASESYNC_PG_PASSWORD (casesync).
# CASESYNC_PG_DURABLE=1 makes a new cluster durable as a deployment's
# (fsync, synchronous_commit on; the default turns them off for tests):
# the one to compare with SQLite at synchronous=FULL in the benchmarks.
#
#   CASESYNC_PG_DURABLE=1 CASESYNC_PG_PORT=5434 CASESYNC_PG_DATA=/tmp/casesync-pg-durable \
#     scripts/start-postgres.sh
set -euo pipefail

port=${CASESYNC_PG_PORT:-5433}
data=${CASESYNC_PG_DATA:-/tmp/casesync-pg}
user=${CASESYNC_PG_USER:-casesync}
password=${CASESYNC_PG_PASSWORD:-casesync}
database=casesync
url="postgres://${user}:${password}@127.0.0.1:${port}/${database}"

log() { echo "start-postgres: $*" >&2; }

find_bindir() {
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

bindir=$(find_bindir || true)
if [ -z "$bindir" ] || [ ! -x "$bindir/initdb" ]; then
  log "PostgreSQL server not found; installing the OS package"
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq >&2
  $SUDO apt-get install -y -qq postgresql >&2
  bindir=$(find_bindir)
fi

# initdb and postgres refuse to run as root: run them as the postgres user.
if [ "$(id -u)" -eq 0 ]; then
  id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql postgres
  as_pg() { runuser -u postgres -- "$@"; }
else
  as_pg() { "$@"; }
fi

if ! "$bindir/pg_isready" -q -h 127.0.0.1 -p "$port"; then
  if [ ! -f "$data/PG_VERSION" ]; then
    log "creating a cluster in $data"
    mkdir -p "$data"
    [ "$(id -u)" -eq 0 ] && chown postgres "$data"
    pwfile=$(mktemp)
    echo "$password" > "$pwfile"
    [ "$(id -u)" -eq 0 ] && chown postgres "$pwfile"
    as_pg "$bindir/initdb" -D "$data" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
      --encoding=UTF8 --locale=C.UTF-8 >/dev/null
    rm -f "$pwfile"
    {
      echo "listen_addresses = '127.0.0.1'"
      echo "port = $port"
      echo "unix_socket_directories = '$data'"
      echo "max_connections = 300"
      if [ "${CASESYNC_PG_DURABLE:-}" != 1 ]; then
        # A test database is disposable: durability off for speed.
        echo "fsync = off"
        echo "synchronous_commit = off"
        echo "full_page_writes = off"
      fi
    } >> "$data/postgresql.conf"
  fi
  log "starting PostgreSQL on 127.0.0.1:$port"
  as_pg "$bindir/pg_ctl" -D "$data" -l "$data/server.log" -w -t 60 start >/dev/null
fi

psql_admin() { as_pg "$bindir/psql" -h "$data" -p "$port" -U postgres -d postgres -qtA "$@"; }
if [ "$(psql_admin -c "SELECT 1 FROM pg_roles WHERE rolname = '$user'")" != "1" ]; then
  psql_admin -c "CREATE ROLE \"$user\" LOGIN CREATEDB PASSWORD '$password'" >/dev/null
fi
if [ "$(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = '$database'")" != "1" ]; then
  psql_admin -c "CREATE DATABASE \"$database\" OWNER \"$user\"" >/dev/null
fi

if [ "${1:-}" = "--export" ]; then
  echo "export CASESYNC_TEST_DATABASE_URL='$url'"
else
  echo "$url"
fi
