#!/bin/bash
# Install the Debian packages the test environment (and the browser/benchmark tiers) need, in one
# apt-get call, skipping what is already installed. Root only; Debian/Ubuntu only.
. "$(dirname "$0")/lib.sh"

PACKAGES=(bubblewrap docker.io docker-registry debootstrap apache2-utils etcd-server golang-go rsync jq dpkg-dev
          patch socat busybox-static postgresql curl bc openssl python3 chromium wrk)
# the build server's front (gazelle/server/front.py): nginx in front of gunicorn on the server's port
PACKAGES+=(nginx-light)
# the token registry's token server (token_server.py) signs with Debian's python3-cryptography
PACKAGES+=(python3-cryptography)

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'; }

missing=()
for p in "${PACKAGES[@]}"; do installed "$p" || missing+=("$p"); done
if [ ${#missing[@]} -eq 0 ]; then
  say "packages: all present"
  exit 0
fi
[ "$(id -u)" = 0 ] || die "installing ${missing[*]} needs root (apt-get)"
command -v apt-get >/dev/null || die "apt-get not found: the test environment needs Debian or Ubuntu"
t=$(date +%s.%N)
say "apt-get install ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
# policy-rc.d 101: the packages' own init scripts must not start system-wide daemons (dockerd,
# etcd, postgresql) on the default ports; ours run privately under the state dir.
policy=/usr/sbin/policy-rc.d
own_policy=0
if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod +x "$policy"; own_policy=1; fi
trap 'if [ $own_policy = 1 ]; then rm -f "$policy"; fi' EXIT
apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
say "packages installed in $(since "$t") s"
