"""The runtime's Flask app through ``app.test_client()``: answers, bad input, errors, descriptions."""
from __future__ import annotations

import json
import logging
import re

import pytest
from _runtime_models import TRAVEL, LoadBomb, Picky, accounts_model, echo, table_model, tensor_model

from gazelle import bundle as bundles
from gazelle.errors import EnvironmentMismatch
from gazelle.runtime import create_app
from gazelle.runtime.errors import ModelLoadFailed
from gazelle.runtime.settings import RuntimeSettings

SETTINGS = RuntimeSettings(access_log=False)


@pytest.fixture(scope="module")
def accounts_bundle():
    return bundles.pack(accounts_model(), name="accounts", sample=["taxi to conference", "printer paper"])


@pytest.fixture(scope="module")
def accounts(accounts_bundle):
    return create_app(accounts_bundle, settings=SETTINGS.replace(model_version=3)).test_client()


@pytest.fixture(scope="module")
def tensor():
    model, sample = tensor_model()
    return create_app(bundles.pack(model, name="tensor", sample=sample), settings=SETTINGS).test_client()


@pytest.fixture(scope="module")
def table():
    model, sample = table_model()
    return create_app(bundles.pack(model, name="costs", sample=sample), settings=SETTINGS).test_client()


@pytest.fixture(scope="module")
def picky():
    return create_app(bundles.pack(Picky(), name="picky", sample=["a", "bb"]), settings=SETTINGS).test_client()


def post(client, body, path="/predict", **kw):
    data = body if isinstance(body, bytes) else json.dumps(body)
    kw.setdefault("content_type", "application/json")
    return client.post(path, data=data, **kw)


def error_of(response):
    body = response.get_json()
    assert set(body) == {"error"} and {"type", "message"} <= set(body["error"]), body
    return body["error"]


def still_serves(client):
    """After a refused request, a valid one still gets its prediction."""
    response = post(client, {"instances": ["taxi to conference"]})
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["predictions"] == [TRAVEL]


# -- answers ------------------------------------------------------------------------------------

def test_predict_answers_predictions_with_model_name_and_version(accounts):
    response = post(accounts, {"instances": ["taxi to conference", "printer paper"]})
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    body = response.get_json()
    assert body["predictions"][0] == TRAVEL
    assert body["model"] == "accounts" and body["version"] == 3
    assert len(body["predictions"]) == 2


def test_proba_answers_each_class_probability_with_labels(accounts, accounts_bundle):
    response = post(accounts, {"instances": ["taxi to conference"]}, path="/predict?proba=true")
    body = response.get_json()
    assert response.status_code == 200
    assert body["classes"] == accounts_bundle.manifest["classes"]
    probabilities = body["probabilities"][0]
    assert list(probabilities) == body["classes"]
    assert max(probabilities, key=probabilities.get) == TRAVEL
    assert sum(probabilities.values()) == pytest.approx(1.0)


def test_proba_false_answers_predictions_only(accounts):
    body = post(accounts, {"instances": ["taxi"]}, path="/predict?proba=false").get_json()
    assert "probabilities" not in body and "predictions" in body


def test_proba_with_a_value_that_is_not_a_boolean_is_refused(accounts):
    response = post(accounts, {"instances": ["taxi"]}, path="/predict?proba=maybe")
    assert response.status_code == 400 and "proba" in error_of(response)["message"]
    still_serves(accounts)


def test_proba_on_a_model_without_predict_proba_is_refused(picky):
    response = post(picky, {"instances": ["a"]}, path="/predict?proba=true")
    assert response.status_code == 400 and "predict_proba" in error_of(response)["message"]


def test_request_id_is_echoed_when_safe_and_replaced_when_not(accounts):
    given = post(accounts, {"instances": ["taxi"]}, headers={"X-Request-ID": "abc-123.x_y"})
    assert given.headers["X-Request-ID"] == "abc-123.x_y"
    for bad in ("a" * 129, "has space", "semi;colon", "quote\"d"):
        answered = post(accounts, {"instances": ["taxi"]}, headers={"X-Request-ID": bad})
        assert re.fullmatch(r"[0-9a-f]{24}", answered.headers["X-Request-ID"]), bad
    assert post(accounts, {"instances": ["taxi"]}).headers["X-Request-ID"]


def test_tensor_model_predicts_rows_of_numbers(tensor):
    response = post(tensor, {"instances": [[1.0, 1.0, 0.0, 0.0], [-1, -1, 0, 0]]})
    assert response.status_code == 200
    assert response.get_json()["predictions"] == [1, 0]


def test_table_model_predicts_rows_keyed_by_column(table):
    response = post(table, {"instances": [{"amount": 900.0, "city": "Vienna"}, {"amount": 10, "city": "Berlin"}]})
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["predictions"] == ["large", "small"]


