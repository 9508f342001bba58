#!/bin/bash
# A private PostgreSQL cluster on 127.0.0.1:55432: initdb into the state dir, owned by the `postgres`
# system user (postgres refuses to run as root). Role and database `gazelle`, password auth over TCP
# (random password per environment); the superuser is reachable only on the unix socket in the
# cluster's own 0700 directory.
. "$(dirname "$0")/lib.sh"

if pid=$(service_pid postgres); then say "postgres: running (pid $pid)"; exit 0; fi
claim_port postgres "$PG_PORT"
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -x "$PGBIN/postgres" ] || die "PostgreSQL server binaries not found under /usr/lib/postgresql (apt-get install postgresql)"
id postgres >/dev/null 2>&1 || die "no 'postgres' system user (it comes with the postgresql package)"
D=$STATE/postgres
PW=$(state_secret postgres-password)
as_pg() { setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"; }
cd /   # the postgres user may not enter the caller's directory
mkdir -p "$D"
chown postgres:postgres "$D"; chmod 700 "$D"
fresh=0
if [ ! -f "$D/data/PG_VERSION" ]; then
  rm -rf "$D/data"
  as_pg "$PGBIN/initdb" -D "$D/data" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
    -E UTF8 --locale=C.UTF-8 > "$LOGS/postgres-initdb.log" 2>&1 || { cat "$LOGS/postgres-initdb.log" >&2; die "initdb failed"; }
  fresh=1
fi
# a lock file left by a postgres that was killed outright; its PID may since belong to anything
if [ -f "$D/data/postmaster.pid" ]; then
  old=$(head -1 "$D/data/postmaster.pid")
  if [ "$(basename "$(readlink "/proc/$old/exe" 2>/dev/null || true)")" = postgres ]; then
    die "a postgres this tooling did not record (pid $old) runs on $D/data"
  fi
  rm -f "$D/data/postmaster.pid"
fi
psql_su() { psql -X -q -v ON_ERROR_STOP=1 -h "$D" -p "$PG_PORT" -U postgres -d postgres "$@"; }
t=$(date +%s.%N)
# 55432 lies in the kernel's ephemeral range: reserve it, and since a client socket that got it
# before may sit in TIME_WAIT for a minute, retry a start that dies on "Address already in use".
reserve_port "$PG_PORT"
deadline=$((SECONDS + 75))
while :; do
  spawn postgres setpriv --reuid=postgres --regid=postgres --init-groups -- "$PGBIN/postgres" -D "$D/data" \
    -c listen_addresses=127.0.0.1 -c port="$PG_PORT" -c unix_socket_directories="$D" \
    -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200
  pid=$(cat "$RUN/postgres.pid")
  for ((i = 0; i < 300; i++)); do
    psql_su -c 'select 1' >/dev/null 2>&1 && break 2
    alive "$pid" || break
    sleep 0.2
  done
  alive "$pid" && die "postgres did not answer in 60 s (log: $LOGS/postgres.log)"
  tail -n 5 "$LOGS/postgres.log" | grep -q 'already in use' || die "postgres exited (log: $LOGS/postgres.log)"
  ((SECONDS < deadline)) || break
  say "postgres: 127.0.0.1:$PG_PORT still held by a closed connection (TIME_WAIT); retrying"
  sleep 3
done
psql_su -c 'select 1' >/dev/null 2>&1 || die "postgres could not bind 127.0.0.1:$PG_PORT (log: $LOGS/postgres.log)"
if [ "$fresh" = 1 ] || ! psql_su -tAc "select 1 from pg_roles where rolname='gazelle'" | grep -q 1; then
  # on stdin, not argv: the password stays out of the process list
  psql_su >/dev/null <<SQL
create role gazelle login password '$PW' createdb;
create database gazelle owner gazelle;
SQL
fi
say "postgres up on 127.0.0.1:$PG_PORT in $(since "$t") s (pid $(cat "$RUN/postgres.pid"))"
