"""``bench/_peers.py``'s pure helpers: the pins read from ``pip freeze``, where a peer's venv is cached,
the V2 inference request bodies and the reading of the peers' answers. No venv, no server."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _load():
    spec = importlib.util.spec_from_file_location("_peers", BENCH / "_peers.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("_peers", module)
    spec.loader.exec_module(module)
    return module


peers = _load()

FREEZE = """\
cloudpickle==3.1.3
Flask==3.1.3
numpy==2.4.6
pandas==3.1.1
scikit_learn==1.9.1
-e git+https://example.invalid/gazelle@abc#egg=gazelle
"""


def test_pins_come_from_the_freeze_in_the_order_asked_whatever_the_spelling():
    assert peers.pins_from_freeze(FREEZE, ["scikit-learn", "numpy", "Cloudpickle"]) == [
        "scikit_learn==1.9.1", "numpy==2.4.6", "cloudpickle==3.1.3"]


def test_a_missing_pin_is_one_clear_error():
    with pytest.raises(peers.PeerError, match="no scipy, joblib to pin"):
        peers.pins_from_freeze(FREEZE, ["numpy", "scipy", "joblib"])


def test_the_cache_is_the_variable_or_under_home(tmp_path):
    assert peers.cache_root({"GAZELLE_BENCH_CACHE": str(tmp_path)}) == tmp_path
    assert peers.cache_root({"HOME": "/home/u"}) == Path("/home/u/.cache/gazelle-bench")


def test_a_venv_is_named_by_its_peer_and_the_hash_of_its_requirements(tmp_path):
    reqs = ["bentoml==1.4.40", "numpy==2.4.6"]
    here = peers.env_dir(tmp_path, "bentoml", reqs, "3.11.7")
    assert here.parent == tmp_path / "peers" and here.name.startswith("bentoml-")
    assert peers.env_dir(tmp_path, "bentoml", reqs[::-1], "3.11.7") == here  # order does not matter
    assert peers.env_dir(tmp_path, "bentoml", ["bentoml==1.4.40", "numpy==2.4.5"], "3.11.7") != here
    assert peers.env_dir(tmp_path, "bentoml", reqs, "3.12.1") != here


def test_v2_body_of_texts_is_a_bytes_vector():
    assert peers.v2_body("instances", ["taxi", "hotel"]) == {
        "inputs": [{"name": "instances", "shape": [2], "datatype": "BYTES", "data": ["taxi", "hotel"]}]}


def test_v2_body_of_numeric_rows_is_a_flattened_fp64_matrix():
    body = peers.v2_body("instances", [[1, 2.5, 3], [4, 5, 6]])
    assert body["inputs"][0] == {"name": "instances", "shape": [2, 3], "datatype": "FP64",
                                 "data": [1.0, 2.5, 3.0, 4.0, 5.0, 6.0]}
    with pytest.raises(ValueError):
        peers.v2_body("instances", [[1, 2], [3]])


def test_v2_predictions_are_the_first_outputs_data_one_per_row():
    answer = {"model_name": "forest", "outputs": [
        {"name": "predictions", "shape": [3], "datatype": "INT64", "data": [0, 2, 1]}]}
    assert peers.v2_predictions(answer) == [0, 2, 1]
    strings = {"outputs": [{"name": "predictions", "shape": [2, 1], "datatype": "BYTES", "data": ["a", "b"]}]}
    assert peers.v2_predictions(strings) == ["a", "b"]
    with pytest.raises(peers.PeerError, match="shape"):
        peers.v2_predictions({"outputs": [{"shape": [2, 2], "data": [0, 1, 2, 3]}]})
    with pytest.raises(peers.PeerError, match="instead of a V2 inference response"):
        peers.v2_predictions({"error": "boom"})


def test_bentoml_answers_the_bare_list():
    assert peers.bentoml_predictions(["Travel"]) == ["Travel"]
    with pytest.raises(peers.PeerError):
        peers.bentoml_predictions({"predictions": ["Travel"]})


def test_first_sentence_is_the_last_line_trimmed():
    assert peers.first_sentence("Collecting x\n\nERROR: No matching distribution found for x\n") == (
        "ERROR: No matching distribution found for x")
    assert peers.first_sentence("") == "no output"
    assert len(peers.first_sentence("y" * 1000, limit=50)) == 50