def test_plain_function_model_gets_rows_as_parsed_json():
    app = create_app(bundles.pack(echo, name="echo"), settings=SETTINGS)
    response = post(app.test_client(), {"instances": [{"a": [1, 2]}, "x", None]})
    assert response.status_code == 200
    assert response.get_json()["predictions"] == [{"a": [1, 2]}, "x", None]


# -- bad input ----------------------------------------------------------------------------------

def test_malformed_json_is_a_400_naming_the_problem(accounts):
    response = post(accounts, b'{"instances": ["taxi"')
    assert response.status_code == 400
    error = error_of(response)
    assert error["type"] == "bad_request" and "not valid JSON" in error["message"]
    still_serves(accounts)


def test_empty_body_is_a_400(accounts):
    response = post(accounts, b"")
    assert response.status_code == 400 and "empty" in error_of(response)["message"]
    still_serves(accounts)


def test_body_that_is_not_utf8_is_a_400(accounts):
    response = post(accounts, '{"instances": ["café"]}'.encode("latin-1"))
    assert response.status_code == 400 and "UTF-8" in error_of(response)["message"]
    still_serves(accounts)


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded",
                                          "application/json; charset=latin-1", ""])
def test_wrong_content_type_is_a_415(accounts, content_type):
    response = accounts.post("/predict", data=b'{"instances": ["taxi"]}', content_type=content_type or None)
    assert response.status_code == 415
    assert error_of(response)["type"] == "unsupported_media_type"
    still_serves(accounts)


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8", "Application/JSON",
                                          'application/json;charset="UTF-8"'])
def test_json_content_types_with_utf8_charset_are_accepted(accounts, content_type):
    response = accounts.post("/predict", data=b'{"instances": ["taxi to conference"]}', content_type=content_type)
    assert response.status_code == 200


def test_body_over_the_limit_is_a_413_before_reading(accounts_bundle):
    client = create_app(accounts_bundle, settings=SETTINGS.replace(max_body_bytes=100)).test_client()
    response = post(client, {"instances": ["x" * 200]})
    assert response.status_code == 413
    error = error_of(response)
    assert error["type"] == "payload_too_large" and "100" in error["message"]
    still_serves(client)


def test_wrong_method_is_a_405_with_allow_header(accounts):
    response = accounts.get("/predict")
    assert response.status_code == 405
    assert "POST" in response.headers["Allow"]
    error = error_of(response)
    assert error["type"] == "method_not_allowed" and "POST" in error["message"]
    still_serves(accounts)


def test_unknown_path_is_a_404(accounts):
    response = accounts.get("/nothing/here")
    assert response.status_code == 404 and error_of(response)["type"] == "not_found"
    still_serves(accounts)


def test_row_of_the_wrong_type_is_a_422_naming_the_field(accounts):
    response = post(accounts, {"instances": ["taxi", 5]})
    assert response.status_code == 422
    error = error_of(response)
    assert error["type"] == "schema_error" and error["message"].startswith("instances[1]:")
    still_serves(accounts)


def test_table_value_of_the_wrong_type_is_a_422_naming_row_and_column(table):
    response = post(table, {"instances": [{"amount": 1.0, "city": "Paris"}, {"amount": "abc", "city": "Paris"}]})
    assert response.status_code == 422
    assert error_of(response)["message"] == 'instances[1].amount: expected number, got "abc"'


def test_absurdly_deep_nesting_is_a_400_not_a_crash(accounts):
    response = post(accounts, b"[" * 100000)
    assert response.status_code == 400 and "nested too deeply" in error_of(response)["message"]
    deep_with_nan = b'{"instances": [NaN, ' + b"[" * 5000 + b"]" * 5000 + b"]}"
    response = post(accounts, deep_with_nan)
    assert response.status_code == 400 and "nested too deeply" in error_of(response)["message"]
    still_serves(accounts)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_non_finite_numbers_are_a_422_for_number_fields(tensor, literal):
    response = post(tensor, f'{{"instances": [[1, 2, 3, 4], [1, {literal}, 3, 4]]}}'.encode())
    assert response.status_code == 422
    error = error_of(response)
    assert error["message"].startswith("instances[1][1]: expected a finite number")
    assert post(tensor, {"instances": [[1, 2, 3, 4]]}).status_code == 200


def test_missing_instances_is_a_422_saying_so(accounts):
    response = post(accounts, {"rows": ["taxi"]})
    assert response.status_code == 422
    assert error_of(response)["message"].startswith("instances: missing")
    response = post(accounts, {"inputs": []})
    assert "/v2/models/" in error_of(response)["message"]
    still_serves(accounts)


