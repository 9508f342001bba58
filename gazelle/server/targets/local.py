"""``LocalTarget``: every model version as a runtime process on this host.

Each version runs ``<python> -m gazelle.cli runtime <bundle>`` (gunicorn, ``workers`` processes) on a
free loopback port, with the interpreter ``VenvBuilder`` chose (``release.artifact``, a ``LocalEnv``). Its output goes to ``{data_dir}/logs/<name>-v<version>.log``; its
pid and port to ``{data_dir}/run/<name>-v<version>.json``.

Lifetime, by choice:

- Runtime processes run in their own session (own process group), so a signal meant for the server
  (Ctrl-C in its terminal, a SIGKILL) does not reach them. If the server dies, they keep serving;
  the next server's ``restore`` adopts those still alive and answering, and starts the others again.
- A server that exits normally calls ``shutdown()``, which stops every version it runs: nothing
  is left behind by ``gazelle server`` ended with Ctrl-C.
- Processes started here are reaped by a waiting thread each, so none becomes a zombie. Adopted
  processes are not our children; the system reaps them.

Supervision (``_supervise.Watchdog``, one thread started by the first ``deploy`` or ``restore`` and
stopped by ``shutdown``): a version whose runtime exited without being asked to (a crash, the OOM
killer, a stray ``kill``) is started again with the same command and environment on the SAME port,
since the store and the gateway's routes hold its URL, after killing its leftover workers. Restarts
back off (1 s, 2 s ... 30 s) while the restarted runtime never answers; a port someone else took is
retried with the same backoff. Exits and restarts are JSON lines in the version's log, exit status or
signal included. ``stop``, ``delete``, ``shutdown`` and ``deploy`` take a version out of supervision
under the lock the watchdog restarts under, and ``deploy`` hands it over only once it answers.

Limits: ``release.replicas`` is not used (one process group per version; ``workers`` sets its
gunicorn workers). An adopted runtime's exit status is unknown (it is not our child). A runtime that
hangs without exiting is not restarted. State lives in one server process: run one build server per
data directory; only the process that deploys and restores (the job runner) supervises.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gazelle.errors import TargetError
from gazelle.server.artifacts import LocalEnv
from gazelle.server.targets import Log, Release, Running
from gazelle.server.targets._runtime import (READY_PATH, exit_cause, free_port, last_error, port_in_use, ready,
                                             url_host)
from gazelle.server.targets._supervise import Watchdog

_TAIL = 40
_PORT_ATTEMPTS = 3
_PORT_RELEASE = 3.0   # seconds a dead runtime's killed workers get to let go of its port
# The runtime runs the model's code: it gets a small environment, never the server's secrets.
_PASS_ENV = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "SSL_CERT_FILE",
             "SSL_CERT_DIR", "GAZELLE_MAX_BODY_BYTES")
_PASS_PREFIXES = ("LC_", "GAZELLE_RUNTIME_", "OMP_", "MKL_", "OPENBLAS_")


@dataclass(frozen=True)
class _Launch:
    """How a runtime was started, to start it again the same way."""

    cmd: list[str]
    env: dict[str, str]


@dataclass
class _Process:
    name: str
    version: int
    pid: int
    port: int
    url: str
    python: str
    bundle: str
    popen: subprocess.Popen[bytes] | None    # None when adopted from an earlier server
    log: Path
    offset: int = 0                           # where its own output starts in ``log``
    launch: _Launch | None = None
    supervised: bool = False                  # the watchdog may start it again; only under the lock

    def alive(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        return _pid_alive(self.pid)

    def ready(self) -> bool:
        return ready(self.url, timeout=1.0)

    def exit_cause(self) -> str:
        lines = _read_from(self.log, self.offset)
        if port_in_use(lines):
            return f"port {self.port} is taken by another process"
        status = self.popen.poll() if self.popen is not None else None
        if status is None:
            error = last_error(lines).get("error")
            return "the runtime exited (adopted from an earlier server: status unknown)" + (
                f": {error}" if error else "")
        return exit_cause(status, lines)

    def running(self) -> Running:
        return Running(self.name, self.version, self.url)

    def record(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "pid": self.pid, "port": self.port,
                "url": self.url, "python": self.python, "bundle": self.bundle}


class LocalTarget:
    """Runs releases as local processes (see the module docstring). The constructor does no I/O."""

    def __init__(self, data_dir: Path, host: str = "127.0.0.1", *, workers: int = 2,
                 ready_timeout: float = 120.0) -> None:
        self.data_dir = Path(data_dir)
        self.host = host
        self.workers = workers
        self.ready_timeout = ready_timeout
        self._lock = threading.Lock()
        self._procs: dict[tuple[str, int], _Process] = {}
        self._watchdog: Watchdog[_Process] = Watchdog(self._watched, self._respawn, self._note)

    # -- Target ------------------------------------------------------------------------------------

    def deploy(self, release: Release, log: Log) -> Running:
        python, bundle = _local_env(release)
        key = (release.name, release.version)
        self._watchdog.start()
        with self._lock:
            current = self._procs.get(key)
        if current is not None:
            if current.alive() and ready(current.url):
                log(f"{release.name} v{release.version} already runs at {current.url}")
                return current.running()
            current = self._claim(key)   # the watchdog may have replaced it meanwhile: stop that one
            if current is not None:
                self._stop(current, grace=2.0)
        for attempt in range(_PORT_ATTEMPTS):
            try:
                return self._start(release, python, bundle, log)
            except _PortTaken:
                log(f"port taken before the runtime could bind it; retrying ({attempt + 1})")
        raise TargetError(f"{release.name} v{release.version} found no free port after {_PORT_ATTEMPTS} tries")

    def running(self) -> list[Running]:
        with self._lock:
            procs = list(self._procs.values())
        return [p.running() for p in procs if p.alive()]

    def restore(self, releases: list[Release], log: Log) -> list[Running]:
        wanted = {(r.name, r.version) for r in releases}
        restored: list[Running] = []
        self._watchdog.start()
        for release in releases:
            try:
                adopted = self._adopt(release)
                if adopted is not None:
                    log(f"{release.name} v{release.version} still runs at {adopted.url} (pid {adopted.pid}): "
                        "adopted")
                    restored.append(adopted.running())
                    continue
                restored.append(self.deploy(release, log))
            except TargetError as err:
                # One version that cannot start must not keep the others down; the caller sees why.
                log(f"{release.name} v{release.version} could not be restarted: {err}")
        for record in self._records():
            if (record["name"], record["version"]) not in wanted:
                log(f"{record['name']} v{record['version']} is no longer wanted: stopping it")
                self.stop(record["name"], record["version"])
        return restored

    def stop(self, name: str, version: int, *, grace: float = 10.0) -> None:
        proc = self._claim((name, version))
        if proc is None:
            proc = self._from_record(name, version)
        if proc is not None:
            self._stop(proc, grace)
        self._run_file(name, version).unlink(missing_ok=True)

    def logs(self, name: str, version: int, *, tail: int = 200) -> list[str]:
        return _tail(self._log_file(name, version), tail)

    def delete(self, name: str) -> None:
        with self._lock:
            versions = {v for (n, v) in self._procs if n == name}
        versions |= {r["version"] for r in self._records() if r["name"] == name}
        for version in sorted(versions):
            self.stop(name, version)
        for path in (self.data_dir / "logs").glob(f"{name}-v*.log"):
            if path.stem.rpartition("-v")[0] == name:
                path.unlink(missing_ok=True)

    def close(self) -> None:
        """Stop supervising; the runtimes keep running (``shutdown`` stops them)."""
        self._watchdog.stop()

    def shutdown(self, grace: float = 10.0) -> None:
        """Stop the watchdog, then every version this server runs: for the server's clean exit."""
        self._watchdog.stop()
        with self._lock:
            procs = list(self._procs.values())
            for proc in procs:
                proc.supervised = False
        for proc in procs:
            _signal(proc.pid, signal.SIGTERM)   # all at once, so the graces overlap
        for proc in procs:
            self.stop(proc.name, proc.version, grace=grace)

    # -- starting ------------------------------------------------------------------------------------

    def _start(self, release: Release, python: str, bundle: Path, log: Log) -> Running:
        if not bundle.is_file():
            raise TargetError(f"the bundle of {release.name} v{release.version} is missing: {bundle}")
        port = free_port(self.host)
        url = f"http://{url_host(self.host)}:{port}"
        launch = self._launch(release, python, bundle, port)
        log(f"starting {release.name} v{release.version} on {url} ({self.workers} workers)")
        proc = self._spawn(release.name, release.version, port, url, python, str(bundle), launch)
        with self._lock:
            self._procs[(proc.name, proc.version)] = proc
        self._write_record(proc)
        try:
            self._wait_ready(proc)
        except BaseException:
            self._stop(proc, grace=2.0)
            self._run_file(proc.name, proc.version).unlink(missing_ok=True)
            raise
        with self._lock:
            proc.supervised = self._procs.get((proc.name, proc.version)) is proc
        log(f"{release.name} v{release.version} is ready at {url}")
        return proc.running()

    def _launch(self, release: Release, python: str, bundle: Path, port: int) -> _Launch:
        cmd = [python, "-m", "gazelle.cli", "runtime", str(bundle), "--host", self.host, "--port", str(port),
               "--workers", str(self.workers)]
        return _Launch(cmd, self._env(release, python))

    def _spawn(self, name: str, version: int, port: int, url: str, python: str, bundle: str,
               launch: _Launch) -> _Process:
        log_path = self._log_file(name, version)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._run_dir().mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as out:
            offset = out.tell()
            try:
                popen = subprocess.Popen(launch.cmd, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=launch.env, cwd=self._run_dir(),
                                         start_new_session=True)
            except OSError as err:
                raise TargetError(f"could not start the runtime of {name} v{version} "
                                  f"with {python}: {err.strerror or err}") from None
        threading.Thread(target=popen.wait, name=f"reap-{name}-v{version}", daemon=True).start()
        return _Process(name, version, popen.pid, port, url, python, bundle, popen, log_path, offset, launch)

    def _wait_ready(self, proc: _Process) -> None:
        assert proc.popen is not None
        deadline = time.monotonic() + self.ready_timeout
        delay = 0.05
        while True:
            status = proc.popen.poll()
            if status is not None:
                lines = _read_from(proc.log, proc.offset)
                if port_in_use(lines):
                    raise _PortTaken()
                raise TargetError(exit_cause(status, lines), detail="\n".join(lines[-_TAIL:]))
            if ready(proc.url):
                return
            if time.monotonic() > deadline:
                lines = _read_from(proc.log, proc.offset)
                raise TargetError(f"{proc.name} v{proc.version} did not answer {READY_PATH} within "
                                  f"{self.ready_timeout:g} s", detail="\n".join(lines[-_TAIL:]))
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)

    def _env(self, release: Release, python: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k in _PASS_ENV or k.startswith(_PASS_PREFIXES)}
        env.update(release.env)
        env["GAZELLE_MODEL_VERSION"] = str(release.version)
        env["PYTHONUNBUFFERED"] = "1"
        if python == sys.executable:
            # The server's own interpreter: make sure it finds the same gazelle from any directory.
            import gazelle

            env["PYTHONPATH"] = str(Path(gazelle.__file__).resolve().parent.parent)
        return env

    # -- supervising (the watchdog's side; see _supervise.py) -------------------------------------------

    def _watched(self) -> list[_Process]:
        with self._lock:
            return [p for p in self._procs.values() if p.supervised]

    def _respawn(self, old: _Process) -> _Process | None:
        """Start ``old`` again on its port, or ``None`` if it is no longer ours to restart."""
        key = (old.name, old.version)
        with self._lock:
            if self._procs.get(key) is not old or not old.supervised or old.launch is None:
                return None
        _signal_group(old.pid, signal.SIGKILL)   # workers that outlived their master still hold the port
        deadline = time.monotonic() + _PORT_RELEASE
        while not _port_free(self.host, old.port):
            if time.monotonic() > deadline:
                raise TargetError(f"port {old.port} is taken by another process")
            time.sleep(0.1)
        with self._lock:
            # Spawned under the lock: a stop() that comes after this finds, and stops, the new process.
            if self._procs.get(key) is not old or not old.supervised:
                return None
            fresh = self._spawn(old.name, old.version, old.port, old.url, old.python, old.bundle, old.launch)
            fresh.supervised = True
            self._procs[key] = fresh
            self._write_record(fresh)
        return fresh

    def _note(self, proc: _Process, event: str, message: str) -> None:
        with self._lock:
            if self._procs.get((proc.name, proc.version)) is proc and proc.supervised:
                _append_event(proc.log, event, message)

    def _claim(self, key: tuple[str, int]) -> _Process | None:
        """The version's process, taken out of supervision: whoever claims it stops or replaces it."""
        with self._lock:
            proc = self._procs.get(key)
            if proc is not None:
                proc.supervised = False
            return proc

    # -- stopping ------------------------------------------------------------------------------------

    def _stop(self, proc: _Process, grace: float) -> None:
        """SIGTERM the gunicorn master (it lets workers finish in-flight requests), SIGKILL after grace."""
        if proc.alive():
            _signal(proc.pid, signal.SIGTERM)
            if not _wait_exit(proc, grace):
                _signal_group(proc.pid, signal.SIGKILL)
                _wait_exit(proc, 5.0)
        _signal_group(proc.pid, signal.SIGKILL)   # a worker that outlived its master
        with self._lock:
            if self._procs.get((proc.name, proc.version)) is proc:
                del self._procs[(proc.name, proc.version)]

    # -- records ------------------------------------------------------------------------------------

    def _adopt(self, release: Release) -> _Process | None:
        name, version = release.name, release.version
        with self._lock:
            current = self._procs.get((name, version))
        if current is not None and current.alive() and ready(current.url):
            return current
        proc = self._from_record(name, version)
        if proc is None:
            return None
        if proc.alive():   # _from_record has already dropped a pid that is no longer our runtime
            if ready(proc.url):
                if not (proc.python and proc.bundle):   # a record from before they were kept
                    python, bundle = _local_env(release)
                    proc.python, proc.bundle = python, str(bundle)
                proc.launch = self._launch(release, proc.python, Path(proc.bundle), proc.port)
                proc.offset = _size(proc.log)
                with self._lock:
                    proc.supervised = True
                    self._procs[(name, version)] = proc
                return proc
            self._stop(proc, grace=2.0)   # alive but not answering: a start the old server never finished
        self._run_file(name, version).unlink(missing_ok=True)
        return None

    def _from_record(self, name: str, version: int) -> _Process | None:
        record = _read_json(self._run_file(name, version))
        if record is None:
            return None
        proc = _Process(name, version, int(record["pid"]), int(record["port"]), str(record["url"]),
                        str(record.get("python", "")), str(record.get("bundle", "")), None,
                        self._log_file(name, version))
        if not (proc.alive() and _is_runtime(proc.pid, proc.port)):
            proc.pid = 0   # its pid may be someone else's now: never signal it
        return proc

    def _records(self) -> list[dict[str, Any]]:
        found = []
        for path in sorted(self._run_dir().glob("*.json")):
            record = _read_json(path)
            if record is not None and "name" in record and "version" in record:
                found.append(record)
        return found

    def _write_record(self, proc: _Process) -> None:
        path = self._run_file(proc.name, proc.version)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(proc.record(), indent=1))
        os.replace(tmp, path)

    def _run_dir(self) -> Path:
        return self.data_dir / "run"

    def _run_file(self, name: str, version: int) -> Path:
        return self._run_dir() / f"{name}-v{version}.json"

    def _log_file(self, name: str, version: int) -> Path:
        return self.data_dir / "logs" / f"{name}-v{version}.log"


