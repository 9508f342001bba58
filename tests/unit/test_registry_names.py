"""Registry names, redaction, keychains read from docker's config.json, and the append builder's choice
of a base image: everything about the registry that needs no registry."""
from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from gazelle.errors import ConfigError
from gazelle.server.builders.append import AppendBuilder
from gazelle.server.imagecmd import repository_for
from gazelle.server.registry import image_tag, open_registry
from gazelle.server.registry.client import RegistryClient, redact
from gazelle.server.registry.keychain import ChainKeychain, DockerConfigKeychain, StaticKeychain, default_keychain
from gazelle.server.registry.push import ImageName


@pytest.mark.parametrize("text, expected", [
    ("python:3.11-slim", ("registry-1.docker.io", "library/python", "3.11-slim")),
    ("bitnami/python", ("registry-1.docker.io", "bitnami/python", "latest")),
    ("127.0.0.1:5000/gazelle/python:3.11", ("127.0.0.1:5000", "gazelle/python", "3.11")),
    ("localhost/x/y", ("localhost", "x/y", "latest")),
    ("ghcr.io/o/p@sha256:" + "a" * 64, ("ghcr.io", "o/p", "sha256:" + "a" * 64)),
])
def test_image_names_follow_dockers_rules(text: str, expected: tuple[str, str, str]) -> None:
    name = ImageName.parse(text)
    assert (name.registry, name.repository, name.reference) == expected


def test_redacted_urls_keep_no_user_info_and_no_query_values() -> None:
    url = "http://robot:hunter2@127.0.0.1:5000/v2/a/blobs/uploads/x?_state=SIGNED&digest=sha256:1"
    assert redact(url) == "http://127.0.0.1:5000/v2/a/blobs/uploads/x?_state=***&digest=***"


def test_loopback_and_insecure_hosts_use_http_every_other_host_https() -> None:
    client = RegistryClient(StaticKeychain(None, "u", "p"), insecure=["reg.lan:5000"])
    try:
        assert client.base_url("127.0.0.1:5000") == "http://127.0.0.1:5000"
        assert client.base_url("localhost") == "http://localhost"
        assert client.base_url("[::1]:5000") == "http://[::1]:5000"
        assert client.base_url("reg.lan:5000") == "http://reg.lan:5000"
        assert client.base_url("reg.lan:6000") == "https://reg.lan:6000"
        assert client.base_url("ghcr.io") == "https://ghcr.io"
    finally:
        client.close()


def test_insecure_registries_are_a_comma_list_setting() -> None:
    from gazelle.server.settings import Settings

    settings = Settings.from_env({"GAZELLE_REGISTRY_INSECURE": "reg.lan:5000, ,other.lan"})
    assert settings.registry_insecure == ("reg.lan:5000", "other.lan")


def test_tags_follow_the_version_and_unix_time() -> None:
    assert image_tag(3, 1700000000) == "v3-1700000000"


def test_registry_option_gives_the_models_repository_or_names_the_option() -> None:
    assert repository_for("127.0.0.1:5000/gazelle", "accounts") == "127.0.0.1:5000/gazelle/accounts"
    assert repository_for("ghcr.io/team/models/", "accounts") == "ghcr.io/team/models/accounts"
    with pytest.raises(ConfigError, match="--registry must look like HOST"):
        repository_for("ghcr.io/Team Models", "accounts")


def _config(tmp_path: Path, value: dict[str, object]) -> DockerConfigKeychain:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(value))
    return DockerConfigKeychain(path)


def test_docker_config_auths_give_basic_credentials_per_host(tmp_path: Path) -> None:
    auth = base64.b64encode(b"robot:pa:ss").decode()
    keychain = _config(tmp_path, {"auths": {"https://reg.example:5000/v1/": {"auth": auth}}})
    found = keychain.credentials("reg.example:5000")
    assert found is not None and (found.username, found.password) == ("robot", "pa:ss")
    assert keychain.credentials("other.example") is None
    assert "pa:ss" not in repr(found)


