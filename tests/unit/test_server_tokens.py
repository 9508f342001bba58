"""Token lifecycle over the API: list, revoke, and how fast a revoked token stops working."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from gazelle.server import auth
from gazelle.server.app import create_app
from gazelle.server.settings import Settings
from tests.unit._server import Server, server, start  # noqa: F401  (fixture)


def _create(s: Server, scope: str, name: str | None = None) -> dict[str, object]:
    body: dict[str, object] = {"scope": scope}
    if name is not None:
        body["name"] = name
    answer = s.client.post("/api/v1/tokens", json=body, headers=s.headers())
    assert answer.status_code == 201, answer.get_json()
    return answer.get_json()  # type: ignore[no-any-return]


def test_token_list_shows_id_name_scope_and_times_never_secrets(server: Server) -> None:
    made = _create(server, "deploy", "ci")
    server.get("/api/v1/models", token=str(made["token"]))
    answer = server.get("/api/v1/tokens")
    assert answer.status_code == 200
    listed = {t["name"]: t for t in answer.get_json()["tokens"]}
    # The gateway's own token for private runtimes is listed too (predict scope, its hash only).
    assert set(listed) == {"admin (token file)", "gateway (server processes)", "ci"}
    assert listed["gateway (server processes)"]["scope"] == "predict"
    ci = listed["ci"]
    assert ci["id"] == made["id"] and ci["scope"] == "deploy" and ci["created"] == made["created"]
    assert ci["last_used"] is not None
    assert set(ci) == {"id", "name", "scope", "created", "last_used"}
    text = answer.get_data(as_text=True)
    assert str(made["token"]) not in text and server.token not in text
    assert auth.hash_token(str(made["token"])) not in text


def test_listing_and_revoking_tokens_needs_admin(server: Server) -> None:
    deploy = str(_create(server, "deploy")["token"])
    assert server.get("/api/v1/tokens", token=deploy).status_code == 403
    other = _create(server, "predict")
    answer = server.client.delete(f"/api/v1/tokens/{other['id']}", headers=server.headers(deploy))
    assert answer.status_code == 403


def test_a_revoked_token_is_refused_at_once_by_the_revoking_process(server: Server) -> None:
    made = _create(server, "deploy", "leaked")
    token = str(made["token"])
    assert server.get("/api/v1/models", token=token).status_code == 200   # now cached
    answer = server.client.delete(f"/api/v1/tokens/{made['id']}", headers=server.headers())
    assert answer.status_code == 200 and answer.get_json()["revoked"]["name"] == "leaked"
    refused = server.get("/api/v1/models", token=token)
    assert refused.status_code == 401 and refused.get_json()["error"]["message"] == "unknown token"
    assert "leaked" not in {t["name"] for t in server.get("/api/v1/tokens").get_json()["tokens"]}
    again = server.client.delete(f"/api/v1/tokens/{made['id']}", headers=server.headers())
    assert again.status_code == 404 and f"token {made['id']}" in again.get_json()["error"]["message"]


def test_a_revoked_token_stops_working_in_another_process_within_the_cache_bound(tmp_path: Path) -> None:
    """Two apps on one database stand for two server processes; the second one's clock is stepped."""
    first = start(tmp_path)
    second_app = create_app(Settings(data_dir=first.data_dir, run_jobs=False))
    second = Server(second_app, second_app.test_client(), first.token, first.data_dir)
    try:
        made = _create(first, "predict")
        token = str(made["token"])
        now = 1000.0
        second.state.auth.clock = lambda: now
        assert second.get("/api/v1/models", token=token).status_code == 200   # cached in the second
        assert first.client.delete(f"/api/v1/tokens/{made['id']}", headers=first.headers()).status_code == 200
        second.state.auth.clock = lambda: now + auth.CACHE_SECONDS - 0.5
        assert second.get("/api/v1/models", token=token).status_code == 200   # still cached: the bound
        second.state.auth.clock = lambda: now + auth.CACHE_SECONDS + 0.01
        assert second.get("/api/v1/models", token=token).status_code == 401
        assert auth.CACHE_SECONDS <= 5.0
    finally:
        second.state.shutdown()
        first.state.shutdown()


def test_revoking_the_token_files_token_writes_a_new_one_at_the_next_start(tmp_path: Path) -> None:
    first = start(tmp_path)
    listed = first.get("/api/v1/tokens").get_json()["tokens"]
    (own,) = [t for t in listed if t["name"] == "admin (token file)"]
    assert first.client.delete(f"/api/v1/tokens/{own['id']}", headers=first.headers()).status_code == 200
    first.state.shutdown()
    second = start(tmp_path)
    try:
        assert second.token != first.token
        assert second.get("/api/v1/models").status_code == 200
        assert second.get("/api/v1/models", token=first.token).status_code == 401
    finally:
        second.state.shutdown()


def test_a_database_from_before_revocation_gains_the_new_columns(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with sqlite3.connect(data_dir / "gazelle.db") as db:
        db.execute("CREATE TABLE tokens (id INTEGER PRIMARY KEY AUTOINCREMENT, name VARCHAR(200) NOT NULL, "
                   "scope VARCHAR(16) NOT NULL, hash VARCHAR(64) NOT NULL UNIQUE, created FLOAT NOT NULL)")
    s = start(tmp_path)
    try:
        assert [t["scope"] for t in s.get("/api/v1/tokens").get_json()["tokens"]] == ["admin", "predict"]   # and the gateway's own
    finally:
        s.state.shutdown()


@pytest.mark.parametrize("token_id, status", [("99999", 404), ("0", 400), ("abc", 400),
                                              ("99999999999999999999999", 400)])
def test_revoking_a_missing_or_malformed_id_answers_4xx_naming_it(server: Server, token_id: str,
                                                                   status: int) -> None:
    answer = server.client.delete(f"/api/v1/tokens/{token_id}", headers=server.headers())
    assert answer.status_code == status
    message = answer.get_json()["error"]["message"]
    assert message.startswith("id:") or token_id in message


def test_gazelle_admin_token_is_an_admin_token_on_every_server_sharing_the_store(tmp_path: Path) -> None:
    given = "gz_" + "s3cr3t" * 6
    apps = [create_app(Settings(data_dir=tmp_path / name, database_url=f"sqlite:///{tmp_path / 'shared.db'}",
                                admin_token=given, run_jobs=False)) for name in ("a", "b")]
    try:
        for app in apps:
            reply = app.test_client().get("/api/v1/tokens", headers={"Authorization": f"Bearer {given}"})
            assert reply.status_code == 200
        names = [t["name"] for t in reply.get_json()["tokens"]]
        assert names.count("admin (GAZELLE_ADMIN_TOKEN)") == 1
        # no server made an admin token of its own beside it
        assert "admin (token file)" not in names
        assert not any((tmp_path / name / "token").exists() for name in ("a", "b"))
        assert given not in repr(apps[0].extensions["gazelle"].settings)
    finally:
        for app in apps:
            app.extensions["gazelle"].shutdown()
