"""A deployed model is untrusted code: on the local target it sees its own bundle and environment and
nothing else of the server, and no one but the server reaches its runtime. Real runtime processes."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest
from _local import Lines, call, release, store
from flask import Flask

from gazelle.server.builders.venv import VenvBuilder
from gazelle.server.gateway import Route, gateway_blueprint
from gazelle.server.targets._sandbox import probe
from gazelle.server.targets.local import LocalTarget

pytestmark = pytest.mark.integration

SECRET = "s3cr3t-admin-token-value"


class Snoop:
    """Answers, for each path it was built with, what it could read there ("read:..." or the error)."""

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths

    def predict(self, rows: Any) -> list[str]:
        found = []
        for path in self.paths:
            try:
                with open(path, "rb") as handle:
                    found.append("read:" + handle.read(200).decode(errors="replace"))
            except OSError as err:
                found.append(f"{type(err).__name__}")
        return found[: len(rows)] + ["-"] * (len(rows) - len(found))


@pytest.fixture
def target(tmp_path: Path) -> Iterator[LocalTarget]:
    if not probe().confined:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the sandbox must run in CI: {probe().reason}")
        pytest.skip(f"runtimes cannot be confined here: {probe().reason}")
    local = LocalTarget(tmp_path, workers=1, ready_timeout=90)
    yield local
    local.shutdown(grace=5)


def _deploy(data_dir: Path, target: LocalTarget, model: Any, name: str, rows: int) -> tuple[Any, Path]:
    path, manifest = store(data_dir, model, name=name)
    env = VenvBuilder(data_dir).build(path, manifest, Lines())
    return target.deploy(release(name, 1, env, manifest), Lines()), path


def test_a_model_reads_neither_the_token_nor_the_database_nor_another_models_bundle(
        tmp_path: Path, target: LocalTarget) -> None:
    (tmp_path / "token").write_text(SECRET)
    (tmp_path / "token").chmod(0o600)
    (tmp_path / "gazelle.db").write_text("SQLite format 3 " + SECRET)
    _, other_bundle = _deploy(tmp_path, target, Snoop([]), "other", 1)
    paths = [str(tmp_path / "token"), str(tmp_path / "gazelle.db"), str(other_bundle), "../token",
             f"/proc/{os.getpid()}/environ", f"/proc/{os.getppid()}/environ", str(Path.home() / ".bash_history")]
    running, own_bundle = _deploy(tmp_path, target, Snoop(paths), "snoop", len(paths))

    status, answer = call(f"{running.url}/predict", {"instances": ["x"] * len(paths)})
    assert status == 200, answer
    leaked = {path: seen for path, seen in zip(paths, answer["predictions"]) if seen.startswith("read:")}
    assert leaked == {}
    # Its own bundle is all it sees of the data directory, and it still serves.
    assert Path(own_bundle).is_file()


def _as_nobody(code: str) -> subprocess.CompletedProcess[str]:
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        pytest.skip("needs root and setpriv to act as another user on this machine")
    return subprocess.run([setpriv, "--reuid", "65534", "--regid", "65534", "--clear-groups", sys.executable,
                           "-c", code], capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})


def test_another_user_can_neither_reach_a_runtime_nor_take_its_address_after_a_crash(
        tmp_path: Path, target: LocalTarget) -> None:
    running, _ = _deploy(tmp_path, target, Snoop([]), "private", 1)
    address = running.url.removeprefix("unix:")
    connect = ("import socket,sys\ns=socket.socket(socket.AF_UNIX)\n"
               f"try:\n s.connect({address!r}); print('connected')\nexcept OSError as e: print(type(e).__name__)")
    assert _as_nobody(connect).stdout.strip() == "PermissionError"

    # The runtime crashes and, for a while, nothing listens there: nobody else may bind its address.
    target.close()   # no watchdog: keep the address empty for as long as the attempt takes
    pid = int(__import__("json").loads((tmp_path / "run" / "private-v1.json").read_text())["pid"])
    os.killpg(pid, signal.SIGKILL)
    bind = ("import os,socket\ns=socket.socket(socket.AF_UNIX)\n"
            f"try:\n os.unlink({address!r})\nexcept OSError: pass\n"
            f"try:\n s.bind({address!r}); print('bound')\nexcept OSError as e: print(type(e).__name__)")
    assert _as_nobody(bind).stdout.strip() == "PermissionError"


def test_the_gateway_never_forwards_to_a_socket_swapped_for_a_link(tmp_path: Path) -> None:
    """A runtime may write its own socket directory: a link placed there must not redirect the gateway."""
    decoy = tmp_path / "decoy.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(decoy))
    listener.listen(8)
    listener.settimeout(0.5)
    accepted: list[Any] = []

    def accept() -> None:
        try:
            accepted.append(listener.accept())
        except OSError:
            pass

    thread = threading.Thread(target=accept)
    thread.start()
    link = tmp_path / "runtime" / "http.sock"
    link.parent.mkdir()
    link.symlink_to(decoy)
    app = Flask("gateway-test")
    app.register_blueprint(gateway_blueprint(lambda name, version: Route(name, 1, f"unix:{link}", True),
                                             lambda route: None))
    try:
        answer = app.test_client().post("/m/m/predict", json={"instances": ["x"]})
        assert answer.status_code == 502
        assert answer.get_json()["error"]["type"] == "upstream_unavailable"
    finally:
        thread.join(5)
        listener.close()
    assert accepted == []
