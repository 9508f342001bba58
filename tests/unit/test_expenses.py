"""The synthetic expense corpus behind the notebook, the demo and the benchmarks."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "notebooks"))
import expenses  # noqa: E402

TRAVEL = "2770 Travel expenses"


@pytest.fixture(scope="module")
def model():
    return expenses.train(*expenses.make_corpus())


def test_same_seed_gives_the_same_corpus():
    assert expenses.make_corpus(500, seed=3) == expenses.make_corpus(500, seed=3)


def test_different_seeds_give_different_corpora():
    assert expenses.make_corpus(500, seed=1)[0] != expenses.make_corpus(500, seed=2)[0]


def test_corpus_has_requested_size_and_uses_every_account():
    texts, labels = expenses.make_corpus(2000)
    assert len(texts) == len(labels) == 2000
    assert set(labels) == set(expenses.ACCOUNTS)
    assert 18 <= len(expenses.ACCOUNTS) <= 24
    assert all(isinstance(t, str) and t.strip() for t in texts)


def test_small_corpus_still_covers_every_account():
    _, labels = expenses.make_corpus(len(expenses.ACCOUNTS))
    assert sorted(labels) == sorted(expenses.ACCOUNTS)


def test_every_account_has_templates_and_a_number():
    assert set(expenses.TEMPLATES) == set(expenses.ACCOUNTS)
    assert all(a.split(" ", 1)[0].isdigit() for a in expenses.ACCOUNTS)


def test_negative_size_is_refused():
    with pytest.raises(ValueError, match="n must be"):
        expenses.make_corpus(-1)


def test_taxi_to_conference_is_travel_whatever_the_case(model):
    assert list(model.predict(["taxi to conference", "Taxi to conference"])) == [TRAVEL, TRAVEL]


def test_exercise_examples_get_their_accounts(model):
    got = model.predict(["Uber airport transfer", "printer toner HP 305", "Slack annual plan"])
    assert list(got) == [TRAVEL, "6300 Office supplies", "6540 Software subscriptions"]


def test_model_generalises_to_a_corpus_with_another_seed(model):
    texts, labels = expenses.make_corpus(1000, seed=99)
    right = sum(p == y for p, y in zip(model.predict(texts), labels))
    assert right / len(labels) > 0.9


def test_proba_has_one_column_per_account(model):
    proba = model.predict_proba(["Zoom monthly plan"])
    assert proba.shape == (1, len(expenses.ACCOUNTS))
    assert list(model.classes_) == sorted(expenses.ACCOUNTS)
