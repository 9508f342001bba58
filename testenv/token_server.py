"""The token server of the test environment's bearer-token registry (CNCF distribution ``auth: token``).

A client that the registry answers 401 with ``WWW-Authenticate: Bearer realm=...,service=...,scope=...``
asks this server for a token, and the registry accepts the token if its signature chains to the
certificate in its ``rootcertbundle`` and its ``access`` claim covers the request. This is the flow
Docker Hub, GHCR and ACR use; here it serves tests on loopback.

- ``GET /token?service=S&scope=repository:NAME:pull,push`` with HTTP basic auth (what docker, oras and
  most clients send), and ``POST /token`` with the OAuth2 password grant (form fields ``grant_type``,
  ``username``, ``password``, ``service``, ``scope`` space-separated).
- Each user has grants in the config: ``{"repository:gazelle/*": ["pull", "push", "delete"]}``, the
  pattern matched with ``fnmatch`` on ``type:name``. A token grants, per requested scope, the
  actions asked for AND allowed, as Docker Hub and ACR do: a user asking for more gets a token with
  less (possibly none), and the registry then refuses with 401 ``insufficient_scope``.
- Tokens are RS256 JWTs with the signing certificate in the ``x5c`` header; the key and the
  self-signed certificate are made once per environment by ``start-registry.sh token``.

Limits: no anonymous tokens (no or wrong credentials: 401), no refresh tokens (``grant_type=password``
only), plain HTTP on loopback. Passwords are kept as SHA-256 hex in the config; nothing secret is
logged (one line per request: user, scopes asked, actions granted). Standard library plus
``cryptography`` (Debian's python3-cryptography); runs under the system python3, not the project's.

Usage: python3 token_server.py CONFIG.json
"""
from __future__ import annotations

import base64
import fnmatch
import hashlib
import hmac
import json
import sys
import time
import uuid
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Issuer:
    """Checks credentials and signs tokens, from the config file's values."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.issuer: str = config["issuer"]
        self.service: str = config["service"]
        self.lifetime: int = int(config.get("expires_in", 300))
        self.users: dict[str, Any] = config["users"]
        with open(config["key"], "rb") as f:
            key = serialization.load_pem_private_key(f.read(), password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise SystemExit(f"{config['key']}: an RSA private key is needed for RS256")
        self.key = key
        with open(config["cert"], "rb") as f:
            der = x509.load_pem_x509_certificate(f.read()).public_bytes(serialization.Encoding.DER)
        self.x5c = [base64.b64encode(der).decode()]

    def authenticate(self, user: str, password: str) -> bool:
        entry = self.users.get(user)
        if entry is None:
            return False
        digest = hashlib.sha256(password.encode()).hexdigest()
        return hmac.compare_digest(digest, entry["password_sha256"])

    def grant(self, user: str, scope: str) -> dict[str, Any] | None:
        """The access entry for one ``type:name:actions`` scope, or None when it grants nothing.
        The name may hold colons (a registry host with a port), the actions never do."""
        head, sep, actions = scope.rpartition(":")
        kind, sep2, name = head.partition(":")
        if not (sep and sep2 and kind and name):
            raise ValueError(f"scope {scope!r} is not type:name:actions")
        allowed: set[str] = set()
        for pattern, acts in self.users[user].get("grants", {}).items():
            if fnmatch.fnmatchcase(f"{kind}:{name}", pattern):
                allowed.update(acts)
        asked = [a for a in actions.split(",") if a]
        given = [a for a in asked if a in allowed or "*" in allowed]
        return {"type": kind, "name": name, "actions": given} if given else None

    def token(self, user: str, scopes: list[str]) -> dict[str, Any]:
        access = [g for g in (self.grant(user, s) for s in scopes) if g is not None]
        now = int(time.time())
        claims = {"iss": self.issuer, "sub": user, "aud": self.service, "exp": now + self.lifetime,
                  "nbf": now - 10, "iat": now, "jti": uuid.uuid4().hex, "access": access}
        header = {"typ": "JWT", "alg": "RS256", "x5c": self.x5c}
        signing_input = (b64url(json.dumps(header, separators=(",", ":")).encode()) + "."
                         + b64url(json.dumps(claims, separators=(",", ":")).encode()))
        signature = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        jwt = signing_input + "." + b64url(signature)
        issued = datetime.fromtimestamp(now, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        return {"token": jwt, "access_token": jwt, "expires_in": self.lifetime, "issued_at": issued,
                "granted": access}


class Handler(BaseHTTPRequestHandler):
    issuer: Issuer
    server_version = "gazelle-testenv-token/1"

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path != "/token":
            return self.reply(404, {"errors": [{"code": "NOT_FOUND", "message": f"no {url.path} here"}]})
        query = parse_qs(url.query)
        user, password = self.basic_credentials()
        self.issue(user, password, query.get("service", [""])[0], query.get("scope", []))

    def do_POST(self) -> None:
        if urlsplit(self.path).path != "/token":
            return self.reply(404, {"errors": [{"code": "NOT_FOUND", "message": "no such path"}]})
        length = int(self.headers.get("Content-Length") or 0)
        form = parse_qs(self.rfile.read(length).decode("utf-8", "replace"))
        grant_type = form.get("grant_type", [""])[0]
        if grant_type != "password":
            return self.reply(400, {"error": "unsupported_grant_type",
                                    "error_description": f"grant_type {grant_type!r}: only password"})
        scopes = " ".join(form.get("scope", [])).split()
        self.issue(form.get("username", [""])[0], form.get("password", [""])[0],
                   form.get("service", [""])[0], scopes)

    def basic_credentials(self) -> tuple[str, str]:
        auth = self.headers.get("Authorization", "")
        if not auth.lower().startswith("basic "):
            return "", ""
        try:
            user, _, password = base64.b64decode(auth[6:].strip()).decode().partition(":")
        except ValueError:
            return "", ""
        return user, password

    def issue(self, user: str, password: str, service: str, scopes: list[str]) -> None:
        issuer = self.issuer
        if service and service != issuer.service:
            return self.reply(400, {"errors": [{"code": "INVALID_REQUEST",
                                                "message": f"unknown service {service!r}"}]})
        if not user or not issuer.authenticate(user, password):
            self.log_message("refused user=%r scopes=%s", user, scopes)
            return self.reply(401, {"errors": [{"code": "UNAUTHORIZED", "message":
                                                "authentication required" if not user
                                                else "invalid username or password"}]},
                              {"WWW-Authenticate": f'Basic realm="{issuer.service}"'})
        try:
            body = issuer.token(user, scopes)
        except ValueError as e:
            return self.reply(400, {"errors": [{"code": "INVALID_REQUEST", "message": str(e)}]})
        granted = body.pop("granted")
        self.log_message("token user=%s scopes=%s granted=%s", user, scopes,
                         [f"{g['name']}:{','.join(g['actions'])}" for g in granted])
        self.reply(200, body)

    def reply(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        sys.stderr.write("%s %s\n" % (self.log_date_time_string(), format % args))


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        raise SystemExit(__doc__.rsplit("\n\n", 1)[-1].strip())
    with open(argv[1]) as f:
        config = json.load(f)
    Handler.issuer = Issuer(config)
    host, _, port = config["listen"].rpartition(":")
    server = ThreadingHTTPServer((host, int(port)), Handler)
    server.daemon_threads = True
    sys.stderr.write(f"token server for {config['service']} on {config['listen']}\n")
    sys.stderr.flush()
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv)