@pytest.mark.parametrize("body", [["taxi"], "taxi", 5, None])
def test_body_that_is_not_an_object_is_a_422(accounts, body):
    response = post(accounts, body)
    assert response.status_code == 422 and "instances" in error_of(response)["message"]


def test_empty_instances_is_a_422(accounts):
    response = post(accounts, {"instances": []})
    assert response.status_code == 422 and "at least one row" in error_of(response)["message"]


# -- the model's own errors ---------------------------------------------------------------------

def test_model_that_raises_is_a_500_with_an_error_id_that_the_log_has(picky, caplog):
    with caplog.at_level(logging.ERROR, logger="gazelle.runtime"):
        response = post(picky, {"instances": ["fine", "boom"]})
    assert response.status_code == 500
    error = response.get_json()["error"]
    assert error["type"] == "model_error"
    assert "the model raised ValueError: cannot handle 'boom'" in error["message"]
    assert error["id"] in error["message"]
    logged = [r for r in caplog.records if getattr(r, "gazelle_fields", {}).get("error_id") == error["id"]]
    assert logged and "Traceback" in logged[0].gazelle_fields["traceback"]
    assert "Traceback" not in response.get_data(as_text=True)
    ok = post(picky, {"instances": ["fine"]})
    assert ok.status_code == 200 and ok.get_json()["predictions"] == [4]


def test_model_that_fails_to_load_raises_with_its_own_message():
    with pytest.raises(ModelLoadFailed) as caught:
        create_app(bundles.pack(LoadBomb(), name="bomb", sample=[[1.0]]), settings=SETTINGS)
    assert caught.value.error == "RuntimeError: the model's own load error"


def test_environment_mismatch_refuses_in_strict_mode_and_warns_in_warn_mode(accounts_bundle, caplog):
    manifest = {**accounts_bundle.manifest, "python": "3.2.0",
                "requirements": [*accounts_bundle.manifest["requirements"], "scikit-learn==0.0.1"]}
    fabricated = bundles.Bundle(manifest=manifest, data=accounts_bundle.data)
    with pytest.raises(EnvironmentMismatch) as caught:
        create_app(fabricated, settings=SETTINGS)
    assert any("python" in d for d in caught.value.differences)
    assert any("scikit-learn" in d and "0.0.1" in d for d in caught.value.differences)
    with caplog.at_level(logging.WARNING, logger="gazelle.runtime"):
        client = create_app(fabricated, settings=SETTINGS.replace(env_check="warn")).test_client()
    warned = [r for r in caplog.records if r.msg == "environment_differences"]
    assert warned and len(warned[0].gazelle_fields["differences"]) >= 2
    still_serves(client)


# -- descriptions -------------------------------------------------------------------------------

def test_metadata_describes_schema_sample_pins_python_and_classes(accounts, accounts_bundle):
    body = accounts.get("/metadata").get_json()
    manifest = accounts_bundle.manifest
    assert body["name"] == "accounts" and body["version"] == 3
    assert body["schema"]["input"] == {"type": "text"}
    assert body["sample"] == ["taxi to conference", "printer paper"]
    assert body["pins"] == manifest["requirements"] and any(p.startswith("scikit-learn==") for p in body["pins"])
    assert body["python"] == manifest["python"] and TRAVEL in body["classes"]
    assert body["digest"] == accounts_bundle.digest


