"""``gazelle runtime`` for real: gunicorn with 2 workers on a free port, talked to over HTTP."""
from __future__ import annotations

import json
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from _runtime import TRAVEL, Loading, Picky, Runtime, accounts_model, call, post_chunked, save

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    directory = tmp_path_factory.mktemp("bundles")
    return {
        "accounts": save(directory, accounts_model(), name="accounts", sample=["taxi to conference", "printer paper"]),
        "picky": save(directory, Picky(), name="picky", sample=["a", "bb"]),
    }


@pytest.fixture(scope="module")
def accounts(bundles, tmp_path_factory):
    log = tmp_path_factory.mktemp("accounts-runtime") / "runtime.log"
    with Runtime(bundles["accounts"], log, env={"GAZELLE_MODEL_VERSION": "5",
                                                "GAZELLE_MAX_BODY_BYTES": "4096"}) as runtime:
        yield runtime.wait_ready()


def predict(runtime, body, **kw):
    return call(runtime.url + "/predict", body, **kw)


def test_predicts_over_http_with_model_name_version_and_request_id(accounts):
    status, body, headers = predict(accounts, {"instances": ["taxi to conference"]},
                                    headers={"X-Request-ID": "integration-1"})
    assert status == 200
    assert body == {"predictions": [TRAVEL], "model": "accounts", "version": 5}
    assert headers["X-Request-ID"] == "integration-1"
    status, body, _ = call(accounts.url + "/predict?proba=true", {"instances": ["taxi to conference"]})
    ranked = sorted(body["probabilities"][0].items(), key=lambda kv: -kv[1])
    assert ranked[0][0] == TRAVEL


def test_every_log_line_is_json_and_access_lines_have_the_fields_and_no_secrets(accounts):
    predict(accounts, {"instances": ["secret words here"]}, headers={"Authorization": "Bearer tok-HIDDEN",
                                                                    "X-Request-ID": "log-check-1"})
    accounts.wait_events("request", lambda found: any(e["request_id"] == "log-check-1" for e in found),
                         "the access line of request log-check-1")
    lines = accounts.lines()  # fails on any line that is not JSON, gunicorn's own included
    access = [line for line in lines if line.get("event") == "request" and line["request_id"] == "log-check-1"]
    assert len(access) == 1
    line = access[0]
    assert {"ts", "method", "path", "status", "duration_ms", "request_id", "remote"} <= set(line)
    assert (line["method"], line["path"], line["status"], line["remote"]) == ("POST", "/predict", 200, "127.0.0.1")
    assert "HIDDEN" not in accounts.text() and "secret words" not in accounts.text()
    assert any(line.get("logger") == "gunicorn.error" for line in lines)


def test_metrics_add_up_requests_from_all_workers(accounts):
    before = _count(call(accounts.url + "/metrics")[1], "/predict", "200")
    logged = len([e for e in accounts.events("request") if e["path"] == "/predict"])
    # Which worker accepts a connection is the kernel's choice: send rounds of 40 until both have
    # answered (on a busy machine one worker can take a whole round).
    sent, served_by = 0, set()
    for _ in range(10):
        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(lambda _: predict(accounts, {"instances": ["hotel in Berlin"]})[0], range(40)))
        assert statuses == [200] * 40
        sent += 40
        found = accounts.wait_events("request", lambda found: len([e for e in found if e["path"] == "/predict"])
                                     >= logged + sent, f"the access lines of the {sent} requests")
        served_by = {line["pid"] for line in [e for e in found if e["path"] == "/predict"][logged:]}
        if len(served_by) == 2:
            break
    assert len(served_by) == 2, f"both workers should have answered some of the {sent} requests"
    # Whichever worker answers the scrape, it reports every worker's requests.
    for _ in range(6):
        text = call(accounts.url + "/metrics")[1]
        assert _count(text, "/predict", "200") == before + sent
    assert re.search(r'^gazelle_request_duration_seconds_bucket\{le="0.005",route="/predict"\} ', text, re.M)
    assert re.search(r"^gazelle_model_load_seconds \d", text, re.M)
    assert re.search(r"^gazelle_requests_in_flight \d", text, re.M)


def _count(text: str, route: str, status: str) -> float:
    match = re.search(rf'^gazelle_requests_total\{{method="POST",route="{re.escape(route)}",status="{status}"\}} '
                      r"(\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def test_body_over_the_limit_is_413_by_length_and_when_chunked(accounts):
    status, body, _ = predict(accounts, {"instances": ["x" * 5000]})
    assert status == 413 and body["error"]["type"] == "payload_too_large"
    status, body = post_chunked(accounts.port, "/predict", [b'{"instances": ["', b"y" * 3000, b"z" * 3000, b'"]}'])
    assert status == 413 and body["error"]["type"] == "payload_too_large"
    # A client that sends the whole body before reading (urllib) still gets the answer, not a reset.
    status, body, _ = predict(accounts, {"instances": ["x" * 2_000_000]})
    assert status == 413 and body["error"]["type"] == "payload_too_large"
    status, body = post_chunked(accounts.port, "/predict", [b'{"instances": ', b'["taxi to conference"]}'])
    assert status == 200 and body["predictions"] == [TRAVEL]


def test_bad_requests_over_http_get_json_errors_and_the_runtime_keeps_serving(accounts):
    assert call(accounts.url + "/predict", raw=b"[" * 4000)[0] == 400  # deeper than any parser allows
    assert call(accounts.url + "/predict", raw=b"\xff\xfe")[0] == 400
    status, body, _ = call(accounts.url + "/predict", raw=b'{"instances": ["a"]}', headers={"Content-Type": "text/plain"})
    assert status == 415 and body["error"]["type"] == "unsupported_media_type"
    status, body, headers = call(accounts.url + "/predict")
    assert status == 405 and "POST" in headers["Allow"]
    assert call(accounts.url + "/v2/models/other")[0] == 404
    assert predict(accounts, {"instances": ["taxi to conference"]})[1]["predictions"] == [TRAVEL]


def test_v2_infer_and_metadata_over_http(accounts):
    status, meta, _ = call(accounts.url + "/v2/models/accounts")
    assert status == 200 and meta["versions"] == ["5"] and meta["platform"] == "gazelle"
    status, body, _ = call(accounts.url + "/v2/models/accounts/infer",
                           {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["taxi to conference"]}]})
    assert status == 200 and body["outputs"][0]["data"] == [TRAVEL] and body["model_version"] == "5"


