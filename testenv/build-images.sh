#!/bin/bash
# The images the tests need, in the private Docker engine and pushed to the plain registry:
#   127.0.0.1:5000/gazelle/python:<M.m>  debootstrap minbase bookworm + python3, venv, pip,
#                                        ca-certificates; M.m must be the machine's python minor
#   127.0.0.1:5000/gazelle/busybox:1     busybox-static, every applet linked (httpd for smoke tests)
#   127.0.0.1:5000/gazelle/pause:1       the kubelet's pod sandbox: sleeps, exits on TERM
# The python rootfs tarball is cached ($CACHE/images); an image already in the engine and the registry
# is left alone, so a warm run costs two HEAD requests. Records names and digests in $STATE/images/.
. "$(dirname "$0")/lib.sh"

MIRROR=$(debian_mirror)
SUITE=bookworm
IMG=$CACHE/images
mkdir -p "$IMG" "$STATE/images"
docker() { "$DOCKER_CLI" "$@"; }

# Digest of REPO:TAG in the plain registry, or nothing.
registry_digest() {
  local repo=${1%:*} tag=${1##*:}
  curl -sf -I --max-time 5 \
    -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
    -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
    "http://$REGISTRY/v2/$repo/manifests/$tag" | tr -d '\r' | sed -n 's/^[Dd]ocker-[Cc]ontent-[Dd]igest: *//p' || true
}

# publish NAME REF TARBALL CHANGES...: docker import + push unless REF is already in engine and registry.
publish() {
  local name=$1 ref=$2 tar=$3 digest; shift 3
  local full=$REGISTRY/$ref
  digest=$(registry_digest "$ref")
  if [ -z "$digest" ] || ! docker image inspect "$full" >/dev/null 2>&1; then
    local changes=() c
    for c in "$@"; do changes+=(-c "$c"); done
    docker import "${changes[@]}" "$tar" "$full" >/dev/null
    docker push -q "$full" >/dev/null
    digest=$(registry_digest "$ref")
    [ -n "$digest" ] || die "pushed $full but the registry has no digest for it"
    say "image $full pushed ($digest)"
  else
    say "image $full: present ($digest)"
  fi
  echo "$full" > "$STATE/images/$name"
  echo "$digest" > "$STATE/images/$name.digest"
}

# --- busybox and pause (from the busybox-static package; seconds) ---
BB=$IMG/busybox.tar
if [ ! -s "$BB" ] || [ /bin/busybox -nt "$BB" ]; then
  tmp=$(mktemp -d)
  mkdir -p "$tmp/bin" "$tmp/tmp" "$tmp/www"
  cp /bin/busybox "$tmp/bin/busybox"
  for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -s busybox "$tmp/bin/$a"; done
  chmod 1777 "$tmp/tmp"
  tar --numeric-owner --owner=0 --group=0 --sort=name --mtime=@0 -C "$tmp" -cf "$BB.new" .
  mv "$BB.new" "$BB"; rm -rf "$tmp"
fi
publish busybox gazelle/busybox:1 "$BB" 'ENV PATH=/bin' 'CMD ["sh"]'
# As PID 1 a plain `sleep` ignores TERM, so every pod deletion would wait out the grace period.
publish pause gazelle/pause:1 "$BB" 'ENV PATH=/bin' \
  'CMD ["sh", "-c", "trap \"exit 0\" TERM INT; while :; do sleep 3600 & wait $!; done"]'

# --- python base (debootstrap; about a minute once, then cached) ---
want=$(python_minor)
PYTAR=$IMG/python-$SUITE.tar
if [ ! -s "$PYTAR" ] || [ ! -s "$PYTAR.minor" ]; then
  t=$(date +%s.%N)
  root=$STATE/rootfs
  rm -rf "$root"; mkdir -p "$root"
  say "debootstrap $SUITE + python3 (about a minute; log in $LOGS/build-images.log)"
  debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
    "$SUITE" "$root" "$MIRROR" > "$LOGS/build-images.log" 2>&1 \
    || { tail -n 40 "$LOGS/build-images.log" >&2; die "debootstrap failed"; }
  got=$(ls "$root"/usr/bin/python3.* 2>/dev/null | sed -n 's#.*/python\([0-9]*\.[0-9]*\)$#\1#p' | head -1)
  # slim: apt caches, docs, man pages (the image stays usable: apt-get update restores the lists)
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
    "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/*
  tar --numeric-owner -C "$root" -cf "$PYTAR.new" .
  rm -rf "$root"
  mv "$PYTAR.new" "$PYTAR"; echo "$got" > "$PYTAR.minor"
  say "python rootfs built in $(since "$t") s ($(du -h "$PYTAR" | cut -f1), python $got)"
fi
got=$(cat "$PYTAR.minor")
if [ "$got" != "$want" ]; then
  die "the python base image has python $got (Debian $SUITE) but this machine runs python $want: bundles load only on the same major.minor, so the tests need a machine whose python3 is $got"
fi
publish python "gazelle/python:$got" "$PYTAR" \
  'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' 'ENV LANG=C.UTF-8' 'CMD ["python3"]'
