"""The front: nginx on the server's port, configured by the server, so predictions skip Python.

Without a front, every request to ``/m/{name}/...`` is read by a gunicorn worker, checked, and sent
on by the Python gateway (``gateway``): about a millisecond and a thread per request. With one,
``gazelle server`` starts nginx on ``host:port`` and binds gunicorn to a private unix socket behind
it; nginx then sends each live model's requests straight to its runtime over pooled keep-alive
connections, and everything else (the API, pages, event streams, uploads) to gunicorn, unbuffered.
``GAZELLE_FRONT``: ``auto`` (the default) uses nginx when the target is local or docker and an
``nginx`` executable is on ``PATH`` (Debian: ``nginx-light``); ``nginx`` requires it; ``off`` never.

What nginx does for ``/m/{name}/...`` of a live version (``/m/{name}/v/N/...``, the slash redirect
and the sign-in stay with the Python gateway):

- private model: the caller's ``Authorization`` is checked by a subrequest to gunicorn
  (``/_gazelle/front/authorize``, the same check as the gateway's), whose yes is cached for
  ``AUTH_CACHE_SECONDS`` per header value, so a revoked token is refused within that; the runtime gets
  the server's gateway token instead of the caller's, so a model never sees its callers' tokens (the
  cache's files, under the front's private directory, hold the header values they answer for). No
  or a refused token (a browser with the sign-in cookie, a wrong token) goes to the Python gateway,
  which answers exactly as without a front (the JSON 401, the sign-in form, the cookie).
- a runtime that refuses the connection (a version that has just stopped) sends the request, whose
  body nginx holds, to the Python gateway, which resolves the route again and retries.
- the same headers the gateway adds (``X-Forwarded-*``, ``X-Request-ID``), cookies dropped,
  ``Location`` put under the prefix, a JSON 504 after ``upstream.READ_TIMEOUT``.
- ``GAZELLE_HEADER_TIMEOUT``/``GAZELLE_BODY_TIMEOUT`` and ``GAZELLE_MAX_CLIENT_CONNECTIONS`` are
  nginx's ``client_header_timeout``, ``client_body_timeout`` and ``limit_conn`` (an event loop: slow
  clients hold no thread anywhere); nginx's own errors are JSON like the server's.

Keeping the config current: ``Front.sync(routes)`` renders the config for ``RouteTable.live()``, and when it differs from the file, writes it, sends nginx SIGHUP and waits until
nginx's control socket answers the new config's generation. The route table calls it whenever it
invalidates a model (the pipeline's switch, a model made public or deleted), in that same process,
so a deploy finishes only once nginx sends to the new version; each worker also re-checks every
``RESYNC_SECONDS`` (a runtime restarted elsewhere). A file lock orders the processes that sync.

Runtime sockets are reached through hard links in the front's own directory, made only after
``upstream.verified_socket`` checked the runtime's path: the runtime may write its socket directory,
and nginx would otherwise follow a link a model put there to any socket on the host.

Limits: predictions sent by nginx are not counted in the server's ``/metrics`` (the runtime's own
``/metrics`` counts them); the front runs on one machine only (kubernetes replicas use an Ingress).
"""
from __future__ import annotations

import ctypes
import hashlib
import http.client
import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

from flask import Blueprint, Response, request

from gazelle.errors import ConfigError, GazelleError, TargetError
from gazelle.server import upstream
from gazelle.server.gateway import Route
from gazelle.server.targets._runfiles import private_root

if TYPE_CHECKING:
    from gazelle.server.auth import Auth
    from gazelle.server.settings import Settings

log = logging.getLogger("gazelle.server.front")

AUTH_CACHE_SECONDS = 1
RESYNC_SECONDS = 1.0
RELOAD_TIMEOUT = 10.0
AUTHORIZE_PATH = "/_gazelle/front/authorize"
# Idle connections nginx keeps open to each runtime; below the runtime's own keep-alive (5 s).
KEEPALIVE = "keepalive 64; keepalive_timeout 4s; keepalive_requests 100000;"
_PR_SET_PDEATHSIG = 1


