"""The front (real nginx in front of a real gazelle server, loopback): live predictions go from nginx
to the runtime without a gunicorn worker, a new version answers the first request after its deploy,
refused or missing tokens get the gateway's own answers, a revoked token is refused within the
front's auth cache bound, and a runtime that swaps its socket for a link is not followed."""
from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from gazelle.server.front import AUTH_CACHE_SECONDS, RESYNC_SECONDS
from tests.integration._server import (ServerProcess, bundle, doubled_lengths, kill_runtimes, lengths,
                                       require_nginx, start_server, wait_for)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    require_nginx()
    s = start_server(tmp_path_factory.mktemp("front") / "data", env={"GAZELLE_FRONT": "nginx"})
    assert s.front == "nginx", s.log_text()[-2000:]
    try:
        yield s
    finally:
        s.terminate()
        kill_runtimes(s.data_dir)


def _gateway_requests(server: ServerProcess) -> float:
    """How many requests the server's gunicorn workers answered on the gateway's routes."""
    text = httpx.get(f"{server.url}/metrics", trust_env=False).text
    found = re.findall(r'^gazelle_server_requests_total\{[^}]*route="/m/[^"]*"[^}]*\} (\S+)$', text, re.M)
    return sum(float(v) for v in found)


def test_predictions_skip_gunicorn_and_callers_without_a_good_token_get_the_gateway(server: ServerProcess) -> None:
    assert server.deploy("direct", bundle(lengths, "direct"))["status"] == "succeeded"
    before = _gateway_requests(server)
    with server.client() as c:
        for i in range(20):
            answer = c.post("/m/direct/predict", json={"instances": ["x" * i]})
            assert answer.status_code == 200 and answer.json()["predictions"] == [i], answer.text
            assert answer.headers["x-request-id"]
    assert _gateway_requests(server) == before, "the predictions went through a gunicorn worker"

    anonymous = httpx.post(f"{server.url}/m/direct/predict", json={"instances": ["a"]}, trust_env=False)
    assert anonymous.status_code == 401 and anonymous.json()["error"]["type"] == "unauthorized"
    wrong = server.predict("/m/direct/predict", ["a"], token="gz_not-a-token")
    assert wrong.status_code == 401 and wrong.json()["error"]["message"] == "unknown token"
    page = httpx.get(f"{server.url}/m/direct/", headers={"Accept": "text/html"}, trust_env=False)
    assert page.status_code == 401 and "<form" in page.text
    assert _gateway_requests(server) > before


def test_a_new_version_answers_the_first_request_after_its_deploy(server: ServerProcess) -> None:
    assert server.deploy("switch", bundle(lengths, "switch"), public=True)["status"] == "succeeded"
    assert server.predict("/m/switch/predict", ["abc"]).json()["predictions"] == [3]
    assert server.deploy("switch", bundle(doubled_lengths, "switch"), public=True)["status"] == "succeeded"
    answer = httpx.post(f"{server.url}/m/switch/predict", json={"instances": ["abc"]}, trust_env=False)
    assert answer.status_code == 200 and answer.json()["predictions"] == [6], answer.text


def test_a_revoked_token_is_refused_within_the_auth_cache_bound(server: ServerProcess) -> None:
    assert server.deploy("guarded", bundle(lengths, "guarded"))["status"] == "succeeded"
    with server.client() as admin:
        made = admin.post("/api/v1/tokens", json={"scope": "predict", "name": "short-lived"}).json()
    assert server.predict("/m/guarded/predict", ["ab"], token=made["token"]).json()["predictions"] == [2]
    with server.client() as admin:
        assert admin.delete(f"/api/v1/tokens/{made['id']}").status_code == 200
    wait_for(lambda: server.predict("/m/guarded/predict", ["ab"], token=made["token"]).status_code == 401,
             "the front to refuse the revoked token", timeout=AUTH_CACHE_SECONDS + 5)


def test_a_runtime_that_swaps_its_socket_for_a_link_is_not_followed(server: ServerProcess) -> None:
    for name, model in (("victim", lengths), ("elsewhere", doubled_lengths)):
        assert server.deploy(name, bundle(model, name), public=True)["status"] == "succeeded"
    victim = _socket(server.data_dir, "victim")
    moved = victim.with_name("moved.sock")
    os.rename(victim, moved)
    os.symlink(_socket(server.data_dir, "elsewhere"), victim)   # what a hostile model could do
    try:
        time.sleep(RESYNC_SECONDS * 2.5)   # every worker has re-read the routes
        answer = httpx.post(f"{server.url}/m/victim/predict", json={"instances": ["abc"]}, trust_env=False)
        assert answer.status_code == 502, answer.text   # not [6]: the other model's answer
        assert answer.json()["error"]["type"] == "upstream_unavailable"
    finally:
        victim.unlink()
        os.rename(moved, victim)
    wait_for(lambda: server.predict("/m/victim/predict", ["abc"]).status_code == 200, "victim to answer again")


def _socket(data_dir: Path, name: str) -> Path:
    [record] = (data_dir / "run").glob(f"{name}-v*.json")
    return Path(json.loads(record.read_text())["socket"])
