"""Input and output schemas: what a model's rows look like in JSON, and the codecs between the two.

A schema is a small JSON value stored in the bundle's ``gazelle.json``:

- ``{"type": "text"}``: rows are strings; the model receives ``list[str]``.
- ``{"type": "tensor", "dtype": "float64", "shape": [null, 20], "container": "ndarray"|"list"}``: rows
  are lists of numbers (single numbers when the shape is ``[null]``); the model receives an ndarray of
  that dtype, or a list of lists when the sample was a list. A plain-list sample of ints gives float64
  (any number is accepted); only numpy and pandas samples give integer dtypes, which accept integral
  floats and refuse fractions with a message naming the column and how to widen the sample.
- ``{"type": "table", "columns": [{"name": "amount", "dtype": "float64"}, ...]}``: rows are objects
  keyed by column; the model receives a pandas DataFrame with exactly those columns and dtypes.
  Column dtypes: numpy ints, floats and bool; strings (``object``, ``str``, ``string``); ``category``
  (with its ``categories``); ``datetime64[...]`` given as ISO 8601 strings.
- ``{"type": "any"}``: rows are passed to the model as parsed JSON.

Output schemas add ``{"type": "labels", "dtype": ...}``. :func:`decode` sits on the runtime's hot path:
valid input goes through one numpy conversion; the per-field walk runs only to name the first bad
field. Null, NaN and Infinity are never accepted where a value is expected: JSON has no missing value
that every model would read the same way. numpy and pandas are imported on first use, and pandas only
for tables.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import sys
from itertools import chain
from typing import Any, Callable, Mapping, Sequence

from gazelle.errors import ModelError, SchemaError

_STRING_DTYPES = ("object", "str", "string")
_MAX_SHOWN = 40  # characters of an offending string quoted back in an error message

# What JSON gives us for each kind of numpy dtype; bool is excluded from numbers on purpose.
_NUMBER_TYPES = frozenset({int, float})
_INT_TYPES = frozenset({int})
_BOOL_TYPES = frozenset({bool})
_STR_TYPES = frozenset({str})


# -- describing values in messages --


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
        shown = value if len(value) <= _MAX_SHOWN else value[:_MAX_SHOWN] + "..."
        return json.dumps(shown, ensure_ascii=False)
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, (list, tuple)):
        return "array"
    return type(value).__name__


def _key_path(path: str, name: str) -> str:
    return f"{path}.{name}" if name.isidentifier() else f"{path}[{json.dumps(name, ensure_ascii=False)}]"


# -- inference from a sample --


def infer(sample: Any) -> dict[str, Any]:
    """The input schema that ``sample`` (a list, numpy array, pandas Series/DataFrame, or None) implies."""
    if sample is None:
        return {"type": "any"}
    if _is_pandas(sample, "DataFrame"):
        return _table_schema(sample, strict=True)
    if _is_pandas(sample, "Series"):
        return infer(sample.to_numpy(dtype=object) if _is_text_dtype(sample.dtype) else sample.to_numpy())
    if _is_ndarray(sample):
        return _array_schema(sample, "ndarray")
    if isinstance(sample, (list, tuple)):
        if not sample:
            raise SchemaError("sample", "expected at least one row")
        if all(isinstance(v, str) for v in sample):
            return {"type": "text"}
        import numpy as np

        try:
            arr = np.asarray(sample)
        except (ValueError, TypeError):
            return {"type": "any"}
        if arr.dtype.kind in "iu":
            # Plain Python ints say nothing about a dtype: a row of [-1, 5, 2.5] is as valid as the
            # sample's [1, 2, 3]. Integer dtypes come only from numpy or pandas samples.
            arr = arr.astype("float64")
        if arr.dtype.kind in "biuf" and arr.ndim >= 1:
            return _array_schema(arr, "list")
        return {"type": "any"}
    raise SchemaError(
        "sample", f"gazelle cannot describe a sample of type {type(sample).__name__}",
        hint="pass a list, a numpy array or a pandas DataFrame",
    )


def _array_schema(arr: Any, container: str) -> dict[str, Any]:
    if arr.ndim == 0:
        raise SchemaError("sample", "expected rows, got a single value")
    if len(arr) == 0:
        raise SchemaError("sample", "expected at least one row")
    kind = arr.dtype.kind
    if kind in "USO" and arr.ndim == 1 and all(isinstance(v, str) for v in arr.tolist()):
        return {"type": "text"}
    if kind not in "biuf":
        raise SchemaError("sample", f"gazelle cannot carry an array of dtype {arr.dtype} in JSON",
                          hint="pass numbers, booleans, or a 1-D array of strings")
    return {"type": "tensor", "dtype": str(arr.dtype), "shape": [None, *arr.shape[1:]],
            "container": container}


def _table_schema(df: Any, *, strict: bool) -> dict[str, Any]:
    columns = []
    for position, key in enumerate(df.columns):
        if not isinstance(key, str) and strict:
            raise SchemaError("sample", f"column {key!r} is not named by a string",
                              hint="JSON rows are keyed by column name; rename the columns")
        columns.append(_column_schema(str(key), df.iloc[:, position], strict=strict))
    return {"type": "table", "columns": columns}


def _column_schema(name: str, series: Any, *, strict: bool) -> dict[str, Any]:
    dtype = series.dtype
    text = str(dtype)
    if text == "category":
        cats = jsonable(list(dtype.categories))
        return {"name": name, "dtype": "category", "categories": cats, "ordered": bool(dtype.ordered)}
    if _is_text_dtype(dtype):
        if strict:
            bad = [v for v in series.tolist() if not isinstance(v, str)]
            if bad:
                raise SchemaError(f"sample.{name}", f"expected strings only, got {describe(bad[0])}",
                                  hint="fill or convert the column's missing and non-string values")
        return {"name": name, "dtype": text if text in _STRING_DTYPES else "object"}
    import numpy as np

    # Only numpy's own dtypes: pandas' nullable Int64/boolean share the kind but not the codec.
    if isinstance(dtype, np.dtype) and dtype.kind in "biufM" or text.startswith("datetime64["):
        return {"name": name, "dtype": text}
    if strict:
        raise SchemaError(f"sample.{name}", f"gazelle cannot carry a column of dtype {text} in JSON",
                          hint="use numpy numbers, bool, strings, category or datetime64 columns")
    return {"name": name, "dtype": text}


def _is_text_dtype(dtype: Any) -> bool:
    return str(dtype) in _STRING_DTYPES or getattr(dtype, "kind", "") in ("U", "S")


def rows(sample: Any) -> list[Any]:
    """The sample's rows as JSON values, in the shape :func:`decode` expects."""
    if sample is None:
        return []
    try:
        return jsonable(sample)
    except ModelError as exc:
        raise SchemaError("sample", exc.message.replace("the model's output", "the sample")) from None


