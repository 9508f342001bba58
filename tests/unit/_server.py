"""Helpers for the build server's unit tests: an in-process app that queues jobs but never runs them
(``run_jobs=False``: no target, no process), its admin token, and small bundles."""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from gazelle.server.app import create_app
from gazelle.server.settings import Settings
from gazelle.server.state import ServerState
from gazelle.server.store import Store

TAR = {"Content-Type": "application/x-tar"}


def length_of(rows: list[str]) -> list[int]:
    return [len(r) for r in rows]


def twice_length(rows: list[str]) -> list[int]:
    return [2 * len(r) for r in rows]


@functools.lru_cache(maxsize=None)
def bundle_bytes(name: str, variant: int = 0) -> bytes:
    """A real bundle for model ``name``; each ``variant`` is a different digest."""
    from gazelle.bundle import pack

    model = length_of if variant % 2 == 0 else twice_length
    return pack(model, name=name, sample=["a", "bb", "x" * (variant + 1)]).data


@dataclass
class Server:
    app: Flask
    client: FlaskClient
    token: str
    data_dir: Path

    @property
    def state(self) -> ServerState:
        return self.app.extensions["gazelle"]  # type: ignore[no-any-return]

    def headers(self, token: str | None = None, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.token}", **extra}

    def upload(self, name: str, data: bytes, token: str | None = None, query: str = "") -> Any:
        return self.client.post(f"/api/v1/models/{name}/versions{query}", data=data,
                                headers=self.headers(token, **TAR))

    def get(self, path: str, token: str | None = None) -> Any:
        return self.client.get(path, headers=self.headers(token))


def start(tmp_path: Path, **settings: Any) -> Server:
    data_dir = tmp_path / "data"
    options: dict[str, Any] = {"data_dir": data_dir, "run_jobs": False, **settings}
    app = create_app(Settings(**options))
    token = (data_dir / "token").read_text().strip()
    return Server(app, app.test_client(), token, data_dir)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    s = start(tmp_path)
    try:
        yield s
    finally:
        s.state.shutdown()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """A fresh SQLite store of its own."""
    s = Store(f"sqlite:///{tmp_path / 'gazelle.db'}")
    s.create_schema()
    try:
        yield s
    finally:
        s.close()
