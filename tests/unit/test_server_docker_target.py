"""What DockerTarget asks the engine for, read without an engine: network, port, limits, labels, env."""
from __future__ import annotations

from pathlib import Path

import pytest

from gazelle.errors import BadRequest, TargetError
from gazelle.server.artifacts import ImageRef, LocalEnv
from gazelle.server.targets import Release
from gazelle.server.targets.docker import DockerTarget
from gazelle.server.targets.resources import Resources

REF = ImageRef("registry.example:5000", "models/upper", "sha256:" + "a" * 64)


def never_called():
    raise AssertionError("building options must not talk to an engine")


def release(**kw) -> Release:
    return Release(name="upper", version=3, artifact=REF, manifest={}, **kw)


def test_host_network_gives_each_version_its_own_port_on_loopback():
    options = DockerTarget(never_called).container_options(release(), REF, Resources.of(None), 41234)
    assert options["network_mode"] == "host"
    assert options["environment"]["GAZELLE_RUNTIME_PORT"] == "41234"
    assert options["environment"]["GAZELLE_RUNTIME_HOST"] == "127.0.0.1"
    assert options["labels"]["gazelle.port"] == "41234"
    assert "ports" not in options


def test_host_network_binds_every_interface_when_the_server_reaches_the_engine_elsewhere():
    options = DockerTarget(never_called, host="10.0.0.5").container_options(release(), REF, Resources.of(None), 4000)
    assert options["environment"]["GAZELLE_RUNTIME_HOST"] == "0.0.0.0"


def test_bridge_network_publishes_the_image_port_on_the_publish_host():
    options = DockerTarget(never_called, network="bridge").container_options(release(), REF, Resources.of(None), 8080)
    assert options["network_mode"] == "bridge"
    assert options["ports"] == {"8080/tcp": ("127.0.0.1", None)}
    assert options["environment"]["GAZELLE_RUNTIME_PORT"] == "8080"
    assert "gazelle.port" not in options["labels"]


def test_labels_let_a_restarted_server_find_its_containers():
    options = DockerTarget(never_called, instance="prod").container_options(release(), REF, Resources.of(None), 1)
    assert options["name"] == "prod-upper-v3"
    assert options["labels"] | {"gazelle.port": "1"} == {
        "gazelle.instance": "prod", "gazelle.model": "upper", "gazelle.version": "3",
        "gazelle.image": str(REF), "gazelle.port": "1"}


def test_the_shorthand_resources_become_limit_reservation_and_cpus():
    resources = Resources.of({"cpu": "500m", "memory": "1Gi"})
    options = DockerTarget(never_called).container_options(release(), REF, resources, 1)
    assert options["mem_limit"] == options["memswap_limit"] == 1 << 30
    assert options["mem_reservation"] == 1 << 30
    assert options["nano_cpus"] == 500_000_000


def test_no_resources_ask_the_engine_for_no_limits():
    options = DockerTarget(never_called).container_options(release(), REF, Resources.of(None), 1)
    assert not {"mem_limit", "memswap_limit", "mem_reservation", "nano_cpus"} & set(options)


def test_the_environment_is_the_releases_plus_the_runtimes_own_and_its_version_wins():
    options = DockerTarget(never_called, workers=3).container_options(
        release(env={"MODE": "fast", "GAZELLE_RUNTIME_PORT": "1"}), REF, Resources.of(None), 5000)
    env = options["environment"]
    assert env == {"MODE": "fast", "GAZELLE_RUNTIME_PORT": "5000", "GAZELLE_RUNTIME_HOST": "127.0.0.1",
                   "GAZELLE_MODEL_VERSION": "3", "GAZELLE_RUNTIME_WORKERS": "3"}


def test_an_unknown_network_mode_is_refused_naming_the_choices():
    with pytest.raises(TargetError) as err:
        DockerTarget(never_called, network="overlay")
    assert "host, bridge" in str(err.value)


def test_a_local_environment_is_not_an_image_to_run():
    local = Release(name="upper", version=1, artifact=LocalEnv("/usr/bin/python3", Path("b.tar")), manifest={})
    with pytest.raises(TargetError) as err:
        DockerTarget(never_called).deploy(local, print)
    assert "images from a registry" in str(err.value)


def test_bad_resources_fail_the_deploy_naming_the_field_before_the_engine_is_asked():
    with pytest.raises(BadRequest) as err:
        DockerTarget(never_called).deploy(release(resources={"memory": "lots"}), print)
    assert str(err.value).startswith("resources.memory: ")


def test_an_engine_that_cannot_be_reached_is_a_target_error_naming_docker_host(tmp_path: Path):
    import docker

    target = DockerTarget(lambda: docker.DockerClient(base_url=f"unix://{tmp_path}/no-engine.sock", version="auto"))
    with pytest.raises(TargetError) as err:
        target.running()
    assert "the Docker engine cannot be reached" in str(err.value) and "DOCKER_HOST" in str(err.value)


def test_tokens_reach_the_container_as_a_read_only_directory_rewritten_when_tokens_change(tmp_path: Path):
    from gazelle.runtime.access import read

    target = DockerTarget(never_called, tokens_dir=tmp_path)
    assert "volumes" not in target.container_options(release(), REF, Resources.of(None), 1)   # not told yet
    target.accept_tokens({"a" * 64: "predict"})
    options = target.container_options(release(), REF, Resources.of(None), 1)
    [(source, mount)] = options["volumes"].items()
    assert mount == {"bind": "/gazelle-access", "mode": "ro"}
    assert options["environment"]["GAZELLE_RUNTIME_TOKENS_FILE"] == "/gazelle-access/tokens.json"
    assert read(f"{source}/tokens.json") == (False, frozenset({"a" * 64}))
    target.accept_tokens({"b" * 64: "admin"})
    assert read(f"{source}/tokens.json") == (False, frozenset({"b" * 64}))
