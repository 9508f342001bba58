"""Helpers for the runtime's integration tests: real ``gazelle runtime`` processes, bundles, HTTP.

Every runtime is started in its own session with its logs in a file (never a pipe nobody reads), and
stopped by its process group, so its gunicorn workers go with it and nothing else does.
"""
from __future__ import annotations

import http.client
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Mapping, Sequence

from tests.helpers import free_port

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"
TRAVEL = "2770 Travel expenses"


# -- models (classes defined here travel by value: the runtime process cannot import this module) --

class Picky:
    """Answers the length of each text; raises on "boom" like a model with a bug; sleeps on "slow"."""

    def predict(self, rows: list[str]) -> list[int]:
        if "boom" in rows:
            raise ValueError("cannot handle 'boom'")
        if "slow" in rows:
            time.sleep(2.0)
        return [len(r) for r in rows]


class Loading:
    """Touches ``marker`` when it starts to unpickle, then takes an hour: a runtime caught loading."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def predict(self, rows: list[str]) -> list[int]:
        return [len(r) for r in rows]

    def __setstate__(self, state: dict[str, Any]) -> None:
        open(state["marker"], "w").close()
        time.sleep(3600)


def accounts_model(n: int = 1500) -> Any:
    """The account-suggestion pipeline trained on the notebook's synthetic expense corpus."""
    if str(NOTEBOOKS) not in sys.path:
        sys.path.insert(0, str(NOTEBOOKS))
    import expenses

    return expenses.train(*expenses.make_corpus(n=n, seed=0))


# -- bundles --------------------------------------------------------------------------------------

def save(directory: Path, model: Any, *, name: str, sample: Any = None) -> Path:
    from gazelle import bundle

    return bundle.save(model, directory / f"{name}.tar", name=name, sample=sample)


def fabricate(source: Path, target: Path, **changes: Any) -> Path:
    """A copy of the bundle at ``source`` whose manifest has ``changes``; model.pkl (and so its sha256)
    is untouched, so the bundle still reads and only the environment check can object."""
    with tarfile.open(source) as tar:
        manifest = json.loads(tar.extractfile("gazelle.json").read())  # type: ignore[union-attr]
        pickled = tar.extractfile("model.pkl").read()  # type: ignore[union-attr]
    manifest.update(changes)
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in (("gazelle.json", json.dumps(manifest, sort_keys=True, indent=1).encode()),
                           ("model.pkl", pickled)):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))
    target.write_bytes(out.getvalue())
    return target


# -- processes ------------------------------------------------------------------------------------

def _env(extra: Mapping[str, str] | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GAZELLE_", "PROMETHEUS_"))}
    # The gazelle of this checkout, not whichever one the environment has installed.
    env["PYTHONPATH"] = str(REPO)
    env.update(extra or {})
    return env


class Runtime:
    """A ``gazelle runtime BUNDLE`` process on a free loopback port.

    ``from_env=True`` gives the bundle, port and workers as ``GAZELLE_RUNTIME_*`` variables instead of
    arguments, as a container image's entrypoint gets them.
    """

    def __init__(self, bundle: Path, log: Path, *, workers: int = 2, env: Mapping[str, str] | None = None,
                 module: str = "gazelle.cli", args: Sequence[str] = (), from_env: bool = False) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        prefix = [sys.executable, "-m", module] + (["runtime"] if module == "gazelle.cli" else [])
        listen = {"bundle": str(bundle), "port": str(self.port), "workers": str(workers)}
        if from_env:
            self.argv = [*prefix, *args]
            env = {**{f"GAZELLE_RUNTIME_{k.upper()}": v for k, v in listen.items()}, **(env or {})}
        else:
            self.argv = [*prefix, listen["bundle"], "--host", "127.0.0.1", "--port", listen["port"],
                         "--workers", listen["workers"], *args]
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(self.argv, cwd=log.parent, env=_env(env), stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float = 90.0) -> Runtime:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"runtime exited {self.proc.returncode} before ready:\n{self.text()}")
            try:
                if call(self.url + "/v2/health/ready", timeout=2)[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"runtime not ready after {timeout}s:\n{self.text()}")

    def wait_exit(self, timeout: float = 60.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"runtime still running after {timeout}s:\n{self.text()}") from None

    def terminate(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(10)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def lines(self) -> list[dict[str, Any]]:
        """Every log line, parsed; a line that is not JSON fails the test that reads it."""
        out = []
        for raw in self.text().splitlines():
            if raw.strip():
                try:
                    out.append(json.loads(raw))
                except ValueError:
                    raise AssertionError(f"log line is not JSON: {raw!r}") from None
        return out

    def wait_events(self, name: str, enough: Any, what: str, timeout: float = 30.0) -> list[dict[str, Any]]:
        """The ``name`` events once ``enough(events)`` holds (log lines reach the file after the answer)."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.events(name)
            if enough(found):
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; {name} events: {found[-5:]}")
            time.sleep(0.05)

    def events(self, name: str) -> list[dict[str, Any]]:
        return [line for line in self.lines() if line.get("event") == name]

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            try:
                self.terminate()
                self.proc.wait(30)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        self.kill()


# -- HTTP -----------------------------------------------------------------------------------------

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only, never a proxy


def call(url: str, body: Any = None, *, timeout: float = 30.0, headers: Mapping[str, str] | None = None,
         raw: bytes | None = None) -> tuple[int, Any, Mapping[str, str]]:
    """GET, or POST ``body`` as JSON (or ``raw`` bytes) -> (status, parsed JSON or text, headers)."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with _OPENER.open(request, timeout=timeout) as answer:
            status, content, answer_headers = answer.status, answer.read(), answer.headers
    except urllib.error.HTTPError as err:
        status, content, answer_headers = err.code, err.read(), err.headers
    try:
        return status, json.loads(content), answer_headers
    except ValueError:
        return status, content.decode(errors="replace"), answer_headers


def post_chunked(port: int, path: str, chunks: Sequence[bytes], timeout: float = 30.0) -> tuple[int, Any]:
    """POST with ``Transfer-Encoding: chunked`` (no Content-Length) -> (status, parsed JSON)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", path, body=iter(chunks), headers={"Content-Type": "application/json"},
                     encode_chunked=True)
        answer = conn.getresponse()
        return answer.status, json.loads(answer.read())
    finally:
        conn.close()
