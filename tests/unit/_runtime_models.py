"""Small real models and their bundles for the runtime's unit tests (loaded in this process)."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

TRAVEL = "2770 Travel expenses"
NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


def accounts_model() -> Any:
    """The account-suggestion pipeline (TF-IDF + naive Bayes) on the synthetic expense corpus."""
    if str(NOTEBOOKS) not in sys.path:
        sys.path.insert(0, str(NOTEBOOKS))
    import expenses

    return expenses.train(*expenses.make_corpus(n=600, seed=7))


def tensor_model() -> tuple[Any, Any]:
    """A logistic regression on 4 float features, and a sample of 3 rows."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 4))
    y = (X[:, 0] + X[:, 1] > 0).astype(np.int64)
    return LogisticRegression().fit(X, y), X[:3]


def table_model() -> tuple[Any, Any]:
    """A pipeline on a DataFrame with a numeric and a text column, and a sample DataFrame."""
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    frame = pd.DataFrame({"amount": [12.0, 250.0, 8.5, 990.0, 15.0, 400.0],
                          "city": ["Berlin", "Paris", "Berlin", "Vienna", "Paris", "Vienna"]})
    labels = ["small", "large", "small", "large", "small", "large"]
    model = Pipeline([
        ("prep", ColumnTransformer([("city", OneHotEncoder(handle_unknown="ignore"), ["city"])],
                                   remainder="passthrough")),
        ("clf", LogisticRegression()),
    ]).fit(frame, labels)
    return model, frame.iloc[:2]


class Picky:
    """Answers the length of each text, and raises on the text "boom" like a model with a bug."""

    def predict(self, rows: list[str]) -> list[int]:
        if "boom" in rows:
            raise ValueError("cannot handle 'boom'")
        return [len(r) for r in rows]


class LoadBomb:
    """Pickles fine and raises while unpickling."""

    def predict(self, rows: Any) -> list[int]:
        return [0 for _ in rows]

    def __reduce__(self) -> Any:
        return (_explode, ("the model's own load error",))


def _explode(message: str) -> None:
    raise RuntimeError(message)


def echo(rows: Any) -> Any:
    """A plain function as a model: returns its rows."""
    return list(rows)


def runtime_app(kind: str, settings: Any, name: str | None = None) -> Any:
    """The runtime's Flask app for one of the models above: ``text`` (accounts), ``tensor`` or ``table``."""
    from gazelle import bundle
    from gazelle.runtime import create_app

    if kind == "text":
        model, sample = accounts_model(), ["taxi to conference"]
    else:
        model, sample = tensor_model() if kind == "tensor" else table_model()
    return create_app(bundle.pack(model, name=name or kind, sample=sample), settings=settings)