def test_openapi_types_the_request_from_the_input_schema_with_the_sample_as_example(table):
    spec = table.get("/openapi.json").get_json()
    assert spec["openapi"].startswith("3.")
    media = spec["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
    row = media["schema"]["properties"]["instances"]["items"]
    assert row["properties"] == {"amount": {"type": "number"}, "city": {"type": "string"}}
    assert row["required"] == ["amount", "city"]
    assert media["example"] == {"instances": [{"amount": 12.0, "city": "Berlin"}, {"amount": 250.0, "city": "Paris"}]}


def test_openapi_for_a_tensor_model_types_rows_as_fixed_length_number_arrays(tensor):
    spec = tensor.get("/openapi.json").get_json()
    row = spec["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"][
        "properties"]["instances"]["items"]
    assert row == {"type": "array", "items": {"type": "number"}, "minItems": 4, "maxItems": 4}


def test_metrics_count_requests_by_route_and_status_and_report_latency_and_load_time(accounts_bundle):
    client = create_app(accounts_bundle, settings=SETTINGS).test_client()
    post(client, {"instances": ["taxi"]})
    post(client, {"instances": [5]})
    client.get("/nowhere")
    text = client.get("/metrics").get_data(as_text=True)
    assert 'gazelle_requests_total{method="POST",route="/predict",status="200"} 1.0' in text
    assert 'gazelle_requests_total{method="POST",route="/predict",status="422"} 1.0' in text
    assert 'gazelle_requests_total{method="GET",route="(unmatched)",status="404"} 1.0' in text
    assert 'gazelle_request_duration_seconds_count{route="/predict"} 2.0' in text
    assert "gazelle_requests_in_flight 1.0" in text  # the /metrics request itself
    load = re.search(r"^gazelle_model_load_seconds (\S+)$", text, re.M)
    assert load and float(load.group(1)) > 0
    assert 'gazelle_predicted_rows_total 1.0' in text


def test_access_log_writes_one_json_line_per_request_without_bodies_or_tokens(accounts_bundle, capfd):
    client = create_app(accounts_bundle, settings=SETTINGS.replace(access_log=True)).test_client()
    capfd.readouterr()
    post(client, {"instances": ["secret expense text"]}, headers={"Authorization": "Bearer tok-SECRET",
                                                                  "X-Request-ID": "req-1"})
    client.get("/missing?token=SECRET")
    lines = [json.loads(line) for line in capfd.readouterr().err.splitlines() if '"event":"request"' in line]
    assert len(lines) == 2
    first, second = lines
    assert {"ts", "method", "path", "status", "duration_ms", "request_id", "remote"} <= set(first)
    assert (first["method"], first["path"], first["status"], first["request_id"]) == ("POST", "/predict", 200, "req-1")
    assert (second["path"], second["status"]) == ("/missing", 404)
    text = json.dumps(lines)
    assert "SECRET" not in text and "secret expense" not in text


def test_try_it_page_is_built_from_the_schema_with_relative_urls_only(accounts, table):
    page = accounts.get("/").get_data(as_text=True)
    assert accounts.get("/").headers["Content-Type"].startswith("text/html")
    assert "On which of the" in page and 'id="text"' in page and "taxi to conference" in page
    assert 'fetch(MODEL.proba ? "predict?proba=true" : "predict"' in page   # relative, proba when it has it
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    assert '"/predict' not in page
    table_page = table.get("/").get_data(as_text=True)
    assert 'data-column="amount"' in table_page and 'data-column="city"' in table_page


def test_lone_surrogates_quoted_back_in_an_error_still_make_a_json_answer(tensor):
    response = post(tensor, b'{"instances": [[NaN, "\\ud800", 1, 2]]}')
    assert response.status_code == 422
    assert error_of(response)["message"].startswith("instances[0][0]: expected a finite number")
    response = post(tensor, b'{"instances": [[1, "\\ud800", 1, 2]], "x": NaN}')
    assert response.status_code == 422 and error_of(response)["message"].startswith("instances[0][1]")


def test_runtime_imports_neither_client_nor_server_and_only_runtime_packages():
    import ast
    from pathlib import Path

    import gazelle.runtime

    allowed = {"flask", "werkzeug", "gunicorn", "orjson", "prometheus_client", "jinja2", "gazelle"}
    package = Path(gazelle.runtime.__file__).parent
    for source in package.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else [])
            for name in names:
                top = name.split(".")[0]
                assert not name.startswith(("gazelle.client", "gazelle.server")), f"{source.name} imports {name}"
                assert top in allowed or top in __import__("sys").stdlib_module_names, f"{source.name} imports {name}"


def test_bundle_naming_a_method_the_model_lacks_fails_to_load_saying_so(accounts_bundle):
    manifest = {**accounts_bundle.manifest, "method": "transform_all"}
    with pytest.raises(ModelLoadFailed, match="'transform_all'"):
        create_app(bundles.Bundle(manifest=manifest, data=accounts_bundle.data), settings=SETTINGS)


@pytest.mark.parametrize("body, content_type", [
    ({"instances": ["taxi to conference"]}, "application/json"),
    ({"instances": [5]}, "application/json"),
    (b'{"instances": [', "application/json"),
    ({"instances": ["x"]}, "text/plain"),
    ({"rows": ["x"]}, "application/json"),
])
def test_plain_predict_fast_path_answers_exactly_as_the_flask_view(accounts, body, content_type):
    # POST /predict skips Flask's dispatch; with a query string the same request goes through Flask.
    fast = post(accounts, body, content_type=content_type, headers={"X-Request-ID": "same"})
    routed = post(accounts, body, path="/predict?proba=false", content_type=content_type,
                  headers={"X-Request-ID": "same"})
    assert (fast.status_code, fast.get_json()) == (routed.status_code, routed.get_json())
    assert fast.headers["Content-Type"] == routed.headers["Content-Type"]
    assert fast.headers["X-Request-ID"] == "same"


def test_openapi_documents_of_every_schema_kind_are_valid_openapi_3(accounts, tensor, table):
    from openapi_spec_validator import validate

    for client in (accounts, tensor, table):
        validate(client.get("/openapi.json").get_json())
