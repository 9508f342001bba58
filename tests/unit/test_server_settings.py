"""Settings from GAZELLE_* variables and CLI flags; wiring from settings."""
from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from gazelle.errors import ConfigError
from gazelle.server import wiring
from gazelle.server.settings import Settings


def test_defaults_bind_loopback_and_keep_state_in_the_home_directory() -> None:
    s = Settings.from_env({})
    assert (s.host, s.port, s.workers, s.target) == ("127.0.0.1", 8000, 1, "local")
    assert s.data_dir == Path("~/.gazelle").expanduser()
    assert s.db_url == f"sqlite:///{s.data_dir / 'gazelle.db'}"
    assert s.base_url == "http://127.0.0.1:8000"


def test_environment_variables_set_every_option() -> None:
    s = Settings.from_env({
        "GAZELLE_HOST": "0.0.0.0", "GAZELLE_PORT": "9000", "GAZELLE_DATA_DIR": "/srv/gazelle",
        "GAZELLE_WORKERS": "3", "GAZELLE_DATABASE_URL": "postgresql://g:pw@db:5432/g",
        "GAZELLE_BASE_IMAGES": '{"3.11": "python:3.11-slim"}', "GAZELLE_PUBLIC_URL": "https://ml.example.com/",
        "GAZELLE_MAX_BUNDLE_BYTES": "4096", "GAZELLE_TEST_STAGE_DELAY": "build=2,slow:deploy=0.5",
    })
    assert (s.host, s.port, s.workers, s.data_dir) == ("0.0.0.0", 9000, 3, Path("/srv/gazelle"))
    assert s.db_url == "postgresql+psycopg://g:pw@db:5432/g"
    assert s.base_images == {"3.11": "python:3.11-slim"}
    assert s.base_url == "https://ml.example.com"
    assert s.max_bundle_bytes == 4096
    assert s.stage_delay == {"build": 2.0, "slow:deploy": 0.5}


def test_cli_flags_win_over_the_environment() -> None:
    args = argparse.Namespace(host=None, port=8123, data_dir="/tmp/x", workers=None, target=None, builder=None,
                              registry=None)
    s = Settings.from_args(args, env={"GAZELLE_PORT": "9000", "GAZELLE_WORKERS": "2"})
    assert (s.port, s.workers, s.data_dir) == (8123, 2, Path("/tmp/x"))
    assert s.base_url == "http://127.0.0.1:8123"


@pytest.mark.parametrize("env, words", [
    ({"GAZELLE_PORT": "eighty"}, ["GAZELLE_PORT", "integer", "'eighty'"]),
    ({"GAZELLE_TARGET": "mainframe"}, ["mainframe", "local, docker, kubernetes"]),
    ({"GAZELLE_BUILDER": "kaniko"}, ["kaniko", "venv, append, docker"]),
    ({"GAZELLE_BASE_IMAGES": "[1]"}, ["GAZELLE_BASE_IMAGES"]),
    ({"GAZELLE_WORKERS": "0"}, ["workers"]),
    ({"GAZELLE_RUN_JOBS": "perhaps"}, ["GAZELLE_RUN_JOBS", "true or false"]),
    ({"GAZELLE_FRONT": "caddy"}, ["GAZELLE_FRONT", "'caddy'", "auto, nginx, off"]),
])
def test_bad_values_raise_config_error_naming_the_variable_and_choices(env: dict[str, str],
                                                                        words: list[str]) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env)
    for word in words:
        assert word in str(caught.value)


def test_repr_hides_passwords() -> None:
    s = Settings(registry_password="hunter2", database_url="postgresql://gazelle:s3cret@db/g")
    text = repr(s)
    assert "hunter2" not in text and "s3cret" not in text
    assert "postgresql+psycopg://***@db/g" in text and "registry_password='***'" in text


def test_local_target_is_wired_to_the_venv_builder(tmp_path: Path) -> None:
    from gazelle.server.builders.venv import VenvBuilder
    from gazelle.server.targets.local import LocalTarget

    wired = wiring.build(Settings(data_dir=tmp_path))
    assert isinstance(wired.builder, VenvBuilder) and isinstance(wired.target, LocalTarget)
    assert wired.publish is None
    assert list(tmp_path.iterdir()) == [], "wiring must do no I/O"


