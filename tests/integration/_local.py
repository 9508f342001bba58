"""Helpers for the local target's tests: tiny models, stored bundles, releases, HTTP calls."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from gazelle.server.artifacts import LocalEnv
from gazelle.server.targets import Release
from tests.helpers import Boom  # noqa: F401  (shared; imported from here by the tests)


class VersionLabel:
    """A model whose every answer names the version it was built as (a plain class, pickled by value)."""

    def __init__(self, label: str) -> None:
        self.label = label

    def predict(self, rows: Any) -> list[str]:
        return [self.label for _ in rows]


def sklearn_model(label: str) -> Any:
    """A fitted scikit-learn classifier that always answers ``label``."""
    from sklearn.dummy import DummyClassifier

    return DummyClassifier(strategy="constant", constant=label).fit([[0.0], [1.0]], [label, label])


def store(data_dir: Path, model: Any, *, name: str, sample: Any = None,
          requirements: list[str] | None = None) -> tuple[Path, dict[str, Any]]:
    """Pack ``model`` and keep the bundle where a server would: (path, manifest)."""
    from gazelle import bundle

    packed = bundle.pack(model, name=name, sample=sample, requirements=requirements)
    path = data_dir / "bundles" / f"{packed.digest.split(':')[1]}.tar"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(packed.data)
    return path, packed.manifest


def release(name: str, version: int, env: LocalEnv, manifest: dict[str, Any], public: bool = True) -> Release:
    return Release(name=name, version=version, artifact=env, manifest=manifest, public=public)


def call(url: str, body: Any = None, *, timeout: float = 30.0, headers: dict[str, str] | None = None
         ) -> tuple[int, Any]:
    """GET (or POST ``body`` as JSON) ``url`` -> (status, parsed JSON or text). ``url`` may be a runtime's
    ``unix:/path/http.sock/...`` address, as the local target returns it."""
    from gazelle.server import upstream

    if url.startswith(upstream.UNIX):
        socket, _, path = url.partition(".sock")
        base = socket + ".sock"
    else:
        scheme, _, rest = url.partition("://")
        host, _, path = rest.partition("/")
        base, path = f"{scheme}://{host}", "/" + path
    data = None if body is None else json.dumps(body).encode()
    with httpx.Client(transport=httpx.HTTPTransport(uds=upstream.socket_path(base)), trust_env=False,
                      timeout=timeout) as client:
        answer = client.request("GET" if data is None else "POST", upstream.http_url(base, path), content=data,
                                headers={"Content-Type": "application/json", **(headers or {})})
    try:
        return answer.status_code, answer.json()
    except ValueError:
        return answer.status_code, answer.text


class Lines:
    """A ``log`` callable that keeps what it was told."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, line: str) -> None:
        self.lines.append(line)

    def text(self) -> str:
        return "\n".join(self.lines)
