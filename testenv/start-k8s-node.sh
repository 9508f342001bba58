#!/bin/bash
# Turn the running kube-apiserver into a one-node cluster that runs pods: kube-controller-manager,
# kube-scheduler, and a kubelet (1.20, built-in dockershim) driving the private Docker engine.
# No CNI, no kube-proxy, no DNS: pods use hostNetwork and reach each other on 127.0.0.1; Services
# are stored (and get EndpointSlices) but their cluster IPs do not route.
. "$(dirname "$0")/lib.sh"

A=$STATE/kube-apiserver
KC=$KUBECONFIG_PATH
[ -f "$KC" ] || die "no kubeconfig at $KC: start the kube-apiserver first"
t=$(date +%s.%N)

if pid=$(service_pid kube-controller-manager); then say "kube-controller-manager: running (pid $pid)"; else
  claim_port kube-controller-manager 10257
  spawn kube-controller-manager "$K8S_BIN/kube-controller-manager" \
    --kubeconfig="$KC" --authentication-kubeconfig="$KC" --authorization-kubeconfig="$KC" \
    --service-account-private-key-file="$A/sa.key" --root-ca-file="$A/certs/apiserver.crt" \
    --leader-elect=false --port=0 --bind-address=127.0.0.1 --secure-port=10257 \
    --cert-dir="$STATE/kube-controller-manager" \
    --controllers='*,-nodeipam,-cloud-node-lifecycle,-service,-route' --use-service-account-credentials=false \
    --logtostderr=true --v=1
fi

if pid=$(service_pid kube-scheduler); then say "kube-scheduler: running (pid $pid)"; else
  claim_port kube-scheduler 10259
  spawn kube-scheduler "$K8S_BIN/kube-scheduler" \
    --kubeconfig="$KC" --authentication-kubeconfig="$KC" --authorization-kubeconfig="$KC" \
    --leader-elect=false --port=0 --bind-address=127.0.0.1 --secure-port=10259 \
    --cert-dir="$STATE/kube-scheduler" \
    --logtostderr=true --v=1
fi

if pid=$(service_pid kubelet); then say "kubelet: running (pid $pid)"; else
  claim_port kubelet 10250; claim_port kubelet 10248
  K=$STATE/kubelet
  # a fresh root each start: volumes of pods from an earlier run are stale (their containers are gone)
  unmount_below "$K"
  rm -rf "$K"
  mkdir -p "$K/root" "$K/certs" "$K/dockershim"
  pause=$(cat "$STATE/images/pause" 2>/dev/null) || die "no pause image recorded: run testenv/build-images.sh first"
  spawn kubelet "$K8S_BIN/kubelet" --kubeconfig="$KC" --hostname-override=node1 --node-ip=127.0.0.1 \
    --container-runtime=docker --docker-endpoint="unix://$DOCKER_SOCK" \
    --container-runtime-endpoint="unix://$K/dockershim.sock" --image-service-endpoint="unix://$K/dockershim.sock" \
    --experimental-dockershim-root-directory="$K/dockershim" \
    --pod-infra-container-image="$pause" \
    --root-dir="$K/root" --cert-dir="$K/certs" --volume-plugin-dir="$K/volume-plugins" \
    --address=127.0.0.1 --port=10250 --read-only-port=0 --healthz-bind-address=127.0.0.1 --healthz-port=10248 \
    --fail-swap-on=false --cgroup-driver=cgroupfs --cgroups-per-qos=false --enforce-node-allocatable= \
    --eviction-hard= --image-gc-high-threshold=100 --image-gc-low-threshold=99 \
    --authentication-token-webhook=false --authorization-mode=AlwaysAllow --anonymous-auth=true \
    --node-status-update-frequency=2s \
    --logtostderr=true --v=1
fi

node_ready() {
  kube_get /api/v1/nodes/node1 | jq -e '.status.conditions[] | select(.type == "Ready") | .status == "True"' | grep -q true
}
wait_until 180 "node1 Ready" node_ready || die "node1 not Ready (log: $LOGS/kubelet.log)"
# pods are refused until the service-account controller has made the namespace's `default` account
wait_until 60 "default service account" kube_get /api/v1/namespaces/default/serviceaccounts/default \
  || die "no default service account (log: $LOGS/kube-controller-manager.log)"
say "node1 Ready in $(since "$t") s"
