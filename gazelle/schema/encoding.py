"""A model's output as JSON: one item per row, non-finite floats as null (answers, and the bundle's
expected output)."""
from __future__ import annotations

import datetime as _dt
import math
import sys
from typing import Any, Mapping

from gazelle.errors import ModelError
from gazelle.schema.common import is_pandas, is_text_or_cat


def jsonable(output: Any) -> list[Any]:
    """A model's output (ndarray, Series, DataFrame, list, sparse matrix ...) as a JSON list, one item a row.

    Non-finite floats become ``null``. A single value (not one per row) raises :class:`ModelError`.
    """
    value = _json_value(output)
    if not isinstance(value, list):
        raise ModelError(f"the model returned a single {type(output).__name__}, not one output per row")
    return value


def _json_value(value: Any) -> Any:
    kind = type(value)
    if value is None or kind is str or kind is bool or kind is int:
        return value
    if kind is float:
        return value if math.isfinite(value) else None
    if kind is list or kind is tuple:
        return [_json_value(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _json_value(v) for k, v in value.items()}
    np = sys.modules.get("numpy")
    if np is not None:
        if isinstance(value, np.ndarray):
            return _array_json(value)
        if isinstance(value, np.generic):
            if isinstance(value, np.datetime64):
                return str(np.datetime_as_string(value))
            return _json_value(value.item())
    if is_pandas(value, "DataFrame"):
        records = value.to_dict(orient="records")
        return [{str(k): _json_value(v) for k, v in r.items()} for r in records]
    if is_pandas(value, "Series") or is_pandas(value, "Index") or is_pandas(value, "Categorical"):
        return _array_json(value.to_numpy(dtype=object) if is_text_or_cat(value) else value.to_numpy())
    if isinstance(value, (_dt.datetime, _dt.date)):  # includes pandas.Timestamp
        return value.isoformat()
    # Subclasses of the JSON scalars (numpy.str_, IntEnum, numpy.float64 ...) as the plain type.
    if isinstance(value, str):
        return str(value)
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if hasattr(value, "toarray") and type(value).__module__.startswith("scipy"):
        return _array_json(value.toarray())
    if hasattr(value, "tolist"):
        return _json_value(value.tolist())
    raise ModelError(f"the model's output holds a {type(value).__name__} value, which has no JSON form")


def _array_json(arr: Any) -> Any:
    import numpy as np

    kind = arr.dtype.kind
    if kind in "iub":
        return arr.tolist()
    if kind == "f":
        if np.isfinite(arr).all():
            return arr.tolist()
        return _json_value(arr.tolist())
    if kind == "U":
        return arr.tolist()
    if kind == "M":
        return np.datetime_as_string(arr).tolist()
    return _json_value(arr.tolist())
