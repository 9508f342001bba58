"""DockerTarget against the test environment's real Docker engine and registry: a version is pulled by
digest, health-gated, answers /predict as uid 10001 under its memory limit; a pull error, a model that
raises while loading and an engine without a bridge network each fail with the reason and leave no
container; a new target instance adopts the running container; stop and delete remove containers; no
server secret reaches a container's environment."""
from __future__ import annotations

import time
from typing import Any, Iterator

import httpx
import pytest
from docker.errors import ImageNotFound

from gazelle.errors import TargetError
from gazelle.server.artifacts import EngineImage, ImageRef
from gazelle.server.builders.docker import DockerBuilder
from gazelle.server.registry.keychain import StaticKeychain
from gazelle.server.registry.engine import EnginePublisher, push_engine_image
from gazelle.server.targets import Release
from gazelle.server import upstream
from gazelle.server.targets.docker import DockerTarget
from tests.conftest import AuthRegistry
from tests.e2e._docker import Boom, Lines, Shout, client_factory, store, unique

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def engine(testenv: dict[str, str], docker_client: Any) -> Any:
    return client_factory(testenv["GAZELLE_TEST_DOCKER_HOST"])


@pytest.fixture(scope="module")
def prefix(registry_url: str) -> str:
    return f"{registry_url}/{unique('t-docker-target')}"


@pytest.fixture(scope="module")
def pushed(engine: Any, base_image: str, prefix: str, docker_client: Any,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple[ImageRef, dict[str, Any]]]]:
    """Images of Shout and Boom, built, pushed, and removed from the engine: a deploy must pull them."""
    builder = DockerBuilder(engine, prefix, base_images={base_image.rsplit(":", 1)[1]: base_image})
    publish = EnginePublisher(builder.engine, prefix)
    directory = tmp_path_factory.mktemp("bundles")
    refs = {}
    try:
        for name, model in (("shout", Shout()), ("boom", Boom())):
            path, manifest = store(directory, model, name=name)
            image = builder.build(path, manifest, Lines(), version=1)
            refs[name] = (publish(image, name, 1, Lines()), manifest)
            docker_client.images.remove(image.id, force=True)
    finally:
        builder.close()
    yield refs
    for ref, _ in refs.values():   # what the deploys pulled
        try:
            docker_client.images.remove(str(ref), force=True)
        except ImageNotFound:   # never pulled (every test that would have was deselected)
            pass


@pytest.fixture
def target(engine: Any, docker_client: Any) -> Iterator[DockerTarget]:
    made = DockerTarget(engine, instance=unique("t"), ready_timeout=90)
    yield made
    for container in docker_client.containers.list(all=True, filters={"label": f"gazelle.instance={made.instance}"}):
        container.remove(force=True)
    made.close()


def release(name: str, version: int, ref: ImageRef, manifest: dict[str, Any], **kw: Any) -> Release:
    return Release(name=name, version=version, artifact=ref, manifest=manifest, **kw)


def containers_of(docker_client: Any, target: DockerTarget) -> list[Any]:
    return docker_client.containers.list(all=True, filters={"label": f"gazelle.instance={target.instance}"})


