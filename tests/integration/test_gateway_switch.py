"""Switch-over through the whole server: a client keeps predicting through the gateway while a new
version is deployed; not one request may fail, and answers move from version 1 to version 2.

The server runs as ``gazelle server`` (gunicorn; API, job runner, pipeline, gateway); the local target
runs each version as a runtime process under gunicorn. Stopping the server cleanly must stop them all."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from _local import sklearn_model
from tests.helpers import free_port

pytestmark = pytest.mark.integration

NAME = "switch"
MAX_REQUESTS = 2000
MAX_SECONDS = 60.0


@dataclass
class Server:
    url: str
    data_dir: Path
    token: str
    proc: subprocess.Popen[bytes]

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=f"{self.url}/api/v1", headers={"Authorization": f"Bearer {self.token}"},
                            timeout=30, trust_env=False)

    def deploy(self, label: str) -> int:
        from gazelle import bundle

        packed = bundle.pack(sklearn_model(label), name=NAME, sample=[[0.0], [1.0]])
        with self.api() as api:
            accepted = api.post(f"/models/{NAME}/versions", params={"public": "true"}, content=packed.data,
                                headers={"Content-Type": "application/x-tar"})
            assert accepted.status_code == 202, accepted.text
            job = accepted.json()["job"]
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                state = api.get(f"/jobs/{job}").json()
                if state["status"] in ("succeeded", "failed"):
                    assert state["status"] == "succeeded", json.dumps(state, indent=1)
                    return int(accepted.json()["version"])
                time.sleep(0.2)
        raise AssertionError(f"the deploy job {job} did not finish")

    def version_status(self, version: int) -> str:
        with self.api() as api:
            model = api.get(f"/models/{NAME}").json()
        return str(next(v["status"] for v in model["versions"] if v["version"] == version))


@pytest.fixture(params=[1.0, 0.0], ids=["old-version-drained", "old-version-stopped-at-once"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    """``drain_seconds`` 0 stops the old version the moment the new one is live: a request already
    routed to it either finishes (gunicorn's graceful stop) or is refused and retried by the gateway on
    the new live version (that retry itself is pinned down in tests/unit/test_gateway.py)."""
    port = free_port()
    data_dir = tmp_path / "data"
    log = tmp_path / "server.log"
    env = {**os.environ, "GAZELLE_DRAIN_SECONDS": str(request.param), "GAZELLE_STOP_GRACE": "5"}
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gazelle.cli", "server", "--host", "127.0.0.1", "--port", str(port),
             "--data-dir", str(data_dir)],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, f"the server exited:\n{log.read_text()[-3000:]}"
            try:
                if httpx.get(f"{url}/healthz", timeout=2, trust_env=False).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"the server never answered:\n{log.read_text()[-3000:]}"
            time.sleep(0.2)
        yield Server(url, data_dir, (data_dir / "token").read_text().strip(), proc)
    finally:
        _stop(proc)
        for pid in _runtime_pids(data_dir):   # whatever a failed clean stop left behind
            os.killpg(pid, signal.SIGKILL)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def _runtime_pids(data_dir: Path) -> list[int]:
    """Runtime processes recorded by the local target that are still running."""
    pids = []
    for record in (data_dir / "run").glob("*.json"):
        try:
            pid = int(json.loads(record.read_text())["pid"])
            if b"gazelle.cli" in Path(f"/proc/{pid}/cmdline").read_bytes():
                pids.append(pid)
        except (OSError, ValueError, KeyError):
            pass
    return pids


@dataclass
class Loop:
    """Predicts through the gateway until told to stop (bounded in count and time)."""

    url: str
    answers: list[tuple[int, str]] = field(default_factory=list)   # (version, prediction)
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        started = time.monotonic()
        with httpx.Client(timeout=30, trust_env=False) as client:
            while not self.stop.is_set() and len(self.answers) + len(self.failures) < MAX_REQUESTS \
                    and time.monotonic() - started < MAX_SECONDS:
                try:
                    got = client.post(f"{self.url}/m/{NAME}/predict", json={"instances": [[0.0]]})
                    if got.status_code == 200:
                        body = got.json()
                        self.answers.append((body["version"], body["predictions"][0]))
                    else:
                        self.failures.append(f"HTTP {got.status_code}: {got.text[:300]}")
                except httpx.HTTPError as err:
                    self.failures.append(f"{type(err).__name__}: {err}")
                time.sleep(0.02)   # a steady client, not a load test

    def wait_for(self, count: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.answers) + len(self.failures) < count and time.monotonic() < deadline:
            time.sleep(0.05)


def test_redeploy_under_traffic_fails_no_request_and_moves_answers_to_the_new_version(server: Server) -> None:
    assert server.deploy("label-1") == 1
    loop = Loop(server.url)
    thread = threading.Thread(target=loop.run, name="client-loop", daemon=True)
    thread.start()
    try:
        loop.wait_for(20)
        assert server.deploy("label-2") == 2
        # Keep the traffic going until the old version has been drained and stopped.
        deadline = time.monotonic() + 30
        while server.version_status(1) != "retired" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert server.version_status(1) == "retired"
        settled = len(loop.answers) + len(loop.failures)
        loop.wait_for(settled + 20)
    finally:
        loop.stop.set()
        thread.join(timeout=60)

    assert loop.failures == []
    assert {v for v, _ in loop.answers} == {1, 2}
    assert all(prediction == f"label-{version}" for version, prediction in loop.answers)
    assert [v for v, _ in loop.answers[-20:]] == [2] * 20
    first_two = next(i for i, (v, _) in enumerate(loop.answers) if v == 2)
    assert all(v == 2 for v, _ in loop.answers[first_two:])   # once switched, never back

    running = _runtime_pids(server.data_dir)
    assert len(running) == 1
    _stop(server.proc)   # Ctrl-C or SIGTERM: a clean exit stops the versions the server runs
    assert server.proc.returncode == 0
    deadline = time.monotonic() + 15
    while Path(f"/proc/{running[0]}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not Path(f"/proc/{running[0]}").exists()
