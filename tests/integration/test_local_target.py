"""LocalTarget and VenvBuilder with real bundles, real runtime processes under gunicorn, real pip."""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from _local import Boom, Lines, VersionLabel, call, release, sklearn_model, store

from gazelle.errors import BuildError, TargetError
from gazelle.server.artifacts import LocalEnv
from gazelle.server.builders.venv import VenvBuilder, env_key, pip_failure, runtime_requirements
from gazelle.server.targets.local import LocalTarget

pytestmark = pytest.mark.integration

TEXT_SAMPLE = ["taxi to the airport", "hotel"]


class SlowLabel(VersionLabel):
    def predict(self, rows: Any) -> list[str]:
        time.sleep(1.5)
        return super().predict(rows)


def _gone(pid: int, within: float = 10.0) -> bool:
    """The process has exited and been reaped (no zombie left in /proc)."""
    deadline = time.monotonic() + within
    while Path(f"/proc/{pid}").exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _pid(data_dir: Path, name: str, version: int) -> int:
    import json

    return int(json.loads((data_dir / "run" / f"{name}-v{version}.json").read_text())["pid"])


@pytest.fixture
def target(tmp_path: Path) -> Iterator[LocalTarget]:
    local = LocalTarget(tmp_path, workers=1, ready_timeout=90)
    yield local
    local.shutdown(grace=5)


def _deploy_label(data_dir: Path, target: LocalTarget, name: str, version: int,
                  model: Any = None) -> Any:
    path, manifest = store(data_dir, model or sklearn_model(f"{name}-v{version}"), name=name,
                           sample=[[0.0], [1.0]])
    ref = VenvBuilder(data_dir).build(path, manifest, Lines())
    return target.deploy(release(name, version, ref, manifest), Lines())


def test_deployed_bundle_answers_predictions_in_the_servers_own_environment(
        tmp_path: Path, target: LocalTarget) -> None:
    path, manifest = store(tmp_path, sklearn_model("travel"), name="accounts", sample=[[0.0], [1.0]])
    built = Lines()
    ref = VenvBuilder(tmp_path).build(path, manifest, built)
    assert ref == LocalEnv(sys.executable, path)
    assert not (tmp_path / "envs").exists()

    running = target.deploy(release("accounts", 1, ref, manifest), Lines())
    status, answer = call(f"{running.url}/predict", {"instances": [[0.5], [3.0]]})
    assert status == 200
    assert answer["predictions"] == ["travel", "travel"] and answer["version"] == 1
    assert target.running() == [running]
    assert any(line.strip() for line in target.logs("accounts", 1))

    pid = _pid(tmp_path, "accounts", 1)
    target.stop("accounts", 1, grace=5)
    assert _gone(pid)
    assert not (tmp_path / "run" / "accounts-v1.json").exists()
    assert target.running() == []
    assert not _port_open(running.url)


def _port_open(url: str) -> bool:
    """Whether something accepts connections at the runtime's address (a unix socket)."""
    import socket

    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(1)
        return sock.connect_ex(url.removeprefix("unix:")) == 0


def test_model_that_raises_while_loading_fails_with_its_own_message(tmp_path: Path, target: LocalTarget) -> None:
    path, manifest = store(tmp_path, Boom(), name="boom")
    ref = VenvBuilder(tmp_path).build(path, manifest, Lines())
    with pytest.raises(TargetError) as failed:
        target.deploy(release("boom", 1, ref, manifest), Lines())
    assert "the model raised while loading" in str(failed.value)
    assert "RuntimeError: boom" in str(failed.value)
    assert failed.value.detail and "boom" in failed.value.detail
    assert target.running() == []
    assert not (tmp_path / "run" / "boom-v1.json").exists()
    assert any("boom" in line for line in target.logs("boom", 1))


def test_environment_mismatch_fails_with_the_differences(tmp_path: Path, target: LocalTarget) -> None:
    path, manifest = store(tmp_path, VersionLabel("x"), name="mismatch", sample=TEXT_SAMPLE,
                           requirements=["inflection==0.5.1"])
    # Run it in the server's interpreter, which lacks inflection, as if the builder had been wrong.
    with pytest.raises(TargetError) as failed:
        target.deploy(release("mismatch", 1, LocalEnv(sys.executable, path), manifest), Lines())
    assert str(failed.value).startswith("environment mismatch: ")
    assert "inflection" in str(failed.value)
    assert target.running() == []


