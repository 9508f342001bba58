#!/bin/bash
# kube-apiserver 1.20 (built by build-k8s.sh) against the local etcd, on 127.0.0.1:6443 only.
# TLS with the self-signed certificate it generates (CA included in certs/apiserver.crt), a static
# admin bearer token (random per environment), RBAC. Writes the kubeconfig the tests use.
. "$(dirname "$0")/lib.sh"

D=$STATE/kube-apiserver
write_kubeconfig() {
  (umask 077; cat > "$KUBECONFIG_PATH" <<KC
apiVersion: v1
kind: Config
clusters:
- name: gazelle-test
  cluster:
    server: https://127.0.0.1:6443
    certificate-authority-data: $(base64 -w0 "$D/certs/apiserver.crt")
users:
- name: admin
  user:
    token: $(kube_token)
contexts:
- name: gazelle-test
  context: {cluster: gazelle-test, user: admin, namespace: default}
current-context: gazelle-test
KC
)
}
if pid=$(service_pid kube-apiserver); then say "kube-apiserver: running (pid $pid)"; write_kubeconfig; exit 0; fi
claim_port kube-apiserver 6443
[ -x "$K8S_BIN/kube-apiserver" ] || die "no $K8S_BIN/kube-apiserver: run testenv/build-k8s.sh"
mkdir -p "$D/certs"
[ -f "$D/sa.key" ] || (umask 077; openssl genrsa -out "$D/sa.key" 2048 2>/dev/null)
(umask 077; echo "$(kube_token),admin,admin,system:masters" > "$D/tokens.csv")
t=$(date +%s.%N)
spawn kube-apiserver "$K8S_BIN/kube-apiserver" \
  --etcd-servers=http://127.0.0.1:2379 \
  --bind-address=127.0.0.1 --secure-port=6443 --advertise-address=127.0.0.1 --cert-dir="$D/certs" \
  --token-auth-file="$D/tokens.csv" --authorization-mode=RBAC \
  --service-account-key-file="$D/sa.key" --service-account-signing-key-file="$D/sa.key" \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --service-cluster-ip-range=10.96.0.0/16 \
  --enable-admission-plugins=NamespaceLifecycle,ServiceAccount,DefaultStorageClass,ResourceQuota \
  --disable-admission-plugins=StorageObjectInUseProtection \
  --kubelet-preferred-address-types=InternalIP \
  --allow-privileged=true --profiling=false --logtostderr=true --v=1
ready() { [ "$(curl -s --max-time 2 -k https://127.0.0.1:6443/readyz)" = ok ]; }
wait_until 120 kube-apiserver ready || die "kube-apiserver not ready (log: $LOGS/kube-apiserver.log)"
write_kubeconfig
say "kube-apiserver ready in $(since "$t") s (pid $(cat "$RUN/kube-apiserver.pid"))"
