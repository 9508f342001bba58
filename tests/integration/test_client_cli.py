"""The ``gazelle`` CLI's client commands, run as a person would (a subprocess), against a real server;
and ``rollback``/``delete`` from Python."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

import gazelle
from gazelle.errors import NotFound
from tests.integration._client import client_env, connected, server  # noqa: F401

pytestmark = pytest.mark.integration


def lengths(rows):
    return [len(r) for r in rows]


def doubled(rows):
    return [2 * len(r) for r in rows]


def gazelle_cli(server, *args, ok=True):
    done = subprocess.run([sys.executable, "-m", "gazelle.cli", *args], env=client_env(server),
                          capture_output=True, text=True, timeout=300)
    if ok:
        assert done.returncode == 0, done.stderr
    return done


def test_cli_deploys_a_saved_bundle_and_predicts_through_the_gateway(server, tmp_path):
    bundle = gazelle.save(lengths, tmp_path / "lengths.tar", name="cli-lengths", sample=["a", "bb"])
    done = gazelle_cli(server, "deploy", str(bundle))
    lines = done.stdout.splitlines()
    assert "[sanity] done in" in done.stdout
    assert f"live: {server.url}/m/cli-lengths (version 1)" in lines
    assert f"try it: {server.url}/m/cli-lengths/" in lines
    assert '"$GAZELLE_TOKEN" | curl -X POST' in done.stdout and "-H @-" in done.stdout   # the token on stdin
    assert server.token not in done.stdout + done.stderr

    answer = json.loads(gazelle_cli(server, "predict", "cli-lengths", '{"instances": ["abc", ""]}').stdout)
    assert answer["predictions"] == [3, 0] and answer["version"] == 1

    (tmp_path / "body.json").write_text('{"instances": ["abcd"]}')
    assert json.loads(gazelle_cli(server, "predict", "cli-lengths", f"@{tmp_path / 'body.json'}").stdout
                      )["predictions"] == [4]

    assert "cli-lengths" in gazelle_cli(server, "list").stdout
    assert gazelle_cli(server, "logs", "cli-lengths").stdout.strip()


def test_cli_schema_error_is_one_line_naming_the_field(server, tmp_path):
    gazelle.save(lengths, tmp_path / "b.tar", name="cli-schema", sample=["a"])
    gazelle_cli(server, "deploy", str(tmp_path / "b.tar"))
    done = gazelle_cli(server, "predict", "cli-schema", '{"instances": ["ok", 5]}', ok=False)
    assert done.returncode == 1
    assert done.stderr.startswith("gazelle: instances[1]: expected a string, got 5")
    assert len(done.stderr.strip().splitlines()) == 1


def test_cli_without_a_server_says_how_to_start_one(tmp_path):
    from gazelle.client.localserver import free_port

    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "GAZELLE_SERVER": f"http://127.0.0.1:{free_port()}"}
    done = subprocess.run([sys.executable, "-m", "gazelle.cli", "list"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 1
    assert done.stderr.startswith(f"gazelle: no Gazelle server at {env['GAZELLE_SERVER']}")


def test_rollback_serves_the_earlier_version_and_delete_removes_the_model(connected, tmp_path):
    first = gazelle.deploy(lengths, "flip", sample=["ab"])
    second = gazelle.deploy(doubled, "flip", sample=["ab"])
    assert (first.version, second.version) == (1, 2)
    assert second.predict(["abc"]).tolist() == [6]

    back = gazelle.rollback("flip", 1)
    assert back.version == 1 and back.predict(["abc"]).tolist() == [3]
    status = gazelle_cli(connected, "status", "flip").stdout
    assert "live:    1" in status

    assert "flip: version 2 is live" in gazelle_cli(connected, "rollback", "flip", "2").stdout
    assert gazelle.endpoint("flip").predict(["abc"]).tolist() == [6]

    gazelle.delete("flip")
    with pytest.raises(NotFound):
        gazelle.endpoint("flip")
    assert "flip" not in [m["name"] for m in gazelle.list_models()]
