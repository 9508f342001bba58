"""``gazelle runtime`` refuses a bundle from another environment (exit 3), a model that cannot load
(exit 4) and an unreadable bundle (exit 2), saying why in JSON on stderr; warn mode starts anyway."""
from __future__ import annotations

import pytest
from _runtime import Picky, Runtime, call, fabricate, save

from tests.helpers import Boom

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def picky_bundle(tmp_path_factory):
    return save(tmp_path_factory.mktemp("bundles"), Picky(), name="picky", sample=["a", "bb"])


@pytest.fixture(scope="module")
def foreign_bundle(picky_bundle, tmp_path_factory):
    """The same model, but its manifest says python 3.2 and pins scikit-learn 0.0.1."""
    return fabricate(picky_bundle, tmp_path_factory.mktemp("foreign") / "foreign.tar",
                     python="3.2.0", requirements=["scikit-learn==0.0.1"])


def test_environment_mismatch_exits_3_naming_every_difference(foreign_bundle, tmp_path):
    with Runtime(foreign_bundle, tmp_path / "runtime.log") as runtime:
        assert runtime.wait_exit(60) == 3
        mismatch = runtime.events("environment_mismatch")
    assert len(mismatch) == 1
    differences = mismatch[0]["differences"]
    assert len(differences) == 2
    assert any("python" in d and "3.2" in d for d in differences)
    assert any("scikit-learn" in d and "0.0.1" in d for d in differences)
    assert "GAZELLE_RUNTIME_ENV_CHECK=warn" in mismatch[0]["message"]
    assert "3.2" in runtime.text() and "0.0.1" in runtime.text()


def test_warn_mode_logs_the_differences_and_serves(foreign_bundle, tmp_path):
    with Runtime(foreign_bundle, tmp_path / "runtime.log", env={"GAZELLE_RUNTIME_ENV_CHECK": "warn"}) as runtime:
        runtime.wait_ready()
        assert call(runtime.url + "/predict", {"instances": ["abc"]})[:2] == (
            200, {"predictions": [3], "model": "picky", "version": 0})
        warned = runtime.events("environment_differences")
    assert len(warned) == 1 and warned[0]["level"] == "warning"
    assert any("scikit-learn" in d for d in warned[0]["differences"])
    assert any("python" in d for d in warned[0]["differences"])


def test_model_that_raises_while_loading_exits_4_with_its_message_and_no_restart_loop(tmp_path):
    bundle = save(tmp_path, Boom(), name="bomb", sample=[[1.0]])
    with Runtime(bundle, tmp_path / "runtime.log") as runtime:
        assert runtime.wait_exit(60) == 4
        failed = runtime.events("model_load_failed")
    assert len(failed) == 1
    assert failed[0]["error"] == "RuntimeError: boom while loading"
    assert "Traceback" in failed[0]["traceback"]
    assert not any(line.get("logger") == "gunicorn.error" for line in runtime.lines()), "gunicorn never started"


@pytest.mark.parametrize("content", [b"not a tar at all", None])
def test_unreadable_or_missing_bundle_exits_2(tmp_path, content):
    path = tmp_path / "broken.tar"
    if content is not None:
        path.write_bytes(content)
    with Runtime(path, tmp_path / "runtime.log") as runtime:
        assert runtime.wait_exit(60) == 2
        assert runtime.events("bundle_unreadable")


def test_invalid_setting_exits_2_naming_the_variable(picky_bundle, tmp_path):
    with Runtime(picky_bundle, tmp_path / "runtime.log", env={"GAZELLE_MAX_BODY_BYTES": "lots"}) as runtime:
        assert runtime.wait_exit(60) == 2
        assert "GAZELLE_MAX_BODY_BYTES" in runtime.events("invalid_setting")[0]["error"]
