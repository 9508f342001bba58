"""Adaptive batching through a real ``gazelle runtime`` under gunicorn, under concurrent load.

Every answer is checked against the model's own prediction in this process for the same rows, while
many threads send distinct rows at once, so that the runtime batches them (the tests check from
``/metrics`` that it did). Also: one bad or raising request among them fails alone, a request that
outlives the timeout gets a JSON 504, and SIGTERM finishes the requests that are queued.
"""
from __future__ import annotations

import importlib.util
import re
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from _runtime import REPO, Runtime, call, save

from gazelle.schema import jsonable

pytestmark = [pytest.mark.integration,
              # the in-process forest, called from the load threads, warns about joblib config
              pytest.mark.filterwarnings("ignore:`sklearn.utils.parallel.delayed`:UserWarning")]

LOAD_THREADS = 24
REQUESTS = 120


# -- models (classes defined here travel by value) ------------------------------------------------

class SlowLengths:
    """The length of each text, after 20 ms of work per call (so that requests queue behind it);
    raises on "boom" like a model with a bug."""

    def predict(self, rows: list[str]) -> list[int]:
        time.sleep(0.02)
        if "boom" in rows:
            raise ValueError("cannot handle 'boom'")
        return [len(r) for r in rows]


class FileGate:
    """The length of each text, once the file ``path`` exists (at most a minute): holds the model busy
    until the test lets it go."""

    def __init__(self, path: str) -> None:
        self.path = path

    def predict(self, rows: list[str]) -> list[int]:
        deadline = time.monotonic() + 60
        while not Path(self.path).exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        return [len(r) for r in rows]


