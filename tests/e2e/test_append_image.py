"""AppendBuilder end to end: build from a real base in the test registry, push, and run the image in the
test environment's Docker engine (host network: each container gets its own GAZELLE_RUNTIME_PORT)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import pytest

from gazelle.bundle import read_manifest, save
from gazelle.errors import BuildError
from gazelle.server import oci
from gazelle.server.builders.append import BUNDLE, USER, AppendBuilder
from gazelle.server.registry import open_registry
from gazelle.server.registry.push import OCIRegistry
from tests.conftest import AuthRegistry
from tests.faultproxy import FaultProxy

REPO = Path(__file__).parents[2]
READY_TIMEOUT = 60.0


def scaled_counts(factor: int) -> Callable[[list[str]], list[int]]:
    """A "model": words per text times ``factor`` (a retrained model is another factor)."""
    def model(texts: list[str]) -> list[int]:
        return [len(text.split()) * factor for text in texts]
    return model


def _bundle(directory: Path, factor: int, name: str = "wordcount") -> Path:
    return save(scaled_counts(factor), directory / f"{name}-{factor}.tar", name=name, sample=["a b", "c"])


@pytest.fixture(scope="module")
def registry() -> Iterator[OCIRegistry]:
    reg = open_registry(None, None, None)
    yield reg
    reg.close()


@pytest.fixture(scope="module")
def builder(registry: OCIRegistry, base_image: str, tmp_path_factory: pytest.TempPathFactory) -> AppendBuilder:
    """One dependency cache for the module: pip runs once, every later build is warm."""
    return AppendBuilder(registry, {f"{sys.version_info.major}.{sys.version_info.minor}": base_image},
                         tmp_path_factory.mktemp("cache"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(url: str, container: Any) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        container.reload()
        if container.status == "exited":
            break
        time.sleep(0.1)   # polling the readiness endpoint, bounded by the deadline
    pytest.fail("the image never became ready:\n" + container.logs().decode(errors="replace")[-3000:])


def test_image_runs_as_non_root_and_serves_the_bundle_on_the_port_it_is_given(
        tmp_path: Path, builder: AppendBuilder, registry: OCIRegistry, registry_url: str, docker_client: Any) -> None:
    path = _bundle(tmp_path, 3)
    image = builder.build(path, read_manifest(path), lambda line: None, version=2)
    ref = registry.push(image, f"{registry_url}/gazelle-test/wordcount", ["v2-1"], lambda line: None)
    pulled = docker_client.images.pull(str(ref))
    assert image.digest in [d.rsplit("@", 1)[1] for d in pulled.attrs["RepoDigests"]]
    labels = pulled.attrs["Config"]["Labels"]
    assert labels["gazelle.model"] == "wordcount" and labels["gazelle.version"] == "2"
    assert labels["gazelle.bundle-digest"] == oci.sha256(path.read_bytes())
    assert labels["org.opencontainers.image.base.name"] == builder.base_for(f"{sys.version_info[0]}.{sys.version_info[1]}")
    port = _free_port()
    container = docker_client.containers.run(str(ref), detach=True, network_mode="host",
                                             environment={"GAZELLE_RUNTIME_PORT": str(port),
                                                          "GAZELLE_RUNTIME_WORKERS": "1"})
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_ready(url, container)
        answer = httpx.post(f"{url}/predict", json={"instances": ["one two", "three"]}, timeout=10).json()
        uid = container.exec_run(["python3", "-c", "import os; print(os.getuid(), os.getgid())"]).output.decode()
    finally:
        container.remove(force=True)
        docker_client.images.remove(pulled.id, force=True)
    assert answer == {"predictions": [6, 3], "model": "wordcount", "version": 2}
    assert uid.split() == USER.split(":") and uid.split()[0] != "0"


def test_a_retrained_model_pushes_only_the_model_layer_the_config_and_the_manifest(
        tmp_path: Path, builder: AppendBuilder, registry: OCIRegistry, registry_url: str,
        registry_proxy: FaultProxy) -> None:
    repo = f"gazelle-test/retrain-{uuid.uuid4().hex[:6]}"
    first_path, second_path = _bundle(tmp_path, 1), _bundle(tmp_path, 2)
    first = builder.build(first_path, read_manifest(first_path), lambda line: None, version=1)
    registry.push_image(first, f"{registry_url}/{repo}", ["v1-1"], lambda line: None)
    second = builder.build(second_path, read_manifest(second_path), lambda line: None, version=2)
    # the redeploy goes through the byte-counting proxy: what it counts is what reached the registry
    report = registry.push_image(second, f"{registry_proxy.host}/{repo}", ["v2-2"], lambda line: None)
    model = second.layers[-1]
    assert first.layers[:-1] == second.layers[:-1], "base, dependency and runtime layers are shared"
    assert registry_proxy.uploaded_blobs() == {model.digest: model.size, second.config_digest: len(second.config_bytes)}
    assert registry_proxy.bytes_sent("PUT", "/manifests/") == len(second.manifest_bytes)
    assert report.uploaded_bytes == registry_proxy.bytes_sent("PATCH") + registry_proxy.bytes_sent("PUT")
    assert report.uploaded_bytes - model.size < 64 * 1024


def test_the_same_bundle_built_in_two_processes_gives_one_digest(
        tmp_path: Path, registry_url: str, base_image: str) -> None:
    path = _bundle(tmp_path, 5, name="twice")
    minor = f"{sys.version_info.major}.{sys.version_info.minor}"
    lines = []
    for run in ("one", "two"):   # each with its own empty cache: pip runs in both
        env = {**os.environ, "GAZELLE_DATA_DIR": str(tmp_path / run), "PYTHONPATH": str(REPO),
               "GAZELLE_BASE_IMAGES": f'{{"{minor}": "{base_image}"}}'}
        got = subprocess.run([sys.executable, "-m", "gazelle.cli", "image", str(path), "--registry",
                              f"{registry_url}/gazelle-test", "--version", "7"], env=env, capture_output=True,
                             text=True, timeout=600)
        assert got.returncode == 0, got.stderr[-3000:]
        lines.append(got.stdout.strip().splitlines()[-1])
    assert lines[0] == lines[1]
    assert lines[0].startswith(f"{registry_url}/gazelle-test/twice@sha256:")
    registry = open_registry(None, None, None)
    try:
        tags = registry.client.tags(registry_url, "gazelle-test/twice")
    finally:
        registry.close()
    assert any(tag.startswith("v7-") for tag in tags)


def test_gazelle_image_pushes_with_the_settings_credentials_and_never_prints_them(
        tmp_path: Path, auth_registry: AuthRegistry, base_image: str) -> None:
    path = _bundle(tmp_path, 6, name="private")
    (tmp_path / "docker").mkdir()   # an empty docker config: the settings are what remains
    env = {**os.environ, "GAZELLE_DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": str(REPO),
           "DOCKER_CONFIG": str(tmp_path / "docker"), "GAZELLE_REGISTRY_USER": auth_registry.user,
           "GAZELLE_REGISTRY_PASSWORD": auth_registry.password,
           "GAZELLE_BASE_IMAGES": f'{{"{sys.version_info.major}.{sys.version_info.minor}": "{base_image}"}}'}
    got = subprocess.run([sys.executable, "-m", "gazelle.cli", "image", str(path), "--registry",
                          f"{auth_registry.host}/gazelle-test"], env=env, capture_output=True, text=True, timeout=600)
    assert got.returncode == 0, got.stderr[-3000:]
    assert got.stdout.strip().splitlines()[-1].startswith(f"{auth_registry.host}/gazelle-test/private@sha256:")
    assert auth_registry.password not in got.stdout + got.stderr


def test_a_pin_with_no_wheel_fails_the_build_naming_it_and_the_docker_builder(
        tmp_path: Path, builder: AppendBuilder) -> None:
    path = _bundle(tmp_path, 1)
    manifest = {**read_manifest(path), "requirements": ["cloudpickle==0.0.1"]}
    with pytest.raises(BuildError) as raised:
        builder.build(path, manifest, lambda line: None)
    assert "cloudpickle==0.0.1" in str(raised.value) and "docker builder" in str(raised.value)


def test_the_model_layer_holds_the_bundle_byte_for_byte(tmp_path: Path, builder: AppendBuilder) -> None:
    import gzip
    import io
    import tarfile

    path = _bundle(tmp_path, 4)
    image = builder.build(path, read_manifest(path), lambda line: None)
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(image.layers[-1].read()))) as tar:
        member = tar.extractfile(BUNDLE.lstrip("/"))
        assert member is not None and member.read() == path.read_bytes()
    assert image.config["config"]["Env"] and image.env["GAZELLE_RUNTIME_BUNDLE"] == BUNDLE