def test_impossible_pairings_and_unavailable_targets_name_the_valid_choices(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="valid builders for it: venv"):
        wiring.build(Settings(data_dir=tmp_path, builder="docker"))
    with pytest.raises(ConfigError, match="set GAZELLE_REGISTRY"):
        wiring.build(Settings(data_dir=tmp_path, target="kubernetes"))


def test_kubernetes_target_is_wired_from_the_k8s_settings_without_io(tmp_path: Path) -> None:
    from gazelle.server.builders.append import AppendBuilder
    from gazelle.server.targets.kubernetes import KubernetesTarget

    settings = Settings.from_env({"GAZELLE_TARGET": "kubernetes", "GAZELLE_REGISTRY": "127.0.0.1:5000/models",
                                  "GAZELLE_K8S_NAMESPACE": "models", "GAZELLE_K8S_HOST_NETWORK": "true",
                                  "GAZELLE_K8S_KEEP_VERSIONS": "5", "GAZELLE_K8S_IMAGE_PULL_SECRETS": "regcred",
                                  "GAZELLE_K8S_INGRESS_HOST": "{name}.models.example.com",
                                  "GAZELLE_K8S_INGRESS_TLS_SECRET": "models-tls",
                                  "GAZELLE_K8S_STARTUP_SECONDS": "45", "GAZELLE_K8S_GATEWAY": "service"},
                                 data_dir=tmp_path)
    wired = wiring.build(settings)
    assert isinstance(wired.builder, AppendBuilder) and isinstance(wired.target, KubernetesTarget)
    assert wired.publish is not None
    options = wired.target.options
    assert (options.namespace, options.host_network, options.image_pull_secrets) == ("models", True, ("regcred",))
    assert options.ingress_host == "{name}.models.example.com" and wired.target.keep_versions == 5
    assert options.ingress_tls_secret == "models-tls"
    assert options.startup_seconds == 45 and options.gateway == "service"
    # the version's Service, no EndpointSlice watch (nor any other I/O)
    assert wired.target.addresses("accounts", 3) == ["http://gazelle-accounts-v3.models.svc:80"]
    assert wired.addresses == wired.target.addresses, "the gateway asks the target's EndpointSlice watch"
    assert list(tmp_path.iterdir()) == [], "wiring must do no I/O"


@pytest.mark.parametrize("variable, value, message", [
    ("GAZELLE_K8S_HOST_NETWORK", "maybe", "GAZELLE_K8S_HOST_NETWORK must be true or false"),
    ("GAZELLE_K8S_KEEP_VERSIONS", "-1", "GAZELLE_K8S_KEEP_VERSIONS must be 0 or more"),
    ("GAZELLE_K8S_STARTUP_SECONDS", "0", "GAZELLE_K8S_STARTUP_SECONDS must be 1 or more"),
    ("GAZELLE_K8S_GATEWAY", "ingress", "GAZELLE_K8S_GATEWAY must be one of endpoints, service"),
    ("GAZELLE_K8S_INGRESS_HOST", "models.example.com", "GAZELLE_K8S_INGRESS_HOST must contain {name}"),
    ("GAZELLE_K8S_INGRESS_HOST", "https://{name}.models.example.com", "GAZELLE_K8S_INGRESS_HOST must contain"),
    ("GAZELLE_K8S_INGRESS_TLS_SECRET", "models-tls", "GAZELLE_K8S_INGRESS_TLS_SECRET is the certificate"),
    ("GAZELLE_K8S_INGRESS_TLS_SECRET", "a,b", "GAZELLE_K8S_INGRESS_TLS_SECRET names one object"),
    ("GAZELLE_K8S_ENV_SECRETS", "ok,Not_A_Name", "GAZELLE_K8S_ENV_SECRETS: 'Not_A_Name' is not"),
])
def test_bad_k8s_settings_name_the_variable(variable: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({variable: value})
    assert str(refused.value).startswith(message)
