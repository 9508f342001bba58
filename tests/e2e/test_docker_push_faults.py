"""Pushing DockerBuilder's images through the engine, with the registry behind a fault-injecting,
byte-counting proxy (``tests.faultproxy``): a retrained model in the same environment uploads only its
model layer and config; one transient 500 in the middle of a blob upload is retried by the engine and
the push succeeds; a registry that is down fails naming it."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from gazelle.errors import RegistryError
from gazelle.server.builders.docker import DockerBuilder
from gazelle.server.registry.engine import push_engine_image
from tests.e2e._docker import Lines, client_factory, free_port, store, unique
from tests.faultproxy import FaultProxy

pytestmark = pytest.mark.e2e

MODEL_LAYER_SLACK = 64 * 1024
# The module's proxy listens here when it can: the engine remembers, per registry host, which blobs
# it pushed where, so a later run mounts the base image's layers instead of sending them again.
PROXY_PORT = 5009


class Scaled:
    """A model whose state is its factor: retraining changes the pickle, not the environment."""

    def __init__(self, factor: int) -> None:
        self.factor = factor

    def predict(self, rows: Any) -> list[float]:
        return [self.factor * float(row) for row in rows]


@pytest.fixture(scope="module")
def builder(testenv: dict[str, str], base_image: str, registry_url: str) -> Iterator[DockerBuilder]:
    made = DockerBuilder(client_factory(testenv["GAZELLE_TEST_DOCKER_HOST"]),
                         f"{registry_url}/{unique('t-docker-push')}",
                         base_images={base_image.rsplit(":", 1)[1]: base_image})
    yield made
    made.close()


@pytest.fixture(scope="module")
def proxy(registry_url: str) -> Iterator[FaultProxy]:
    """One proxy for the module: the engine knows which blobs it pushed to one registry host, so the
    base image's layers (about 180 MB, slow through a Python proxy) go up once, not once per test, and
    (on ``PROXY_PORT``, unless another run holds it) not again in the next run."""
    try:
        made = FaultProxy(registry_url, port=PROXY_PORT)
    except OSError:
        made = FaultProxy(registry_url)
    with made:
        yield made


@pytest.fixture(scope="module")
def repository(proxy: FaultProxy) -> str:
    return f"{proxy.host}/{unique('t-docker-push')}/scaled"


def build(builder: DockerBuilder, directory: Path, factor: int) -> Any:
    path, manifest = store(directory, Scaled(factor), name="scaled", sample=[1.0, 2.0])
    return builder.build(path, manifest, Lines())


def manifest_status(host: str, ref: Any) -> int:
    return httpx.head(f"http://{host}/v2/{ref.repository}/manifests/{ref.digest}", timeout=10,
                      headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"}).status_code


def test_a_retrained_model_in_the_same_environment_uploads_only_its_model_layer_and_config(
        builder: DockerBuilder, proxy: FaultProxy, repository: str, tmp_path: Path, docker_client: Any) -> None:
    first = build(builder, tmp_path, 2)
    push_engine_image(docker_client, first, repository, ["v1-1"], Lines())
    proxy.clear()
    second = build(builder, tmp_path, 3)
    ref = push_engine_image(docker_client, second, repository, ["v2-2"], Lines())
    blobs = proxy.uploaded_blobs()
    assert second.id in blobs, "the new config went up"
    (model_layer,) = [size for digest, size in blobs.items() if digest != second.id]
    bundle_bytes = next(tmp_path.glob("*.tar")).stat().st_size
    assert model_layer < bundle_bytes + MODEL_LAYER_SLACK
    assert len(proxy.requests("PUT", "/manifests/")) == 1
    assert manifest_status(proxy.host, ref) == 200
    for image in (first, second):
        docker_client.images.remove(image.id, force=True)


def test_one_transient_500_in_a_blob_upload_is_retried_and_the_push_succeeds(
        builder: DockerBuilder, proxy: FaultProxy, repository: str, tmp_path: Path, docker_client: Any) -> None:
    proxy.clear()
    image = build(builder, tmp_path, 5)
    fault = proxy.fail("PATCH", r"/blobs/uploads/")
    log = Lines()
    try:
        ref = push_engine_image(docker_client, image, repository, ["v1-1"], log)
    finally:
        docker_client.images.remove(image.id, force=True)
    assert fault.fired == 1
    assert any("Retrying in" in line for line in log), log
    assert manifest_status(proxy.host, ref) == 200


def test_a_registry_that_is_down_fails_naming_it(builder: DockerBuilder, tmp_path: Path, docker_client: Any) -> None:
    down = f"127.0.0.1:{free_port()}"
    image = build(builder, tmp_path, 7)
    try:
        with pytest.raises(RegistryError) as failed:
            push_engine_image(docker_client, image, f"{down}/models/scaled", ["v1-1"], Lines())
    finally:
        docker_client.images.remove(image.id, force=True)
    assert down in str(failed.value)
    assert "connection refused" in str(failed.value).lower()
    assert failed.value.retryable
