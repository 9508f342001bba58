"""Where ``gazelle runtime`` listens: a unix socket (``--socket`` / ``GAZELLE_RUNTIME_SOCKET``) served
exactly as TCP is, and the ``GAZELLE_RUNTIME_*`` twins alone enough to serve, as in an image."""
from __future__ import annotations

import os
import socket
import stat
import tempfile
import time
from pathlib import Path

import httpx
import pytest
from _runtime import Picky, Runtime, call, save

from gazelle.runtime.bind import available_cpus

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def picky(tmp_path_factory):
    return save(tmp_path_factory.mktemp("bundles"), Picky(), name="picky", sample=["a", "bb"])


@pytest.fixture
def socket_dir():
    # Short on purpose: a unix socket path has at most 107 bytes, and pytest's tmp_path can be long.
    with tempfile.TemporaryDirectory(prefix="gz-") as directory:
        os.chmod(directory, 0o700)
        yield Path(directory)


def _over_socket(path: Path) -> httpx.Client:
    return httpx.Client(transport=httpx.HTTPTransport(uds=str(path)), base_url="http://runtime", timeout=10)


def _wait_socket_ready(runtime: Runtime, client: httpx.Client, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if runtime.proc.poll() is not None:
            raise AssertionError(f"runtime exited {runtime.proc.returncode} before ready:\n{runtime.text()}")
        try:
            if client.get("/v2/health/ready").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"runtime not ready on its socket after {timeout}s:\n{runtime.text()}")


def _serves_picky(client: httpx.Client) -> None:
    assert client.get("/v2/health/live").status_code == 200
    assert client.get("/v2").json()["name"] == "gazelle"
    meta = client.get("/v2/models/picky")
    assert meta.status_code == 200 and meta.json()["name"] == "picky"
    answer = client.post("/v2/models/picky/infer",
                         json={"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["abc", "d"]}]})
    assert answer.status_code == 200 and answer.json()["outputs"][0]["data"] == [3, 1]
    answer = client.post("/predict", json={"instances": ["hello"]})
    assert answer.status_code == 200 and answer.json()["predictions"] == [5]
    bad = client.post("/predict", json={"instances": [3]})
    assert bad.status_code == 422 and "instances[0]" in bad.json()["error"]["message"]


def _refuses_tcp(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_socket_option_serves_v2_and_predict_over_a_0600_unix_socket_and_no_tcp(picky, tmp_path, socket_dir):
    path = socket_dir / "rt.sock"
    with Runtime(picky, tmp_path / "runtime.log", args=["--socket", str(path)]) as runtime:
        with _over_socket(path) as client:
            _wait_socket_ready(runtime, client)
            assert stat.S_ISSOCK(path.stat().st_mode) and stat.S_IMODE(path.stat().st_mode) == 0o600
            _serves_picky(client)
        assert _refuses_tcp(runtime.port), "--socket must replace the TCP listener, not add to it"
        assert runtime.events("starting")[0]["bind"] == f"unix:{path}"
        runtime.terminate()
        assert runtime.wait_exit(30) == 0
    assert not path.exists(), "the socket file outlived the runtime"


def test_socket_variable_serves_like_the_option(picky, tmp_path, socket_dir):
    path = socket_dir / "env.sock"
    with Runtime(picky, tmp_path / "runtime.log", from_env=True, module="gazelle.runtime",
                 env={"GAZELLE_RUNTIME_SOCKET": str(path)}) as runtime:
        with _over_socket(path) as client:
            _wait_socket_ready(runtime, client)
            _serves_picky(client)


def test_variables_alone_serve_the_bundle_on_their_port_with_the_cpus_as_workers(picky, tmp_path):
    # What `docker run -e GAZELLE_RUNTIME_PORT=9000 IMAGE` does: no argument at all.
    with Runtime(picky, tmp_path / "runtime.log", from_env=True, module="gazelle.runtime",
                 env={"GAZELLE_RUNTIME_WORKERS": ""}) as runtime:
        assert runtime.argv[-1] == "gazelle.runtime"
        runtime.wait_ready()
        assert call(runtime.url + "/predict", {"instances": ["four"]})[:2] == \
            (200, {"predictions": [4], "model": "picky", "version": 0})
        starting = runtime.events("starting")[0]
        assert starting["bind"] == f"127.0.0.1:{runtime.port}"
        assert starting["workers"] == available_cpus()


def test_no_bundle_anywhere_exits_2_naming_the_argument_and_the_variable(tmp_path):
    runtime = Runtime(tmp_path / "unused.tar", tmp_path / "runtime.log", module="gazelle.runtime",
                      from_env=True, env={"GAZELLE_RUNTIME_BUNDLE": ""})
    with runtime:
        assert runtime.wait_exit(60) == 2
    [event] = runtime.events("invalid_setting")
    assert "BUNDLE" in event["error"] and "GAZELLE_RUNTIME_BUNDLE" in event["error"]


def test_socket_in_a_missing_directory_exits_2_and_creates_nothing(picky, tmp_path):
    missing = tmp_path / "absent"
    runtime = Runtime(picky, tmp_path / "runtime.log", args=["--socket", str(missing / "rt.sock")])
    with runtime:
        assert runtime.wait_exit(60) == 2
    [event] = runtime.events("invalid_setting")
    assert str(missing) in event["error"] and "does not exist" in event["error"]
    assert not missing.exists()
