"""The server's sanity check: does what a new version answered match what the notebook expected."""
from __future__ import annotations

import json
import math
from typing import Any, Iterable, Sequence

from gazelle.schema.common import MAX_SHOWN, key_path
from gazelle.schema.encoding import jsonable


def compare(got: Sequence[Any], expected: Sequence[Any], *, rel_tol: float = 1e-6,
            abs_tol: float = 1e-9) -> str | None:
    """None if ``got`` matches ``expected`` (labels exactly, floats within tolerance), else one sentence
    naming the first difference: ``row 2: expected 'x', got 'y'``."""
    if not isinstance(got, list):
        got = jsonable(got)
    if len(got) != len(expected):
        return f"expected {len(expected)} rows, got {len(got)}"
    return _first_difference(((g, e, f"row {i}") for i, (g, e) in enumerate(zip(got, expected))),
                             rel_tol, abs_tol)


def _first_difference(items: Iterable[tuple[Any, Any, str]], rel_tol: float, abs_tol: float) -> str | None:
    for got, expected, path in items:
        problem = _difference(got, expected, path, rel_tol, abs_tol)
        if problem:
            return problem
    return None


def _difference(got: Any, expected: Any, path: str, rel_tol: float, abs_tol: float) -> str | None:
    numbers = (int, float)
    if (isinstance(got, numbers) and isinstance(expected, numbers)
            and not isinstance(got, bool) and not isinstance(expected, bool)):
        if type(got) is int and type(expected) is int:
            same = got == expected
        else:
            same = math.isclose(got, expected, rel_tol=rel_tol, abs_tol=abs_tol)
        return None if same else f"{path}: expected {_show(expected)}, got {_show(got)}"
    if isinstance(got, list) and isinstance(expected, list):
        if len(got) != len(expected):
            return f"{path}: expected {len(expected)} values, got {len(got)}"
        return _first_difference(((g, e, f"{path}[{j}]") for j, (g, e) in enumerate(zip(got, expected))),
                                 rel_tol, abs_tol)
    if isinstance(got, dict) and isinstance(expected, dict):
        if got.keys() != expected.keys():
            return f"{path}: expected keys {sorted(expected)}, got {sorted(got)}"
        return _first_difference(((got[k], expected[k], key_path(path, str(k))) for k in expected),
                                 rel_tol, abs_tol)
    if type(got) is type(expected) and got == expected:
        return None
    return f"{path}: expected {_show(expected)}, got {_show(got)}"


def _show(value: Any) -> str:
    if isinstance(value, str):
        return repr(value if len(value) <= MAX_SHOWN else value[:MAX_SHOWN] + "...")
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 80 else text[:77] + "..."
