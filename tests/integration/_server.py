"""Helpers for the build server's integration tests: a real ``gazelle server`` (gunicorn) on a free
loopback port with a temporary data directory, deploys through its HTTP API, and cleanup of every
process a test started (the server's process group, and the runtime processes of its data directory,
found by pid)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from gazelle.errors import ConfigError
from gazelle.server import front
from tests.conftest import require
from tests.helpers import Boom, free_port  # noqa: F401  (shared; imported from here by the tests)

ROOT = Path(__file__).resolve().parents[2]
TERMINAL = ("succeeded", "failed")


# -- models (plain functions and classes: pickled by value, since tests are not installed) -------------

def lengths(rows: list[str]) -> list[int]:
    return [len(r) for r in rows]


def doubled_lengths(rows: list[str]) -> list[int]:
    return [2 * len(r) for r in rows]


def process_id(rows: list[str]) -> list[int]:
    """Answers differ between the notebook and the runtime: the sanity check must catch it."""
    import os as _os

    return [_os.getpid() for _ in rows]


SAMPLE = ["a", "bb", "ccc"]


def bundle(model: Any, name: str, sample: Any = SAMPLE) -> bytes:
    from gazelle.bundle import pack

    return pack(model, name=name, sample=sample).data


# -- the server ------------------------------------------------------------------------------------

@dataclass
class ServerProcess:
    url: str
    data_dir: Path
    log_path: Path
    popen: subprocess.Popen[bytes]
    token: str = ""
    extra_tokens: list[str] = field(default_factory=list)
    front: str = "off"   # "nginx": nginx listens on the port, gunicorn behind it

    def workers(self) -> list[psutil.Process]:
        """gunicorn's worker processes (the master's children, nginx not among them)."""
        return [p for p in psutil.Process(self.popen.pid).children() if "nginx" not in p.name()]

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token or self.token}"} if token != "" else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60, trust_env=False)

    def upload(self, name: str, data: bytes, *, public: bool = False, token: str | None = None,
               resources: dict[str, Any] | None = None) -> httpx.Response:
        params = {"public": str(public).lower()}
        if resources is not None:
            params["resources"] = json.dumps(resources)
        with self.client(token) as c:
            return c.post(f"/api/v1/models/{name}/versions", params=params,
                          content=data, headers={"Content-Type": "application/x-tar"})

    def job(self, job_id: str) -> dict[str, Any]:
        with self.client() as c:
            answer = c.get(f"/api/v1/jobs/{job_id}")
            assert answer.status_code == 200, answer.text
            return answer.json()  # type: ignore[no-any-return]

    def wait_job(self, job_id: str, timeout: float = 240.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job["status"] in TERMINAL:
                return job
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} still {job['status']}: {json.dumps(job, indent=1)}")
            time.sleep(0.1)

    def deploy(self, name: str, data: bytes, *, public: bool = False,
               resources: dict[str, Any] | None = None) -> dict[str, Any]:
        """Upload and wait: the final job JSON (plus the version number under "version")."""
        answer = self.upload(name, data, public=public, resources=resources)
        assert answer.status_code in (200, 202), answer.text
        return self.wait_job(answer.json()["job"])

    def model(self, name: str) -> dict[str, Any]:
        with self.client() as c:
            return c.get(f"/api/v1/models/{name}").json()  # type: ignore[no-any-return]

    def predict(self, path: str, rows: Any, token: str | None = None) -> httpx.Response:
        with self.client(token) as c:
            return c.post(path, json={"instances": rows})

    def events(self, job_id: str) -> str:
        with self.client() as c:
            return c.get(f"/api/v1/jobs/{job_id}/events").text

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def terminate(self, timeout: float = 60.0) -> int:
        """A clean stop (SIGTERM to the gunicorn master); SIGKILL of the group if it hangs."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return int(self.popen.returncode)

    def kill(self) -> None:
        """SIGKILL the master and its workers at once (their process group): a crash."""
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.popen.wait(30)


def start_server(data_dir: Path, *, port: int | None = None, workers: int = 1,
                 env: dict[str, str] | None = None, timeout: float = 90.0, ready: str = "/readyz") -> ServerProcess:
    """A started server, once ``ready`` answers 200 (``/healthz``: before it has restored its models)."""
    port = port or free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir.parent / f"server-{port}.log"
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "GAZELLE_DRAIN_SECONDS": "1",
                   "GAZELLE_STOP_GRACE": "5", **(env or {})}
    for key in ("GAZELLE_SERVER", "GAZELLE_TOKEN"):
        environment.pop(key, None)
    cmd = [sys.executable, "-m", "gazelle.cli", "server", "--host", "127.0.0.1", "--port", str(port),
           "--data-dir", str(data_dir), "--workers", str(workers)]
    with open(log_path, "ab") as log:
        popen = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 env=environment, cwd=str(data_dir.parent), start_new_session=True)
    server = ServerProcess(f"http://127.0.0.1:{port}", data_dir, log_path, popen)
    deadline = time.monotonic() + timeout
    with httpx.Client(trust_env=False, timeout=2) as c:
        while True:
            if popen.poll() is not None:
                raise AssertionError(f"gazelle server exited with {popen.returncode}:\n{server.log_text()[-3000:]}")
            try:
                if c.get(f"{server.url}{ready}").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                server.kill()
                raise AssertionError(f"gazelle server did not become ready:\n{server.log_text()[-3000:]}")
            time.sleep(0.1)
    server.token = (data_dir / "token").read_text().strip()
    server.front = "nginx" if "(nginx in front)" in server.log_text() else "off"
    return server


def require_nginx() -> None:
    """Skip (in CI: fail) unless ``GAZELLE_FRONT=nginx`` can work here."""
    try:
        front.resolve("nginx", "local")
    except ConfigError as err:
        require(False, err.message)


def runtime_pids(data_dir: Path) -> list[int]:
    """Runtime processes serving bundles of ``data_dir`` (their command line names the bundle path)."""
    marker = str(data_dir)
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if "runtime" in cmdline and any(marker in part for part in cmdline):
            found.append(int(proc.info["pid"]))
    return found


def kill_runtimes(data_dir: Path) -> None:
    for pid in runtime_pids(data_dir):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def wait_for(condition: Any, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)
