"""The OpenAPI document of /api/v1 covers every route of the API blueprint (its validity against the
OpenAPI 3 specification is checked in tests/integration/test_server_openapi.py)."""
from __future__ import annotations

import re

from tests.unit._server import Server, server  # noqa: F401  (fixture)


def test_openapi_document_is_served_without_a_token(server: Server) -> None:
    answer = server.client.get("/api/v1/openapi.json")
    assert answer.status_code == 200
    document = answer.get_json()
    assert document["openapi"].startswith("3.")
    assert document["servers"][0]["url"] == "http://127.0.0.1:8000/api/v1"


def test_openapi_document_lists_every_api_route(server: Server) -> None:
    document = server.client.get("/api/v1/openapi.json").get_json()
    documented = {(path, method.upper()) for path, ops in document["paths"].items() for method in ops}
    routed = set()
    for rule in server.app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1/"):
            continue
        path = re.sub(r"<(?:\w+:)?(\w+)>", lambda m: "{" + ("id" if m.group(1) in ("job_id", "token_id") else m.group(1)) + "}",
                      rule.rule[len("/api/v1"):])
        routed |= {(path, m) for m in rule.methods or () if m not in ("HEAD", "OPTIONS")}
    assert routed == documented
