"""Starting and stopping a ``gazelle server`` process on this machine (``make demo``, tests, benchmarks).

``LocalServer.start`` runs ``python -m gazelle.cli server`` in its own process group, with its output
in ``{data_dir}/server.log``, and returns once ``/readyz`` answers; a server that exits first raises
``GazelleError`` with the end of its log. ``stop`` sends SIGTERM and waits; the server stops the
model processes it started. Only loopback addresses: this is for one machine, not a deployment.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Mapping

import httpx

from gazelle.client.config import read_token_file
from gazelle.errors import GazelleError


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def answers(url: str, timeout: float = 2.0) -> bool:
    """True if a Gazelle server at ``url`` answers ``/healthz``."""
    try:
        return httpx.get(f"{url.rstrip('/')}/healthz", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


class LocalServer:
    """One ``gazelle server`` process started here; a context manager that stops it on exit."""

    def __init__(self, process: subprocess.Popen[bytes], url: str, data_dir: Path) -> None:
        self.process = process
        self.url = url
        self.data_dir = data_dir

    def __repr__(self) -> str:
        return f"LocalServer(url={self.url!r}, pid={self.process.pid})"

    @property
    def token(self) -> str | None:
        """The admin token the server wrote to its data dir."""
        return read_token_file(self.data_dir / "token")

    @property
    def log_path(self) -> Path:
        return self.data_dir / "server.log"

    def log_tail(self, lines: int = 40) -> list[str]:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
        except OSError:
            return []

    @classmethod
    def start(cls, data_dir: str | os.PathLike[str], *, port: int | None = None, host: str = "127.0.0.1",
              env: Mapping[str, str] | None = None, args: tuple[str, ...] = (),
              ready_timeout: float = 120.0) -> LocalServer:
        """Start a server on ``host:port`` (a free port if None) keeping its state in ``data_dir``."""
        data = Path(data_dir).expanduser()
        data.mkdir(parents=True, exist_ok=True)
        port = port or free_port(host)
        url = f"http://{host}:{port}"
        environ = {**os.environ, **(env or {})}
        environ.setdefault("PYTHONUNBUFFERED", "1")
        command = [sys.executable, "-m", "gazelle.cli", "server", "--host", host, "--port", str(port),
                   "--data-dir", str(data), *args]
        with (data / "server.log").open("ab") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=environ,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
        server = cls(process, url, data)
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                tail = "\n".join(server.log_tail())
                raise GazelleError(f"gazelle server exited with status {process.returncode} before it was ready",
                                   hint=f"see {server.log_path}", detail=tail)
            try:
                if httpx.get(f"{url}/readyz", timeout=2.0).status_code == 200:
                    return server
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        server.stop()
        raise GazelleError(f"gazelle server at {url} was not ready after {ready_timeout:.0f}s",
                           hint=f"see {server.log_path}", detail="\n".join(server.log_tail()))

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM the server and wait; SIGKILL its process group if it does not stop in ``timeout``."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.process.wait(10)
        # Model processes the server started and failed to stop would outlive it in its group.
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass
        return self.process.returncode

    def __enter__(self) -> LocalServer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
