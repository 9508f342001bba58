"""One boolean spelling: the server's query parameters, its settings and the runtime's agree."""
from __future__ import annotations

import pytest

from gazelle.booleans import parse_bool
from gazelle.errors import BadRequest, ConfigError
from gazelle.runtime.settings import RuntimeSettings
from gazelle.runtime.wire import flag
from gazelle.server.settings import Settings


@pytest.mark.parametrize("raw, value", [("1", True), ("TRUE", True), (" yes ", True), ("on", True),
                                        ("0", False), ("False", False), ("no", False), ("OFF", False)])
def test_every_spelling_means_the_same_everywhere(raw: str, value: bool) -> None:
    assert parse_bool(raw) is value
    assert flag({"proba": raw}, "proba") is value


def test_anything_else_is_refused_naming_the_field() -> None:
    assert parse_bool("maybe") is None
    with pytest.raises(BadRequest, match="proba"):
        flag({"proba": "maybe"}, "proba")


def test_an_empty_query_parameter_is_true_and_an_absent_one_false() -> None:
    assert flag({"proba": ""}, "proba") is True and flag({}, "proba") is False


@pytest.mark.parametrize("raw, value", [("on", True), ("off", False), ("Yes", True)])
def test_server_and_runtime_settings_read_the_same_spellings(raw: str, value: bool) -> None:
    assert Settings.from_env({"GAZELLE_RUN_JOBS": raw}).run_jobs is value
    assert RuntimeSettings.from_env({"GAZELLE_RUNTIME_ACCESS_LOG": raw}).access_log is value


def test_a_setting_that_is_no_boolean_names_its_variable() -> None:
    with pytest.raises(ConfigError, match="GAZELLE_RUN_JOBS"):
        Settings.from_env({"GAZELLE_RUN_JOBS": "maybe"})
    with pytest.raises(ConfigError, match="GAZELLE_RUNTIME_ACCESS_LOG"):
        RuntimeSettings.from_env({"GAZELLE_RUNTIME_ACCESS_LOG": "maybe"})
