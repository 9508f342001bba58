"""``gazelle.deploy`` against a real server (gunicorn) and the real local target: the five kinds of
model answer through ``Endpoint.predict`` and through plain HTTP exactly as they do in-process; a
deploy that fails says which stage and why, and leaves the previous version serving."""
from __future__ import annotations

import importlib
import json
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import MultinomialNB
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

import gazelle
from gazelle.schema import jsonable, rows
from tests.helpers import Boom
from tests.integration._client import client_env, connected, http_predict, server  # noqa: F401

pytestmark = pytest.mark.integration

TEXTS = ["taxi to conference", "hotel night in lyon", "lunch with client", "train ticket to paris",
         "office chairs", "printer paper", "dinner with team", "flight to berlin"]
LABELS = ["travel", "travel", "meals", "travel", "office", "office", "meals", "travel"]


def text_pipeline():
    return make_pipeline(TfidfVectorizer(), MultinomialNB()).fit(TEXTS, LABELS), TEXTS[:4]


def column_pipeline():
    rng = np.random.default_rng(7)
    frame = pd.DataFrame({"amount": rng.gamma(2.0, 40.0, 40).round(2), "nights": rng.integers(0, 4, 40),
                          "city": rng.choice(["paris", "lyon", "berlin"], 40)})
    target = np.where(frame["amount"] + 30 * frame["nights"] > 100, "review", "ok")
    prep = ColumnTransformer([("numbers", StandardScaler(), ["amount", "nights"]),
                              ("cities", OneHotEncoder(handle_unknown="ignore"), ["city"])])
    return Pipeline([("prep", prep), ("classify", LogisticRegression())]).fit(frame, target), frame.head(6)


def word_counts(texts):
    """A plain function as the model."""
    return [len(text.split()) for text in texts]


def helper_module_model(tmp_path, monkeypatch):
    """A class from a .py file next to the notebook: not an installed distribution."""
    (tmp_path / "expense_rules_helper.py").write_text(textwrap.dedent("""
        class Rules:
            def __init__(self, words):
                self.words = words

            def predict(self, rows):
                return [next((v for k, v in self.words.items() if k in r.lower()), "other") for r in rows]
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("expense_rules_helper")
    monkeypatch.delitem(sys.modules, "expense_rules_helper")
    return module.Rules({"taxi": "travel", "toner": "office"}), ["Taxi to hotel", "toner", "lunch"]


def answers_match(model, sample, name):
    """Deploy, then compare in-process, Endpoint.predict and plain-HTTP answers."""
    ep = gazelle.deploy(model, name, sample=sample)
    predict = getattr(model, "predict", model)
    local = jsonable(predict(sample))
    via_endpoint = ep.predict(sample)
    via_http = http_predict(ep.url, gazelle.client.config.resolve().token, rows(sample))
    assert jsonable(via_endpoint) == local == via_http
    return ep, via_endpoint


def test_text_pipeline_answers_as_in_the_notebook(connected):
    model, sample = text_pipeline()
    ep, got = answers_match(model, sample, "texts")
    assert isinstance(got, np.ndarray) and got.dtype.kind == "U"
    assert ep.url == f"{connected.url}/m/texts"
    proba = ep.predict_proba(sample)
    assert proba.shape == (len(sample), 3) and ep.classes == sorted(set(LABELS))
    np.testing.assert_allclose(proba, model.predict_proba(sample), rtol=1e-9)


def test_column_transformer_on_a_dataframe_answers_as_in_the_notebook(connected):
    model, sample = column_pipeline()
    answers_match(model, sample, "frames")


def test_plain_function_answers_as_in_the_notebook(connected):
    _, got = answers_match(word_counts, TEXTS[:3], "counts")
    assert got.tolist() == [3, 4, 3]


def test_class_from_a_helper_module_answers_as_in_the_notebook(connected, tmp_path, monkeypatch):
    model, sample = helper_module_model(tmp_path, monkeypatch)
    answers_match(model, sample, "rules")


MAIN_SCRIPT = '''
import json, sys
import gazelle

class KeywordModel:
    def __init__(self, keywords):
        self.keywords = keywords

    def predict(self, rows):
        return [next((v for k, v in self.keywords.items() if k in r.lower()), "other") for r in rows]

model = KeywordModel({"taxi": "travel", "toner": "office"})
sample = ["Taxi to conference", "printer toner", "lunch"]
ep = gazelle.deploy(model, name="keywords", sample=sample)
print(json.dumps({"local": model.predict(sample), "remote": ep.predict(sample).tolist(), "url": ep.url}))
'''


def test_class_defined_in_main_answers_as_in_the_script(server, tmp_path):
    script = tmp_path / "train.py"
    script.write_text(MAIN_SCRIPT)
    done = subprocess.run([sys.executable, str(script)], env=client_env(server), capture_output=True,
                          text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith("deploying keywords version 1 (job ")
    assert any(line.startswith("[sanity] done in ") for line in lines)
    result = json.loads(lines[-1])
    assert result["local"] == result["remote"] == ["travel", "office", "other"]
    assert http_predict(result["url"], server.token, ["taxi!"]) == ["travel"]


# -- failures leave the previous version serving -----------------------------------------------------

def process_id(rows_):
    """Answers differ between the notebook and the runtime process: the sanity check must catch it."""
    import os

    return [os.getpid() for _ in rows_]


@pytest.fixture(scope="module")
def guarded(server):
    """Model "guarded", version 1 live, answering the lengths of texts."""
    gazelle.client.configure(server.url, server.token)
    try:
        ep = gazelle.deploy(word_counts, "guarded", sample=["a b", "c"])
    finally:
        gazelle.client.configure()
    return ep


def still_serves_version_1(ep):
    assert ep.predict(["one two three"]).tolist() == [3]
    assert gazelle.endpoint("guarded").version == 1


def test_sanity_mismatch_fails_at_sanity_and_v1_keeps_serving(connected, guarded):
    with pytest.raises(gazelle.DeployError) as err:
        gazelle.deploy(process_id, "guarded", sample=["a", "b"])
    assert err.value.stage == "sanity" and "row 0" in err.value.cause
    still_serves_version_1(guarded)


def test_model_raising_while_loading_fails_with_its_own_message_and_v1_keeps_serving(connected, guarded):
    with pytest.raises(gazelle.DeployError) as err:
        gazelle.deploy(Boom(), "guarded", sample=["a"])
    e = err.value
    assert e.stage == "deploy"
    assert "boom while loading" in e.cause + "\n".join(e.logs)
    still_serves_version_1(guarded)


def test_environment_that_cannot_be_built_fails_at_build_and_v1_keeps_serving(connected, guarded):
    with pytest.raises(gazelle.DeployError) as err:
        gazelle.deploy(word_counts, "guarded", sample=["a"], requirements=["gazelle-no-such-dist==0.0.1"])
    e = err.value
    assert e.stage == "build" and "pip could not install" in e.cause
    still_serves_version_1(guarded)
