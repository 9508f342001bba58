"""Schemathesis over the build server's OpenAPI document, in-process against a real ``create_app``
(SQLite in a temporary data directory; jobs are queued, never run). Every operation is fuzzed, then
the stateful phase follows the document's links (upload -> job, model, rollback, delete; token ->
revoke). A 5xx anywhere fails the run; so does an answer the document does not describe.

Bounded: a few dozen examples per operation and a short stateful run, so the file takes well under a
minute and a half. Two settings keep it bounded without changing what is checked: deletes do not
wait for a job no runner will run, and event streams end once past events are sent (the hub is
closed, as when the server stops), since a queued job's stream would otherwise never end.
"""
from __future__ import annotations

import collections
import functools
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test

from gazelle.server import api
from gazelle.server.app import create_app
from gazelle.server.settings import Settings

EXAMPLES = 25
# The same examples on every run, so the suite is repeatable; GAZELLE_TEST_FUZZ_RANDOM=1 explores new ones.
DERANDOMIZE = os.environ.get("GAZELLE_TEST_FUZZ_RANDOM") != "1"
REPLACED: set[int] = set()   # cases whose generated body was swapped for a real bundle
NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


class Admin:
    """The admin token every call carries; made again if a fuzzed DELETE /tokens/{id} revoked it."""

    def __init__(self, app: Any) -> None:
        self.state = app.extensions["gazelle"]
        self.token = (self.state.settings.data_dir / "token").read_text().strip()


    def current(self) -> str:
        from gazelle.server.auth import hash_token

        if self.state.store.token_by_hash(hash_token(self.token)) is None:
            self.token, _ = self.state.auth.create_token("admin", "schemathesis")
        return self.token


def _app() -> Any:
    data_dir = Path(tempfile.mkdtemp(prefix="gazelle-schemathesis-")) / "data"
    application = create_app(Settings(data_dir=data_dir, run_jobs=False))
    application.extensions["gazelle"].hub.close()
    return application


# The schema is needed when the tests are collected, so the app is made then, and removed at the end.
APP = _app()
ADMIN = Admin(APP)
schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", APP)


schemathesis.serializer.alias("application/x-tar", "application/octet-stream")


@functools.lru_cache(maxsize=None)
def _bundle(name: str) -> bytes:
    from gazelle.bundle import pack

    return pack(_lengths, name=name, sample=["a", "bb"]).data


def _lengths(rows: list[str]) -> list[int]:
    return [len(r) for r in rows]


@schema.hook
def map_case(context: Any, case: Any) -> Any:
    """Half the uploads to a valid name carry a real bundle for it, so the stateful phase reaches
    models, versions and jobs that exist (random bytes alone are only ever a 422)."""
    name = (case.path_parameters or {}).get("name")
    negative = case.meta is not None and case.meta.generation.mode.is_negative
    if not negative and case.operation.method.upper() == "POST" and case.operation.path == "/models/{name}/versions" \
            and isinstance(name, str) and len(name) <= 40 and NAME.fullmatch(name) \
            and len(getattr(case.body, "data", b"")) % 2 == 0:
        case.body = _bundle(name)
        REPLACED.add(id(case))
    return case


CALLED: collections.Counter[tuple[str, int]] = collections.Counter()


@schema.hook
def after_call(context: Any, case: Any, response: Any) -> None:
    CALLED[(case.operation.label, response.status_code)] += 1


@schema.auth(refresh_interval=None)   # asked every time: a fuzzed revoke may have hit it
class _AdminAuth:
    """Every generated call carries the admin token (negative auth checks send others on their own)."""

    def get(self, case: Any, context: Any) -> str:
        return ADMIN.current()

    def set(self, case: Any, data: str, context: Any) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


@pytest.fixture(scope="module", autouse=True)
def _bounded_server() -> Iterator[None]:
    saved, api.DELETE_WAIT_SECONDS = api.DELETE_WAIT_SECONDS, 0.0
    try:
        yield
    finally:
        api.DELETE_WAIT_SECONDS = saved
        APP.extensions["gazelle"].shutdown()
        shutil.rmtree(APP.extensions["gazelle"].settings.data_dir.parent, ignore_errors=True)


def _not_checked(case: Any) -> list[Any]:
    """Checks that cannot hold for this app. An upload's body is "binary" to JSON Schema, but only a
    bundle tar is accepted: random bytes that fit the document are rightly a 422, so "valid data is
    accepted" cannot hold there. Where the body was swapped for a real bundle, what was generated
    (valid or not) was not what was sent."""
    from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance, use_after_free

    # A delete here is a queued job (202, "follow the job") that no runner runs, so the model is
    # rightly still there afterwards; with a runner the delete answers 200 once it is gone.
    never = [use_after_free]
    if case.operation.path != "/models/{name}/versions":
        return never
    return never + [positive_data_acceptance] + ([negative_data_rejection] if id(case) in REPLACED else [])


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=DERANDOMIZE, suppress_health_check=list(HealthCheck))
def test_no_operation_answers_a_server_error_or_outside_its_document(case: Any) -> None:
    case.call_and_validate(excluded_checks=_not_checked(case))


def test_no_sequence_of_operations_answers_a_server_error() -> None:
    class Workflow(schema.as_state_machine()):  # type: ignore[misc]
        def before_call(self, case: Any) -> None:
            map_case(None, case)

        def validate_response(self, response: Any, case: Any, additional_checks: Any = None, **kw: Any) -> None:
            case.validate_response(response, additional_checks=additional_checks, transport_kwargs=kw or None,
                                   recorder=self.recorder, excluded_checks=_not_checked(case))

    CALLED.clear()
    run_state_machine_as_test(Workflow, settings=settings(max_examples=EXAMPLES, stateful_step_count=6,
                                                          deadline=None, derandomize=DERANDOMIZE,
                                                          suppress_health_check=list(HealthCheck)))
    reached = {label for (label, status), _ in CALLED.items() if status < 300}
    # The links were followed to things that exist, not only to 404s.
    followed = {"GET /jobs/{id}", "GET /jobs/{id}/events", "GET /models/{name}", "GET /models/{name}/logs",
                "POST /models/{name}/rollback", "DELETE /models/{name}"}
    assert "POST /models/{name}/versions" in reached and reached & followed, CALLED
