"""A deploy through a real ``gazelle server --target docker``, with each image builder: the bundle is
built (by DockerBuilder, pushed through the engine; or by AppendBuilder, pushed by the registry client)
to the test registry, run by DockerTarget by digest, sanity-checked and switched live; the gateway
answers. After the server is killed, the next one adopts the same container."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.e2e._docker import SAMPLE, Shout, data_dir_sharing_layers, unique
from tests.integration._server import ServerProcess, start_server

pytestmark = pytest.mark.e2e


@pytest.fixture(params=["docker", "append"])
def docker_env(request: pytest.FixtureRequest, testenv: dict[str, str], registry_url: str, base_image: str,
               docker_client: Any) -> dict[str, str]:
    return {"GAZELLE_TARGET": "docker", "GAZELLE_BUILDER": request.param,
            "DOCKER_HOST": testenv["GAZELLE_TEST_DOCKER_HOST"],
            "GAZELLE_REGISTRY": f"{registry_url}/{unique('t-docker-server')}",
            "GAZELLE_BASE_IMAGES": json.dumps({base_image.rsplit(":", 1)[1]: base_image})}


@pytest.fixture
def model_name(docker_client: Any) -> Iterator[str]:
    name = unique("shout")
    yield name
    for container in docker_client.containers.list(all=True, filters={"label": f"gazelle.model={name}"}):
        container.remove(force=True)


def bundle_of(name: str) -> bytes:
    from gazelle.bundle import pack

    return pack(Shout(), name=name, sample=SAMPLE).data


def test_an_image_deployed_to_the_docker_target_answers_through_the_gateway_and_survives_a_restart(
        tmp_path: Path, docker_env: dict[str, str], model_name: str, docker_client: Any) -> None:
    server: ServerProcess = start_server(tmp_path / "data", env=docker_env)
    try:
        job = server.deploy(model_name, bundle_of(model_name), public=True, resources={"memory": "256Mi"})
        assert job["status"] == "succeeded", json.dumps(job, indent=1)
        stages = {stage["name"]: stage["status"] for stage in job["stages"]}
        assert stages["build"] == stages["push"] == stages["deploy"] == stages["sanity"] == "done"
        answer = server.predict(f"/m/{model_name}/predict", ["taxi"])
        assert answer.status_code == 200, answer.text
        assert answer.json()["predictions"] == ["TAXI"]
        (container,) = docker_client.containers.list(filters={"label": f"gazelle.model={model_name}"})
        assert "@sha256:" in container.attrs["Config"]["Image"]
        assert container.attrs["Config"]["Image"].startswith(docker_env["GAZELLE_REGISTRY"])
        # deploy(resources=...) reached the container, and the image says which version it is.
        assert container.attrs["HostConfig"]["Memory"] == 256 * 2**20
        image = docker_client.images.get(container.attrs["Config"]["Image"])
        assert image.labels["gazelle.version"] == "1" and image.labels["gazelle.model"] == model_name
    finally:
        server.kill()
    restarted = start_server(tmp_path / "data", env=docker_env)
    try:
        answer = restarted.predict(f"/m/{model_name}/predict", ["hotel"])
        assert answer.status_code == 200, answer.text
        assert answer.json()["predictions"] == ["HOTEL"]
        (again,) = docker_client.containers.list(filters={"label": f"gazelle.model={model_name}"})
        assert again.id == container.id
    finally:
        restarted.terminate()
    assert docker_client.containers.list(filters={"label": f"gazelle.model={model_name}"}), \
        "a clean server exit leaves the containers serving"


def test_the_account_suggestion_model_serves_from_the_docker_target_through_the_gateway(
        tmp_path: Path, docker_env: dict[str, str], model_name: str, docker_client: Any) -> None:
    """The notebook's flagship model, with each builder: scikit-learn and its pins in the image."""
    from gazelle.bundle import pack
    from tests.integration._runtime import TRAVEL, accounts_model

    server = start_server(data_dir_sharing_layers(tmp_path / "data"), env=docker_env)
    try:
        data = pack(accounts_model(), name=model_name, sample=["taxi to the airport", "hotel in Berlin"]).data
        job = server.deploy(model_name, data)
        assert job["status"] == "succeeded", json.dumps(job, indent=1)
        answer = server.predict(f"/m/{model_name}/predict", ["Taxi to conference"])
        assert answer.status_code == 200, answer.text
        assert answer.json()["predictions"] == [TRAVEL]
        (container,) = docker_client.containers.list(filters={"label": f"gazelle.model={model_name}"})
        assert "@sha256:" in container.attrs["Config"]["Image"]
    finally:
        server.terminate()
