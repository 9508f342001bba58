"""The test wiring reads the test environment's env file (testenv/up.sh writes it) and os.environ."""
from __future__ import annotations

import os

import pytest

from tests import conftest


@pytest.fixture
def env_file(tmp_path, monkeypatch):
    path = tmp_path / "env"
    monkeypatch.setenv("GAZELLE_TESTENV_ENV", str(path))
    for key in [k for k in os.environ if k.startswith("GAZELLE_TEST_")]:
        monkeypatch.delenv(key)
    return path


def test_env_file_export_lines_become_variables(env_file):
    env_file.write_text(
        "# Written by testenv/up.sh\n"
        "export GAZELLE_TEST_REGISTRY=127.0.0.1:5000\n"
        "export GAZELLE_TEST_POSTGRES_URL=postgresql://gazelle:pw@127.0.0.1:55432/gazelle\n"
        "GAZELLE_TEST_KUBECONFIG='/tmp/with space/kubeconfig'\n"
        "export OTHER=ignored\n")
    assert conftest.testenv_vars() == {
        "GAZELLE_TEST_REGISTRY": "127.0.0.1:5000",
        "GAZELLE_TEST_POSTGRES_URL": "postgresql://gazelle:pw@127.0.0.1:55432/gazelle",
        "GAZELLE_TEST_KUBECONFIG": "/tmp/with space/kubeconfig",
    }


def test_os_environ_overrides_env_file(env_file, monkeypatch):
    env_file.write_text("export GAZELLE_TEST_REGISTRY=127.0.0.1:5000\n")
    monkeypatch.setenv("GAZELLE_TEST_REGISTRY", "127.0.0.1:6000")
    assert conftest.testenv_vars()["GAZELLE_TEST_REGISTRY"] == "127.0.0.1:6000"


def test_missing_env_file_gives_no_variables(env_file):
    assert conftest.testenv_vars() == {}


def test_env_file_defaults_to_state_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("GAZELLE_TESTENV_ENV", raising=False)
    monkeypatch.setenv("GAZELLE_TESTENV_DIR", str(tmp_path))
    assert conftest.testenv_file() == tmp_path / "env"


def test_require_fails_instead_of_skipping_in_ci(monkeypatch):
    monkeypatch.setattr(conftest, "IN_CI", True)
    with pytest.raises(pytest.fail.Exception, match="required service missing in CI: x is not running"):
        conftest.require(False, "x is not running")


def test_require_skips_outside_ci(monkeypatch):
    monkeypatch.setattr(conftest, "IN_CI", False)
    with pytest.raises(pytest.skip.Exception, match="x is not running"):
        conftest.require(False, "x is not running")
