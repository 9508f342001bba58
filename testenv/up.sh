#!/bin/bash
# Bring up the whole test environment on loopback, reusing whatever is already running:
#   packages -> Docker engine, registries (plain :5000, basic auth :5001, bearer token :5002 with its
#   token server :5003), PostgreSQL :55432, images
#   -> etcd, kube-apiserver, controller-manager, scheduler, kubelet -> the env file.
# The Kubernetes build (cold: minutes) runs in the background while the rest starts.
# Root only. Stop with down.sh. Set GAZELLE_TESTENV_STARTED=FILE to get the names of the services
# this call started (run-tests.sh stops only those).
. "$(dirname "$0")/lib.sh"

[ "$(id -u)" = 0 ] || die "the test environment needs root (apt-get, dockerd, kubelet): run as root, or run only the fast tier: make test-unit"
T0=$(date +%s.%N)
bash "$TESTENV_HOME/install-packages.sh"

build_pid=""
stop_build() {
  if [ -n "$build_pid" ] && kill -0 "$build_pid" 2>/dev/null; then
    kill -TERM -- "-$build_pid" 2>/dev/null || true   # its own process group: make and the go compilers
    wait "$build_pid" 2>/dev/null || true
  fi
}
trap stop_build EXIT
setsid bash "$TESTENV_HOME/build-k8s.sh" &
build_pid=$!

bash "$TESTENV_HOME/start-dockerd.sh"
bash "$TESTENV_HOME/start-registry.sh" plain
bash "$TESTENV_HOME/start-registry.sh" auth
bash "$TESTENV_HOME/start-registry.sh" token
bash "$TESTENV_HOME/start-postgres.sh"
bash "$TESTENV_HOME/build-images.sh"

wait "$build_pid" || die "kubernetes build failed (log: $LOGS/build-k8s.log)"
build_pid=""
bash "$TESTENV_HOME/start-etcd.sh"
bash "$TESTENV_HOME/start-kube-apiserver.sh"
bash "$TESTENV_HOME/start-k8s-node.sh"

py=$(cat "$STATE/images/python")
(umask 077; cat > "$ENV_FILE.new" <<ENV
# Written by testenv/up.sh: the addresses and credentials of the test environment.
export GAZELLE_TEST_DOCKER_HOST=unix://$DOCKER_SOCK
export GAZELLE_TEST_REGISTRY=$REGISTRY
export GAZELLE_TEST_AUTH_REGISTRY=$AUTH_REGISTRY
export GAZELLE_TEST_AUTH_REGISTRY_USER=gazelle
export GAZELLE_TEST_AUTH_REGISTRY_PASSWORD=$(state_secret registry-auth-password)
export GAZELLE_TEST_TOKEN_REGISTRY=$TOKEN_REGISTRY
export GAZELLE_TEST_TOKEN_REGISTRY_REALM=http://$TOKEN_SERVER/token
export GAZELLE_TEST_TOKEN_REGISTRY_USER=gazelle
export GAZELLE_TEST_TOKEN_REGISTRY_PASSWORD=$(state_secret registry-token-password)
export GAZELLE_TEST_TOKEN_REGISTRY_PULL_USER=gazelle-reader
export GAZELLE_TEST_TOKEN_REGISTRY_PULL_PASSWORD=$(state_secret registry-token-pull-password)
export GAZELLE_TEST_BASE_IMAGE=$py
export GAZELLE_TEST_BASE_IMAGE_DIGEST=$(cat "$STATE/images/python.digest")
export GAZELLE_TEST_BUSYBOX_IMAGE=$(cat "$STATE/images/busybox")
export GAZELLE_TEST_PAUSE_IMAGE=$(cat "$STATE/images/pause")
export GAZELLE_TEST_KUBECONFIG=$KUBECONFIG_PATH
export GAZELLE_TEST_POSTGRES_URL=postgresql://gazelle:$(state_secret postgres-password)@127.0.0.1:$PG_PORT/gazelle
ENV
)
mv "$ENV_FILE.new" "$ENV_FILE"
say "test environment up in $(since "$T0") s; env file: $ENV_FILE"
