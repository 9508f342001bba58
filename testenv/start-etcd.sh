#!/bin/bash
# etcd (Debian etcd-server) on loopback for the kube-apiserver: client 2379, peer 2380, metrics 2381.
# A (re)start begins from an empty store: the cluster carries no pods over from an earlier run whose
# containers are gone (they would come back with stale ports and half-removed volumes).
. "$(dirname "$0")/lib.sh"

if pid=$(service_pid etcd); then say "etcd: running (pid $pid)"; exit 0; fi
for p in 2379 2380 2381; do claim_port etcd $p; done
D=$STATE/etcd
rm -rf "$D"; mkdir -p "$D"
t=$(date +%s.%N)
spawn etcd etcd --name gazelle-test --data-dir "$D/data" \
  --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
  --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
  --initial-cluster gazelle-test=http://127.0.0.1:2380 --listen-metrics-urls http://127.0.0.1:2381 \
  --unsafe-no-fsync --quota-backend-bytes 1073741824
healthy() { curl -sf --max-time 2 http://127.0.0.1:2379/health | grep -q '"health":"true"'; }
wait_until 60 etcd healthy || die "etcd did not start (log: $LOGS/etcd.log)"
say "etcd up in $(since "$t") s (pid $(cat "$RUN/etcd.pid"))"
