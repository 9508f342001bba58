"""Adaptive batching in one process: the predictor thread, joining inputs, fallback, timeout, bundle option.

Models here are live objects handed to the data plane (no pickling), so a test can hold the model
busy on a gate and queue requests behind it: what gets batched is then decided, not left to timing.
"""
from __future__ import annotations

import json
import threading
import time
from typing import Any

import numpy as np
import pandas as pd
import pytest
from _runtime_models import accounts_model, table_model

from gazelle import bundle as bundles
from gazelle.errors import BundleError, BadRequest
from gazelle.runtime import loader
from gazelle.runtime.app import build_app
from gazelle.runtime.dataplane import DataPlane
from gazelle.runtime.errors import ModelFailure
from gazelle.runtime.settings import RuntimeSettings
from gazelle.schema import decode
from gazelle.schema.batching import join

TEXT = {"type": "text"}


class Gate:
    """Upper-cases texts; records each call's rows; the first call waits for ``opened``; raises on "boom"
    and answers one row too few when asked to with "short" (a model that is not row-wise)."""

    def __init__(self, opened: bool = False) -> None:
        self.opened = threading.Event()
        if opened:
            self.opened.set()
        self.calls: list[list[str]] = []

    def __reduce__(self) -> Any:
        return (Gate, (True,))

    def predict(self, rows: list[str]) -> list[str]:
        self.calls.append(list(rows))
        if len(self.calls) == 1:
            assert self.opened.wait(30), "the test never opened the gate"
        if "boom" in rows:
            raise ValueError("cannot handle 'boom'")
        answer = [r.upper() for r in rows]
        return answer[:-1] if "short" in rows and len(rows) > 1 else answer

    def predict_proba(self, rows: list[str]) -> list[list[float]]:
        return [[len(r) / 10, 1 - len(r) / 10] for r in rows]


def plane_for(model: Any, *, batch: bool = True, max_rows: int = 512, proba: bool = False,
              schema: dict[str, Any] = TEXT) -> DataPlane:
    manifest = {"name": "gate", "input_schema": schema, "method": "predict", "batch": batch, "proba": proba,
                "classes": ["a", "b"] if proba else None}
    return DataPlane(manifest, model, version=1, digest="sha256:0", max_batch_rows=max_rows, timeout=30)


def wait_until(condition: Any, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.005)
    raise AssertionError(f"{what}: not within {timeout} s")


def run_behind_gate(plane: DataPlane, gate: Gate, requests: list[tuple[list[str], bool]]) -> list[Any]:
    """Hold the model busy with one request, queue ``requests`` behind it, open the gate; every
    request's Outcome (or its exception), in the order given."""
    results: list[Any] = [None] * (len(requests) + 1)

    def send(i: int, rows: list[str], proba: bool) -> None:
        try:
            results[i] = plane.run(rows, field="instances", proba=proba)
        except Exception as err:
            results[i] = err

    threads = [threading.Thread(target=send, args=(0, ["first"], False))]
    threads[0].start()
    wait_until(lambda: len(gate.calls) == 1, "the first request reached the model")
    for i, (rows, proba) in enumerate(requests, start=1):
        threads.append(threading.Thread(target=send, args=(i, rows, proba)))
        threads[-1].start()
    wait_until(lambda: len(plane.predictor._queue) == len(requests), "the requests queued")
    gate.opened.set()
    for thread in threads:
        thread.join(30)
    assert results[0].predictions == ["FIRST"]
    return results[1:]


def test_requests_queued_while_the_model_is_busy_are_answered_by_one_call_each_with_its_own_rows():
    gate = Gate()
    plane = plane_for(gate)
    requests = [([f"row {i}", f"more {i}"], False) for i in range(5)]
    results = run_behind_gate(plane, gate, requests)
    assert len(gate.calls) == 2 and sorted(gate.calls[1]) == sorted(r for rows, _ in requests for r in rows)
    for (rows, _), outcome in zip(requests, results):
        assert outcome.predictions == [r.upper() for r in rows]


def test_a_request_finding_the_model_idle_is_called_alone_at_once():
    gate = Gate()
    gate.opened.set()
    plane = plane_for(gate)
    assert plane.run(["alone"], field="instances", proba=False).predictions == ["ALONE"]
    assert gate.calls == [["alone"]]