def test_impossible_pin_fails_the_build_naming_it_and_the_previous_version_keeps_serving(
        tmp_path: Path, target: LocalTarget) -> None:
    v1 = _deploy_label(tmp_path, target, "accounts", 1)
    path, manifest = store(tmp_path, VersionLabel("v2"), name="accounts", sample=TEXT_SAMPLE,
                           requirements=["inflection==0.0.1"])
    lines = Lines()
    with pytest.raises(BuildError) as failed:
        VenvBuilder(tmp_path).build(path, manifest, lines)
    assert "inflection==0.0.1" in str(failed.value)
    assert failed.value.detail and "inflection" in failed.value.detail
    assert any("inflection" in line for line in lines.lines)   # pip's own output was streamed
    envs = tmp_path / "envs"
    assert [p.name for p in envs.iterdir() if not p.name.endswith(".lock")] == []   # no half environment

    status, answer = call(f"{v1.url}/predict", {"instances": [[0.0]]})
    assert (status, answer["predictions"], answer["version"]) == (200, ["accounts-v1"], 1)


def test_bundle_for_a_python_this_host_lacks_is_refused_by_name(tmp_path: Path) -> None:
    path, manifest = store(tmp_path, VersionLabel("x"), name="old", sample=TEXT_SAMPLE)
    manifest = {**manifest, "python": "3.4.10"}
    with pytest.raises(BuildError) as failed:
        VenvBuilder(tmp_path).build(path, manifest, Lines())
    minor = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert failed.value.message == f"bundle needs python 3.4; this server has {minor} and no python3.4 on PATH"


# -- virtualenvs: one data directory for the module, so the environment is built once ------------------


@pytest.fixture(scope="module")
def venv_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("venvs")


@pytest.fixture(scope="module")
def venv_built(venv_dir: Path) -> tuple[LocalEnv, Path, dict[str, Any], Lines]:
    """A bundle whose pins the server lacks (inflection), built once: (ref, path, manifest, build log)."""
    path, manifest = store(venv_dir, VersionLabel("from-venv"), name="inflected", sample=TEXT_SAMPLE,
                           requirements=["inflection==0.5.1"])
    lines = Lines()
    ref = VenvBuilder(venv_dir).build(path, manifest, lines)
    return ref, path, manifest, lines


def test_pins_the_server_lacks_get_a_virtualenv_that_serves_the_model(venv_dir: Path, venv_built: Any) -> None:
    ref, path, manifest, lines = venv_built
    python, bundle = ref.python, ref.bundle
    assert bundle == path
    assert Path(python).parent.parent.parent == venv_dir / "envs"
    assert "creating the environment" in lines.text()
    assert any("inflection" in line.lower() for line in lines.lines)   # pip's output streamed to the job
    target = LocalTarget(venv_dir, workers=1, ready_timeout=90)
    try:
        running = target.deploy(release("inflected", 1, ref, manifest), Lines())
        status, answer = call(f"{running.url}/predict", {"instances": ["lunch"]})
        assert (status, answer["predictions"], answer["version"]) == (200, ["from-venv"], 1)
        pid = _pid(venv_dir, "inflected", 1)   # the sandbox's process: the runtime's python runs inside it
        assert python.encode() in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    finally:
        target.shutdown(grace=5)


def test_second_build_with_the_same_pins_reuses_the_environment(venv_dir: Path, venv_built: Any) -> None:
    ref, _, _, _ = venv_built
    envs = venv_dir / "envs"
    before = sorted(p.name for p in envs.iterdir() if not p.name.startswith("."))
    env_dir = Path(ref.python).parent.parent
    stat = env_dir.stat()

    path, manifest = store(venv_dir, VersionLabel("another"), name="inflected", sample=TEXT_SAMPLE,
                           requirements=["inflection==0.5.1"])
    lines = Lines()
    again = VenvBuilder(venv_dir).build(path, manifest, lines)
    assert again.python == ref.python
    assert "reusing the environment" in lines.text()
    assert sorted(p.name for p in envs.iterdir() if not p.name.startswith(".")) == before == [env_dir.name]
    assert (env_dir.stat().st_ino, env_dir.stat().st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns)


