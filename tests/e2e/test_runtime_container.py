"""``python3 -m gazelle.runtime`` as a container's entrypoint on the real Docker engine: the
``GAZELLE_RUNTIME_*`` variables alone make it serve (``docker run -e GAZELLE_RUNTIME_PORT=... IMAGE``),
and its default worker count follows the container's CPU quota (``--cpus 1`` on a machine with more
cores gives one worker), read from the cgroup the engine made.

The container is the test environment's python base image with this checkout and the test
interpreter's site-packages mounted read-only (both builders put the same files into their images;
building one is their tests' business, not the runtime's).
"""
from __future__ import annotations

import json
import os
import sysconfig
import time
import uuid
from pathlib import Path

import httpx
import pytest

from gazelle import bundle
from tests.integration._runtime import free_port

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT = 120


class Lengths:
    """Answers the length of each text; travels by value (the container cannot import this module)."""

    def predict(self, rows: list[str]) -> list[int]:
        return [len(r) for r in rows]


def _wait_ready(container, url: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        container.reload()
        if container.status == "exited":
            raise AssertionError(f"runtime container exited:\n{container.logs().decode(errors='replace')}")
        try:
            if httpx.get(url + "/v2/health/ready", timeout=2, trust_env=False).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"not ready after {READY_TIMEOUT}s:\n{container.logs().decode(errors='replace')}")


def _events(container, name: str) -> list[dict]:
    lines = container.logs(stdout=True, stderr=True).decode(errors="replace").splitlines()
    return [e for e in (json.loads(line) for line in lines if line.startswith("{")) if e.get("event") == name]


def test_variables_alone_serve_the_bundle_with_one_worker_per_cpu_of_the_quota(docker_client, base_image, tmp_path):
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs 2 CPUs to tell a quota of 1 from the host's count")
    bundles = tmp_path / "bundle"
    bundles.mkdir()
    bundle.save(Lengths(), bundles / "lengths.tar", name="lengths", sample=["a", "bb"])
    port = free_port()
    docker_client.images.pull(base_image)
    container = docker_client.containers.run(
        base_image, entrypoint=["python3", "-m", "gazelle.runtime"], detach=True, network_mode="host",
        name=f"gazelle-runtime-test-{uuid.uuid4().hex[:8]}", nano_cpus=1_000_000_000,
        environment={"GAZELLE_RUNTIME_PORT": str(port), "GAZELLE_RUNTIME_BUNDLE": "/bundle/lengths.tar",
                     "PYTHONPATH": "/src:/deps"},
        volumes={str(REPO): {"bind": "/src", "mode": "ro"}, str(bundles): {"bind": "/bundle", "mode": "ro"},
                 sysconfig.get_paths()["purelib"]: {"bind": "/deps", "mode": "ro"}})
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_ready(container, url)
        answer = httpx.post(url + "/predict", json={"instances": ["four", "hi"]}, timeout=10, trust_env=False)
        assert answer.status_code == 200 and answer.json()["predictions"] == [4, 2]
        [starting] = _events(container, "starting")
        assert starting["bind"] == f"127.0.0.1:{port}" and starting["workers"] == 1
    finally:
        container.remove(force=True)