def test_model_error_is_a_500_with_an_id_that_is_logged_with_the_traceback(bundles, tmp_path):
    with Runtime(bundles["picky"], tmp_path / "runtime.log", module="gazelle.runtime") as runtime:
        runtime.wait_ready()
        status, body, _ = call(runtime.url + "/predict", {"instances": ["boom"]})
        assert status == 500 and body["error"]["type"] == "model_error"
        error_id = body["error"]["id"]
        assert f"(error id {error_id})" in body["error"]["message"]
        assert [call(runtime.url + "/predict", {"instances": ["abc"]})[1]["predictions"] for _ in range(4)] == [[3]] * 4
        found = runtime.wait_events("model_error", lambda found: any(e["error_id"] == error_id for e in found),
                                    f"the log line of error {error_id}")
        logged = [e for e in found if e["error_id"] == error_id]
        assert logged and logged[0]["error"] == "ValueError: cannot handle 'boom'"
        assert "Traceback" in logged[0]["traceback"] and "request_id" in logged[0]


def test_sigterm_lets_in_flight_requests_finish_then_exits_cleanly(bundles, tmp_path):
    runtime = Runtime(bundles["picky"], tmp_path / "runtime.log")
    with runtime:
        runtime.wait_ready()
        result: dict[str, object] = {}

        def slow() -> None:
            result["answer"] = call(runtime.url + "/predict", {"instances": ["slow"]}, timeout=30)

        thread = threading.Thread(target=slow)
        thread.start()
        _wait_for(lambda: _in_flight(runtime) >= 1)
        runtime.terminate()
        thread.join(30)
        assert result["answer"][:2] == (200, {"predictions": [4], "model": "picky", "version": 0})
        assert runtime.wait_exit(30) == 0
    starting = runtime.events("starting")[0]
    assert not Path(starting["metrics_dir"]).exists(), "the metrics directory outlived the runtime"


def test_sigterm_while_the_model_loads_stops_it_at_once_with_the_status_of_a_kill(tmp_path):
    marker = tmp_path / "loading"
    bundle = save(tmp_path, Loading(str(marker)), name="loading")
    runtime = Runtime(bundle, tmp_path / "runtime.log")
    with runtime:
        _wait_for(marker.exists, timeout=60)
        runtime.terminate()
        # 143, not -15: the runtime's own handler, which a container's PID 1 needs (it ignores the default)
        assert runtime.wait_exit(10) == 128 + 15
    assert runtime.events("stopped"), runtime.text()
    assert not runtime.events("starting")


def _in_flight(runtime: Runtime) -> float:
    text = call(runtime.url + "/metrics")[1]
    match = re.search(r"^gazelle_requests_in_flight (\S+)$", text, re.M)
    return float(match.group(1)) - 1 if match else 0.0  # minus the scrape itself


def _wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_openapi_and_metadata_over_http(accounts):
    status, spec, _ = call(accounts.url + "/openapi.json")
    assert status == 200 and "/predict" in spec["paths"]
    example = spec["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["example"]
    assert example == {"instances": ["taxi to conference", "printer paper"]}
    status, meta, _ = call(accounts.url + "/metadata")
    assert status == 200 and meta["version"] == 5 and json.dumps(meta["pins"]).count("==") >= 3


def test_threads_setting_runs_gthread_workers_that_keep_connections_alive(bundles, tmp_path):
    import http.client

    with Runtime(bundles["picky"], tmp_path / "runtime.log", env={"GAZELLE_RUNTIME_THREADS": "4"}) as runtime:
        runtime.wait_ready()
        assert runtime.events("starting")[0]["worker_class"] == "gazelle.runtime.worker.BalancedThreadWorker"
        conn = http.client.HTTPConnection("127.0.0.1", runtime.port, timeout=30)
        try:
            for text in ("a", "bb", "ccc"):
                conn.request("POST", "/predict", body=json.dumps({"instances": [text]}),
                             headers={"Content-Type": "application/json"})
                answer = conn.getresponse()
                assert answer.status == 200 and json.loads(answer.read())["predictions"] == [len(text)]
                assert answer.getheader("Connection", "").lower() != "close"
        finally:
            conn.close()
