# Shared by every testenv script (sourced, never run). Paths, logging, and process bookkeeping.
#
# Layout (state dir; everything a run starts lives here and can be thrown away):
#   $STATE/env                  the env file the tests read (export lines, mode 0600)
#   $STATE/run/<service>.pid    PID of each service this tooling started (never found by name)
#   $STATE/logs/<service>.log   each service's output
#   $STATE/<service>/...        its data
# Cache dir (survives; later runs reuse it): Kubernetes binaries, the python rootfs tarball.
set -euo pipefail

TESTENV_HOME=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
STATE=${GAZELLE_TESTENV_DIR:-/tmp/gazelle-testenv}
CACHE=${GAZELLE_TESTENV_CACHE:-/var/cache/gazelle-testenv}
ENV_FILE=$STATE/env
RUN=$STATE/run
LOGS=$STATE/logs
K8S_BIN=$CACHE/k8s/bin
DOCKER_SOCK=$STATE/docker/docker.sock
# Debian's docker.io client matches its daemon; another docker CLI earlier on PATH may not.
DOCKER_CLI=/usr/bin/docker
export DOCKER_HOST=unix://$DOCKER_SOCK
REGISTRY=127.0.0.1:5000
AUTH_REGISTRY=127.0.0.1:5001
TOKEN_REGISTRY=127.0.0.1:5002
TOKEN_SERVER=127.0.0.1:5003
# the token server runs under the system python (with Debian's python3-cryptography), not the project's
TOKEN_SERVER_PY=/usr/bin/python3
PG_PORT=55432
KUBECONFIG_PATH=$STATE/kube-apiserver/kubeconfig

# Start order; down.sh stops in reverse.
SERVICES=(dockerd registry registry-auth token-server registry-token postgres etcd kube-apiserver kube-controller-manager kube-scheduler kubelet)

mkdir -p "$STATE" "$RUN" "$LOGS"
chmod 755 "$STATE"   # the postgres user must be able to reach its data dir below it

say() { printf '[testenv %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

# Seconds since $1 (a `date +%s.%N` stamp), one decimal.
since() { printf '%.1f' "$(echo "$(date +%s.%N) - $1" | bc)"; }

# The executable a service's PID must be running, so a recycled PID is never taken for ours.
service_exe() {
  case $1 in
    dockerd) echo dockerd ;;
    registry|registry-auth|registry-token) echo docker-registry ;;
    token-server) basename "$(readlink -f "$TOKEN_SERVER_PY")" ;;
    postgres) echo postgres ;;
    etcd) echo etcd ;;
    *) echo "$1" ;;
  esac
}

# PID of a running service we started, or nothing.
service_pid() {
  local f=$RUN/$1.pid pid exe
  [ -f "$f" ] || return 1
  pid=$(cat "$f")
  [ -n "$pid" ] && alive "$pid" || return 1
  exe=$(basename "$(readlink "/proc/$pid/exe" 2>/dev/null || true)")
  [ "$exe" = "$(service_exe "$1")" ] || return 1
  echo "$pid"
}

is_running() { service_pid "$1" >/dev/null; }

# spawn NAME CMD...: start CMD detached in its own session (so a Ctrl-C in the terminal reaches the
# test run's trap, which stops services in order, rather than every daemon at once), record its PID.
spawn() {
  local name=$1 log=$LOGS/$1.log; shift
  # one earlier generation is kept; the apiserver alone writes megabytes per run
  if [ "$(stat -c %s "$log" 2>/dev/null || echo 0)" -gt 20000000 ]; then mv -f "$log" "$log.1"; fi
  printf '\n=== %s started %s\n' "$name" "$(date -Is)" >> "$log"
  # fds 8 and 9 carry the scripts' locks: a daemon must not hold them for its lifetime
  setsid "$@" >> "$log" 2>&1 < /dev/null 8>&- 9>&- &
  echo $! > "$RUN/$name.pid"
  # Record for the caller which services THIS invocation started (run-tests.sh stops only those).
  if [ -n "${GAZELLE_TESTENV_STARTED:-}" ]; then echo "$name" >> "$GAZELLE_TESTENV_STARTED"; fi
}

