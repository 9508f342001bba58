"""JSON rows to what the model receives, checked against the input schema: the runtime's hot path.

Valid input goes through one numpy conversion; the per-field walk runs only to name the first bad
field. Null, NaN and Infinity are never accepted where a value is expected. numpy is imported on
first use, pandas only for tables."""
from __future__ import annotations

import datetime as _dt
import json
import math
from itertools import chain
from typing import Any, Callable, Mapping, Sequence

from gazelle.errors import SchemaError
from gazelle.schema.common import STRING_DTYPES, describe, key_path


# What JSON gives us for each kind of numpy dtype; bool is excluded from numbers on purpose.
_NUMBER_TYPES = frozenset({int, float})
_INT_TYPES = frozenset({int})
_BOOL_TYPES = frozenset({bool})
_STR_TYPES = frozenset({str})


def decode(instances: Any, schema: Mapping[str, Any], field: str = "instances") -> Any:
    """Validate JSON ``instances`` against ``schema`` and convert them to what the model receives.

    Raises :class:`SchemaError` naming the first offending field, e.g. ``instances[3][1]``.
    """
    if not isinstance(instances, (list, tuple)):
        raise SchemaError(field, f"expected a list of rows, got {describe(instances)}")
    if not instances:
        raise SchemaError(field, "expected at least one row")
    kind = schema.get("type")
    if kind == "tensor":
        return _decode_tensor(instances, schema, field)
    if kind == "text":
        if set(map(type, instances)) <= _STR_TYPES:
            return list(instances)
        for i, value in enumerate(instances):
            if not isinstance(value, str):
                raise SchemaError(f"{field}[{i}]", f"expected a string, got {describe(value)}")
        return list(instances)
    if kind == "table":
        return _decode_table(instances, schema["columns"], field)
    if kind == "any":
        return instances
    raise SchemaError(field, f"the model's input schema has an unknown type {kind!r}")


def _element(dtype: str) -> tuple[frozenset[type], str]:
    """The JSON types a dtype accepts, and the words for "expected ..."."""
    if dtype == "bool":
        return _BOOL_TYPES, "true or false"
    if dtype.startswith(("int", "uint")):
        return _INT_TYPES, "an integer"
    if dtype in STRING_DTYPES:
        return _STR_TYPES, "a string"
    return _NUMBER_TYPES, "number"


def _decode_tensor(instances: Sequence[Any], schema: Mapping[str, Any], field: str) -> Any:
    import numpy as np

    dtype = schema["dtype"]
    inner = schema["shape"][1:]
    allowed, _ = _element(dtype)
    flat: Any = instances
    try:
        for _ in inner:
            flat = chain.from_iterable(flat)
        types: set[type] | None = set(map(type, flat))
    except TypeError:  # a row that is a number where a list was expected
        types = None
    if types is not None and types <= allowed:
        try:
            arr = np.asarray(instances, dtype=dtype)
        except (ValueError, OverflowError, TypeError):  # ragged rows, big integers, objects as rows
            arr = None
        if (arr is not None and _shape_fits(arr.shape[1:], inner)
                and (arr.dtype.kind != "f" or np.isfinite(arr).all())):
            return arr if schema.get("container", "ndarray") == "ndarray" else arr.tolist()
    for i, row in enumerate(instances):
        _walk_tensor(row, inner, dtype, f"{field}[{i}]")
    # The walk accepts integral floats for integer dtypes, which the fast path leaves to it.
    try:
        arr = np.asarray(instances, dtype=dtype)
    except (ValueError, OverflowError) as exc:
        raise SchemaError(field, f"cannot be read as {dtype}: {exc}") from None
    return arr if schema.get("container", "ndarray") == "ndarray" else arr.tolist()


def _shape_fits(shape: tuple[int, ...], inner: Sequence[int | None]) -> bool:
    return len(shape) == len(inner) and all(d is None or d == s for d, s in zip(inner, shape))


def _walk_tensor(value: Any, inner: Sequence[int | None], dtype: str, path: str) -> None:
    if inner:
        size = inner[0]
        if not isinstance(value, (list, tuple)):
            _, words = _element(dtype)
            count = f"{size} " if size is not None else ""
            what = "values" if len(inner) > 1 else ("numbers" if words == "number" else "values")
            raise SchemaError(path, f"expected a list of {count}{what}, got {describe(value)}")
        if size is not None and len(value) != size:
            raise SchemaError(path, f"expected {size} values, got {len(value)}")
        for j, item in enumerate(value):
            _walk_tensor(item, inner[1:], dtype, f"{path}[{j}]")
        return
    _check_scalar(value, dtype, path)


def _check_scalar(value: Any, dtype: str, path: str, column: str | None = None) -> None:
    allowed, words = _element(dtype)
    kind = type(value)
    if kind in allowed:
        if kind is float and not math.isfinite(value):
            raise SchemaError(path, f"expected a finite number, got {describe(value)}")
        if kind is int and allowed is _INT_TYPES:
            _check_int_range(value, dtype, path)
        return
    if allowed is _INT_TYPES and kind is float:
        if math.isfinite(value) and value.is_integer():
            _check_int_range(int(value), dtype, path)
            return
        if math.isfinite(value):
            raise SchemaError(path, f"expected an integer, got {describe(value)}: the sample's "
                                    f"{_where(column)} is {dtype}; to accept fractions, deploy with a "
                                    f"float sample ({_widen(column)})")
    raise SchemaError(path, f"expected {words}, got {describe(value)}")