def resolve(front: str, target: str) -> str:
    """``nginx`` or ``off`` for ``front`` (one of ``FRONTS``, as Settings checked it) with ``target``;
    ConfigError when nginx is asked for and there is none."""
    if front == "off":
        return "off"
    found = _find_nginx()
    if front == "auto":
        return "nginx" if found and target in ("local", "docker") else "off"
    if not found:
        raise ConfigError("GAZELLE_FRONT=nginx, but there is no nginx executable on PATH "
                          "(Debian: apt-get install nginx-light); or set GAZELLE_FRONT=off")
    return "nginx"


def front_listen(settings: "Settings") -> Listen:
    return Listen(settings.host, settings.port, settings.header_timeout, settings.body_timeout,
                  settings.max_client_connections)


def front_blueprint(auth: "Auth") -> Blueprint:
    """``AUTHORIZE_PATH`` on gunicorn: nginx's check of a private model's caller (200, else 401/403)."""
    bp = Blueprint("front", __name__)

    @bp.get(AUTHORIZE_PATH)
    def authorize() -> Response:
        auth.check(request.headers.get("Authorization"), "predict", "a private model")
        return Response(status=200)

    return bp


def _find_nginx() -> str | None:
    """nginx on PATH, else Debian's /usr/sbin/nginx (not on a non-root user's PATH), else None."""
    return shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)


def executable() -> str:
    return _find_nginx() or "nginx"


@dataclass(frozen=True)
class Listen:
    host: str
    port: int
    header_timeout: float
    body_timeout: float
    per_client: int


