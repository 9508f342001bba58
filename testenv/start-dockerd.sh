#!/bin/bash
# A private Docker engine (Debian docker.io) on a unix socket under the state dir: no TCP, no bridge,
# no iptables, so containers use the host network (loopback) only. Its default runtime is runc-clamp
# (see that file): this kind of sandbox cannot set a negative oom_score_adj, which kubelet asks for.
. "$(dirname "$0")/lib.sh"

if pid=$(service_pid dockerd); then say "dockerd: running (pid $pid)"; exit 0; fi
D=$STATE/docker
unmount_below "$D"   # left over if an earlier engine was killed outright
mkdir -p "$D/data" "$D/exec"
echo '{}' > "$D/daemon.json"   # ignore any /etc/docker/daemon.json: this engine is ours alone
# the engine runs its own copy: a checkout's file mode (or the checkout itself) may change meanwhile
install -m 755 "$TESTENV_HOME/runc-clamp" "$D/runc-clamp"
STORAGE=${GAZELLE_TESTENV_DOCKER_STORAGE:-}
if [ -z "$STORAGE" ]; then
  # overlay2 cannot stack on an overlay filesystem (a state dir inside a container); vfs always works
  case $(stat -f -c %T "$D") in overlayfs|overlay) STORAGE=vfs ;; *) STORAGE=overlay2 ;; esac
fi
rm -f "$DOCKER_SOCK"
t=$(date +%s.%N)
spawn dockerd dockerd \
  --config-file "$D/daemon.json" \
  --host "unix://$DOCKER_SOCK" \
  --data-root "$D/data" --exec-root "$D/exec" --pidfile "$D/dockerd.pid" \
  --storage-driver "$STORAGE" \
  --iptables=false --ip-masq=false --bridge=none \
  --insecure-registry "$REGISTRY" --insecure-registry "$AUTH_REGISTRY" --insecure-registry "$TOKEN_REGISTRY" \
  --add-runtime "runc-clamp=$D/runc-clamp" --default-runtime runc-clamp
wait_until 60 dockerd "$DOCKER_CLI" version || die "dockerd did not start (log: $LOGS/dockerd.log)"
say "dockerd up in $(since "$t") s (pid $(cat "$RUN/dockerd.pid"), $STORAGE, $DOCKER_HOST)"
