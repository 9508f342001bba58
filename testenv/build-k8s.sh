#!/bin/bash
# Build the Kubernetes binaries the one-node cluster needs (kube-apiserver, kube-controller-manager,
# kube-scheduler, kubelet; kubectl too when the machine has none) from Debian bookworm's `kubernetes`
# source package (1.20.2, fully vendored) with Debian's Go, offline but for Debian's mirror.
# Patches (every testenv/*.patch, applied in name order):
#   kubelet-allow-loopback-nodeip.patch  the node may register InternalIP 127.0.0.1
#   reflect2-go1.18-mapiter.patch        the vendored reflect2 crashes when built with Go >= 1.18
#
# Cached in $CACHE/k8s/bin, keyed by the source version and the patch: a second run returns at once.
# Cold: about 7.5 minutes on 2 cores and ~2.7 GB of scratch, removed afterwards (only binaries stay).
# Does not touch /etc/apt: apt-get source runs against a private sources.list.
. "$(dirname "$0")/lib.sh"

MIRROR=$(debian_mirror)
SUITE=bookworm
TOP=$CACHE/k8s
WORK=$TOP/work
PATCHES=("$TESTENV_HOME"/*.patch)
WHAT=(cmd/kube-apiserver cmd/kube-controller-manager cmd/kube-scheduler cmd/kubelet)
command -v kubectl >/dev/null 2>&1 || WHAT+=(cmd/kubectl)
STAMP="kubernetes/$SUITE patches=$(cat "${PATCHES[@]}" | sha256sum | cut -c1-16) what=${WHAT[*]}"

built() {
  local w
  [ "$(cat "$K8S_BIN/.stamp" 2>/dev/null)" = "$STAMP" ] || return 1
  for w in "${WHAT[@]}"; do [ -x "$K8S_BIN/$(basename "$w")" ] || return 1; done
}

mkdir -p "$TOP"
exec 9> "$TOP/.lock"
flock 9   # one build at a time; a second caller waits, then finds the cache
if built; then say "kubernetes binaries: cached in $K8S_BIN"; exit 0; fi

t0=$(date +%s.%N)
say "building ${WHAT[*]} (cold build, several minutes; log in $LOGS/build-k8s.log)"
rm -rf "$WORK"
mkdir -p "$WORK/apt/lists/partial" "$WORK/home"
echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $MIRROR $SUITE main" > "$WORK/apt/sources.list"
APT=(-o "Dir::Etc::SourceList=$WORK/apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
     -o "Dir::State::Lists=$WORK/apt/lists" -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache=)
{
  apt-get "${APT[@]}" update
  cd "$WORK"
  apt-get "${APT[@]}" source --download-only kubernetes
  mkdir -p src
  tar -C src -xzf kubernetes_*.orig.tar.gz
  SRC=$(ls -d "$WORK"/src/kubernetes-* | head -1)
  cd "$SRC"
  for p in "${PATCHES[@]}"; do patch -p1 < "$p"; done
  # 1.20's make runs in GOPATH mode with its vendor/ tree; an inherited GOFLAGS=-mod=vendor breaks it.
  # nice: the build is long and must not starve whatever else shares the machine.
  env -u GOFLAGS HOME="$WORK/home" GOCACHE="$WORK/gocache" GOPATH="$SRC/.go" CGO_ENABLED=0 GOPROXY=off \
    nice -n 10 make WHAT="${WHAT[*]}"
  mkdir -p "$K8S_BIN.new"
  for w in "${WHAT[@]}"; do cp "_output/bin/$(basename "$w")" "$K8S_BIN.new/"; done
  echo "$STAMP" > "$K8S_BIN.new/.stamp"
} > "$LOGS/build-k8s.log" 2>&1 || { tail -n 40 "$LOGS/build-k8s.log" >&2; die "kubernetes build failed"; }
cd /
rm -rf "$K8S_BIN" && mv "$K8S_BIN.new" "$K8S_BIN"
rm -rf "$WORK"   # sources, objects and Go cache: gigabytes; only the binaries are kept
say "kubernetes binaries built in $(since "$t0") s -> $K8S_BIN"
