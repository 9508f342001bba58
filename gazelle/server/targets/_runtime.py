"""What every target needs to know about a runtime it started: is it ready, and why did it exit.

The runtime (``gazelle.runtime.serve``) answers ``GET /v2/health/ready`` once it serves, and on a
failed start exits with a status that says why (3: environment mismatch, 4: the model raised while
loading) after a JSON log line naming the error. ``exit_cause`` turns that status and the last log
lines into the sentence a person needs, whether the runtime ran as a process or in a container.
"""
from __future__ import annotations

import http.client
import json
import signal
import socket
from typing import Any

READY_PATH = "/v2/health/ready"
EXIT_MISMATCH = 3
EXIT_MODEL = 4


def exit_cause(status: int, lines: list[str]) -> str:
    """The sentence a person needs, read from the runtime's last log lines."""
    entry = last_error(lines)
    error = entry.get("error") or entry.get("message")
    if status == EXIT_MISMATCH:
        differences = entry.get("differences")
        if isinstance(differences, list) and differences:
            return "environment mismatch: " + "; ".join(str(d) for d in differences)
        return f"environment mismatch: {error or 'the runtime refused this environment'}"
    if status == EXIT_MODEL:
        return f"the model raised while loading: {error or 'see the log lines'}"
    if status < 0:
        return f"the runtime was killed by {signal.Signals(-status).name}" + (f": {error}" if error else "")
    return f"the runtime exited with status {status}" + (f": {error}" if error else "")


def last_error(lines: list[str]) -> dict[str, Any]:
    """The last JSON log line that reports an error (``error``, ``differences``); else the last plain line."""
    for line in reversed(lines):
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and (entry.get("error") or entry.get("differences")):
            return entry
    plain = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("{")]
    return {"error": plain[-1]} if plain else {}


def ready(url: str, timeout: float = 2.0) -> bool:
    host, _, port = url.removeprefix("http://").rpartition(":")
    conn = http.client.HTTPConnection(host.strip("[]"), int(port), timeout=timeout)
    try:
        conn.request("GET", READY_PATH)
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def port_in_use(lines: list[str]) -> bool:
    return any("Address already in use" in line or "Connection in use" in line for line in lines)


def free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def url_host(host: str) -> str:
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host
