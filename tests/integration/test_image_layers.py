"""Layers and credentials across processes: a layer's digest does not depend on the process that wrote
it, the runtime layer holds gazelle's runtime and nothing of client or server, and docker credential
helpers are run as docker runs them (a real executable on PATH)."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from gazelle.server import oci
from gazelle.server.builders.append import RUNTIME, runtime_files, runtime_layer
from gazelle.server.registry.keychain import DockerConfigKeychain

REPO = Path(__file__).parents[2]


def test_the_same_files_give_the_same_digests_in_another_process(tmp_path: Path) -> None:
    (tmp_path / "tree" / "pkg").mkdir(parents=True)
    (tmp_path / "tree" / "pkg" / "mod.py").write_text("x = 1\n")
    (tmp_path / "tree" / "top.txt").write_text("top\n")
    script = ("import sys; from pathlib import Path; from gazelle.server import oci; "
              "l = oci.layer_from_tree(Path(sys.argv[1]), '/opt/tree'); print(l.digest, l.diff_id)")
    here = oci.layer_from_tree(tmp_path / "tree", "/opt/tree")
    other = subprocess.run([sys.executable, "-c", script, str(tmp_path / "tree")], capture_output=True,
                           text=True, check=True, cwd=REPO).stdout.split()
    assert other == [here.digest, here.diff_id]


def test_runtime_layer_holds_the_runtime_and_nothing_of_client_or_server() -> None:
    root = Path(oci.__file__).resolve().parents[1]
    names = {p.relative_to(root).as_posix() for p in runtime_files()}
    assert {"__init__.py", "cli.py", "errors.py", "bundle.py", "envspec.py", "runtime/serve.py",
            "runtime/app.py", "runtime/templates/tryit.html"} <= names
    assert not [n for n in names if n.startswith(("client/", "server/"))]
    members = {m for m in _tar_names(runtime_layer())}
    assert f"{RUNTIME.strip('/')}/gazelle/runtime/__main__.py" in members


def _tar_names(layer: oci.Layer) -> list[str]:
    import gzip
    import io
    import tarfile

    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(layer.read()))) as tar:
        return tar.getnames()


def _helper(directory: Path, name: str, answer: dict[str, str] | None) -> None:
    """A docker-credential-<name> that prints ``answer`` for the server it reads on stdin (or fails)."""
    script = directory / f"docker-credential-{name}"
    body = (f"#!{sys.executable}\nimport json, sys\nserver = sys.stdin.read().strip()\n"
            f"answer = {answer!r}\n"
            "if answer is None: sys.exit(1)\nprint(json.dumps({**answer, 'ServerURL': server}))\n")
    script.write_text(body)
    script.chmod(script.stat().st_mode | stat.S_IXUSR)


def test_cred_helpers_answer_for_their_host_and_creds_store_for_the_others(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _helper(tmp_path, "gz-one", {"Username": "robot", "Secret": "s3cret"})
    _helper(tmp_path, "gz-store", {"Username": "<token>", "Secret": "refresh-me"})
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"credHelpers": {"registry.example:5000": "gz-one"}, "credsStore": "gz-store"}))
    keychain = DockerConfigKeychain(config)
    one = keychain.credentials("registry.example:5000")
    assert one is not None and (one.username, one.password) == ("robot", "s3cret")
    other = keychain.credentials("ghcr.io")
    assert other is not None and other.identity_token == "refresh-me" and not other.password
    assert "s3cret" not in repr(one) and "refresh-me" not in repr(other)


def test_a_failing_cred_helper_means_no_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _helper(tmp_path, "gz-broken", None)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"credHelpers": {"ghcr.io": "gz-broken"}}))
    assert DockerConfigKeychain(config).credentials("ghcr.io") is None
