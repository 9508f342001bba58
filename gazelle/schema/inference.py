"""Schemas from a sample and from a model's output: what the client writes into a bundle.

numpy is imported only for list samples and array outputs; pandas is never imported here (a DataFrame
sample means it already is)."""
from __future__ import annotations

from typing import Any

from gazelle.errors import ModelError, SchemaError
from gazelle.schema.common import STRING_DTYPES, describe, is_ndarray, is_pandas, is_text_dtype, is_text_or_cat
from gazelle.schema.encoding import jsonable


def infer(sample: Any) -> dict[str, Any]:
    """The input schema that ``sample`` (a list, numpy array, pandas Series/DataFrame, or None) implies."""
    if sample is None:
        return {"type": "any"}
    if is_pandas(sample, "DataFrame"):
        return _table_schema(sample, strict=True)
    if is_pandas(sample, "Series"):
        return infer(sample.to_numpy(dtype=object) if is_text_dtype(sample.dtype) else sample.to_numpy())
    if is_ndarray(sample):
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
    if is_text_dtype(dtype):
        if strict:
            bad = [v for v in series.tolist() if not isinstance(v, str)]
            if bad:
                raise SchemaError(f"sample.{name}", f"expected strings only, got {describe(bad[0])}",
                                  hint="fill or convert the column's missing and non-string values")
        return {"name": name, "dtype": text if text in STRING_DTYPES else "object"}
    import numpy as np

    # Only numpy's own dtypes: pandas' nullable Int64/boolean share the kind but not the codec.
    if isinstance(dtype, np.dtype) and dtype.kind in "biufM" or text.startswith("datetime64["):
        return {"name": name, "dtype": text}
    if strict:
        raise SchemaError(f"sample.{name}", f"gazelle cannot carry a column of dtype {text} in JSON",
                          hint="use numpy numbers, bool, strings, category or datetime64 columns")
    return {"name": name, "dtype": text}


def rows(sample: Any) -> list[Any]:
    """The sample's rows as JSON values, in the shape :func:`decode` expects."""
    if sample is None:
        return []
    try:
        return jsonable(sample)
    except ModelError as exc:
        raise SchemaError("sample", exc.message.replace("the model's output", "the sample")) from None


def output_schema(output: Any) -> dict[str, Any]:
    """The output schema of one model output: labels (1-D, not float), tensor, table, or any."""
    if is_pandas(output, "DataFrame"):
        return _table_schema(output, strict=False)
    if is_pandas(output, "Series"):
        if is_text_or_cat(output):
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