def _local_env(release: Release) -> tuple[str, Path]:
    artifact = release.artifact
    if not isinstance(artifact, LocalEnv):
        raise TargetError(f"the local target runs environments on this host, not {artifact}",
                          hint="use the docker or kubernetes target for images")
    return artifact.python, artifact.bundle


class _PortTaken(Exception):
    """Another process bound the free port between our check and the runtime's bind."""


def _port_free(host: str, port: int) -> bool:
    """Whether the runtime could bind ``port`` now (gunicorn sets SO_REUSEADDR too: TIME_WAIT is no owner)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:   # a zombie answers kill(0) but serves nothing
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _is_runtime(pid: int, port: int) -> bool:
    """Whether ``pid`` is still a gazelle runtime on ``port`` (pids get reused)."""
    if pid <= 0:
        return False
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return not Path("/proc/self").exists() and _pid_alive(pid)   # no /proc here: trust the pid
    except OSError:
        return False
    decoded = [a.decode(errors="replace") for a in args]
    if decoded and decoded[0].startswith("gunicorn: master"):
        return True   # setproctitle rewrote the command line; the ready check below still applies
    return "gazelle.cli" in decoded and "runtime" in decoded and str(port) in decoded


def _wait_exit(proc: _Process, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while proc.alive():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _signal(pid: int, sig: signal.Signals) -> None:
    if pid > 0:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _signal_group(pid: int, sig: signal.Signals) -> None:
    if pid > 0:
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _append_event(path: Path, event: str, message: str) -> None:
    """One line in the runtime's own JSON log format, so ``logs`` shows it in place."""
    now = time.time()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"
    line = json.dumps({"ts": stamp, "level": "warning", "event": event, "message": message}, separators=(",", ":"))
    try:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
    except OSError:
        pass   # a full disk must not stop the restart this line reports


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _read_from(path: Path, offset: int) -> list[str]:
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            data = handle.read()
    except OSError:
        return []
    return data.decode(errors="replace").splitlines()


def _tail(path: Path, count: int) -> list[str]:
    """The last ``count`` lines of ``path`` without reading all of a long log."""
    if count <= 0:
        return []
    try:
        with open(path, "rb") as handle:
            end = handle.seek(0, os.SEEK_END)
            block, data = 64 * 1024, b""
            pos = end
            while pos > 0 and data.count(b"\n") <= count:
                step = min(block, pos)
                pos -= step
                handle.seek(pos)
                data = handle.read(step) + data
    except OSError:
        return []
    return data.decode(errors="replace").splitlines()[-count:]
