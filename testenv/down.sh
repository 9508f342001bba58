#!/bin/bash
# Stop the test environment by recorded PID (never by name), removing the containers and mounts it
# made. `down.sh` stops every service this tooling started; `down.sh NAME...` only those (what
# run-tests.sh does, so services that were already up before a test run stay up).
# Data (images, registry storage, PostgreSQL) stays in the state dir for the next start.
. "$(dirname "$0")/lib.sh"

want=("$@")
[ ${#want[@]} -gt 0 ] || want=("${SERVICES[@]}")
wanted() { local w; for w in "${want[@]}"; do [ "$w" = "$1" ] && return 0; done; return 1; }
docker() { "$DOCKER_CLI" "$@"; }

for ((i = ${#SERVICES[@]} - 1; i >= 0; i--)); do
  s=${SERVICES[$i]}
  wanted "$s" || continue
  case $s in
    kubelet)
      stop_service kubelet
      # the pods' containers outlive the kubelet: remove them (dockershim names them k8s_*)
      if is_running dockerd; then
        docker ps -aq --filter name=^k8s_ | xargs -r "$DOCKER_CLI" rm -f >/dev/null 2>&1 || true
      fi
      unmount_below "$STATE/kubelet"
      ;;
    dockerd)
      if is_running dockerd; then docker ps -aq | xargs -r "$DOCKER_CLI" rm -f >/dev/null 2>&1 || true; fi
      stop_service dockerd
      unmount_below "$STATE/docker"
      ;;
    postgres) stop_service postgres INT ;;   # INT = fast shutdown: open test connections do not hold it up
    *) stop_service "$s" ;;
  esac
done

left=()
for s in "${SERVICES[@]}"; do is_running "$s" && left+=("$s"); done
if [ ${#left[@]} -eq 0 ]; then
  rm -f "$ENV_FILE"   # nothing is up: a stale env file would only mislead
  say "test environment stopped"
else
  say "left running (not asked to stop): ${left[*]}"
fi