def test_a_batch_that_raises_is_redone_per_request_so_only_the_breaking_request_fails():
    gate = Gate()
    plane = plane_for(gate)
    requests = [(["a"], False), (["boom"], False), (["ccc"], False)]
    results = run_behind_gate(plane, gate, requests)
    assert results[0].predictions == ["A"] and results[2].predictions == ["CCC"]
    assert isinstance(results[1], ModelFailure) and "cannot handle 'boom'" in str(results[1])
    assert sorted(map(tuple, gate.calls[2:])) == [("a",), ("boom",), ("ccc",)]


def test_a_batch_answered_with_the_wrong_number_of_rows_is_redone_per_request():
    gate = Gate()
    plane = plane_for(gate)
    results = run_behind_gate(plane, gate, [(["x"], False), (["short"], False)])
    assert [r.predictions for r in results] == [["X"], ["SHORT"]]


def test_a_batch_holds_at_most_max_batch_rows():
    gate = Gate()
    plane = plane_for(gate, max_rows=4)
    requests = [([f"r{i}a", f"r{i}b"], False) for i in range(4)]
    results = run_behind_gate(plane, gate, requests)
    assert [len(call) for call in gate.calls[1:]] == [4, 4]
    assert [r.predictions for r in results] == [[f"R{i}A", f"R{i}B"] for i in range(4)]


def test_batch_false_calls_the_model_once_per_request():
    gate = Gate()
    plane = plane_for(gate, batch=False)
    run_behind_gate(plane, gate, [(["a"], False), (["b"], False), (["c"], False)])
    assert sorted(map(tuple, gate.calls[1:])) == [("a",), ("b",), ("c",)]


def test_probabilities_are_computed_for_the_requests_that_ask_for_them_only():
    gate = Gate()
    plane = plane_for(gate, proba=True)
    results = run_behind_gate(plane, gate, [(["ab"], True), (["abcd"], False), (["abc"], True)])
    assert [r.probabilities for r in results] == [[[0.2, 0.8]], None, [[0.3, 0.7]]]
    assert [r.predictions for r in results] == [["AB"], ["ABCD"], ["ABC"]]


def test_a_request_that_waits_past_the_timeout_gets_a_json_504_and_the_hook_runs():
    gate = Gate()
    bundle = bundles.pack(Gate(opened=True), name="gate", sample=["a"], batch=True)
    app = build_app(loader.Loaded(bundle, gate, 0.0, ()), RuntimeSettings(access_log=False))
    predictor = app.extensions["gazelle.runtime"].predictor
    predictor.timeout = 0.2
    restarts: list[bool] = []
    predictor.on_timeout = lambda: restarts.append(True)
    try:
        response = app.test_client().post("/predict", json={"instances": ["slow"]})
    finally:
        gate.opened.set()
    assert response.status_code == 504 and response.content_type == "application/json"
    error = response.get_json()["error"]
    assert error["type"] == "timeout" and "GAZELLE_RUNTIME_TIMEOUT" in error["message"]
    assert restarts == [True]


def test_batch_sizes_are_a_histogram_in_metrics():
    gate = Gate()
    bundle = bundles.pack(Gate(opened=True), name="gate", sample=["a"], batch=True)
    app = build_app(loader.Loaded(bundle, gate, 0.0, ()), RuntimeSettings(access_log=False))
    run_behind_gate(app.extensions["gazelle.runtime"], gate, [(["a", "b"], False), (["c"], False)])
    text = app.test_client().get("/metrics").get_data(as_text=True)
    assert 'gazelle_batch_requests_bucket{le="1.0"} 1.0' in text  # the first request, alone
    assert "gazelle_batch_requests_sum 3.0" in text and "gazelle_batch_rows_sum 4.0" in text


# -- joining decoded inputs ------------------------------------------------------------------------