def test_docker_hub_credentials_are_found_under_any_of_its_names(tmp_path: Path) -> None:
    keychain = _config(tmp_path, {"auths": {"https://index.docker.io/v1/": {"identitytoken": "tok"}}})
    for host in ("registry-1.docker.io", "docker.io", "index.docker.io"):
        found = keychain.credentials(host)
        assert found is not None and found.identity_token == "tok"


def test_a_missing_or_broken_config_means_anonymous(tmp_path: Path) -> None:
    assert DockerConfigKeychain(tmp_path / "absent.json").credentials("ghcr.io") is None
    (tmp_path / "bad.json").write_text("{not json")
    assert DockerConfigKeychain(tmp_path / "bad.json").credentials("ghcr.io") is None


def test_settings_credentials_apply_to_the_configured_registry_only_after_docker_config(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"auths": {"a.example": {"username": "d", "password": "x"}}}))
    keychain = default_keychain("b.example:5001/models", "settings-user", "settings-password")
    assert isinstance(keychain, ChainKeychain)
    found_a, found_b = keychain.credentials("a.example"), keychain.credentials("b.example:5001")
    assert found_a is not None and found_a.username == "d"
    assert found_b is not None and found_b.username == "settings-user"
    assert keychain.credentials("c.example") is None


def test_open_registry_does_no_io(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "nowhere"))
    open_registry("127.0.0.1:1/x", "u", "p").close()
    assert list(tmp_path.iterdir()) == []


def test_a_python_without_a_configured_base_names_the_python_and_the_setting(tmp_path: Path) -> None:
    builder = AppendBuilder(open_registry(None, None, None), {"3.11": "127.0.0.1:5000/gazelle/python:3.11"},
                            tmp_path)
    with pytest.raises(ConfigError, match=r"no base image for python 3\.9 in GAZELLE_BASE_IMAGES"):
        builder.build(tmp_path / "b.tar", {"name": "m", "python": "3.9.18", "requirements": []}, print)
    assert builder.base_for("3.11") == "127.0.0.1:5000/gazelle/python:3.11"
    assert AppendBuilder(builder.registry, {}, tmp_path).base_for("3.12") == "python:3.12-slim"
    builder.close()


def test_credentials_are_never_sent_to_a_token_service_over_plain_http() -> None:
    """A fake registry (an ``httpx.MockTransport``): a remote host whose challenge names an http realm
    cannot run on this loopback-only machine."""
    import httpx

    from gazelle.errors import RegistryError

    asked: list[str] = []

    def registry(request: httpx.Request) -> httpx.Response:
        asked.append(str(request.url))
        return httpx.Response(401, headers={"WWW-Authenticate": 'Bearer realm="http://auth.example/token",service="r"'})

    client = RegistryClient(StaticKeychain(None, "robot", "s3cret"), transport=httpx.MockTransport(registry))
    try:
        with pytest.raises(RegistryError, match="registry reg.example sends its clients to a token service over "
                                                "plain http") as raised:
            client.tags("reg.example", "team/model")
    finally:
        client.close()
    assert asked == ["https://reg.example/v2/team/model/tags/list"]
    assert "s3cret" not in f"{raised.value} {raised.value.url}"


def test_the_append_builder_needs_a_registry_and_is_wired_without_io(tmp_path: Path) -> None:
    from gazelle.server import wiring
    from gazelle.server.settings import Settings

    with pytest.raises(ConfigError, match="set GAZELLE_REGISTRY"):
        wiring.append_builder(Settings(data_dir=tmp_path))
    builder, publish = wiring.append_builder(Settings(data_dir=tmp_path, registry="127.0.0.1:5000/models",
                                                      base_images={"3.11": "127.0.0.1:5000/gazelle/python:3.11"}))
    assert builder.cache_dir == tmp_path / "cache" and callable(publish)
    assert list(tmp_path.iterdir()) == [], "wiring must do no I/O"
    builder.close()
