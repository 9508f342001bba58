"""schemathesis over each runtime's own OpenAPI document (``/openapi.json``), in-process through WSGI:
every operation, for a text, a numeric and a table model, with generated valid and invalid requests.
No answer may be a server error. The document has no links, so there is no stateful phase to run.
Bounded by ``max_examples`` so the whole file stays well under a minute.
"""
from __future__ import annotations

import pytest
from _runtime_models import runtime_app

from gazelle.runtime.settings import RuntimeSettings

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402

SETTINGS = RuntimeSettings(access_log=False)
MAX_EXAMPLES = 25
APPS = {kind: runtime_app(kind, SETTINGS, name="accounts" if kind == "text" else None)
        for kind in ("text", "tensor", "table")}
SCHEMAS = {kind: schemathesis.openapi.from_wsgi("/openapi.json", app) for kind, app in APPS.items()}


def _fuzz(kind: str):
    @SCHEMAS[kind].parametrize()
    @settings(max_examples=MAX_EXAMPLES, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    def run(case):
        case.call_and_validate(checks=[not_a_server_error])

    return run


test_text_runtime_never_answers_a_server_error = _fuzz("text")
test_tensor_runtime_never_answers_a_server_error = _fuzz("tensor")
test_table_runtime_never_answers_a_server_error = _fuzz("table")


def test_the_document_covers_every_route_the_fuzzer_should_reach():
    paths = set(SCHEMAS["tensor"].raw_schema["paths"])
    assert {"/predict", "/v2/models/tensor/infer", "/v2/models/tensor", "/v2/health/ready"} <= paths


@pytest.mark.parametrize("body", [{"instances": [{}]}, {"instances": [[{}, 1, 2, 3]]}])
def test_objects_as_numeric_rows_are_422_not_500(body):
    answer = APPS["tensor"].test_client().post("/predict", json=body)
    assert answer.status_code == 422 and answer.get_json()["error"]["message"].startswith("instances[0]")
