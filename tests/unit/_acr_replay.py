"""Recorded HTTP exchanges with Azure Container Registry, replayed through an azure-core transport.

No ACR runs on this machine, so the ACR adapter's tests give ``ContainerRegistryClient`` a
``ReplayTransport`` (``transport=``): the SDK's whole pipeline runs (challenge policy, AAD token
exchange, paging, retries, deserialisation), and only the socket layer is replaced. Each request the
SDK sends must be the next recorded one (method, URL with its query, the recorded headers, the form
fields of the oauth2 exchanges); the transport answers with the recorded response, and fails the test
on an unexpected request or, at ``assert_done()``, on recorded requests that never came.

A recording (``tests/unit/recordings/acr/*.json``)::

    {"interactions": [{"request": {"method": "GET", "url": "https://...", "headers": {"Authorization": null},
                                   "form": {...}},
                       "response": {"status": 401, "headers": {...}, "body": {...} | "text"}}]}

A header recorded as null must be absent; one recorded as a string must be sent with that value.

``StaticCredential`` is a fake of Azure AD's credential (AAD cannot run here either): it hands out
one fixed token, the one the recordings' ``/oauth2/exchange`` request carries.
"""
from __future__ import annotations

import io
import json
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests
from azure.core.credentials import AccessToken
from azure.core.pipeline.transport import HttpTransport, RequestsTransportResponse
from azure.core.rest import HttpRequest as RestHttpRequest

RECORDINGS = Path(__file__).parent / "recordings" / "acr"


class UnexpectedRequest(AssertionError):
    """The SDK sent a request the recording does not have next."""


class StaticCredential:
    """A fake Azure AD credential (``azure.core.credentials.TokenCredential``): one fixed token."""

    def __init__(self, token: str, expires_on: int = 1700003600) -> None:
        self.token = token
        self.expires_on = expires_on
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken(self.token, self.expires_on)


def load(name: str) -> list[dict[str, Any]]:
    return list(json.loads((RECORDINGS / name).read_text())["interactions"])


class ReplayTransport(HttpTransport):
    """Serves ``interactions`` in order; see the module docstring."""

    def __init__(self, interactions: list[dict[str, Any]]) -> None:
        self.interactions = list(interactions)
        self.sent: list[tuple[str, str]] = []

    @classmethod
    def of(cls, *names: str) -> "ReplayTransport":
        return cls([i for name in names for i in load(name)])

    def __enter__(self) -> "ReplayTransport":
        return self

    def __exit__(self, *args: Any) -> None:
        pass

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def assert_done(self) -> None:
        left = [f"{i['request']['method']} {i['request']['url']}" for i in self.interactions]
        assert not left, f"recorded requests never sent: {left}"

    def send(self, request: Any, **kwargs: Any) -> Any:
        method, url = request.method, request.url
        self.sent.append((method, url))
        if not self.interactions:
            raise UnexpectedRequest(f"{method} {url}: the recording has no more exchanges")
        recorded = self.interactions[0]
        problems = _mismatches(recorded["request"], request)
        if problems:
            raise UnexpectedRequest(f"{method} {url} is not the recorded next request "
                                    f"{recorded['request']['method']} {recorded['request']['url']}: "
                                    + "; ".join(problems))
        self.interactions.pop(0)
        return _response(request, recorded["response"])


def _mismatches(want: dict[str, Any], request: Any) -> list[str]:
    problems = []
    if request.method != want["method"]:
        problems.append(f"method {request.method} != {want['method']}")
    got, exp = urlsplit(request.url), urlsplit(want["url"])
    if (got.scheme, got.netloc, got.path) != (exp.scheme, exp.netloc, exp.path):
        problems.append(f"URL {got.scheme}://{got.netloc}{got.path} != {exp.scheme}://{exp.netloc}{exp.path}")
    if parse_qs(got.query) != parse_qs(exp.query):
        problems.append(f"query {parse_qs(got.query)} != {parse_qs(exp.query)}")
    headers = {k.lower(): v for k, v in request.headers.items()}
    for name, value in want.get("headers", {}).items():
        sent = headers.get(name.lower())
        if value is None and sent is not None:
            problems.append(f"header {name} sent, recorded absent")
        elif value is not None and sent != value:
            problems.append(f"header {name}: {sent!r} != {value!r}")
    if "form" in want:
        form = {k: v[0] for k, v in parse_qs(_body(request)).items()}
        if form != want["form"]:
            problems.append(f"form {form} != {want['form']}")
    return problems


def _body(request: Any) -> str:
    if isinstance(request, RestHttpRequest):
        content = request.content
    else:
        content = request.data if request.data is not None else request.body
    if isinstance(content, dict):
        # encoded as requests encodes a form for the SDK's default transport (str enums by value)
        return str(requests.models.RequestEncodingMixin._encode_params(content))
    if isinstance(content, bytes):
        return content.decode()
    return str(content or "")


def _response(request: Any, recorded: dict[str, Any]) -> Any:
    """The recorded answer as the SDK's default transport (requests) would have made it."""
    body = recorded.get("body", "")
    data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    raw = requests.Response()
    raw.status_code = int(recorded["status"])
    raw.reason = recorded.get("reason", HTTPStatus(raw.status_code).phrase)
    raw.headers.update(recorded.get("headers", {}))
    raw.headers["Content-Length"] = str(len(data))
    raw.raw = io.BytesIO(data)   # read as urllib3's stream would be
    raw.url = request.url
    raw.encoding = "utf-8"
    if isinstance(request, RestHttpRequest):
        # what RequestsTransport returns for a request of azure.core.rest, read as it reads it
        from azure.core.rest._requests_basic import RestRequestsTransportResponse

        response = RestRequestsTransportResponse(request=request, internal_response=raw)
        response.read()
        return response
    return RequestsTransportResponse(request, raw)
