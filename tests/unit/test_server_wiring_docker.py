"""The docker target's settings and wiring: DockerBuilder, a push through the same engine, DockerTarget."""
from __future__ import annotations

from pathlib import Path

import pytest

from gazelle.errors import ConfigError
from gazelle.server import wiring
from gazelle.server.settings import Settings


def test_the_docker_target_is_wired_to_the_docker_builder_and_an_engine_push(tmp_path: Path) -> None:
    from gazelle.server.builders.docker import DockerBuilder
    from gazelle.server.registry.engine import EnginePublisher
    from gazelle.server.targets.docker import DockerTarget

    settings = Settings.from_env({"GAZELLE_TARGET": "docker", "GAZELLE_REGISTRY": "127.0.0.1:5000/models",
                                  "GAZELLE_DATA_DIR": str(tmp_path), "GAZELLE_DOCKER_NETWORK": "bridge",
                                  "GAZELLE_DOCKER_APT_PACKAGES": "libgomp1,libpq5",
                                  "GAZELLE_BASE_IMAGES": '{"3.11": "127.0.0.1:5000/gazelle/python:3.11"}'})
    wired = wiring.build(settings)
    assert isinstance(wired.builder, DockerBuilder) and isinstance(wired.target, DockerTarget)
    assert isinstance(wired.publish, EnginePublisher)
    assert wired.builder.apt == ("libgomp1", "libpq5")
    assert wired.builder.base_images == {"3.11": "127.0.0.1:5000/gazelle/python:3.11"}
    assert wired.target.network == "bridge"
    assert wired.stop_models is None, "containers keep serving when the server exits"
    assert list(tmp_path.iterdir()) == [], "wiring must do no I/O"


def test_registry_credentials_from_settings_go_to_the_configured_registry_only(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "no-docker-config"))   # docker's config.json would win
    wired = wiring.build(Settings(data_dir=tmp_path / "data", target="docker", registry="reg.example:5001/m",
                                  registry_user="gazelle", registry_password="pw"))
    keychain = wired.target.keychain   # type: ignore[attr-defined]
    found = keychain.credentials("reg.example:5001")
    assert (found.username, found.password) == ("gazelle", "pw")
    assert keychain.credentials("elsewhere.example") is None
    pushed_with = wired.publish.keychain.credentials("reg.example:5001")   # type: ignore[union-attr]
    assert (pushed_with.username, pushed_with.password) == ("gazelle", "pw")


def test_the_docker_target_runs_the_append_builders_images_too(tmp_path: Path) -> None:
    from gazelle.server.builders.append import AppendBuilder
    from gazelle.server.targets.docker import DockerTarget

    wired = wiring.build(Settings(data_dir=tmp_path, target="docker", builder="append", registry="r.example/m"))
    assert isinstance(wired.builder, AppendBuilder) and isinstance(wired.target, DockerTarget)
    assert wired.publish is not None


def test_the_docker_target_needs_a_registry(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="GAZELLE_REGISTRY"):
        wiring.build(Settings(data_dir=tmp_path, target="docker"))


@pytest.mark.parametrize("env, words", [
    ({"GAZELLE_DOCKER_NETWORK": "overlay"}, ["GAZELLE_DOCKER_NETWORK", "host, bridge", "'overlay'"]),
    ({"GAZELLE_DOCKER_APT_PACKAGES": "libpq5;reboot"}, ["GAZELLE_DOCKER_APT_PACKAGES", "libpq5;reboot"]),
])
def test_bad_docker_settings_name_the_variable(env: dict[str, str], words: list[str]) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env)
    for word in words:
        assert word in str(caught.value)
