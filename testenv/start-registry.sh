#!/bin/bash
# The CNCF registry (Debian docker-registry) on loopback, filesystem storage under the state dir.
#   start-registry.sh plain   127.0.0.1:5000, no auth
#   start-registry.sh auth    127.0.0.1:5001, htpasswd basic auth; user gazelle, password random per
#                             environment (kept in the state dir, written to the env file)
. "$(dirname "$0")/lib.sh"

case ${1:-plain} in
  plain) NAME=registry; ADDR=$REGISTRY ;;
  auth) NAME=registry-auth; ADDR=$AUTH_REGISTRY ;;
  *) die "usage: $0 plain|auth" ;;
esac
if pid=$(service_pid "$NAME"); then say "$NAME: running (pid $pid)"; exit 0; fi
claim_port "$NAME" "${ADDR##*:}"
D=$STATE/$NAME
mkdir -p "$D/storage"
AUTH_BLOCK=""
if [ "$NAME" = registry-auth ]; then
  (umask 077; htpasswd -Bbn gazelle "$(state_secret registry-auth-password)" > "$D/htpasswd")
  AUTH_BLOCK="auth:
  htpasswd:
    realm: gazelle-test
    path: $D/htpasswd"
fi
(umask 077; cat > "$D/config.yml" <<YAML
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: $D/storage
  delete:
    enabled: true
http:
  addr: $ADDR
  secret: $(state_secret registry-http-secret)
  headers:
    X-Content-Type-Options: [nosniff]
$AUTH_BLOCK
YAML
)
t=$(date +%s.%N)
spawn "$NAME" docker-registry serve "$D/config.yml"
up() { local c; c=$(curl -s -o /dev/null -w '%{http_code}' "http://$ADDR/v2/"); [ "$c" = 200 ] || [ "$c" = 401 ]; }
wait_until 30 "$NAME" up || die "$NAME did not start (log: $LOGS/$NAME.log)"
say "$NAME up on $ADDR in $(since "$t") s (pid $(cat "$RUN/$NAME.pid"))"