def _where(column: str | None) -> str:
    return f"column {json.dumps(column, ensure_ascii=False)}" if column is not None else "dtype"


def _widen(column: str | None) -> str:
    if column is not None:
        return f"sample.astype({{{json.dumps(column, ensure_ascii=False)}: float}})"
    return "sample.astype(float)"


def _check_int_range(value: int, dtype: str, path: str) -> None:
    import numpy as np

    info = np.iinfo(dtype)
    if not info.min <= value <= info.max:
        raise SchemaError(path, f"expected an integer that fits {dtype}, got {value}")


def _decode_table(instances: Sequence[Any], columns: Sequence[Mapping[str, Any]], field: str) -> Any:
    import pandas as pd

    names = [c["name"] for c in columns]
    keys = set(names)
    for i, row in enumerate(instances):
        if type(row) is not dict or row.keys() != keys:
            _row_problem(row, names, f"{field}[{i}]")
    data = {}
    for col in columns:
        name = col["name"]
        values = [row[name] for row in instances]
        data[name] = _column(values, col, field)
    return pd.DataFrame(data, columns=names)


def _row_problem(row: Any, names: Sequence[str], path: str) -> None:
    if not isinstance(row, Mapping):
        raise SchemaError(path, f"expected an object keyed by column, got {describe(row)}")
    missing = [n for n in names if n not in row]
    if missing:
        raise SchemaError(path, f"missing column{'s' if len(missing) > 1 else ''} "
                                f"{', '.join(json.dumps(n) for n in missing)}")
    unknown = sorted(str(k) for k in row if k not in set(names))
    if unknown:
        raise SchemaError(path, f"unknown column{'s' if len(unknown) > 1 else ''} "
                                f"{', '.join(json.dumps(n) for n in unknown)}; "
                                f"the columns are {', '.join(names)}")


def _column(values: list[Any], col: Mapping[str, Any], field: str) -> Any:
    import numpy as np
    import pandas as pd

    name, dtype = col["name"], col["dtype"]

    def fail(check: Callable[[Any, str], None]) -> None:
        for i, v in enumerate(values):
            check(v, key_path(f"{field}[{i}]", name))

    if dtype == "category":
        cats = col.get("categories") or []
        try:
            known = set(values) <= set(cats)
        except TypeError:  # an unhashable value (a list or object)
            known = False
        if not known:
            fail(lambda v, path: _check_category(v, cats, path))
        return pd.Categorical(values, categories=cats, ordered=bool(col.get("ordered")))
    if dtype.startswith("datetime64"):
        return _datetime_column(values, dtype, name, field)
    allowed, _ = _element(dtype)
    if dtype in STRING_DTYPES:
        if not set(map(type, values)) <= allowed:
            fail(lambda v, path: _check_scalar(v, dtype, path))
        return pd.Series(values, dtype=dtype)
    if set(map(type, values)) <= allowed:
        try:
            arr = np.asarray(values, dtype=dtype)
        except (ValueError, OverflowError):
            arr = None
        if arr is not None and (arr.dtype.kind != "f" or np.isfinite(arr).all()):
            return arr
    fail(lambda v, path: _check_scalar(v, dtype, path, name))
    return np.asarray(values, dtype=dtype)


def _check_category(value: Any, cats: Sequence[Any], path: str) -> None:
    try:
        if value in cats and type(value) is not bool:
            return
    except TypeError:
        pass
    shown = ", ".join(describe(c) for c in cats[:10]) + (", ..." if len(cats) > 10 else "")
    raise SchemaError(path, f"expected one of {shown}, got {describe(value)}")


def _datetime_column(values: list[Any], dtype: str, name: str, field: str) -> Any:
    import pandas as pd

    def parse(v: Any, path: str) -> Any:
        if not isinstance(v, str):
            raise SchemaError(path, f"expected an ISO 8601 date-time string, got {describe(v)}")
        try:
            return pd.Timestamp(_dt.datetime.fromisoformat(v))
        except ValueError:
            raise SchemaError(path, f"expected an ISO 8601 date-time string, got {describe(v)}") from None

    stamps = [parse(v, key_path(f"{field}[{i}]", name)) for i, v in enumerate(values)]
    target = pd.api.types.pandas_dtype(dtype)
    tz = getattr(target, "tz", None)
    if tz is not None:
        stamps = [s.tz_localize(tz) if s.tzinfo is None else s.tz_convert(tz) for s in stamps]
    else:  # a naive column: aware values are read as UTC
        stamps = [s if s.tzinfo is None else s.tz_convert("UTC").tz_localize(None) for s in stamps]
    return pd.Series(pd.DatetimeIndex(stamps)).astype(target)
