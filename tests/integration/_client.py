"""Helpers for the client's integration tests: a real ``gazelle server`` (gunicorn, local target) on a
free loopback port with a temporary data dir, the environment a notebook or a CLI needs to reach it,
plain-HTTP predictions, and cleanup of every process the server started."""
from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any, Iterator

import httpx
import psutil
import pytest

from tests.integration._server import runtime_pids

from gazelle.client import configure
from gazelle.client.localserver import LocalServer

ROOT = Path(__file__).resolve().parents[2]

# Short drains and grace periods keep failure tests quick; pip never leaves this machine: an
# environment the server must build from an index fails at once instead of downloading.
SERVER_ENV = {"GAZELLE_DRAIN_SECONDS": "1", "GAZELLE_STOP_GRACE": "5", "PIP_NO_INDEX": "1"}


def client_env(server: LocalServer) -> dict[str, str]:
    """The environment of a notebook kernel, a script or ``gazelle`` CLI that uses ``server``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GAZELLE_")}
    env.update(GAZELLE_SERVER=server.url, GAZELLE_TOKEN=server.token or "", PYTHONPATH=str(ROOT))
    return env


def kill_everything_of(data_dir: Path) -> None:
    """Last resort after a failed test: SIGKILL every server and runtime process of ``data_dir``."""
    marker = str(data_dir)
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if "gazelle.cli" in cmdline and any(marker in part for part in cmdline):
            try:
                os.kill(int(proc.info["pid"]), signal.SIGKILL)
            except ProcessLookupError:
                pass


def stop(server: LocalServer) -> list[int]:
    """Stop the server; kill and return the runtime processes it should have stopped but did not."""
    server.stop()
    left = runtime_pids(server.data_dir)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return left


def http_predict(url: str, token: str | None, rows: Any) -> Any:
    """``POST {url}/predict`` as an app team would: plain HTTP, bearer token, JSON."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    answer = httpx.post(f"{url}/predict", json={"instances": rows}, headers=headers, timeout=60, trust_env=False)
    assert answer.status_code == 200, answer.text
    return answer.json()["predictions"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    data_dir = tmp_path_factory.mktemp("gazelle") / "data"
    srv = LocalServer.start(data_dir, env=SERVER_ENV)
    try:
        yield srv
    finally:
        stop(srv)


@pytest.fixture
def connected(server: LocalServer) -> Iterator[LocalServer]:
    """``server``, made the default of every client call in this process."""
    configure(server.url, server.token)
    try:
        yield server
    finally:
        configure()