def test_a_version_is_pulled_by_digest_and_answers_predict_as_non_root(
        target: DockerTarget, pushed: dict, docker_client: Any) -> None:
    ref, manifest = pushed["shout"]
    log = Lines()
    running = target.deploy(release("shout", 1, ref, manifest), log)
    assert any(line.startswith("pulling ") for line in log)
    assert ref.digest in " ".join(docker_client.images.get(str(ref)).attrs["RepoDigests"])
    answer = httpx.post(f"{running.url}/predict", json={"instances": ["taxi"]}, timeout=10)
    assert answer.json()["predictions"] == ["TAXI"]
    assert answer.json()["version"] == 1
    (container,) = containers_of(docker_client, target)
    assert container.attrs["Config"]["Image"] == str(ref)
    assert container.exec_run(["id", "-u"]).output.decode().strip() == "10001"
    assert container.labels["gazelle.model"] == "shout" and container.labels["gazelle.version"] == "1"
    assert container.attrs["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    assert target.running() == [running]


def test_resources_become_the_containers_memory_limit_and_cpus(
        target: DockerTarget, pushed: dict, docker_client: Any) -> None:
    ref, manifest = pushed["shout"]
    target.deploy(release("shout", 2, ref, manifest,
                          resources={"requests": {"memory": "128Mi"}, "limits": {"memory": "256Mi", "cpu": "500m"}}),
                  Lines())
    (container,) = containers_of(docker_client, target)
    host = container.attrs["HostConfig"]
    assert host["Memory"] == 256 << 20
    assert host["MemoryReservation"] == 128 << 20
    assert host["NanoCpus"] == 500_000_000


def test_an_image_that_cannot_be_pulled_fails_naming_the_pull_error(
        target: DockerTarget, pushed: dict, registry_url: str, docker_client: Any) -> None:
    _, manifest = pushed["shout"]
    missing = ImageRef(registry_url, f"{unique('t-docker-target')}/nothing", "sha256:" + "0" * 64)
    with pytest.raises(TargetError) as failed:
        target.deploy(release("shout", 3, missing, manifest), Lines())
    message = str(failed.value)
    assert "could not pull" in message and str(missing) in message
    assert "not found" in message.lower() or "unknown" in message.lower()
    assert containers_of(docker_client, target) == []


def test_a_model_that_raises_while_loading_fails_with_its_own_message(
        target: DockerTarget, pushed: dict, docker_client: Any) -> None:
    ref, manifest = pushed["boom"]
    with pytest.raises(TargetError) as failed:
        target.deploy(release("boom", 1, ref, manifest), Lines())
    assert "the model raised while loading" in str(failed.value)
    assert "RuntimeError: boom" in str(failed.value)
    assert failed.value.detail and "boom" in failed.value.detail
    assert containers_of(docker_client, target) == []


def test_a_new_target_adopts_the_running_container_after_a_restart(
        target: DockerTarget, engine: Any, pushed: dict, docker_client: Any) -> None:
    ref, manifest = pushed["shout"]
    first = target.deploy(release("shout", 4, ref, manifest), Lines())
    (before,) = containers_of(docker_client, target)
    target.close()
    restarted = DockerTarget(engine, instance=target.instance)
    try:
        log = Lines()
        restored = restarted.restore([release("shout", 4, ref, manifest)], log)
        assert restored == [first]
        assert any("adopted" in line for line in log)
        (after,) = containers_of(docker_client, restarted)
        assert after.id == before.id
        assert restarted.running() == [first]
        assert httpx.post(f"{first.url}/predict", json={"instances": ["a"]}, timeout=10).json()["predictions"] == ["A"]
    finally:
        restarted.close()


def test_stop_removes_the_container_and_delete_removes_every_version(
        target: DockerTarget, pushed: dict, docker_client: Any) -> None:
    ref, manifest = pushed["shout"]
    for version in (5, 6):
        target.deploy(release("shout", version, ref, manifest), Lines())
    assert any("gazelle" in line or "ready" in line for line in target.logs("shout", 5, tail=20))
    target.stop("shout", 5, grace=2)
    assert [c.labels["gazelle.version"] for c in containers_of(docker_client, target)] == ["6"]
    assert target.logs("shout", 5) == []
    target.delete("shout")
    assert containers_of(docker_client, target) == []
    assert target.running() == []


def test_bridge_mode_on_an_engine_without_a_bridge_fails_with_the_engines_reason(
        engine: Any, pushed: dict, docker_client: Any) -> None:
    bridged = DockerTarget(engine, network="bridge", instance=unique("t"))
    ref, manifest = pushed["shout"]
    try:
        with pytest.raises(TargetError) as failed:
            bridged.deploy(release("shout", 1, ref, manifest), Lines())
        assert "bridge" in str(failed.value)
        assert containers_of(docker_client, bridged) == []
    finally:
        bridged.close()


def test_no_server_secret_reaches_the_containers_environment(
        target: DockerTarget, pushed: dict, docker_client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = unique("registry-password")
    monkeypatch.setenv("GAZELLE_REGISTRY_PASSWORD", secret)
    monkeypatch.setenv("GAZELLE_RUNTIME_THREADS", "4")
    ref, manifest = pushed["shout"]
    target.deploy(release("shout", 7, ref, manifest, env={"SHOUT_MODE": "loud"}), Lines())
    (container,) = containers_of(docker_client, target)
    env = dict(item.split("=", 1) for item in container.attrs["Config"]["Env"])
    assert env["SHOUT_MODE"] == "loud"
    assert secret not in " ".join(container.attrs["Config"]["Env"])
    assert "GAZELLE_RUNTIME_THREADS" not in env


def test_the_engine_restarts_a_runtime_that_exits_after_it_was_ready(
        target: DockerTarget, pushed: dict, docker_client: Any) -> None:
    ref, manifest = pushed["shout"]
    running = target.deploy(release("shout", 8, ref, manifest), Lines())
    (container,) = containers_of(docker_client, target)
    # The runtime's own exit, not the engine's stop (which the restart policy would respect).
    killed = container.exec_run(["python3", "-c", "import os, signal; os.kill(1, signal.SIGTERM)"])
    assert killed.exit_code == 0, killed.output
    deadline = time.monotonic() + 90
    while True:
        container.reload()
        if container.attrs["RestartCount"] >= 1 and container.status == "running" and upstream.answers(running.url, "/v2/health/ready"):
            break
        assert time.monotonic() < deadline, container.logs().decode()[-2000:]
        time.sleep(0.2)
    assert httpx.post(f"{running.url}/predict", json={"instances": ["x"]}, timeout=10).json()["predictions"] == ["X"]


def test_restore_starts_again_a_version_whose_container_is_gone(
        target: DockerTarget, engine: Any, pushed: dict, docker_client: Any) -> None:
    ref, manifest = pushed["shout"]
    target.deploy(release("shout", 9, ref, manifest), Lines())
    (gone,) = containers_of(docker_client, target)
    gone.remove(force=True)
    restarted = DockerTarget(engine, instance=target.instance)
    try:
        (running,) = restarted.restore([release("shout", 9, ref, manifest)], Lines())
        (fresh,) = containers_of(docker_client, restarted)
        assert fresh.id != gone.id
        assert httpx.post(f"{running.url}/predict", json={"instances": ["y"]}, timeout=10).json()["predictions"] == ["Y"]
    finally:
        restarted.close()


def test_a_pull_the_registry_refuses_names_the_registry_without_the_password(
        engine: Any, pushed: dict, auth_registry: AuthRegistry, docker_client: Any) -> None:
    ref, manifest = pushed["shout"]
    private = f"{auth_registry.host}/{unique('t-docker-target')}/shout"
    docker_client.images.pull(f"{ref.registry}/{ref.repository}", tag=ref.digest)
    pushed_ref = push_engine_image(docker_client, EngineImage(id=docker_client.images.get(str(ref)).id, tag=""),
                                   private, ["v1-1"], Lines(),
                                   keychain=StaticKeychain(auth_registry.host, auth_registry.user, auth_registry.password))
    docker_client.images.remove(str(pushed_ref), force=True)
    wrong = unique("not-the-password")
    refused = DockerTarget(engine, instance=unique("t"), keychain=StaticKeychain(auth_registry.host, auth_registry.user, wrong))
    log = Lines()
    try:
        with pytest.raises(TargetError) as failed:
            refused.deploy(release("shout", 1, pushed_ref, manifest), log)
        message = str(failed.value)
        assert "could not pull" in message and auth_registry.host in message
        assert "unauthorized" in message.lower() or "authentication" in message.lower(), message
        assert wrong not in message and wrong not in " ".join(log) and wrong not in (failed.value.detail or "")
        assert containers_of(docker_client, refused) == []
    finally:
        refused.close()
