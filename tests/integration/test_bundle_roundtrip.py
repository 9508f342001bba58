"""A bundle written here loads and predicts identically in a fresh interpreter."""
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import gazelle
from gazelle import bundle as bundles
from gazelle import envspec, schema

import _models  # tests/integration is on sys.path under pytest, as for the other helpers here

pytestmark = pytest.mark.integration


@pytest.fixture
def elsewhere(tmp_path):
    """A working directory for child interpreters, away from the test tree."""
    path = tmp_path / "elsewhere"
    path.mkdir()
    return path


def _here(model, bundle):
    """What this process gets for the bundle's sample, decoded as the runtime decodes it."""
    m = bundle.manifest
    inputs = schema.decode(m["sample"], m["input_schema"])
    call = model if m["method"] == "__call__" else getattr(model, m["method"])
    out = {"predictions": schema.jsonable(call(inputs))}
    if m["proba"]:
        out["proba"] = schema.jsonable(model.predict_proba(inputs))
    return out


def _round_trip(model, sample, tmp_path, elsewhere, name):
    path = gazelle.save(model, tmp_path / f"{name}.tar", name=name, sample=sample)
    bundle = bundles.read(path)
    here = _here(model, bundle)
    there = _models.load_in_fresh_process(path, elsewhere)
    assert there == here
    assert there["predictions"] == bundle.manifest["expected"]
    return bundle, there


def test_text_pipeline_predicts_identically_in_a_fresh_process(tmp_path, elsewhere):
    model, sample = _models.text_pipeline()
    bundle, there = _round_trip(model, sample, tmp_path, elsewhere, "accounts")
    assert bundle.manifest["input_schema"] == {"type": "text"}
    assert bundle.manifest["by_value"] == []
    assert len(there["proba"]) == len(sample) and len(there["proba"][0]) == 3


def test_column_transformer_on_a_dataframe_predicts_identically(tmp_path, elsewhere):
    model, sample = _models.column_pipeline()
    bundle, there = _round_trip(model, sample, tmp_path, elsewhere, "review")
    columns = {c["name"]: c["dtype"] for c in bundle.manifest["input_schema"]["columns"]}
    assert columns["amount"] == "float64" and columns["nights"] == "int64" and columns["kind"] == "category"
    assert any(r.startswith("pandas==") for r in bundle.manifest["requirements"])
    assert set(there["predictions"]) <= {"ok", "review"}


def test_plain_function_predicts_identically(tmp_path, elsewhere):
    bundle, there = _round_trip(_models.word_counts, ["a b c", "d"], tmp_path, elsewhere, "words")
    assert bundle.manifest["method"] == "__call__"
    assert there == {"predictions": [3, 1]}
    assert bundle.manifest["by_value"] == ["_models"]  # the test tree is not installed: by value


MAIN_SCRIPT = """
import sys

import numpy as np
import gazelle


class Shouter:
    def __init__(self, suffix):
        self.suffix = suffix

    def predict(self, rows):
        return np.array([row.upper() + self.suffix for row in rows], dtype=object)


if __name__ == "__main__":
    gazelle.save(Shouter("!"), sys.argv[1], name="shouter", sample=["hello", "taxi"])
"""


def test_class_defined_in_main_travels_by_value(tmp_path, elsewhere):
    script = tmp_path / "notebook.py"
    script.write_text(textwrap.dedent(MAIN_SCRIPT))
    path = tmp_path / "shouter.tar"
    _models.run_python([str(script), str(path)], cwd=tmp_path)

    bundle = bundles.read(path)
    assert bundle.manifest["by_value"] == ["__main__"]
    assert bundle.manifest["expected"] == ["HELLO!", "TAXI!"]
    there = _models.load_in_fresh_process(path, elsewhere)
    assert there["predictions"] == bundle.manifest["expected"]


HELPER_SAVER = """
import sys

sys.path.insert(0, sys.argv[1])
import expense_rules
import gazelle

texts = ["taxi to town", "lunch with team", "printer paper", "train home", "hotel"]
labels = ["travel", "meals", "office", "travel", "travel"]
model = expense_rules.KeywordModel().fit(texts, labels)
gazelle.save(model, sys.argv[2], name="rules", sample=["taxi and lunch", "paper", "nothing known"])
"""


def test_class_from_a_local_helper_module_travels_by_value(tmp_path, elsewhere):
    helper_dir = tmp_path / "next-to-notebook"
    helper_dir.mkdir()
    shutil.copy(_models.HELPER_DIR / "expense_rules.py", helper_dir)
    path = tmp_path / "rules.tar"
    _models.run_python(["-c", HELPER_SAVER, str(helper_dir), str(path)], cwd=tmp_path)

    bundle = bundles.read(path)
    assert bundle.manifest["by_value"] == ["expense_rules"]
    assert bundle.manifest["proba"] is True and bundle.manifest["classes"] == ["meals", "office", "travel"]
    (helper_dir / "expense_rules.py").unlink()  # not importable by the loader, even by accident
    there = _models.load_in_fresh_process(path, elsewhere)
    assert there["predictions"] == bundle.manifest["expected"] == ["travel", "office", "travel"]
    assert len(there["proba"][0]) == 3