def test_join_concatenates_tensors_tables_and_lists_as_one_request_would_decode_them():
    tensor = {"type": "tensor", "dtype": "float64", "shape": [None, 2]}
    parts = [[[1.0, 2.0]], [[3.0, 4.0], [5.0, 6.0]]]
    joined = join([decode(p, tensor) for p in parts], tensor)
    np.testing.assert_array_equal(joined, decode(parts[0] + parts[1], tensor))
    as_list = {**tensor, "container": "list"}
    assert join([decode(p, as_list) for p in parts], as_list) == parts[0] + parts[1]
    assert join([["a"], ["b", "c"]], TEXT) == ["a", "b", "c"]

    table = {"type": "table", "columns": [{"name": "amount", "dtype": "float64"},
                                          {"name": "kind", "dtype": "category", "categories": ["x", "y"]}]}
    rows = [[{"amount": 1.0, "kind": "x"}], [{"amount": 2.0, "kind": "y"}, {"amount": 3.0, "kind": "x"}]]
    joined = join([decode(r, table) for r in rows], table)
    pd.testing.assert_frame_equal(joined, decode(rows[0] + rows[1], table))


def test_batched_answers_of_real_models_equal_their_one_request_answers():
    for model, rows, schema in _real_models():
        plane = plane_for(model, schema=schema)
        parts = [rows[i:i + 2] for i in range(0, len(rows), 2)]
        decoded = [decode(p, schema) for p in parts]
        jobs = [_job(d, len(p)) for d, p in zip(decoded, parts)]
        fell_back: list[bool] = []
        plane.predictor._observe = lambda requests, rows, fell: fell_back.append(fell)
        plane.predictor.run(jobs)
        assert fell_back == [False], "the batched call failed and was redone per request"
        for job, part in zip(jobs, parts):
            alone = plane.run(part, field="instances", proba=False).predictions
            assert job.error is None and job.predictions == alone


def _job(features: Any, rows: int) -> Any:
    from gazelle.runtime.predictor import Job

    return Job(features, rows, False)


def _real_models() -> list[tuple[Any, list[Any], dict[str, Any]]]:
    from gazelle.schema import infer, rows

    text = ["taxi to conference", "printer paper", "hotel in Lyon", "team lunch", "train ticket"]
    table, sample = table_model()
    frame = pd.DataFrame({"amount": [5.0, 700.0, 30.0, 2.5], "city": ["Paris", "Berlin", "Vienna", "Rome"]})
    return [(accounts_model(), text, TEXT),
            (table, json.loads(json.dumps(rows(frame))), infer(sample))]


# -- the bundle's batch option -----------------------------------------------------------------------

def test_bundles_batch_scikit_learn_models_by_default_and_other_models_only_when_asked():
    model, sample = table_model()
    assert bundles.pack(model, name="costs", sample=sample).manifest["batch"] is True
    assert bundles.pack(Gate(opened=True), name="gate", sample=["a"]).manifest["batch"] is False
    assert bundles.pack(Gate(opened=True), name="gate", sample=["a"], batch=True).manifest["batch"] is True
    assert bundles.pack(model, name="costs", sample=sample, batch=False).manifest["batch"] is False
    assert bundles.pack(lambda rows: rows, name="echo", sample=[1]).manifest["batch"] is False


def test_a_batch_option_that_is_not_a_boolean_is_refused_naming_it():
    with pytest.raises(BadRequest, match="batch must be True, False or None"):
        bundles.pack(Gate(opened=True), name="gate", sample=["a"], batch="yes")  # type: ignore[arg-type]


def test_a_manifest_whose_batch_is_not_a_boolean_is_refused_and_one_without_it_reads():
    import io
    import tarfile

    packed = bundles.pack(Gate(opened=True), name="gate", sample=["a"])

    def with_manifest(manifest: dict[str, Any]) -> bytes:
        out = io.BytesIO()
        with tarfile.open(fileobj=io.BytesIO(packed.data)) as src, \
                tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
            for info in src.getmembers():
                data = src.extractfile(info).read()  # type: ignore[union-attr]
                if info.name == bundles.MANIFEST:
                    data = json.dumps(manifest).encode()
                    info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        return out.getvalue()

    with pytest.raises(BundleError, match="field batch must be true or false"):
        bundles.read(with_manifest({**packed.manifest, "batch": "yes"}))
    older = {k: v for k, v in packed.manifest.items() if k != "batch"}
    assert "batch" not in bundles.read(with_manifest(older)).manifest


def test_a_bundle_from_before_the_batch_option_batches_scikit_learn_models_only():
    model, _ = table_model()
    older = {"name": "old", "input_schema": TEXT, "method": "predict", "proba": False}
    assert DataPlane(older, model, version=1, digest="sha256:0").batch is True
    assert DataPlane(older, Gate(opened=True), version=1, digest="sha256:0").batch is False
