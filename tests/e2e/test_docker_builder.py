"""DockerBuilder and the engine's push against the test environment's real Docker engine and registries:
the image serves its bundle on the port a bare ``docker run -e GAZELLE_RUNTIME_PORT=...`` gives it, as a
non-root user, with gazelle's labels; the registry holds the digest the push returned; the build
host's CA bundle stays out of the final image; a bad pin fails naming the package; a wrong registry
password fails naming the registry, without the password."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from gazelle.errors import BuildError, RegistryError
from gazelle.server.artifacts import EngineImage, ImageRef
from gazelle.server.builders.docker import DockerBuilder
from gazelle.server.registry.keychain import StaticKeychain
from gazelle.server.registry.engine import EnginePublisher, push_engine_image
from tests.conftest import AuthRegistry
from tests.e2e._docker import Lines, Shout, client_factory, free_port, store, unique

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]

READY_TIMEOUT = 120


@pytest.fixture(scope="module")
def prefix(registry_url: str) -> str:
    return f"{registry_url}/{unique('t-docker-builder')}"


@pytest.fixture(scope="module")
def builder(testenv: dict[str, str], base_image: str, prefix: str) -> Iterator[DockerBuilder]:
    minor = base_image.rsplit(":", 1)[1]
    made = DockerBuilder(client_factory(testenv["GAZELLE_TEST_DOCKER_HOST"]), prefix,
                         base_images={minor: base_image})
    yield made
    made.close()


@pytest.fixture(scope="module")
def shout_image(builder: DockerBuilder, docker_client: Any,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EngineImage, Lines]]:
    path, manifest = store(tmp_path_factory.mktemp("bundles"), Shout(), name="shout")
    log = Lines()
    image = builder.build(path, manifest, log, version=3)
    yield image, log
    docker_client.images.remove(image.id, force=True)


@pytest.fixture(scope="module")
def shout_ref(builder: DockerBuilder, prefix: str, shout_image: tuple[EngineImage, Lines]) -> ImageRef:
    return EnginePublisher(builder.engine, prefix)(shout_image[0], "shout", 3, Lines())


def run_until_ready(docker_client: Any, image: str, port: int) -> Any:
    """``docker run -e GAZELLE_RUNTIME_PORT=<port> IMAGE`` (host network: the test engine has no bridge)."""
    container = docker_client.containers.run(image, detach=True, network_mode="host",
                                             environment={"GAZELLE_RUNTIME_PORT": str(port)})
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        container.reload()
        assert container.status not in ("exited", "dead"), container.logs().decode()[-3000:]
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2).status_code == 200:
                return container
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, container.logs().decode()[-3000:]
        time.sleep(0.2)


def test_the_build_log_streams_into_the_job_line_by_line(shout_image: tuple[EngineImage, Lines]) -> None:
    image, log = shout_image
    assert image.id.startswith("sha256:")
    assert any(line.startswith("Step 1/") for line in log)
    assert all("\n" not in line and line.strip() for line in log)
    assert not any("\x1b[" in line for line in log)


def test_a_bare_docker_run_with_a_port_serves_the_model(docker_client: Any, shout_image: tuple[EngineImage, Lines]
                                                        ) -> None:
    port = free_port()
    container = run_until_ready(docker_client, shout_image[0].id, port)
    try:
        answer = httpx.post(f"http://127.0.0.1:{port}/predict", json={"instances": ["taxi", "hotel"]}, timeout=10)
        assert answer.status_code == 200
        assert answer.json()["predictions"] == ["TAXI", "HOTEL"]
        assert container.exec_run(["id", "-u"]).output.decode().strip() == "10001"
    finally:
        container.remove(force=True)


def test_the_image_runs_as_a_numeric_non_root_user_and_carries_the_labels(
        docker_client: Any, shout_image: tuple[EngineImage, Lines]) -> None:
    config = docker_client.images.get(shout_image[0].id).attrs["Config"]
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["python3", "-m", "gazelle.runtime"]
    labels = config["Labels"]
    assert labels["gazelle.model"] == "shout"
    assert labels["gazelle.version"] == "3"
    assert labels["gazelle.bundle-digest"].startswith("sha256:")
    assert labels["org.opencontainers.image.title"] == "shout"
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["GAZELLE_RUNTIME_PORT"] == "8080"
    assert env["GAZELLE_RUNTIME_HOST"] == "0.0.0.0"
    assert env["GAZELLE_RUNTIME_BUNDLE"] == "/opt/gazelle/bundle.tar"


def test_the_build_hosts_ca_bundle_stays_out_of_the_final_image(
        docker_client: Any, shout_image: tuple[EngineImage, Lines]) -> None:
    listing = docker_client.containers.run(shout_image[0].id, entrypoint=["ls", "-a", "/tmp", "/opt/gazelle"],
                                           remove=True, network_mode="host").decode()
    assert "ca-certificates.crt" not in listing
    assert "requirements.txt" not in listing
    assert any("COPY gazelle-build/ca-certificates.crt" in line for line in shout_image[1])   # pip had it
    history = " ".join(str(step.get("CreatedBy")) for step in docker_client.api.history(shout_image[0].id))
    assert "ca-certificates.crt" not in history and "PIP_CERT" not in history


def test_the_image_holds_the_runtime_and_nothing_of_client_or_server(
        docker_client: Any, shout_image: tuple[EngineImage, Lines]) -> None:
    listing = docker_client.containers.run(shout_image[0].id, entrypoint=["ls", "/opt/gazelle/lib/gazelle"],
                                           remove=True, network_mode="host").decode().split()
    assert "runtime" in listing and "bundle.py" in listing
    assert "client" not in listing and "server" not in listing


def test_the_push_returns_the_digest_the_registry_serves(registry_url: str, prefix: str, shout_ref: ImageRef) -> None:
    assert str(shout_ref).startswith(f"{prefix}/shout@sha256:")
    repository = shout_ref.repository
    head = httpx.head(f"http://{registry_url}/v2/{repository}/manifests/{shout_ref.digest}", timeout=10,
                      headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"})
    assert head.status_code == 200
    assert head.headers["Docker-Content-Digest"] == shout_ref.digest
    tags = httpx.get(f"http://{registry_url}/v2/{repository}/tags/list", timeout=10).json()["tags"]
    assert any(tag.startswith("v3-") for tag in tags)


def test_a_bad_pin_fails_the_build_naming_the_package(builder: DockerBuilder, tmp_path: Path) -> None:
    path, manifest = store(tmp_path, Shout(), name="badpin",
                           requirements=["gazelle-no-such-package-e2e==0.0.1"])
    log = Lines()
    with pytest.raises(BuildError) as failed:
        builder.build(path, manifest, log)
    message = str(failed.value)
    assert "gazelle-no-such-package-e2e" in message
    assert "at step " in message and "pip install" in message
    assert failed.value.detail and "gazelle-no-such-package-e2e" in failed.value.detail


def test_push_to_a_registry_with_basic_auth_uses_the_credentials(
        docker_client: Any, auth_registry: AuthRegistry, shout_image: tuple[EngineImage, Lines]) -> None:
    repository = f"{auth_registry.host}/{unique('t-docker-builder')}/shout"
    ref = push_engine_image(docker_client, shout_image[0], repository, ["v1-1"], Lines(),
                            keychain=StaticKeychain(auth_registry.host, auth_registry.user, auth_registry.password))
    head = httpx.head(f"http://{auth_registry.host}/v2/{ref.repository}/manifests/{ref.digest}", timeout=10,
                      auth=(auth_registry.user, auth_registry.password),
                      headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"})
    assert head.status_code == 200


def test_a_wrong_registry_password_fails_naming_the_registry_without_the_password(
        docker_client: Any, auth_registry: AuthRegistry, shout_image: tuple[EngineImage, Lines]) -> None:
    repository = f"{auth_registry.host}/{unique('t-docker-builder')}/shout"
    wrong = "not-the-password-" + unique("x")
    log = Lines()
    with pytest.raises(RegistryError) as failed:
        push_engine_image(docker_client, shout_image[0], repository, ["v1-1"], log,
                          keychain=StaticKeychain(auth_registry.host, auth_registry.user, wrong))
    message = str(failed.value)
    assert auth_registry.host in message
    assert "unauthorized" in message.lower() or "authentication" in message.lower()
    assert wrong not in message and wrong not in " ".join(log)
    assert wrong not in (failed.value.detail or "")


def test_system_packages_from_the_setting_are_in_the_final_image(
        testenv: dict[str, str], base_image: str, prefix: str, docker_client: Any, tmp_path: Path) -> None:
    with_jq = DockerBuilder(client_factory(testenv["GAZELLE_TEST_DOCKER_HOST"]), prefix,
                            base_images={base_image.rsplit(":", 1)[1]: base_image}, apt=["jq"])
    try:
        path, manifest = store(tmp_path, Shout(), name="withjq")
        image = with_jq.build(path, manifest, Lines())
        try:
            out = docker_client.containers.run(image.id, entrypoint=["jq", "-n", "1+1"], remove=True,
                                               network_mode="host").decode().strip()
            assert out == "2"
        finally:
            docker_client.images.remove(image.id, force=True)
    finally:
        with_jq.close()


def test_an_unknown_system_package_fails_the_build_naming_it(
        testenv: dict[str, str], base_image: str, prefix: str, tmp_path: Path) -> None:
    missing = "gazelle-no-such-deb"
    builder = DockerBuilder(client_factory(testenv["GAZELLE_TEST_DOCKER_HOST"]), prefix,
                            base_images={base_image.rsplit(":", 1)[1]: base_image}, apt=[missing])
    try:
        path, manifest = store(tmp_path, Shout(), name="nodeb")
        with pytest.raises(BuildError) as failed:
            builder.build(path, manifest, Lines())
        assert f"apt-get: Unable to locate package {missing}" in str(failed.value)
        assert "at step 2/" in str(failed.value)
    finally:
        builder.close()


def test_gazelle_image_with_the_docker_builder_prints_the_digest_last_and_never_the_password(
        testenv: dict[str, str], auth_registry: AuthRegistry, base_image: str, tmp_path: Path,
        docker_client: Any) -> None:
    path, _ = store(tmp_path, Shout(), name="cishout")
    (tmp_path / "docker").mkdir()   # an empty docker config: the settings' credentials are what remains
    prefix = f"{auth_registry.host}/{unique('t-docker-image')}"
    env = {**os.environ, "PYTHONPATH": str(REPO), "DOCKER_HOST": testenv["GAZELLE_TEST_DOCKER_HOST"],
           "DOCKER_CONFIG": str(tmp_path / "docker"), "GAZELLE_DATA_DIR": str(tmp_path / "data"),
           "GAZELLE_REGISTRY_USER": auth_registry.user, "GAZELLE_REGISTRY_PASSWORD": auth_registry.password,
           "GAZELLE_BASE_IMAGES": json.dumps({base_image.rsplit(":", 1)[1]: base_image})}
    got = subprocess.run([sys.executable, "-m", "gazelle.cli", "image", str(path), "--registry", prefix,
                          "--builder", "docker", "--version", "4"], env=env, capture_output=True, text=True,
                         timeout=600)
    assert got.returncode == 0, got.stderr[-3000:]
    last = got.stdout.strip().splitlines()[-1]
    ref = ImageRef.parse(last)
    assert last.startswith(f"{prefix}/cishout@sha256:")
    assert auth_registry.password not in got.stdout + got.stderr
    assert any(line.startswith("Step 1/") for line in got.stderr.splitlines())
    head = httpx.head(f"http://{auth_registry.host}/v2/{ref.repository}/manifests/{ref.digest}", timeout=10,
                      auth=(auth_registry.user, auth_registry.password),
                      headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"})
    assert head.status_code == 200
    built = docker_client.images.get(last)
    assert built.labels["gazelle.version"] == "4"
    docker_client.images.remove(built.id, force=True)
