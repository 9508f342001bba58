"""Process helpers for the benchmarks: free ports, servers started in their own session, wrk runs.

Every server is started with ``start_new_session=True`` so that stopping it (SIGTERM to its
process group, SIGKILL after a grace period) takes its gunicorn workers down with it and nothing
else. Servers write their logs to files, never to a pipe nobody reads (a full pipe would stall
the server and the benchmark would measure that).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

HERE = Path(__file__).resolve().parent
POST_LUA = HERE / "post.lua"
# Ports the shared test services use; a free port from the kernel never lands on them in
# practice, but the check is cheap.
_RESERVED = {5000, 5001, 2379, 2380, 2381, 6443, 55432, *range(10248, 10261)}


def free_port() -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _RESERVED:
            return port


@dataclass
class Server:
    """A server process we started, its base URL and its log file."""

    name: str
    argv: list[str]
    port: int
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    # Count (and stop) every descendant, not only the master and its children: for servers whose
    # workers are grandchildren or start sessions of their own (BentoML, MLServer).
    descendants: bool = False
    proc: subprocess.Popen[bytes] | None = None
    ready_seconds: float | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, ready_path: str, timeout: float = 60.0) -> "Server":
        logf = open(self.log, "ab")
        self.proc = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
            env={**os.environ, **self.env}, start_new_session=True,
        )
        logf.close()
        started = time.monotonic()
        deadline = started + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; log:\n{self.tail()}")
            try:
                with urllib.request.urlopen(self.url + ready_path, timeout=2) as r:
                    if r.status == 200:
                        self.ready_seconds = round(time.monotonic() - started, 3)
                        return self
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.name} not ready after {timeout:.0f} s; log:\n{self.tail()}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        pgid = self.proc.pid  # its own session: the group id is its pid
        strays = _started(self.pids()[1:]) if self.descendants else {}
        try:
            os.killpg(pgid, signal.SIGTERM)
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(pgid, signal.SIGKILL)
            self.proc.wait(timeout=5)
        except ProcessLookupError:
            pass
        _reap(strays)

    def pids(self) -> list[int]:
        """The master and its workers (children), for a profiler to attach to."""
        if self.proc is None:
            return []
        if self.descendants:
            return descendant_pids(self.proc.pid)
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True)
        return [self.proc.pid, *(int(p) for p in out.stdout.split())]

    def cpu_seconds(self) -> float:
        """User + system CPU time of the master and its live workers so far.

        Read around a measured run, it gives the server's CPU cost per request, which other load on a
        shared machine barely changes, unlike requests/s.
        """
        total = 0
        for pid in self.pids():
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue  # a worker that exited between listing and reading
            fields = stat.rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
        return total / os.sysconf("SC_CLK_TCK")

    def memory(self) -> dict[str, float]:
        """RSS and PSS (MiB) summed over the master and its workers. RSS counts the pages the workers
        share with the master (the preloaded model) once per process; PSS splits them among them."""
        rss = pss = 0
        for pid in self.pids():
            try:
                rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
            except OSError:
                continue
            for line in rollup.splitlines():
                key, _, value = line.partition(":")
                if key == "Rss":
                    rss += int(value.split()[0])
                elif key == "Pss":
                    pss += int(value.split()[0])
        return {"rss_mib": round(rss / 1024, 1), "pss_mib": round(pss / 1024, 1), "processes": len(self.pids())}

    def tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state, ppid, ...), None when it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def descendant_pids(root: int) -> list[int]:
    """``root`` and every live process below it, parents before children."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        fields = _stat(int(stat.parent.name))
        if fields:
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found = [root]
    for pid in found:
        found.extend(sorted(children.get(pid, [])))
    return found


def _started(pids: list[int]) -> dict[int, str]:
    """Each pid's start time, so that a pid the kernel reused later is never signalled."""
    return {pid: fields[19] for pid in pids if (fields := _stat(pid))}


def _reap(processes: dict[int, str], grace: float = 5.0) -> None:
    """SIGKILL those of ``processes`` (pid -> start time) still alive after ``grace`` seconds: workers in
    sessions of their own, which the signal to the server's group did not reach."""
    deadline = time.monotonic() + grace
    while processes and time.monotonic() < deadline:
        processes = {pid: t for pid, t in processes.items() if (f := _stat(pid)) and f[19] == t and f[0] != "Z"}
        time.sleep(0.1)
    for pid in processes:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def post_json(url: str, body: bytes, timeout: float = 30.0) -> tuple[int, Any]:
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")


def wrk_path() -> str | None:
    return shutil.which("wrk")


def run_wrk(url: str, body_file: Path, *, connections: int, seconds: float,
            auth: str | None = None) -> dict[str, Any]:
    """One wrk run (one thread, ``connections`` connections); the numbers post.lua's done() printed.
    ``auth``: an Authorization header value sent with every request."""
    wrk = wrk_path()
    if wrk is None:
        raise RuntimeError("wrk is not installed (Debian: apt-get install -y wrk)")
    argv: Sequence[str] = [wrk, "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s",
                           "--latency", "-s", str(POST_LUA), url]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60,
                         env={**os.environ, "BENCH_BODY": str(body_file), "BENCH_AUTH": auth or ""})
    for line in out.stdout.splitlines():
        if line.startswith("WRK_JSON "):
            result: dict[str, Any] = json.loads(line[len("WRK_JSON "):])
            result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
            return result
    raise RuntimeError(f"wrk printed no result (exit {out.returncode}):\n{out.stdout}\n{out.stderr}")


def gazelle_cli() -> list[str]:
    """The ``gazelle`` command of this interpreter's environment."""
    exe = Path(sys.executable).with_name("gazelle")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "gazelle.cli"]