class Front:
    """One server's nginx: its directory, config and process. The constructor does no I/O."""

    def __init__(self, listen: Listen, data_dir: Path, gateway_token: str | None = None) -> None:
        self.listen = listen
        key = hashlib.sha256(f"{Path(data_dir).resolve()}\0{listen.port}".encode()).hexdigest()[:12]
        self.dir = Path(tempfile.gettempdir()) / f"gazelle-{os.getuid()}" / f"front-{key}"
        self.gateway_token = gateway_token
        self._proc: subprocess.Popen[bytes] | None = None
        self._started_by = 0   # the pid that started nginx: only it stops it (gunicorn's forks do not)

    # Paths: gunicorn listens on ``server_socket``; nginx answers its generation on ``control_socket``.
    @property
    def server_socket(self) -> Path:
        return self.dir / "server.sock"

    @property
    def control_socket(self) -> Path:
        return self.dir / "control.sock"

    @property
    def config(self) -> Path:
        return self.dir / "nginx.conf"

    # -- the nginx process (the server's master process) ------------------------------------------

    def start(self) -> None:
        """A fresh directory, a config with no model routes yet, and nginx started on it; ready when
        this returns (the workers' first sync adds the routes)."""
        private_root()   # {tmp}/gazelle-<uid>, made (or checked to be) this user's alone
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(mode=0o700)
        for sub in ("tmp", "auth", "sockets"):
            (self.dir / sub).mkdir(mode=0o700)
        text, generation = self.render([])
        _write(self.config, text)
        argv = [executable(), "-p", str(self.dir), "-c", str(self.config), "-e", "stderr", "-g", "daemon off;"]
        self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        self._started_by = os.getpid()
        deadline = time.monotonic() + RELOAD_TIMEOUT
        while self._generation() != generation:
            if self._proc.poll() is not None:
                raise ConfigError(f"nginx exited with status {self._proc.returncode} on start (its error "
                                  f"is above); is {self.listen.host}:{self.listen.port} free? "
                                  "GAZELLE_FRONT=off serves without it")
            if time.monotonic() > deadline:
                self.stop()
                raise ConfigError(f"nginx did not start within {RELOAD_TIMEOUT:.0f} s")
            time.sleep(0.02)
        log.info("front: nginx on %s:%d (pid %d), the server behind it on %s",
                 self.listen.host, self.listen.port, self._proc.pid, self.server_socket)

    def stop(self, grace: float = 5.0) -> None:
        """Stop nginx: it finishes what is in flight, for up to ``grace`` seconds."""
        if self._started_by != os.getpid():
            return
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGQUIT)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    # -- keeping the config current (any process of the server) -----------------------------------

    def sync(self, routes: Iterable[Route]) -> bool:
        """Make nginx send to exactly ``routes``; True if the config changed. Never raises."""
        try:
            import fcntl

            with open(self.dir / "sync.lock", "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                text, generation = self.render(self._links(routes))
                if self.config.exists() and self.config.read_text() == text:
                    return False
                _write(self.config, text)
                master = int((self.dir / "nginx.pid").read_text())
                old_workers = _children(master)
                os.kill(master, signal.SIGHUP)
                deadline = time.monotonic() + RELOAD_TIMEOUT
                while self._generation() != generation:
                    if time.monotonic() > deadline:
                        log.error("front: nginx did not load the new routes within %.0f s (see its errors "
                                  "above); requests go to the previous ones", RELOAD_TIMEOUT)
                        return True
                    time.sleep(0.005)
                # New workers answer; the old ones may still take a connection or two until they read
                # the master's message. Done once none of them holds the listening socket any more.
                listening = _listening_inodes(self.listen.port)
                while any(_holds(pid, listening) for pid in old_workers) and time.monotonic() < deadline:
                    time.sleep(0.002)
                return True
        except (OSError, ValueError) as err:
            log.error("front: could not update nginx's routes: %s", err)
            return False

    def keep_synced(self, routes: Callable[[], list[Route]]) -> threading.Thread:
        """A daemon thread that syncs every ``RESYNC_SECONDS`` for as long as the process lives."""
        def loop() -> None:
            while True:
                time.sleep(RESYNC_SECONDS)
                try:
                    self.sync(routes())
                except Exception:   # a store that is briefly unreachable: try again next round
                    log.exception("front: reading the routes failed")
        thread = threading.Thread(target=loop, name="gazelle-front-sync", daemon=True)
        thread.start()
        return thread

    def _links(self, routes: Iterable[Route]) -> list[tuple[Route, str]]:
        """Each route with the address nginx uses: TCP as it is, a unix socket by a checked hard link."""
        linked: list[tuple[Route, str]] = []
        keep: set[str] = set()
        for route in routes:
            path = upstream.socket_path(route.url)
            if path is None:
                linked.append((route, route.url.removeprefix("http://").rstrip("/")))
                continue
            try:
                upstream.verified_socket(path)
                info = os.stat(path)
            except (TargetError, OSError) as err:
                log.warning("front: model %s goes through the gateway: %s", route.name,
                            err.message if isinstance(err, GazelleError) else err)
                continue
            link = self.dir / "sockets" / f"{info.st_dev:x}-{info.st_ino:x}.sock"
            if not link.exists():
                tmp = link.with_suffix(".new")
                tmp.unlink(missing_ok=True)
                os.link(path, tmp)
                os.replace(tmp, link)
            keep.add(link.name)
            linked.append((route, f"unix:{link}"))
        for stale in (self.dir / "sockets").glob("*.sock"):
            if stale.name not in keep:
                stale.unlink(missing_ok=True)
        return linked

    def _generation(self) -> str | None:
        conn = upstream.UnixConnection(str(self.control_socket), 1.0)
        try:
            conn.request("GET", "/generation")
            answer = conn.getresponse()
            return answer.read().decode() if answer.status == 200 else None
        except (OSError, http.client.HTTPException):
            return None
        finally:
            conn.close()

    # -- the config ---------------------------------------------------------------------------------

    def render(self, routes: list[tuple[Route, str]]) -> tuple[str, str]:
        """nginx.conf for ``routes`` (each with its nginx address) and its generation (a hash)."""
        listen = self.listen
        host = f"[{listen.host}]" if ":" in listen.host else listen.host
        upstreams, locations = [], []
        for n, (route, address) in enumerate(sorted(routes, key=lambda r: r[0].name)):
            upstreams.append(f"upstream gz_m{n} {{ server {address}; {KEEPALIVE} }}  # {route.name} v{route.version}")
            locations.append(self._model_location(route, f"gz_m{n}"))
        user = f"user {pwd.getpwuid(os.getuid()).pw_name};" if os.geteuid() == 0 else ""
        limit = (f"limit_conn gz_clients {listen.per_client};" if listen.per_client else "")
        body = "\n".join([
            "# Written by the Gazelle server (gazelle/server/front.py) on every change of a live route.",
            "worker_processes 1;",
            user,
            f"pid {self.dir}/nginx.pid;",
            "error_log stderr warn;",
            "events { worker_connections 8192; }",
            "http {",
            "  access_log off; server_tokens off; default_type application/json;",
            f"  client_body_temp_path {self.dir}/tmp/body; proxy_temp_path {self.dir}/tmp/proxy;",
            f"  fastcgi_temp_path {self.dir}/tmp/f; uwsgi_temp_path {self.dir}/tmp/u; scgi_temp_path {self.dir}/tmp/s;",
            "  client_max_body_size 0; client_body_buffer_size 1m; large_client_header_buffers 8 64k;",
            f"  client_header_timeout {listen.header_timeout:g}s; client_body_timeout {listen.body_timeout:g}s;",
            "  keepalive_timeout 75s; keepalive_requests 100000; reset_timedout_connection on;",
            "  limit_conn_zone $binary_remote_addr zone=gz_clients:4m; limit_conn_status 503;",
            "  proxy_http_version 1.1; recursive_error_pages on;",
            f"  proxy_cache_path {self.dir}/auth levels=1 keys_zone=gz_auth:4m max_size=16m inactive=10s "
            "use_temp_path=off;",
            "  map $http_x_request_id $gz_request_id { \"~^[A-Za-z0-9._:-]{1,128}$\" $http_x_request_id; "
            "default $request_id; }",
            "  map $http_authorization $gz_anonymous { \"\" 1; default 0; }",
            f"  upstream gz_server {{ server unix:{self.server_socket}; keepalive 16; keepalive_timeout 4s; }}",
            *("  " + u for u in upstreams),
            "  server {",
            f"    listen unix:{self.control_socket};",
            "    location = /generation { return 200 \"@GENERATION@\"; }",
            "  }",
            "  server {",
            f"    listen {host}:{listen.port} backlog=4096;",
            f"    {limit}",
            *_ERROR_PAGES,
            "    location / {",
            *_to_server(),
            "      error_page 502 = @starting; error_page 503 = @busy;",
            "    }",
            f"    location = {AUTHORIZE_PATH} {{",
            "      internal;",
            f"      proxy_pass http://gz_server{AUTHORIZE_PATH};",
            "      proxy_pass_request_body off; proxy_set_header Content-Length \"\"; proxy_set_header Cookie \"\";",
            "      proxy_set_header Connection \"\"; proxy_set_header Host $http_host;",
            "      proxy_cache gz_auth; proxy_cache_key $http_authorization; proxy_cache_lock on;",
            f"      proxy_cache_valid 200 {AUTH_CACHE_SECONDS}s; proxy_cache_bypass $gz_anonymous; "
            "proxy_no_cache $gz_anonymous;",
            "      proxy_ignore_headers Cache-Control Expires Set-Cookie Vary X-Accel-Expires;",
            "    }",
            "    location @gazelle {",
            *_to_server(),
            "      error_page 502 = @starting; error_page 503 = @busy;",
            "    }",
            *locations,
            "  }",
            "}",
            "",
        ])
        generation = hashlib.sha256(body.encode()).hexdigest()[:16]
        return body.replace("@GENERATION@", generation), generation

    def _model_location(self, route: Route, group: str) -> str:
        prefix = f"/m/{route.name}"
        if route.public:
            auth = ["      proxy_set_header Authorization \"\";"]
        else:
            token = self.gateway_token or ""
            auth = [f"      auth_request {AUTHORIZE_PATH};",
                    "      error_page 401 403 500 = @gazelle;",  # the gateway answers as it would alone
                    f"      proxy_set_header Authorization \"Bearer {token}\";"]
        return "\n".join([
            f"    location {prefix}/ {{",
            *auth,
            f"      proxy_pass http://{group}/;",
            "      proxy_set_header Connection \"\"; proxy_set_header Host $http_host; proxy_set_header Cookie \"\";",
            "      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; proxy_set_header X-Forwarded-Proto $scheme;",
            "      proxy_set_header X-Forwarded-Host $http_host;",
            f"      proxy_set_header X-Forwarded-Prefix {prefix}; proxy_set_header X-Request-ID $gz_request_id;",
            f"      proxy_read_timeout {upstream.READ_TIMEOUT:g}s; proxy_send_timeout {upstream.READ_TIMEOUT:g}s;",
            "      proxy_connect_timeout 5s; proxy_next_upstream off; proxy_buffering on; proxy_max_temp_file_size 0;",
            f"      proxy_redirect ~^({prefix}/.*)$ $1; proxy_redirect ~^/$ {prefix}/; proxy_redirect ~^(/[^/].*)$ {prefix}$1;",
            "      error_page 502 = @gazelle; error_page 503 = @busy; error_page 504 = @upstream_timeout;",
            "    }",
            f"    location {prefix}/v/ {{",
            *_to_server(),
            "    }",
            f"    location {prefix}/_gazelle/ {{",
            *_to_server(),
            "    }",
        ])


def _to_server() -> list[str]:
    """The directives that send a request on to gunicorn, streamed both ways."""
    return [
        "      proxy_pass http://gz_server;",
        "      proxy_set_header Connection \"\"; proxy_set_header Host $http_host;",
        "      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; proxy_set_header X-Forwarded-Proto $scheme;",
        "      proxy_buffering off; proxy_request_buffering off; proxy_read_timeout 3600s; proxy_send_timeout 3600s;",
    ]


def _json_error(name: str, status: int, kind: str, message: str, extra: str = "") -> str:
    body = '{"error": {"type": "%s", "message": "%s"}}' % (kind, message)
    return f"    location {name} {{ default_type application/json; {extra}return {status} '{body}'; }}"


_ERROR_PAGES = [
    "    error_page 400 = @bad_request; error_page 408 = @request_timeout; error_page 414 494 = @too_large;",
    "    error_page 503 = @busy; error_page 404 = @not_found;",
    _json_error("@not_found", 404, "not_found", "not found"),
    _json_error("@bad_request", 400, "bad_request", "the request is not valid HTTP"),
    _json_error("@request_timeout", 408, "request_timeout", "the request did not arrive in time"),
    _json_error("@too_large", 431, "headers_too_large", "the request line or headers are too large"),
    _json_error("@busy", 503, "too_many_connections", "too many open connections from this address",
                "add_header Retry-After 1 always; "),
    _json_error("@starting", 503, "unavailable", "the server is starting or stopping; try again in a moment",
                "add_header Retry-After 1 always; "),
    _json_error("@upstream_timeout", 504, "upstream_timeout", "the model did not answer in time"),
]


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (nginx's workers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _listening_inodes(port: int) -> set[str]:
    """The inodes of the TCP sockets listening on ``port`` (state 0A in /proc/net/tcp, tcp6)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes


def _holds(pid: int, inodes: set[str]) -> bool:
    """Whether process ``pid`` (still) has one of the sockets ``inodes`` open."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False   # gone
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in inodes:
            return True
    return False


def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.chmod(tmp, 0o600)   # it holds the gateway token
    os.replace(tmp, path)


def _die_with_parent() -> None:
    """In nginx's child: exit when the server's master dies, even killed (Linux; a no-op elsewhere)."""
    os.setpgrp()   # Ctrl-C in the server's terminal reaches the server, which stops nginx itself
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def probe_port_free(host: str, port: int) -> None:
    """ConfigError if ``host:port`` cannot be bound (nginx would fail later, less clearly)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as err:
            raise ConfigError(f"cannot listen on {host}:{port}: {err.strerror}") from None
