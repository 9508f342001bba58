"""Runtimes check tokens themselves: a private model's runtime, reached on its own unix socket
(not through the gateway), answers only a token the server handed it; a revoked token is refused
within ``runtime_access.REFUSED_WITHIN``; a public model answers everyone."""
from __future__ import annotations

import json
import time
from typing import Any, Iterator

import httpx
import pytest

from gazelle.server.runtime_access import REFUSED_WITHIN
from tests.integration._server import ServerProcess, bundle, kill_runtimes, lengths, start_server

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    s = start_server(tmp_path_factory.mktemp("tokens") / "data")
    try:
        yield s
    finally:
        s.terminate()
        kill_runtimes(s.data_dir)


def _socket(server: ServerProcess, name: str, version: int = 1) -> httpx.Client:
    record = json.loads((server.data_dir / "run" / f"{name}-v{version}.json").read_text())
    transport = httpx.HTTPTransport(uds=record["socket"])
    return httpx.Client(transport=transport, base_url="http://runtime", timeout=30, trust_env=False)


def _predict(client: httpx.Client, token: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return client.post("/predict", json={"instances": ["abc"]}, headers=headers)


def _new_token(server: ServerProcess, scope: str = "predict") -> dict[str, Any]:
    with server.client() as c:
        answer = c.post("/api/v1/tokens", json={"scope": scope})
    assert answer.status_code == 201, answer.text
    return answer.json()  # type: ignore[no-any-return]


def _until(check: Any, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_private_runtime_refuses_requests_on_its_own_socket_without_a_valid_token(server: ServerProcess) -> None:
    job = server.deploy("hidden", bundle(lengths, "hidden"))
    assert job["status"] == "succeeded", json.dumps(job, indent=1)
    with _socket(server, "hidden") as runtime:
        for refused in (_predict(runtime, None), _predict(runtime, "gz_not-a-token"),
                        runtime.get("/"), runtime.get("/metadata"),
                        runtime.post("/v2/models/hidden/infer", json={"inputs": [
                            {"name": "input", "shape": [1], "datatype": "BYTES", "data": ["abc"]}]})):
            assert refused.status_code == 401, refused.text
            error = refused.json()["error"]   # v2 paths answer in v2's own shape: the sentence alone
            assert "private" in (error["message"] if isinstance(error, dict) else error)
            assert "gz_not-a-token" not in refused.text
        assert runtime.get("/v2/health/ready").status_code == 200   # probes stay open
        allowed = _predict(runtime, server.token)
        assert allowed.status_code == 200 and allowed.json()["predictions"] == [3]
    # The gateway still checks the token itself, and passes the one it accepted on.
    assert server.predict("/m/hidden/predict", ["abcd"], token="").status_code == 401
    through = server.predict("/m/hidden/predict", ["abcd"])
    assert through.status_code == 200 and through.json()["predictions"] == [4]


def test_new_token_is_accepted_and_revoked_token_refused_by_the_runtime_within_the_bound(
        server: ServerProcess) -> None:
    job = server.deploy("revoked", bundle(lengths, "revoked"))
    assert job["status"] == "succeeded", json.dumps(job, indent=1)
    created = _new_token(server)
    with _socket(server, "revoked") as runtime:
        assert _until(lambda: _predict(runtime, created["token"]).status_code == 200, REFUSED_WITHIN + 5)
        with server.client() as c:
            assert c.delete(f"/api/v1/tokens/{created['id']}").status_code == 200
        revoked_at = time.monotonic()
        assert _until(lambda: _predict(runtime, created["token"]).status_code == 401, REFUSED_WITHIN + 5)
        # Once refused, refused for good (every worker has seen the new file).
        assert all(_predict(runtime, created["token"]).status_code == 401 for _ in range(8))
        assert time.monotonic() - revoked_at < REFUSED_WITHIN + 5
        assert _predict(runtime, server.token).status_code == 200


def test_public_model_answers_on_its_socket_without_a_token(server: ServerProcess) -> None:
    job = server.deploy("open", bundle(lengths, "open"), public=True)
    assert job["status"] == "succeeded", json.dumps(job, indent=1)
    with _socket(server, "open") as runtime:
        answer = _predict(runtime, None)
        assert answer.status_code == 200 and answer.json()["predictions"] == [3]
        assert runtime.get("/").status_code == 200
    assert server.predict("/m/open/predict", ["ab"], token="").status_code == 200
