#!/usr/bin/env bash
# Make sure a PostgreSQL server runs for the tests and print the URL to use (stdout: the URL
# and nothing else; progress goes to stderr). Idempotent and quick when a server already runs.
#
#   1. $MLPREFS_TEST_PG, when it is set and answers;
#   2. the machine's server on localhost:5432 ($MLPREFS_PG_MACHINE_PORT), when one runs (as
#      root: a test role and database are created in it through the postgres user's socket);
#   3. otherwise a private server from Debian's postgresql package (installed first when
#      missing and we are root) in $MLPREFS_PG_DIR (default /tmp/mlprefs-pg), listening on
#      localhost only, password auth, run as the postgres user when we are root.
set -euo pipefail

DIR="${MLPREFS_PG_DIR:-/tmp/mlprefs-pg}"
PORT="${MLPREFS_PG_PORT:-54329}"
MACHINE_PORT="${MLPREFS_PG_MACHINE_PORT:-5432}"
DB=mlprefs_test
ROLE=mlprefs_test

log() { echo "postgres.sh: $*" >&2; }
answers() { psql "$1" -qtAX -c 'SELECT 1' >/dev/null 2>&1; }
as_owner() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

new_password() { head -c 18 /dev/urandom | base64 | tr -d '+/='; }

find_bindir() {
  local d
  d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
  if [ -z "$d" ] && command -v pg_ctl >/dev/null; then d="$(dirname "$(readlink -f "$(command -v pg_ctl)")")"; fi
  echo "$d"
}

# 1. an explicit URL
if [ -n "${MLPREFS_TEST_PG:-}" ] && answers "$MLPREFS_TEST_PG"; then
  echo "$MLPREFS_TEST_PG"
  exit 0
fi

if ! command -v psql >/dev/null || [ -z "$(find_bindir)" ]; then
  if [ "$(id -u)" != 0 ]; then
    log "PostgreSQL is not installed; as root run: apt-get install -y postgresql"
    exit 1
  fi
  log "installing Debian's postgresql package"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2 && apt-get install -y -qq postgresql >&2
fi
BIN="$(find_bindir)"

mkdir -p "$(dirname "$DIR")"
exec 9>"$DIR.lock"
flock 9   # two CI jobs at once must not initialise the same directory

# 2. the machine's server
if "$BIN/pg_isready" -q -h localhost -p "$MACHINE_PORT" && [ "$(id -u)" = 0 ]; then
  PWFILE="$DIR.machine-password"
  [ -s "$PWFILE" ] || (umask 077 && new_password >"$PWFILE")
  PW="$(cat "$PWFILE")"
  SQL="DO \$\$ BEGIN
         IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$ROLE') THEN
           CREATE ROLE $ROLE LOGIN PASSWORD '$PW';
         ELSE ALTER ROLE $ROLE LOGIN PASSWORD '$PW'; END IF; END \$\$;"
  if runuser -u postgres -- psql -qtAX -p "$MACHINE_PORT" -d postgres -c "$SQL" >/dev/null 2>&1; then
    if [ -z "$(runuser -u postgres -- psql -qtAX -p "$MACHINE_PORT" -d postgres \
               -c "SELECT 1 FROM pg_database WHERE datname = '$DB'")" ]; then
      runuser -u postgres -- createdb -p "$MACHINE_PORT" -O "$ROLE" "$DB"
    fi
    URL="postgresql://$ROLE:$PW@localhost:$MACHINE_PORT/$DB"
    if answers "$URL"; then
      log "using the machine's server on localhost:$MACHINE_PORT"
      echo "$URL"
      exit 0
    fi
  fi
  log "a server runs on localhost:$MACHINE_PORT but it refused a test role; starting a private one"
fi

# 3. a private server
DATA="$DIR/data"
PWFILE="$DIR/password"
if [ ! -s "$PWFILE" ] || [ ! -f "$DATA/PG_VERSION" ]; then
  log "initialising a private server in $DATA"
  as_owner "$BIN/pg_ctl" -D "$DATA" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$DIR"
  mkdir -m 700 "$DIR"
  [ "$(id -u)" = 0 ] && chown postgres: "$DIR"
  PW="$(new_password)"
  (umask 077 && echo "$PW" >"$DIR/pwinit")
  [ "$(id -u)" = 0 ] && chown postgres: "$DIR/pwinit"
  as_owner "$BIN/initdb" -D "$DATA" -U postgres -E UTF8 --locale=C.UTF-8 --no-sync \
    --auth-local=peer --auth-host=scram-sha-256 --pwfile="$DIR/pwinit" >/dev/null
  mv "$DIR/pwinit" "$PWFILE"
  cat >>"$DATA/postgresql.conf" <<EOF
listen_addresses = 'localhost'
port = $PORT
unix_socket_directories = '$DIR'
max_connections = 200
EOF
fi
PW="$(cat "$PWFILE")"
if ! as_owner "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
  log "starting the private server on localhost:$PORT"
  # 9>&-: the server must not inherit (and so hold) the lock
  as_owner "$BIN/pg_ctl" -D "$DATA" -l "$DIR/server.log" -w -t 60 start >/dev/null 9>&-
fi
ADMIN="postgresql://postgres:$PW@localhost:$PORT/postgres"
if [ -z "$(psql "$ADMIN" -qtAX -c "SELECT 1 FROM pg_database WHERE datname = '$DB'")" ]; then
  psql "$ADMIN" -qtAX -c "CREATE DATABASE $DB" >/dev/null
fi
echo "postgresql://postgres:$PW@localhost:$PORT/$DB"