# -- decoding rows into model input --


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
    if dtype in _STRING_DTYPES:
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
            check(v, _key_path(f"{field}[{i}]", name))

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
    if dtype in _STRING_DTYPES:
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

    stamps = [parse(v, _key_path(f"{field}[{i}]", name)) for i, v in enumerate(values)]
    target = pd.api.types.pandas_dtype(dtype)
    tz = getattr(target, "tz", None)
    if tz is not None:
        stamps = [s.tz_localize(tz) if s.tzinfo is None else s.tz_convert(tz) for s in stamps]
    else:  # a naive column: aware values are read as UTC
        stamps = [s if s.tzinfo is None else s.tz_convert("UTC").tz_localize(None) for s in stamps]
    return pd.Series(pd.DatetimeIndex(stamps)).astype(target)


# -- model output to JSON --


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
    if _is_pandas(value, "DataFrame"):
        records = value.to_dict(orient="records")
        return [{str(k): _json_value(v) for k, v in r.items()} for r in records]
    if _is_pandas(value, "Series") or _is_pandas(value, "Index") or _is_pandas(value, "Categorical"):
        return _array_json(value.to_numpy(dtype=object) if _is_text_or_cat(value) else value.to_numpy())
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


def _is_text_or_cat(value: Any) -> bool:
    dtype = getattr(value, "dtype", None)
    return dtype is not None and (_is_text_dtype(dtype) or str(dtype) == "category")


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


def output_schema(output: Any) -> dict[str, Any]:
    """The output schema of one model output: labels (1-D, not float), tensor, table, or any."""
    if _is_pandas(output, "DataFrame"):
        return _table_schema(output, strict=False)
    if _is_pandas(output, "Series"):
        if _is_text_or_cat(output):
            return {"type": "labels", "dtype": "object"}
        output = output.to_numpy()
    import numpy as np

    if isinstance(output, (list, tuple)):
        try:
            output = np.asarray(output)
        except (ValueError, TypeError):
            return {"type": "any"}
    if hasattr(output, "toarray") and type(output).__module__.startswith("scipy"):
        output = output.toarray()
    if isinstance(output, np.ndarray) and output.ndim >= 1:
        kind = output.dtype.kind
        if output.ndim == 1 and kind in "iubUSO":
            return {"type": "labels", "dtype": "object" if kind in "USO" else str(output.dtype)}
        if kind in "biuf":
            return {"type": "tensor", "dtype": str(output.dtype), "shape": [None, *output.shape[1:]]}
    return {"type": "any"}


# -- comparing outputs --


def compare(got: Sequence[Any], expected: Sequence[Any], *, rel_tol: float = 1e-6,
            abs_tol: float = 1e-9) -> str | None:
    """None if ``got`` matches ``expected`` (labels exactly, floats within tolerance), else one sentence
    naming the first difference: ``row 2: expected 'x', got 'y'``."""
    if not isinstance(got, list):
        got = jsonable(got)
    if len(got) != len(expected):
        return f"expected {len(expected)} rows, got {len(got)}"
    for i, (g, e) in enumerate(zip(got, expected)):
        problem = _difference(g, e, f"row {i}", rel_tol, abs_tol)
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
        for j, (g, e) in enumerate(zip(got, expected)):
            problem = _difference(g, e, f"{path}[{j}]", rel_tol, abs_tol)
            if problem:
                return problem
        return None
    if isinstance(got, dict) and isinstance(expected, dict):
        if got.keys() != expected.keys():
            return f"{path}: expected keys {sorted(expected)}, got {sorted(got)}"
        for k in expected:
            problem = _difference(got[k], expected[k], _key_path(path, str(k)), rel_tol, abs_tol)
            if problem:
                return problem
        return None
    if type(got) is type(expected) and got == expected:
        return None
    return f"{path}: expected {_show(expected)}, got {_show(got)}"


def _show(value: Any) -> str:
    if isinstance(value, str):
        return repr(value if len(value) <= _MAX_SHOWN else value[:_MAX_SHOWN] + "...")
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 80 else text[:77] + "..."



def _is_ndarray(value: Any) -> bool:  # without importing numpy for a list
    np = sys.modules.get("numpy")
    return np is not None and isinstance(value, np.ndarray)


def _is_pandas(value: Any, cls: str) -> bool:
    pd = sys.modules.get("pandas")
    return pd is not None and isinstance(value, getattr(pd, cls))