# wait_until SECONDS DESCRIPTION CMD...: poll CMD every 0.2 s until it succeeds or time is up.
wait_until() {
  local limit=$1 what=$2 deadline; shift 2
  deadline=$((SECONDS + limit))
  while ((SECONDS < deadline)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  say "$what: not ready after ${limit}s"
  return 1
}

# True while PID runs; a zombie (exited, not yet reaped by init, which may take seconds) is not running.
alive() {
  local state
  state=$(sed -n 's/^[0-9]* (.*) \([A-Z]\).*/\1/p' "/proc/$1/stat" 2>/dev/null) || return 1
  [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

# stop_service NAME [SIGNAL]: TERM (or SIGNAL), wait up to 20 s, then KILL.
stop_service() {
  local name=$1 sig=${2:-TERM} pid i
  if pid=$(service_pid "$name"); then
    kill "-$sig" "$pid" 2>/dev/null || true
    for ((i = 0; i < 200; i++)); do alive "$pid" || break; sleep 0.1; done
    if alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; sleep 0.2; fi
    say "stopped $name (pid $pid)"
  fi
  rm -f "$RUN/$name.pid"
}

# A random secret, URL- and shell-safe.
random_secret() { openssl rand -hex 16; }

# The Debian mirror apt already uses (GAZELLE_TESTENV_MIRROR overrides), for debootstrap and apt-get source.
debian_mirror() {
  local mirror=${GAZELLE_TESTENV_MIRROR:-}
  if [ -z "$mirror" ]; then
    mirror=$(sed -n 's/^URIs: *\(http[^ ]*\/debian\)\/*$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1 || true)
  fi
  echo "${mirror:-http://deb.debian.org/debian}"
}

# Read (or create once per environment) a secret kept in the state dir.
state_secret() {
  local f=$STATE/secrets/$1
  mkdir -p "$STATE/secrets"; chmod 700 "$STATE/secrets"
  [ -s "$f" ] || (umask 077; random_secret > "$f")
  cat "$f"
}

# The python the tests run under: the project's virtualenv when there is one.
python_minor() {
  local py=${GAZELLE_TESTENV_PYTHON:-$TESTENV_HOME/../.venv/bin/python}
  [ -x "$py" ] || py=python3
  "$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])'
}

# tail_logs NAME...: the last 40 lines of each named log ($LOGS/NAME.log) that exists.
tail_logs() {
  local n f
  for n in "$@"; do
    f=$LOGS/$n.log
    [ -s "$f" ] || continue
    printf '\n----- last 40 lines of %s -----\n' "$f" >&2
    tail -n 40 "$f" >&2
  done
}

# True when something listens on 127.0.0.1:PORT.
port_busy() { (exec 3<> "/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Refuse to start SERVICE on PORT held by a process we did not start (names what holds it).
claim_port() {
  local name=$1 port=$2
  if port_busy "$port"; then
    die "$name: 127.0.0.1:$port is already in use by a process this tooling did not start: $(ss -ltnpH "sport = :$port" 2>/dev/null | sed 's/.*users://' | head -1)"
  fi
}

# Keep the kernel from handing PORT out as a client's ephemeral port (a client socket in TIME_WAIT
# on it blocks a server's bind for a minute). Adds to the machine's reserved list; best effort.
reserve_port() {
  local f=/proc/sys/net/ipv4/ip_local_reserved_ports cur
  cur=$(cat "$f" 2>/dev/null) || return 0
  case ",$cur," in *",$1,"*) return 0 ;; esac
  echo "${cur:+$cur,}$1" > "$f" 2>/dev/null || say "could not reserve port $1 (sysctl net.ipv4.ip_local_reserved_ports)"
}

# Unmount everything mounted below DIR (deepest first): kubelet's secret volumes, dockerd's netns.
unmount_below() {
  local dir=$1
  awk -v d="$dir/" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r | while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done
}

kube_token() { state_secret kube-token; }

# curl against the apiserver with the admin token (no kubectl needed by the scripts themselves).
kube_get() {
  curl -sf --max-time 5 --cacert "$STATE/kube-apiserver/certs/apiserver.crt" \
    -H "Authorization: Bearer $(kube_token)" "https://127.0.0.1:6443$1"
}
