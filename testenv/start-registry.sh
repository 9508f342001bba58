#!/bin/bash
# The CNCF registry (Debian docker-registry) on loopback, filesystem storage under the state dir.
#   start-registry.sh plain   127.0.0.1:5000, no auth
#   start-registry.sh auth    127.0.0.1:5001, htpasswd basic auth; user gazelle, password random per
#                             environment (kept in the state dir, written to the env file)
#   start-registry.sh token   127.0.0.1:5002, bearer-token auth (`auth: token`) with the project's
#                             token server (token_server.py, service `token-server`) on 127.0.0.1:5003:
#                             user gazelle may pull, push and delete gazelle/*, user gazelle-reader
#                             only pull; passwords random per environment, RS256 signing key and
#                             certificate made once per environment
. "$(dirname "$0")/lib.sh"

case ${1:-plain} in
  plain) NAME=registry; ADDR=$REGISTRY ;;
  auth) NAME=registry-auth; ADDR=$AUTH_REGISTRY ;;
  token) NAME=registry-token; ADDR=$TOKEN_REGISTRY ;;
  *) die "usage: $0 plain|auth|token" ;;
esac
D=$STATE/$NAME
TOKEN_SERVICE=gazelle-test-registry
TOKEN_ISSUER=gazelle-testenv

# The token server the token registry sends its clients to; reuses a running one.
start_token_server() {
  local pid cfg=$D/token-server.json t
  if pid=$(service_pid token-server); then say "token-server: running (pid $pid)"; return 0; fi
  claim_port token-server "${TOKEN_SERVER##*:}"
  [ -x "$TOKEN_SERVER_PY" ] && "$TOKEN_SERVER_PY" -c 'import cryptography' 2>/dev/null \
    || die "token-server needs $TOKEN_SERVER_PY with the cryptography module (apt-get install python3-cryptography)"
  if [ ! -s "$D/token-key.pem" ] || [ ! -s "$D/token-cert.pem" ]; then
    (umask 077
     openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 -subj "/CN=$TOKEN_ISSUER token signer" \
       -keyout "$D/token-key.pem.new" -out "$D/token-cert.pem.new" 2>/dev/null) || die "openssl could not make the token signing key"
    mv "$D/token-key.pem.new" "$D/token-key.pem"; mv "$D/token-cert.pem.new" "$D/token-cert.pem"
  fi
  sha() { printf '%s' "$1" | sha256sum | cut -d' ' -f1; }
  (umask 077; cat > "$cfg" <<JSON
{
  "listen": "$TOKEN_SERVER",
  "issuer": "$TOKEN_ISSUER",
  "service": "$TOKEN_SERVICE",
  "key": "$D/token-key.pem",
  "cert": "$D/token-cert.pem",
  "expires_in": 300,
  "users": {
    "gazelle": {"password_sha256": "$(sha "$(state_secret registry-token-password)")",
                "grants": {"repository:gazelle/*": ["pull", "push", "delete"], "registry:catalog": ["*"]}},
    "gazelle-reader": {"password_sha256": "$(sha "$(state_secret registry-token-pull-password)")",
                       "grants": {"repository:gazelle/*": ["pull"]}}
  }
}
JSON
  )
  # the server runs its own copy: a checkout may change (or go) while it runs
  install -m 644 "$TESTENV_HOME/token_server.py" "$D/token_server.py"
  t=$(date +%s.%N)
  spawn token-server "$TOKEN_SERVER_PY" "$D/token_server.py" "$cfg"
  token_up() { [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$TOKEN_SERVER/token")" = 401 ]; }
  wait_until 30 token-server token_up || die "token-server did not start (log: $LOGS/token-server.log)"
  say "token-server up on $TOKEN_SERVER in $(since "$t") s (pid $(cat "$RUN/token-server.pid"))"
}

mkdir -p "$D/storage"
if [ "$NAME" = registry-token ]; then start_token_server; fi
if pid=$(service_pid "$NAME"); then say "$NAME: running (pid $pid)"; exit 0; fi
claim_port "$NAME" "${ADDR##*:}"
AUTH_BLOCK=""
case $NAME in
  registry-auth)
    (umask 077; htpasswd -Bbn gazelle "$(state_secret registry-auth-password)" > "$D/htpasswd")
    AUTH_BLOCK="auth:
  htpasswd:
    realm: gazelle-test
    path: $D/htpasswd" ;;
  registry-token)
    AUTH_BLOCK="auth:
  token:
    realm: http://$TOKEN_SERVER/token
    service: $TOKEN_SERVICE
    issuer: $TOKEN_ISSUER
    rootcertbundle: $D/token-cert.pem" ;;
esac
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
