"""Tokens: hashed at rest, scoped (admin ⊇ deploy ⊇ predict), never echoed."""
from __future__ import annotations

import logging
import stat
from pathlib import Path

import pytest

from gazelle.errors import Forbidden, Unauthorized
from gazelle.server.auth import hash_token
from gazelle.server.gateway import Route
from tests.unit._server import Server, bundle_bytes, server, start  # noqa: F401  (fixture)


def _token(s: Server, scope: str) -> str:
    answer = s.client.post("/api/v1/tokens", json={"scope": scope, "name": f"a {scope} token"},
                           headers=s.headers())
    assert answer.status_code == 201
    body = answer.get_json()
    assert body["scope"] == scope and body["name"] == f"a {scope} token"
    return str(body["token"])


def test_first_start_writes_an_admin_token_file_readable_only_by_its_owner(server: Server) -> None:
    path = server.data_dir / "token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(server.token) > 30
    assert server.state.store.token_by_hash(hash_token(server.token)).scope == "admin"  # type: ignore[union-attr]


def test_the_database_holds_hashes_never_tokens(server: Server) -> None:
    other = _token(server, "deploy")
    server.state.store.close()
    raw = b"".join(p.read_bytes() for p in server.data_dir.glob("gazelle.db*"))
    assert server.token.encode() not in raw and other.encode() not in raw


def test_a_restart_keeps_the_token_file(tmp_path: Path) -> None:
    first = start(tmp_path)
    first.state.shutdown()
    second = start(tmp_path)
    try:
        assert second.token == first.token
        assert second.get("/api/v1/models").status_code == 200
    finally:
        second.state.shutdown()


def test_a_token_file_unknown_to_a_new_database_is_registered(tmp_path: Path) -> None:
    first = start(tmp_path)
    first.state.shutdown()
    for path in first.data_dir.glob("gazelle.db*"):
        path.unlink()
    second = start(tmp_path)
    try:
        assert second.get("/api/v1/models").status_code == 200
    finally:
        second.state.shutdown()


@pytest.mark.parametrize("header", [None, "", "Bearer", "Basic dXNlcjpwYXNz", "Bearer gz_not-a-real-token-at-all"])
def test_missing_or_unknown_tokens_answer_401_with_a_bearer_challenge(server: Server, header: str | None) -> None:
    headers = {} if header is None else {"Authorization": header}
    answer = server.client.get("/api/v1/models", headers=headers)
    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    error = answer.get_json()["error"]
    assert error["type"] == "unauthorized" and error["message"]
    assert "gz_not-a-real-token-at-all" not in answer.get_data(as_text=True)


def test_a_predict_token_reads_but_cannot_deploy(server: Server) -> None:
    predict = _token(server, "predict")
    assert server.get("/api/v1/models", token=predict).status_code == 200
    answer = server.upload("lens", bundle_bytes("lens"), token=predict)
    assert answer.status_code == 403
    error = answer.get_json()["error"]
    assert error["type"] == "forbidden"
    assert "'deploy'" in error["message"] and "'predict'" in error["message"]
    assert predict not in answer.get_data(as_text=True)


def test_a_deploy_token_deploys_but_cannot_create_tokens(server: Server) -> None:
    deploy = _token(server, "deploy")
    assert server.upload("lens", bundle_bytes("lens"), token=deploy).status_code == 202
    answer = server.client.post("/api/v1/tokens", json={"scope": "predict"}, headers=server.headers(deploy))
    assert answer.status_code == 403 and "'admin'" in answer.get_json()["error"]["message"]


def test_an_unknown_scope_answers_400_listing_the_scopes(server: Server) -> None:
    answer = server.client.post("/api/v1/tokens", json={"scope": "root"}, headers=server.headers())
    assert answer.status_code == 400
    assert "predict, deploy, admin" in answer.get_json()["error"]["message"]


def test_gateway_authorization_lets_public_routes_through_and_checks_private_ones(server: Server) -> None:
    predict = _token(server, "predict")
    authorize = server.state.auth.authorize_predict
    private, public = Route("lens", 1, "http://127.0.0.1:9", False), Route("lens", 1, "http://127.0.0.1:9", True)
    with server.app.test_request_context("/m/lens/predict"):
        authorize(public)
        with pytest.raises(Unauthorized):
            authorize(private)
    with server.app.test_request_context("/m/lens/predict", headers={"Authorization": f"Bearer {predict}"}):
        authorize(private)
    with server.app.test_request_context("/m/lens/predict", headers={"Authorization": "Bearer gz_nope"}):
        with pytest.raises(Unauthorized):
            authorize(private)


def test_scopes_nest_admin_over_deploy_over_predict(server: Server) -> None:
    auth = server.state.auth
    tokens = {scope: auth.create_token(scope)[0] for scope in ("predict", "deploy", "admin")}
    allowed = {("predict", "predict"), ("deploy", "predict"), ("deploy", "deploy"),
               ("admin", "predict"), ("admin", "deploy"), ("admin", "admin")}
    for have, token in tokens.items():
        for need in ("predict", "deploy", "admin"):
            if (have, need) in allowed:
                auth.check(f"Bearer {token}", need, "this call")
            else:
                with pytest.raises(Forbidden):
                    auth.check(f"Bearer {token}", need, "this call")


def test_tokens_never_reach_the_log(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    s = start(tmp_path)
    try:
        made = _token(s, "deploy")
        s.upload("lens", bundle_bytes("lens"), token=made)
        s.client.get("/api/v1/models", headers={"Authorization": "Bearer gz_wrong-token-value-123456789"})
        s.client.get("/api/v1/does-not-exist", headers=s.headers())
    finally:
        s.state.shutdown()
    text = caplog.text + "".join(str(r.args) for r in caplog.records)
    assert caplog.records, "expected some log lines to check"
    for secret in (s.token, made, "gz_wrong-token-value-123456789"):
        assert secret not in text
