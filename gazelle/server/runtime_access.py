"""Runtimes check tokens themselves: the server hands each one the hashes it must accept.

The job runner's process runs one ``TokenPublisher`` thread. Every ``POLL_SECONDS`` it reads the hash
and scope of every token not revoked from the store (shared by every server process and replica) and,
when that set changed, gives it to the target (``Guarded.accept_tokens``), which writes each runtime's
tokens file (:mod:`gazelle.runtime.access`) atomically: the local target into the runtime's own
private directory, the docker target into a file bind-mounted into its containers, the kubernetes
target into a Secret mounted read-only into its pods. A runtime looks at its file at most once a
second, so a token created or revoked anywhere is accepted or refused by every runtime within
``REFUSED_WITHIN`` seconds (Kubernetes adds the kubelet's Secret sync delay, about a minute by default).
Tokens themselves never leave the store's hashes.

The server's own processes show runtimes one more token, ``gateway_token``: derived (HMAC) from the
admin token (``GAZELLE_ADMIN_TOKEN`` when set, else the one in the data directory), so every process
of a server computes the same one, and knowing it reveals nothing of the admin token. Only its hash is
stored, as a predict token named "gateway (server processes)", so it reaches runtimes like any other
token, and every replica's runtimes accept every replica's gateway. The gateway sends it for a
private model once it has checked the caller's token itself (so a token created a moment ago works
through the gateway at once), and the sanity check sends it too.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import os
import tempfile
import threading
from pathlib import Path
from typing import Callable, Mapping, Protocol, runtime_checkable

from gazelle.runtime.access import RECHECK_SECONDS, render

log = logging.getLogger("gazelle.server")

POLL_SECONDS = 1.0
REFUSED_WITHIN = POLL_SECONDS + RECHECK_SECONDS + 1.0   # the last second: slack for a busy machine
TOKENS_FILE = "tokens.json"
ENV = "GAZELLE_RUNTIME_TOKENS_FILE"


def gateway_token(admin_token: str) -> str:
    """The token the server's processes present to runtimes (see the module docstring)."""
    digest = hmac.new(admin_token.encode(), b"gazelle: the gateway to runtimes", hashlib.sha256).hexdigest()
    return f"gz_gw_{digest}"


@runtime_checkable
class Guarded(Protocol):
    """A target whose runtimes check tokens: it is told the accepted hashes whenever they change."""

    def accept_tokens(self, tokens: Mapping[str, str]) -> None:
        """From now on, runtimes accept exactly ``tokens`` (sha256 hex -> scope)."""
        ...


def write_tokens_file(path: Path, public: bool, tokens: Mapping[str, str], *,
                      owner: tuple[int, int] | None = None) -> None:
    """Write the tokens file atomically (readable by the runtime's user, ``owner`` when given)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tokens-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(render(public, tokens))
        os.chmod(tmp, 0o644)   # the directory it sits in is what keeps others out
        if owner is not None:
            os.chown(tmp, *owner)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class TokenPublisher:
    """Polls ``hashes()`` and hands a changed set to ``target``. The constructor does no I/O."""

    def __init__(self, hashes: Callable[[], dict[str, str]], target: object, *,
                 interval: float = POLL_SECONDS) -> None:
        self.hashes = hashes
        self.target = target
        self.interval = interval
        self._last: dict[str, str] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def publish(self) -> None:
        """Hand the current set to the target if it changed since the last call."""
        if not isinstance(self.target, Guarded):
            return
        current = self.hashes()
        if current != self._last:
            self.target.accept_tokens(current)
            self._last = current

    def start(self) -> None:
        """Publish once now, then keep polling in a daemon thread."""
        if self._thread is not None or not isinstance(self.target, Guarded):
            return
        self.publish()
        self._thread = threading.Thread(target=self._run, name="gazelle-tokens", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.publish()
            except Exception as err:   # a database hiccup: the runtimes keep the last set meanwhile
                log.warning("could not hand runtimes the current tokens: %s", err)
