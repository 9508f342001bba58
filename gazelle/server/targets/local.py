"""``LocalTarget``: every model version as a runtime process on this host.

Each version runs ``<python> -m gazelle.cli runtime <bundle> --socket <path>`` (gunicorn, ``workers``
processes) with the interpreter ``VenvBuilder`` chose (``release.artifact``, a ``LocalEnv``). Its output
goes to ``{data_dir}/logs/<name>-v<version>.log``; its pid and socket to
``{data_dir}/run/<name>-v<version>.json``.

Confinement (``_sandbox``): a model is arbitrary code, so each runtime runs under bubblewrap where it
sees its own bundle and environment and nothing of the data directory (no token file, no database,
no other model's bundle), as the unprivileged ``nobody`` when the server runs as root. It listens on
a unix socket in ``{tmp}/gazelle-<uid>/<key>/``, a directory only the server's user (and that one
runtime) can open: no other process on the machine reaches a private model without a token, and none
can take over a crashed runtime's address.

Lifetime, by choice:

- Runtime processes run in their own session (own process group), so a signal meant for the server
  (Ctrl-C in its terminal, a SIGKILL) does not reach them. If the server dies, they keep serving;
  the next server's ``restore`` adopts those still alive and answering, and starts the others again.
- A requested shutdown of the server stops every version (``shutdown``, called by wiring); ``close``
  only ends supervision.
- Processes started here are reaped by a waiting thread each, so none becomes a zombie. Adopted
  processes are not our children; the system reaps them.

Supervision (``_supervise.Watchdog``, one thread started by the first ``deploy`` or ``restore``): a
version whose runtime exited without being asked to (a crash, the OOM killer, a stray ``kill``) is
started again with the same command on the SAME socket, since the store and the gateway's routes hold
its URL, after killing its leftover workers. Restarts back off (1 s, 2 s ... 30 s) while the restarted
runtime never answers. ``stop``, ``delete``, ``shutdown`` and ``deploy`` take a version out of
supervision under the lock the watchdog restarts under.

Limits: ``release.replicas`` is not used (one process group per version; ``workers`` sets its
gunicorn workers). An adopted runtime's exit status is unknown (it is not our child). A runtime that
hangs without exiting is not restarted. Run one build server per data directory; only the process
that deploys and restores (the job runner) supervises.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from gazelle.errors import TargetError
from gazelle.server import upstream
from gazelle.server.artifacts import LocalEnv
from gazelle.server.runtime_access import ENV as TOKENS_ENV
from gazelle.server.runtime_access import TOKENS_FILE, write_tokens_file
from gazelle.server.targets import Log, Release, Running
from gazelle.server.targets import _logs, _process
from gazelle.server.targets._runfiles import RunFiles, is_runtime
from gazelle.server.targets._sandbox import Sandbox, probe, python_paths
from gazelle.server.targets._supervise import Watchdog

READY_PATH = "/v2/health/ready"
_TAIL = 40
_SOCKET = "http.sock"
_RESTORE_AT_ONCE = 4   # runtimes started together after a restart (each loads its model: CPU and memory)
# The runtime runs the model's code: it gets a small environment, never the server's secrets.
_PASS_ENV = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "SSL_CERT_FILE",
             "SSL_CERT_DIR", "GAZELLE_MAX_BODY_BYTES")
_PASS_PREFIXES = ("LC_", "GAZELLE_RUNTIME_", "OMP_", "MKL_", "OPENBLAS_")
# ``sh`` ignores SIGTERM for bubblewrap, which would otherwise die at once and kill the runtime without
# its graceful stop; the runtime (gunicorn) sets its own handler, so SIGTERM still reaches it.
_KEEP_WRAPPER = ["/bin/sh", "-c", 'trap "" TERM; exec "$@"', "gazelle-runtime"]


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
    socket: str
    python: str
    bundle: str
    popen: subprocess.Popen[bytes] | None    # None when adopted from an earlier server
    log: Path
    offset: int = 0                           # where its own output starts in ``log``
    launch: _Launch | None = None
    supervised: bool = False                  # the watchdog may start it again; only under the lock
    public: bool = False

    @property
    def url(self) -> str:
        return upstream.unix_url(self.socket)

    @property
    def address(self) -> str:
        return self.socket

    def alive(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        return _process.pid_alive(self.pid)

    def ready(self) -> bool:
        return upstream.answers(self.url, READY_PATH, timeout=1.0)

    def exit_cause(self) -> str:
        lines = _logs.read_from(self.log, self.offset)
        status = self.popen.poll() if self.popen is not None else None
        if status is None:
            error = _logs.last_error(lines).get("error")
            return "the runtime exited (adopted from an earlier server: status unknown)" + (
                f": {error}" if error else "")
        return _logs.exit_cause(status, lines)

    def running(self) -> Running:
        return Running(self.name, self.version, self.url)

    def record(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "pid": self.pid, "socket": self.socket,
                "python": self.python, "bundle": self.bundle}


class LocalTarget:
    """Runs releases as local processes (see the module docstring). The constructor does no I/O."""

    def __init__(self, data_dir: Path, *, workers: int = 2, ready_timeout: float = 120.0,
                 sandbox: Sandbox | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.workers = workers
        self.ready_timeout = ready_timeout
        self._sandbox = sandbox
        self._lock = threading.Lock()
        self._procs: dict[tuple[str, int], _Process] = {}
        self._files = RunFiles(self.data_dir)
        # What runtimes accept (hash -> scope). None until the server's TokenPublisher first calls
        # accept_tokens, before any deploy: a target used on its own starts open runtimes.
        self._tokens: dict[str, str] | None = None
        self._watchdog: Watchdog[_Process] = Watchdog(self._watched, self._respawn, self._note)

    @property
    def sandbox(self) -> Sandbox:
        """How runtimes are confined here (probed on first use: it starts a process)."""
        if self._sandbox is None:
            self._sandbox = probe()
        return self._sandbox

    # -- Target ------------------------------------------------------------------------------------

    def deploy(self, release: Release, log: Log) -> Running:
        python, bundle = _local_env(release)
        key = (release.name, release.version)
        self._watchdog.start()
        with self._lock:
            current = self._procs.get(key)
        if current is not None:
            if current.alive() and current.ready():
                log(f"{release.name} v{release.version} already runs at {current.url}")
                return current.running()
            current = self._claim(key)   # the watchdog may have replaced it meanwhile: stop that one
            if current is not None:
                self._stop(current, grace=2.0)
        return self._start(release, python, bundle, log)

    def accept_tokens(self, tokens: Mapping[str, str]) -> None:
        """Rewrite every runtime's tokens file (``runtime_access.Guarded``)."""
        with self._lock:
            self._tokens = dict(tokens)
            procs = list(self._procs.values())
        for proc in procs:
            self._write_tokens(proc.socket, proc.public)

    def running(self) -> list[Running]:
        with self._lock:
            procs = list(self._procs.values())
        return [p.running() for p in procs if p.alive()]

    def restore(self, releases: list[Release], log: Log,
                on_ready: Callable[[Running], None] | None = None) -> list[Running]:
        """Adopt or start every release, ``_RESTORE_AT_ONCE`` at a time; see ``restore_one``."""
        from concurrent.futures import ThreadPoolExecutor

        def one(release: Release) -> Running | None:
            running = self.restore_one(release, log)
            if running is not None and on_ready is not None:
                on_ready(running)
            return running

        self._watchdog.start()
        with ThreadPoolExecutor(max_workers=_RESTORE_AT_ONCE, thread_name_prefix="gazelle-restore") as pool:
            results = list(pool.map(one, releases))
        self.stop_unwanted({(r.name, r.version) for r in releases}, log)
        return [r for r in results if r is not None]

    def restore_one(self, release: Release, log: Log) -> Running | None:
        """Adopt ``release``'s runtime if it still answers, else start it; None if it cannot start."""
        self._watchdog.start()
        try:
            adopted = self._adopt(release)
            if adopted is not None:
                log(f"{release.name} v{release.version} still runs at {adopted.url} (pid {adopted.pid}): adopted")
                return adopted.running()
            return self.deploy(release, log)
        except TargetError as err:
            # One version that cannot start must not keep the others down; the caller sees why.
            log(f"{release.name} v{release.version} could not be restarted: {err}")
            return None

    def stop_unwanted(self, wanted: set[tuple[str, int]], log: Log) -> None:
        """Stop the runtimes an earlier server left behind that are not in ``wanted``."""
        for record in self._files.records():
            if (record["name"], record["version"]) not in wanted:
                log(f"{record['name']} v{record['version']} is no longer wanted: stopping it")
                self.stop(record["name"], record["version"])

    def stop(self, name: str, version: int, *, grace: float = 10.0) -> None:
        proc = self._claim((name, version))
        if proc is None:
            proc = self._from_record(name, version)
        if proc is not None:
            self._stop(proc, grace)
            upstream.forget(proc.url)
        self._files.record(name, version).unlink(missing_ok=True)

    def logs(self, name: str, version: int, *, tail: int = 200) -> list[str]:
        return _logs.tail(self._files.log(name, version), tail)

    def delete(self, name: str) -> None:
        with self._lock:
            versions = {v for (n, v) in self._procs if n == name}
        versions |= {r["version"] for r in self._files.records() if r["name"] == name}
        for version in sorted(versions):
            self.stop(name, version)
            shutil.rmtree(self._files.socket_dir(name, version), ignore_errors=True)
        for path in (self.data_dir / "logs").glob(f"{name}-v*.log"):
            if path.stem.rpartition("-v")[0] == name:
                path.unlink(missing_ok=True)

    def close(self) -> None:
        """Stop supervising; the runtimes keep running (``shutdown`` stops them)."""
        self._watchdog.stop()

    def shutdown(self, grace: float = 10.0) -> None:
        """Stop the watchdog, then every version this server runs: for a requested server exit."""
        self._watchdog.stop()
        with self._lock:
            procs = list(self._procs.values())
            for proc in procs:
                proc.supervised = False
        for proc in procs:
            _process.send_group(proc.pid, signal.SIGTERM)   # all at once, so the graces overlap
        for proc in procs:
            self.stop(proc.name, proc.version, grace=grace)

    # -- starting ------------------------------------------------------------------------------------

    def _start(self, release: Release, python: str, bundle: Path, log: Log) -> Running:
        if not bundle.is_file():
            raise TargetError(f"the bundle of {release.name} v{release.version} is missing: {bundle}")
        if self.sandbox.user is not None:
            os.chmod(bundle, 0o644)   # the runtime's user reads it; the data directory stays closed to others
        socket = self._prepare_socket(release.name, release.version)
        self._write_tokens(socket, release.public)
        launch = self._launch(release, python, bundle, socket)
        how = "confined" if self.sandbox.confined else "UNCONFINED"
        log(f"starting {release.name} v{release.version} ({self.workers} workers, {how})")
        proc = self._spawn(release.name, release.version, socket, python, str(bundle), launch)
        proc.public = release.public
        with self._lock:
            self._procs[(proc.name, proc.version)] = proc
        self._write_record(proc)
        try:
            self._wait_ready(proc)
        except BaseException:
            self._stop(proc, grace=2.0)
            self._files.record(proc.name, proc.version).unlink(missing_ok=True)
            raise
        with self._lock:
            proc.supervised = self._procs.get((proc.name, proc.version)) is proc
        log(f"{release.name} v{release.version} is ready at {proc.url}")
        return proc.running()

    def _launch(self, release: Release, python: str, bundle: Path, socket: str) -> _Launch:
        cmd = [python, "-m", "gazelle.cli", "runtime", str(bundle), "--socket", socket,
               "--workers", str(self.workers)]
        env = self._env(release, python)
        if self._tokens is not None:
            env[TOKENS_ENV] = str(Path(socket).parent / TOKENS_FILE)
        sandbox = self.sandbox
        if not sandbox.confined:
            return _Launch(cmd, env)
        import gazelle

        package = Path(gazelle.__file__).resolve().parent
        wrapped = sandbox.wrap(cmd, hide=[self.data_dir.resolve(), Path.home()],
                               read_only=[*python_paths(python, env), bundle.resolve(), package, package.parent],
                               writable=[Path(socket).parent])
        return _Launch([*_KEEP_WRAPPER, *wrapped], env)

    def _spawn(self, name: str, version: int, socket: str, python: str, bundle: str,
               launch: _Launch) -> _Process:
        log_path = self._files.log(name, version)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._files.run_dir.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as out:
            offset = out.tell()
            try:
                popen = subprocess.Popen(launch.cmd, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=launch.env, cwd=self._files.run_dir,
                                         start_new_session=True)
            except OSError as err:
                raise TargetError(f"could not start the runtime of {name} v{version} "
                                  f"with {python}: {err.strerror or err}") from None
        threading.Thread(target=popen.wait, name=f"reap-{name}-v{version}", daemon=True).start()
        return _Process(name, version, popen.pid, socket, python, bundle, popen, log_path, offset, launch)

    def _wait_ready(self, proc: _Process) -> None:
        assert proc.popen is not None
        deadline = time.monotonic() + self.ready_timeout
        delay = 0.05
        while True:
            status = proc.popen.poll()
            if status is not None:
                lines = _logs.read_from(proc.log, proc.offset)
                raise TargetError(_logs.exit_cause(status, lines), detail="\n".join(lines[-_TAIL:]))
            if proc.ready():
                return
            if time.monotonic() > deadline:
                lines = _logs.read_from(proc.log, proc.offset)
                raise TargetError(f"{proc.name} v{proc.version} did not answer {READY_PATH} within "
                                  f"{self.ready_timeout:g} s", detail="\n".join(lines[-_TAIL:]))
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)

    def _env(self, release: Release, python: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k in _PASS_ENV or k.startswith(_PASS_PREFIXES)}
        env.update(release.env)
        env["GAZELLE_MODEL_VERSION"] = str(release.version)
        env["PYTHONUNBUFFERED"] = "1"
        if self.sandbox.confined:
            # The server's home and temporary directory are hidden from a confined runtime, which may
            # also run as another user: it gets its own private /tmp for both.
            env.pop("USER", None)
            env.pop("LOGNAME", None)
            env["HOME"] = env["TMPDIR"] = "/tmp"
        if python == sys.executable:
            # The server's own interpreter: make sure it finds the same gazelle from any directory.
            import gazelle

            env["PYTHONPATH"] = str(Path(gazelle.__file__).resolve().parent.parent)
        return env

    # -- sockets -------------------------------------------------------------------------------------

    def _prepare_socket(self, name: str, version: int) -> str:
        directory = self._files.socket_dir(name, version)
        shutil.rmtree(directory, ignore_errors=True)   # whatever an earlier runtime left there
        directory.mkdir(mode=0o700)
        user = self.sandbox.user if self.sandbox.confined else None
        if user is not None:
            os.chown(directory, *user)   # the runtime binds its socket here, as its own user
        return str(directory / _SOCKET)

    def _write_tokens(self, socket: str, public: bool) -> None:
        directory = Path(socket).parent
        if not directory.is_dir():
            return   # stopped meanwhile
        with self._lock:
            if self._tokens is None:
                return
            tokens = dict(self._tokens)
        user = self.sandbox.user if self.sandbox.confined else None
        write_tokens_file(directory / TOKENS_FILE, public, tokens, owner=user)

    # -- supervising (the watchdog's side; see _supervise.py) -------------------------------------------

    def _watched(self) -> list[_Process]:
        with self._lock:
            return [p for p in self._procs.values() if p.supervised]

    def _respawn(self, old: _Process) -> _Process | None:
        """Start ``old`` again on its socket, or ``None`` if it is no longer ours to restart."""
        key = (old.name, old.version)
        with self._lock:
            if self._procs.get(key) is not old or not old.supervised or old.launch is None:
                return None
        _process.send_group(old.pid, signal.SIGKILL)   # workers that outlived their master
        with self._lock:
            # Spawned under the lock: a stop() that comes after this finds, and stops, the new process.
            if self._procs.get(key) is not old or not old.supervised:
                return None
            fresh = self._spawn(old.name, old.version, old.socket, old.python, old.bundle, old.launch)
            fresh.supervised = True
            fresh.public = old.public
            self._procs[key] = fresh
            self._write_record(fresh)
        return fresh

    def _note(self, proc: _Process, event: str, message: str) -> None:
        with self._lock:
            if self._procs.get((proc.name, proc.version)) is proc and proc.supervised:
                _logs.append_event(proc.log, event, message)

    def _claim(self, key: tuple[str, int]) -> _Process | None:
        """The version's process, taken out of supervision: whoever claims it stops or replaces it."""
        with self._lock:
            proc = self._procs.get(key)
            if proc is not None:
                proc.supervised = False
            return proc

    # -- stopping ------------------------------------------------------------------------------------

    def _stop(self, proc: _Process, grace: float) -> None:
        """SIGTERM the runtime's group (gunicorn lets workers finish in-flight requests), SIGKILL after grace."""
        if proc.alive():
            _process.send_group(proc.pid, signal.SIGTERM)
            if not _wait_exit(proc, grace):
                _process.send_group(proc.pid, signal.SIGKILL)
                _wait_exit(proc, 5.0)
        _process.send_group(proc.pid, signal.SIGKILL)   # a worker that outlived its master
        with self._lock:
            if self._procs.get((proc.name, proc.version)) is proc:
                del self._procs[(proc.name, proc.version)]

    # -- records ------------------------------------------------------------------------------------

    def _adopt(self, release: Release) -> _Process | None:
        name, version = release.name, release.version
        with self._lock:
            current = self._procs.get((name, version))
        if current is not None and current.alive() and current.ready():
            return current
        proc = self._from_record(name, version)
        if proc is None:
            return None
        if proc.alive():   # _from_record has already dropped a pid that is no longer our runtime
            if proc.ready():
                python, bundle = _local_env(release)
                proc.python, proc.bundle = python, str(bundle)
                proc.launch = self._launch(release, python, bundle, proc.socket)
                proc.offset = _logs.size(proc.log)
                proc.public = release.public
                self._write_tokens(proc.socket, proc.public)
                with self._lock:
                    proc.supervised = True
                    self._procs[(name, version)] = proc
                return proc
            self._stop(proc, grace=2.0)   # alive but not answering: a start the old server never finished
        self._files.record(name, version).unlink(missing_ok=True)
        return None

    def _from_record(self, name: str, version: int) -> _Process | None:
        record = _process.read_json(self._files.record(name, version))
        if record is None or not isinstance(record.get("socket"), str):
            return None   # none, or written by a server that listened on TCP ports: not ours to adopt
        proc = _Process(name, version, int(record["pid"]), record["socket"], str(record.get("python", "")),
                        str(record.get("bundle", "")), None, self._files.log(name, version))
        if not (proc.alive() and is_runtime(proc.pid, proc.socket)):
            proc.pid = 0   # its pid may be someone else's now: never signal it
        return proc

    def _write_record(self, proc: _Process) -> None:
        _process.write_json(self._files.record(proc.name, proc.version), proc.record())


def _local_env(release: Release) -> tuple[str, Path]:
    artifact = release.artifact
    if not isinstance(artifact, LocalEnv):
        raise TargetError(f"the local target runs environments on this host, not {artifact}",
                          hint="use the docker or kubernetes target for images")
    return artifact.python, artifact.bundle


def _wait_exit(proc: _Process, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while proc.alive():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
