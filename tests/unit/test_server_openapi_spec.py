"""The build server's OpenAPI document validates against the OpenAPI 3 specification."""
from __future__ import annotations

from openapi_spec_validator import validate

from gazelle.server.openapi import document


def test_openapi_document_is_valid_openapi_3() -> None:
    spec = document("http://127.0.0.1:8000")
    validate(spec)   # raises on any violation of the OpenAPI 3 schema
    assert spec["openapi"].startswith("3.")
    # Paths are relative to the server URL, which carries the /api/v1 prefix.
    assert spec["servers"] == [{"url": "http://127.0.0.1:8000/api/v1"}]
    assert "/models/{name}/versions" in spec["paths"]
