"""Which server and token the client uses: argument > configure() > environment > the local server."""
from __future__ import annotations

import pytest

from gazelle.client import config
from gazelle.client.config import Connection, configure, resolve
from gazelle.errors import ConfigError


@pytest.fixture(autouse=True)
def clean(monkeypatch, tmp_path):
    for var in ("GAZELLE_SERVER", "GAZELLE_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("GAZELLE_DATA_DIR", str(tmp_path))
    configure()
    yield tmp_path
    configure()


def test_default_is_the_local_server_with_the_token_it_wrote(clean):
    (clean / "token").write_text("gz_local_admin_token\n")
    conn = resolve()
    assert conn.server == "http://127.0.0.1:8000"
    assert conn.token == "gz_local_admin_token"


def test_no_token_file_means_no_token():
    assert resolve().token is None


def test_environment_beats_the_local_default(monkeypatch, clean):
    (clean / "token").write_text("gz_local")
    monkeypatch.setenv("GAZELLE_SERVER", "https://gazelle.example.com/")
    monkeypatch.setenv("GAZELLE_TOKEN", "gz_from_env")
    conn = resolve()
    assert (conn.server, conn.token) == ("https://gazelle.example.com", "gz_from_env")


def test_configure_beats_environment_and_arguments_beat_configure(monkeypatch):
    monkeypatch.setenv("GAZELLE_SERVER", "http://env.example:8000")
    monkeypatch.setenv("GAZELLE_TOKEN", "gz_env")
    configure("http://configured.example:8000", "gz_configured")
    assert resolve() == Connection("http://configured.example:8000", "gz_configured")
    assert resolve("http://arg.example", "gz_arg") == Connection("http://arg.example", "gz_arg")


def test_local_token_file_is_never_sent_to_another_host(clean):
    (clean / "token").write_text("gz_local_admin")
    assert resolve("https://gazelle.example.com").token is None
    assert resolve("http://localhost:9000").token == "gz_local_admin"
    assert resolve("http://[::1]:9000").token == "gz_local_admin"


def test_data_dir_defaults_to_dot_gazelle_in_home(monkeypatch, tmp_path):
    monkeypatch.delenv("GAZELLE_DATA_DIR")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert config.data_dir() == tmp_path / ".gazelle"


@pytest.mark.parametrize("url", ["127.0.0.1:8000", "ftp://host", "http://", "http://user:pw@host"])
def test_bad_server_url_is_a_config_error(url):
    with pytest.raises(ConfigError) as err:
        resolve(url)
    assert "pw" not in str(err.value)


def test_token_never_appears_in_repr():
    conn = Connection("http://127.0.0.1:8000", "gz_secret_token_value")
    assert "gz_secret_token_value" not in repr(conn)