def _bench_models() -> Any:
    spec = importlib.util.spec_from_file_location("bench_runtime", REPO / "bench" / "runtime.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def frame_model() -> tuple[Any, Any, list[dict[str, Any]]]:
    """A pipeline on a DataFrame (one-hot city, amount passed through, a small forest)."""
    import numpy as np
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    rng = np.random.default_rng(0)
    cities = np.array(["Berlin", "Paris", "Vienna", "Rome"])
    frame = pd.DataFrame({"amount": rng.uniform(1, 1000, 400).round(2), "city": rng.choice(cities, 400)})
    labels = np.where(frame["amount"] > 300, "large", "small")
    model = Pipeline([
        ("prep", ColumnTransformer([("city", OneHotEncoder(handle_unknown="ignore"), ["city"])],
                                   remainder="passthrough")),
        ("clf", RandomForestClassifier(n_estimators=20, random_state=0)),
    ]).fit(frame, labels)
    rows = [{"amount": float(a), "city": str(c)} for a, c in
            zip(rng.uniform(1, 1000, 300).round(2), rng.choice(cities, 300))]
    return model, frame.iloc[:3], rows


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """name -> (runtime, in-process model, distinct rows, v2 input builder or None)."""
    bench = _bench_models()
    directory = tmp_path_factory.mktemp("batching")
    text, text_sample, _ = bench.text_model()
    texts, _ = sys.modules["expenses"].make_corpus(300, seed=5)  # imported by text_model()
    forest, forest_sample, _ = bench.forest_model()
    features = [list(map(float, row)) for row in _forest_rows(300)]
    frame, frame_sample, frame_rows = frame_model()
    models = {
        "accounts": (text, text_sample, list(texts),
                     lambda rows: [{"name": "text", "datatype": "BYTES", "shape": [len(rows)], "data": rows}]),
        "forest": (forest, forest_sample, features,
                   lambda rows: [{"name": "input", "datatype": "FP64", "shape": [len(rows), 20],
                                  "data": [x for row in rows for x in row]}]),
        "costs": (frame, frame_sample, frame_rows, None),
    }
    runtimes: dict[str, Any] = {}
    try:
        for name, (model, sample, rows, v2) in models.items():
            bundle = save(directory, model, name=name, sample=sample)
            runtime = Runtime(bundle, directory / f"{name}.log", workers=2)
            runtimes[name] = (runtime, model, rows, v2)
        for runtime, *_ in runtimes.values():
            runtime.wait_ready()
        yield runtimes
    finally:
        for runtime, *_ in runtimes.values():
            runtime.__exit__(None, None, None)


def _forest_rows(n: int) -> Any:
    from sklearn.datasets import make_classification

    X, _ = make_classification(n_samples=n, n_features=20, random_state=7)
    return X


def _metric(runtime: Runtime, name: str) -> float:
    text = call(runtime.url + "/metrics")[1]
    match = re.search(rf"^{name} (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def _load(send: Any, count: int = REQUESTS) -> list[Any]:
    with ThreadPoolExecutor(LOAD_THREADS) as pool:
        return list(pool.map(send, range(count)))


@pytest.mark.parametrize("name", ["accounts", "forest", "costs"])
def test_batched_answers_under_concurrent_load_equal_the_models_own_for_the_same_rows(served, name):
    runtime, model, rows, v2 = served[name]
    classes = [str(c) for c in jsonable(model.classes_)]

    def send(i: int) -> None:
        mine = rows[(i * 2) % len(rows):(i * 2) % len(rows) + 1 + i % 2]
        expected = _own_answer(model, mine)
        kind = i % 3
        if kind == 2 and v2 is not None:
            status, body, _ = call(f"{runtime.url}/v2/models/{name}/infer", {"inputs": v2(mine)})
            assert status == 200, body
            assert body["outputs"][0]["data"] == expected
        elif kind == 1:
            status, body, _ = call(runtime.url + "/predict?proba=true", {"instances": mine})
            assert status == 200, body
            assert body["predictions"] == expected
            assert body["probabilities"] == [dict(zip(classes, p)) for p in
                                             jsonable(model.predict_proba(_as_input(model, mine)))]
        else:
            status, body, _ = call(runtime.url + "/predict", {"instances": mine})
            assert status == 200, body
            assert body["predictions"] == expected

    _load(send)
    calls, requests = _metric(runtime, "gazelle_batch_requests_count"), _metric(runtime, "gazelle_batch_requests_sum")
    assert requests >= REQUESTS and calls < requests, "no model call answered more than one request"


def _as_input(model: Any, rows: list[Any]) -> Any:
    import numpy as np
    import pandas as pd

    if rows and isinstance(rows[0], dict):
        return pd.DataFrame(rows, columns=["amount", "city"])
    return np.asarray(rows, dtype="float64") if rows and isinstance(rows[0], list) else list(rows)


def _own_answer(model: Any, rows: list[Any]) -> list[Any]:
    return jsonable(model.predict(_as_input(model, rows)))


@pytest.fixture(scope="module")
def slow_lengths(tmp_path_factory):
    directory = tmp_path_factory.mktemp("slow-lengths")
    bundle = _save_batching(directory, SlowLengths(), "lengths")
    with Runtime(bundle, directory / "runtime.log", workers=2) as runtime:
        yield runtime.wait_ready()


def _save_batching(directory: Path, model: Any, name: str) -> Path:
    from gazelle import bundle

    return bundle.save(model, directory / f"{name}.tar", name=name, sample=["a", "bb"], batch=True)


def _gate_bundle(directory: Path) -> tuple[Path, Path]:
    """A FileGate bundle, and its gate file (closed: the model holds every call until it exists)."""
    opened = directory / "open"
    opened.touch()  # save() runs the model on the sample
    bundle = _save_batching(directory, FileGate(str(opened)), "gate")
    opened.unlink()
    return bundle, opened


def test_a_bad_or_raising_request_under_load_fails_alone_and_every_other_request_gets_its_answer(slow_lengths):
    def send(i: int) -> tuple[int, int, Any]:
        if i % 10 == 3:
            rows: list[Any] = ["fine", 7]
        elif i % 10 == 7:
            rows = ["x" * i, "boom"]
        else:
            rows = ["y" * i, "z" * (i % 5 + 1)]
        status, body, _ = call(slow_lengths.url + "/predict", {"instances": rows})
        return i, status, body

    for i, status, body in _load(send):
        if i % 10 == 3:
            assert status == 422 and body["error"]["message"].startswith("instances[1]: expected a string")
        elif i % 10 == 7:
            assert status == 500 and "cannot handle 'boom'" in body["error"]["message"]
        else:
            assert (status, body["predictions"]) == (200, [i, i % 5 + 1])
    assert _metric(slow_lengths, "gazelle_batch_fallbacks_total") >= 1, "no batch held a raising request"


def test_a_request_waiting_past_the_timeout_is_a_json_504_and_the_worker_recovers(tmp_path):
    bundle, opened = _gate_bundle(tmp_path)
    with Runtime(bundle, tmp_path / "runtime.log", workers=1, env={"GAZELLE_RUNTIME_TIMEOUT": "1"}) as runtime:
        runtime.wait_ready()
        status, body, headers = call(runtime.url + "/predict", {"instances": ["abc"]},
                                     headers={"X-Request-ID": "too-slow-1"})
        assert status == 504 and headers["Content-Type"] == "application/json"
        assert body["error"]["type"] == "timeout" and "GAZELLE_RUNTIME_TIMEOUT" in body["error"]["message"]
        assert headers["X-Request-ID"] == "too-slow-1"
        opened.touch()
        deadline = time.monotonic() + 60
        while call(runtime.url + "/predict", {"instances": ["abcd"]})[:2] != (200, {
                "predictions": [4], "model": "gate", "version": 0}):
            assert time.monotonic() < deadline, runtime.text()
            time.sleep(0.05)
        assert any(e["request_id"] == "too-slow-1" for e in runtime.events("request_timeout"))


def test_sigterm_finishes_the_requests_queued_behind_a_busy_model(tmp_path):
    bundle, opened = _gate_bundle(tmp_path)
    with Runtime(bundle, tmp_path / "runtime.log", workers=1) as runtime:
        runtime.wait_ready()
        answers: dict[int, Any] = {}

        def send(i: int) -> None:
            answers[i] = call(runtime.url + "/predict", {"instances": ["q" * i]}, timeout=60)[:2]

        threads = [threading.Thread(target=send, args=(i,)) for i in range(1, 6)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30
        while _metric(runtime, "gazelle_requests_in_flight") - 1 < 5:  # minus the scrape itself
            assert time.monotonic() < deadline, "the requests never all reached the runtime"
            time.sleep(0.02)
        runtime.terminate()
        opened.touch()
        for thread in threads:
            thread.join(60)
        assert answers == {i: (200, {"predictions": [i], "model": "gate", "version": 0}) for i in range(1, 6)}
        assert runtime.wait_exit(30) == 0
