"""Shared by the schema modules: how values are named in messages, and cheap type probes that never
import numpy or pandas themselves."""
from __future__ import annotations

import json
import math
import sys
from typing import Any, Mapping

STRING_DTYPES = ("object", "str", "string")
MAX_SHOWN = 40  # characters of an offending string quoted back in an error message


def describe(value: Any) -> str:
    """A JSON-ish rendering of an offending value: ``"abc"``, ``null``, ``true``, ``NaN``, ``object``."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return repr(value)
    if isinstance(value, int):
        return repr(value)
    if isinstance(value, str):
        shown = value if len(value) <= MAX_SHOWN else value[:MAX_SHOWN] + "..."
        return json.dumps(shown, ensure_ascii=False)
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, (list, tuple)):
        return "array"
    return type(value).__name__


def key_path(path: str, name: str) -> str:
    return f"{path}.{name}" if name.isidentifier() else f"{path}[{json.dumps(name, ensure_ascii=False)}]"


def is_text_dtype(dtype: Any) -> bool:
    return str(dtype) in STRING_DTYPES or getattr(dtype, "kind", "") in ("U", "S")


def is_text_or_cat(value: Any) -> bool:
    dtype = getattr(value, "dtype", None)
    return dtype is not None and (is_text_dtype(dtype) or str(dtype) == "category")


def is_ndarray(value: Any) -> bool:  # without importing numpy for a list
    np = sys.modules.get("numpy")
    return np is not None and isinstance(value, np.ndarray)


def is_pandas(value: Any, cls: str) -> bool:
    pd = sys.modules.get("pandas")
    return pd is not None and isinstance(value, getattr(pd, cls))
