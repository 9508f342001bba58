import importlib
import importlib.metadata as metadata
import pickle
import platform
import sys
import textwrap
from collections import OrderedDict
from pathlib import Path

import cloudpickle
import numpy as np
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.naive_bayes import MultinomialNB
from sklearn.pipeline import make_pipeline

from gazelle import envspec
from gazelle.errors import BadRequest, BundleError, ConfigError, EnvironmentMismatch


def _from_main(source, name):
    """Define ``name`` as a notebook would: in ``__main__``, where cloudpickle pickles by value."""
    namespace = {"__name__": "__main__", "np": np}
    exec(textwrap.dedent(source), namespace)
    return namespace[name]


def _pins(requirements):
    return dict(r.split("==", 1) for r in requirements)


@pytest.fixture(scope="module")
def pipeline():
    return make_pipeline(TfidfVectorizer(), MultinomialNB()).fit(
        ["taxi to paris", "lunch with client", "train home"], ["travel", "meals", "travel"])


@pytest.fixture
def helper_module(tmp_path, monkeypatch):
    """A helper ``.py`` next to the notebook: importable here, installed nowhere."""
    (tmp_path / "expense_rules.py").write_text(textwrap.dedent("""
        import numpy as np

        class Doubler:
            def predict(self, rows):
                return np.asarray(rows) * 2
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("expense_rules")
    yield module
    sys.modules.pop("expense_rules", None)


# -- reading the pickle -------------------------------------------------------------------------


def test_pickle_modules_follows_memoised_strings():
    # PROTO 4; "json" and "dumps" memoised; STACK_GLOBAL; then "json" fetched from the memo (BINGET 0)
    # for the second STACK_GLOBAL, as pickle writes a module name the second time it sees it.
    crafted = (b"\x80\x04" b"\x8c\x04json\x94" b"\x8c\x05dumps\x94" b"\x93\x94"
               b"h\x00" b"\x8c\x05loads\x94" b"\x93\x94" b"\x86\x94.")
    assert pickle.loads(crafted) == (__import__("json").dumps, __import__("json").loads)
    referenced, _ = envspec.pickle_modules(crafted)
    assert referenced == {"json"}


def test_pickle_modules_sees_modules_cloudpickle_reimports():
    UsesNumpy = _from_main("""
        class UsesNumpy:
            def predict(self, rows):
                return np.asarray(rows)
    """, "UsesNumpy")
    referenced, defined = envspec.pickle_modules(cloudpickle.dumps(UsesNumpy()))
    assert "numpy" in referenced
    assert defined == {"__main__"}


# -- capture ------------------------------------------------------------------------------------


def test_capture_pins_sklearn_numpy_scipy_for_a_pipeline(pipeline):
    pickled, by_value = envspec.dumps(pipeline)
    env = envspec.capture(pipeline, pickled)
    pins = _pins(env["requirements"])
    for dist in ("scikit-learn", "numpy", "scipy", "joblib", "threadpoolctl"):
        assert pins[dist] == metadata.version(dist)
    assert env["requirements"] == sorted(env["requirements"])
    assert env["python"] == platform.python_version()
    assert env["by_value"] == by_value == []


def test_capture_skips_extras_and_never_pins_the_stdlib(pipeline):
    pins = _pins(envspec.capture(pipeline, cloudpickle.dumps(pipeline))["requirements"])
    assert "pytest" not in pins  # installed here, but only an extra ("test") of scipy and joblib
    assert envspec.capture(OrderedDict(), pickle.dumps(OrderedDict()))["requirements"] == []


def test_user_pins_win_over_captured_ones(pipeline):
    env = envspec.capture(pipeline, cloudpickle.dumps(pipeline), extra=["numpy==1.0.0", "lightgbm>=4"])
    assert "numpy==1.0.0" in env["requirements"] and "lightgbm>=4" in env["requirements"]
    assert not [r for r in env["requirements"] if r.startswith("numpy==2")]


def test_invalid_user_pin_is_refused(pipeline):
    with pytest.raises(BadRequest, match="not valid"):
        envspec.capture(pipeline, cloudpickle.dumps(pipeline), extra=["numpy=="])


def test_class_from_main_travels_by_value():
    Notebook = _from_main("""
        class Notebook:
            def predict(self, rows):
                return [r.upper() for r in rows]
    """, "Notebook")
    pickled, by_value = envspec.dumps(Notebook())
    assert by_value == ["__main__"]
    assert envspec.capture(Notebook(), pickled)["by_value"] == ["__main__"]
    assert "__main__" not in envspec.pickle_modules(pickled)[0]


def test_helper_module_is_registered_by_value_then_unregistered(helper_module):
    model = helper_module.Doubler()
    by_reference = cloudpickle.dumps(model)
    assert "expense_rules" in envspec.pickle_modules(by_reference)[0]

    pickled, by_value = envspec.dumps(model)
    assert by_value == ["expense_rules"]
    assert "expense_rules" not in envspec.pickle_modules(pickled)[0]
    assert "expense_rules" not in cloudpickle.list_registry_pickle_by_value()
    env = envspec.capture(model, pickled)
    assert env["by_value"] == ["expense_rules"]
    assert "numpy" in _pins(env["requirements"])  # imported by the helper, re-imported on load

    # The loading side cannot import the helper: the model must not need it.
    sys.modules.pop("expense_rules")
    sys.path.remove(str(Path(helper_module.__file__).parent))
    loaded = pickle.loads(pickled)
    assert loaded.predict([1.5]).tolist() == [3.0]


# -- check --------------------------------------------------------------------------------------


def _manifest(**changes):
    manifest = {"python": platform.python_version(),
                "requirements": [f"numpy=={np.__version__}", f"cloudpickle=={cloudpickle.__version__}"]}
    manifest.update(changes)
    return manifest


def test_damaged_pickle_is_a_bundle_error():
    with pytest.raises(BundleError, match="pickle cannot be read"):
        envspec.pickle_modules(b"\x80\x05garbage")


def test_same_environment_has_no_differences():
    assert envspec.differences(_manifest()) == []
    assert envspec.check(_manifest()) == []


def test_check_lists_every_difference():
    other_minor = f"{sys.version_info.major}.{sys.version_info.minor + 1}.0"
    manifest = _manifest(python=other_minor, requirements=[
        "numpy==1.0.0", f"cloudpickle=={cloudpickle.__version__}", "surely-not-installed-gz==2.0"])
    found = envspec.differences(manifest)
    assert found == [
        f"python: bundle has {other_minor}, this is {sys.version_info.major}.{sys.version_info.minor} "
        "(bundles load only on the same python major.minor)",
        f"numpy: bundle has 1.0.0, installed {np.__version__}",
        "surely-not-installed-gz: bundle has 2.0, not installed",
    ]
    with pytest.raises(EnvironmentMismatch) as err:
        envspec.check(manifest, "strict")
    assert err.value.differences == found
    assert "3 place(s)" in str(err.value) and "numpy: bundle has 1.0.0" in str(err.value)
    assert envspec.check(manifest, "warn") == found


def test_patch_release_of_python_is_no_difference():
    v = sys.version_info
    assert envspec.differences(_manifest(python=f"{v.major}.{v.minor}.{v.micro + 1}")) == []


def test_unknown_check_mode_is_a_config_error():
    with pytest.raises(ConfigError, match="'lenient'"):
        envspec.check(_manifest(), "lenient")


def test_pins_for_another_platform_are_not_checked_here():
    manifest = _manifest(requirements=['pywin32==306; sys_platform == "win32"'])
    assert envspec.differences(manifest) == []


def test_vectorizer_pickles_without_its_stop_words_address_and_transforms_the_same():
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(stop_words=["the"]).fit(["the taxi to town", "a printer"])
    assert hasattr(vectorizer, "_stop_words_id")  # set by fit: id() of a list, new in every process
    pickled, _ = envspec.dumps(vectorizer)
    loaded = pickle.loads(pickled)
    assert not hasattr(loaded, "_stop_words_id") and hasattr(vectorizer, "_stop_words_id")
    assert (loaded.transform(["taxi the town"]) != vectorizer.transform(["taxi the town"])).nnz == 0
    assert envspec.dumps(vectorizer)[0] == pickled
