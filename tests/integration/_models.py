"""Models for the bundle round-trip tests, and the fresh-interpreter loader they are checked with."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import MultinomialNB
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from gazelle import schema

HELPER_DIR = Path(__file__).parent / "fixtures_helper"

TEXTS = ["taxi to conference", "hotel night in lyon", "lunch with client", "train ticket to paris",
         "office chairs", "printer paper", "dinner with team", "flight to berlin", "coffee beans",
         "taxi from airport"]
LABELS = ["travel", "travel", "meals", "travel", "office", "office", "meals", "travel", "meals", "travel"]


def text_pipeline():
    """TF-IDF + naive Bayes on expense texts, and a sample of texts."""
    model = make_pipeline(TfidfVectorizer(), MultinomialNB()).fit(TEXTS, LABELS)
    return model, TEXTS[:4]


def expenses_frame(n: int = 40) -> pd.DataFrame:
    rng = np.random.default_rng(7)
    return pd.DataFrame({
        "amount": rng.gamma(2.0, 40.0, n).round(2),
        "nights": rng.integers(0, 4, n),
        "city": rng.choice(["paris", "lyon", "berlin"], n),
        "kind": pd.Categorical(rng.choice(["card", "cash"], n), categories=["card", "cash", "cheque"]),
    })


def column_pipeline():
    """A ColumnTransformer (scaled numbers, one-hot strings and categories) + logistic regression."""
    frame = expenses_frame()
    target = np.where(frame["amount"] + 30 * frame["nights"] > 100, "review", "ok")
    prep = ColumnTransformer([
        ("numbers", StandardScaler(), ["amount", "nights"]),
        ("labels", OneHotEncoder(handle_unknown="ignore"), ["city", "kind"]),
    ])
    model = Pipeline([("prep", prep), ("classify", LogisticRegression())]).fit(frame, target)
    return model, frame.head(6)


def word_counts(texts):
    """A plain function as the model."""
    return [len(text.split()) for text in texts]


# What a model answers for its bundle's own sample, decoded as the runtime decodes it. Source text,
# because the fresh interpreter below may not import the test tree; this process runs the same text.
ANSWERS = """
def sample_answers(model, m):
    inputs = schema.decode(m["sample"], m["input_schema"])
    call = model if m["method"] == "__call__" else getattr(model, m["method"])
    out = {"predictions": schema.jsonable(call(inputs))}
    if m["proba"]:
        out["proba"] = schema.jsonable(model.predict_proba(inputs))
    return out
"""
_namespace: dict = {"schema": schema}
exec(ANSWERS, _namespace)
sample_answers = _namespace["sample_answers"]

# The fresh interpreter: read, check the environment strictly, load, answer the sample, print JSON.
LOADER = """
import json, sys
from gazelle import bundle, envspec, schema
""" + ANSWERS + """
b = bundle.read(sys.argv[1])
envspec.check(b.manifest, "strict")
print(json.dumps(sample_answers(b.load_model(), b.manifest)))
"""


def clean_env() -> dict[str, str]:
    """The environment for child interpreters: nothing that would let them import the test tree."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSTARTUP")}


def run_python(args: list[str], cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, *args], cwd=cwd, env=clean_env(), capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, f"{args[0]} exited {done.returncode}:\n{done.stderr[-3000:]}"
    return done


def load_in_fresh_process(path: Path, cwd: Path) -> dict:
    """Predictions on the bundle's own sample, from an isolated interpreter (``-I``: no cwd, no
    PYTHONPATH, on sys.path) that cannot import anything the saving process could."""
    return json.loads(run_python(["-I", "-c", LOADER, str(path)], cwd=cwd).stdout)