def test_import_of_schema_stays_cheap(elsewhere):
    probe = "import sys, gazelle.schema, gazelle.bundle; print(sorted({'numpy', 'pandas'} & set(sys.modules)))"
    assert json.loads(_models.run_python(["-I", "-c", probe], cwd=elsewhere).stdout.replace("'", '"')) == []


def test_satisfied_by_asks_the_interpreter_itself():
    model, _ = _models.text_pipeline()
    manifest = bundles.pack(model, name="accounts").manifest
    assert envspec.satisfied_by(sys.executable, manifest)
    wrong = {**manifest, "requirements": [*manifest["requirements"], "numpy==0.0.1"]}
    assert not envspec.satisfied_by(sys.executable, wrong)
    assert not envspec.satisfied_by("/nonexistent/python", manifest)


# -- the same model saved in two processes is one bundle ------------------------------------------

REPO = Path(__file__).resolve().parents[2]

DEMO_SAVER = """
import json, sys

sys.path[:0] = [sys.argv[1], sys.argv[2]]  # the gazelle under test, then the notebook's folder
import gazelle
from gazelle import bundle
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.model_selection import train_test_split
from sklearn.naive_bayes import MultinomialNB
from sklearn.pipeline import Pipeline
from expenses import make_corpus

# The notebook's own cells (notebooks/account-suggestion.ipynb).
texts, labels = make_corpus(3000, seed=7)
X_train, X_test, y_train, y_test = train_test_split(
    texts, labels, test_size=0.2, random_state=0, stratify=labels)
model = Pipeline([
    ("tfidf", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)),
    ("nb", MultinomialNB(alpha=0.1)),
])
model.fit(X_train, y_train)
path = gazelle.save(model, sys.argv[3], name="accounts", sample=X_test[:5])
print(json.dumps({"digest": bundle.read(path).digest, "predictions": model.predict(X_test[:5]).tolist(),
                  "proba": model.predict_proba(X_test[:5]).tolist()}))
"""

MAIN_SAVER = """
import json, sys

sys.path.insert(0, sys.argv[1])  # the gazelle under test
import gazelle
from gazelle import bundle


class Shouter:
    def __init__(self, suffix):
        self.suffix = suffix

    def predict(self, rows):
        return [row.upper() + self.suffix for row in rows]


path = gazelle.save(Shouter("!"), sys.argv[2], name="shouter", sample=["hello", "taxi"])
again = bundle.pack(Shouter("!"), name="shouter", sample=["hello", "taxi"])
print(json.dumps({"digest": bundle.read(path).digest, "again": again.digest}))
"""


def _save_twice(tmp_path, script, *args):
    answers = []
    for seed in ("1", "2"):  # different string hashing too, as two notebook runs have
        out = tmp_path / f"run-{seed}.tar"
        done = subprocess.run(
            [sys.executable, "-c", script, *map(str, args), str(out)], cwd=tmp_path,
            env={**_models.clean_env(), "PYTHONHASHSEED": seed}, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        answers.append((out, json.loads(done.stdout.splitlines()[-1])))
    return answers


def test_demo_model_saved_in_two_fresh_processes_is_one_bundle_that_predicts_the_same(tmp_path, elsewhere):
    (first, one), (second, two) = _save_twice(tmp_path, DEMO_SAVER, REPO, REPO / "notebooks")
    assert one["digest"] == two["digest"]
    assert first.read_bytes() == second.read_bytes()
    there = _models.load_in_fresh_process(second, elsewhere)
    assert there["predictions"] == one["predictions"] == bundles.read(first).manifest["expected"]
    assert there["proba"] == one["proba"]


def test_main_class_saved_in_two_fresh_processes_is_one_bundle_that_still_loads(tmp_path, elsewhere):
    (first, one), (_, two) = _save_twice(tmp_path, MAIN_SAVER, REPO)
    assert one["digest"] == two["digest"] == one["again"]
    assert bundles.read(first).manifest["by_value"] == ["__main__"]
    assert _models.load_in_fresh_process(first, elsewhere)["predictions"] == ["HELLO!", "TAXI!"]


def test_main_class_round_trip_in_process_returns_the_same_class():
    class Local:
        def predict(self, rows):
            return [len(r) for r in rows]

    model = Local()
    loaded = bundles.pack(model, name="local", sample=["ab"]).load_model()
    assert type(loaded) is Local and loaded.predict(["abc"]) == [3]
