"""The not-found errors write their own sentence from domain values and list the valid choices."""
from __future__ import annotations

from gazelle.errors import JobNotFound, ModelNotFound, NotFound, VersionNotFound


def test_version_not_found_lists_the_versions_the_model_has() -> None:
    err = VersionNotFound("accounts", 3, [1, 2])
    assert str(err) == "model accounts version 3 not found (versions: 1, 2)"
    assert isinstance(err, NotFound) and isinstance(err, LookupError) and err.code == 404


def test_version_not_found_says_none_for_a_model_without_versions() -> None:
    assert str(VersionNotFound("accounts", 1, [])) == "model accounts version 1 not found (versions: none)"
    assert str(VersionNotFound("accounts", 1)) == "model accounts version 1 not found"


def test_model_not_found_names_the_model_or_the_one_served() -> None:
    assert str(ModelNotFound("accounts")) == "model accounts not found"
    assert str(ModelNotFound("nope", served="accounts")) == \
        "model 'nope' is not served here; this endpoint serves 'accounts'"
    assert JobNotFound("abc").to_json() == {"error": {"type": "not_found", "message": "job abc not found"}}