def test_concurrent_builds_of_one_environment_build_it_once(tmp_path: Path) -> None:
    bundles = [store(tmp_path, VersionLabel(f"l{i}"), name="twin", sample=TEXT_SAMPLE,
                     requirements=["inflection==0.5.1"]) for i in range(2)]
    logs = [Lines(), Lines()]
    refs: list[LocalEnv] = []
    threads = [threading.Thread(target=lambda b=b, log=log: refs.append(VenvBuilder(tmp_path).build(*b, log)))
               for b, log in zip(bundles, logs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert len(refs) == 2 and refs[0].python == refs[1].python
    assert sum("creating the environment" in log.text() for log in logs) == 1
    assert sum("reusing the environment" in log.text() for log in logs) == 1
    assert [p.name for p in (tmp_path / "envs").iterdir() if not p.name.startswith(".")] == [
        Path(refs[0].python).parent.parent.name]


# -- lifetime ------------------------------------------------------------------------------------------


def test_restarted_server_adopts_versions_still_running(tmp_path: Path, target: LocalTarget) -> None:
    first = _deploy_label(tmp_path, target, "keep", 1)
    pid = _pid(tmp_path, "keep", 1)
    rel = release("keep", 1, LocalEnv(sys.executable, tmp_path / "unused.tar"), {})
    later = LocalTarget(tmp_path, workers=1, ready_timeout=90)   # a new server process would do this
    lines = Lines()
    try:
        assert later.restore([rel], lines) == [first]
        assert "adopted" in lines.text()
        assert _pid(tmp_path, "keep", 1) == pid
        later.stop("keep", 1, grace=5)
        assert _gone(pid)
    finally:
        later.shutdown(grace=5)


def test_restore_starts_again_a_version_whose_process_died(tmp_path: Path, target: LocalTarget) -> None:
    path, manifest = store(tmp_path, sklearn_model("again"), name="phoenix", sample=[[0.0]])
    ref = VenvBuilder(tmp_path).build(path, manifest, Lines())
    target.deploy(release("phoenix", 1, ref, manifest), Lines())
    pid = _pid(tmp_path, "phoenix", 1)
    os.killpg(pid, signal.SIGKILL)
    assert _gone(pid)

    running = target.restore([release("phoenix", 1, ref, manifest)], Lines())
    assert [r.version for r in running] == [1]
    assert _pid(tmp_path, "phoenix", 1) != pid
    status, answer = call(f"{running[0].url}/predict", {"instances": [[0.0]]})
    assert (status, answer["predictions"]) == (200, ["again"])


def test_restore_stops_recorded_versions_no_longer_wanted(tmp_path: Path, target: LocalTarget) -> None:
    _deploy_label(tmp_path, target, "stale", 1)
    pid = _pid(tmp_path, "stale", 1)
    later = LocalTarget(tmp_path, workers=1)
    try:
        assert later.restore([], Lines()) == []
        assert _gone(pid)
        assert not (tmp_path / "run" / "stale-v1.json").exists()
    finally:
        later.shutdown(grace=5)


def test_stop_lets_an_in_flight_request_finish(tmp_path: Path) -> None:
    target = LocalTarget(tmp_path, workers=2, ready_timeout=90)   # one worker answers, one tells us so
    path, manifest = store(tmp_path, SlowLabel("slow"), name="slow")
    ref = VenvBuilder(tmp_path).build(path, manifest, Lines())
    running = target.deploy(release("slow", 1, ref, manifest), Lines())
    answers: list[Any] = []
    request = threading.Thread(target=lambda: answers.append(call(f"{running.url}/predict", {"instances": ["a"]})))
    request.start()
    deadline = time.monotonic() + 30   # the request must be inside the worker before the stop is asked
    while _in_flight(running.url) < 1:
        assert time.monotonic() < deadline, "the request never reached the runtime"
        time.sleep(0.05)
    try:
        target.stop("slow", 1, grace=10)
        request.join(timeout=30)
    finally:
        target.shutdown(grace=5)
    assert answers and answers[0][0] == 200 and answers[0][1]["predictions"] == ["slow"]


def _in_flight(url: str) -> float:
    """Requests the runtime is answering now, not counting this scrape."""
    import re

    text = call(f"{url}/metrics")[1]
    match = re.search(r"^gazelle_requests_in_flight (\S+)$", text, re.M)
    return float(match.group(1)) - 1 if match else 0.0


def test_shutdown_stops_every_version_and_leaves_no_zombie(tmp_path: Path, target: LocalTarget) -> None:
    _deploy_label(tmp_path, target, "many", 1)
    _deploy_label(tmp_path, target, "many", 2)
    pids = [_pid(tmp_path, "many", v) for v in (1, 2)]
    target.shutdown(grace=5)
    assert all(_gone(pid) for pid in pids)
    assert target.running() == []


def test_delete_stops_all_versions_and_forgets_their_logs(tmp_path: Path, target: LocalTarget) -> None:
    _deploy_label(tmp_path, target, "gone", 1)
    pid = _pid(tmp_path, "gone", 1)
    target.delete("gone")
    assert _gone(pid)
    assert target.logs("gone", 1) == []
    assert not list((tmp_path / "run").glob("gone-*"))


# -- supervision ---------------------------------------------------------------------------------------


def _watchdogs() -> int:
    return sum(t.name == "gazelle-watchdog" and t.is_alive() for t in threading.enumerate())


def _predictions(url: str, within: float) -> Any:
    """What ``{url}/predict`` answers once it answers 200 again, or None after ``within`` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            status, answer = call(f"{url}/predict", {"instances": [[0.0]]}, timeout=5)
        except (OSError, httpx.TransportError):
            status = 0
        if status == 200:
            return answer["predictions"]
        time.sleep(0.25)
    return None


def test_watchdog_restarts_a_killed_runtime_on_the_same_url(tmp_path: Path, target: LocalTarget) -> None:
    running = _deploy_label(tmp_path, target, "lazarus", 1)
    pid = _pid(tmp_path, "lazarus", 1)
    os.killpg(pid, signal.SIGKILL)   # the runtime runs in its own process group: master and workers
    assert _gone(pid)

    assert _predictions(running.url, within=60) == ["lazarus-v1"]
    assert _pid(tmp_path, "lazarus", 1) != pid
    assert target.running() == [running]
    log = "\n".join(target.logs("lazarus", 1))
    assert "runtime_exited" in log and "killed by SIGKILL" in log
    assert f"was restarted at {running.url.removeprefix('unix:')}" in log


def test_watchdog_does_not_undo_a_stop_and_ends_with_shutdown(tmp_path: Path, target: LocalTarget) -> None:
    running = _deploy_label(tmp_path, target, "rest", 1)
    pid = _pid(tmp_path, "rest", 1)
    watchdogs = _watchdogs()
    assert watchdogs >= 1
    target.stop("rest", 1, grace=5)
    assert _gone(pid)

    # Several watchdog rounds (one a second, the first restart after 1 s) must pass with nothing back.
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        assert not _port_open(running.url)
        assert not (tmp_path / "run" / "rest-v1.json").exists()
        assert target.running() == []
        time.sleep(0.2)
    assert not any("runtime_restarted" in line or "runtime_exited" in line for line in target.logs("rest", 1))

    target.shutdown(grace=5)
    assert _watchdogs() == watchdogs - 1


# -- reading pip and the server's own environment (no processes) -----------------------------------------


def test_pip_failures_are_read_as_one_sentence_naming_the_requirement() -> None:
    assert pip_failure(["ERROR: Could not find a version that satisfies the requirement torch==9.9 (from versions: 2.1)",
                        "ERROR: No matching distribution found for torch==9.9"], "3.11") == (
        "pip could not install torch==9.9: no such release for python 3.11 on this platform")
    conflict = pip_failure(["ERROR: Cannot install flask==3.1.3 and werkzeug==2.0.0 because these package "
                            "versions have conflicting dependencies."], "3.11")
    assert conflict is not None and "flask==3.1.3 and werkzeug==2.0.0" in conflict
    assert pip_failure(["  error: subprocess-exited-with-error", "ERROR: Failed building wheel for lxml"],
                       "3.11") == "pip could not build lxml from source"
    assert pip_failure(["something else went wrong"], "3.11") is None


def test_runtime_requirements_are_the_servers_versions_minus_the_bundles_own_pins() -> None:
    from importlib.metadata import version

    pins = runtime_requirements(exact=True, exclude=["Werkzeug==3.0.0"])
    assert f"Flask=={version('flask')}" in pins and f"gunicorn=={version('gunicorn')}" in pins
    assert not any(p.lower().startswith("werkzeug") for p in pins)
    assert all("==" in p for p in pins)
    loose = runtime_requirements(exact=False)
    assert any(p.startswith("flask>=") for p in loose) and not any("==" in p for p in loose)
    assert env_key("3.11", ["b==1", "a==2"]) == env_key("3.11", ["a==2", "b==1"]) != env_key("3.12", ["a==2", "b==1"])
