"""Codecs between the Open Inference Protocol (v2) tensors and Gazelle's JSON rows.

A v2 request carries named tensors: ``{"name", "shape", "datatype", "data"}`` with ``data`` flat in
row-major order (nested lists are accepted too). One small codec class per input schema type turns the
tensors into the same JSON rows ``/predict`` receives, so both endpoints share one validation
(:func:`gazelle.schema.decoding.decode`) and one model call:

- text:   one BYTES tensor of shape ``[n]`` (or ``[n, 1]``): n strings.
- tensor: one numeric tensor of shape ``[n, ...]`` matching the schema's row shape.
- table:  one tensor per column, named after the column, each of shape ``[n]`` (or ``[n, 1]``).
- any:    one tensor; its rows are passed as they are.

Outputs go the other way: a list of JSON values becomes one tensor, its shape read from the nesting.
Nothing here needs numpy, so a plain-function model served without numpy still speaks v2.
"""
from __future__ import annotations

import math
from typing import Any, ClassVar, Mapping, Sequence

import orjson

from gazelle.errors import SchemaError

# numpy/pandas dtype names -> v2 datatypes; anything else travels as BYTES.
DATATYPES = {
    "bool": "BOOL", "uint8": "UINT8", "uint16": "UINT16", "uint32": "UINT32", "uint64": "UINT64",
    "int8": "INT8", "int16": "INT16", "int32": "INT32", "int64": "INT64",
    "float16": "FP16", "float32": "FP32", "float64": "FP64",
}
NUMERIC = frozenset(DATATYPES.values()) - {"BOOL"}
KNOWN = frozenset(DATATYPES.values()) | {"BYTES"}


def datatype(dtype: object) -> str:
    return DATATYPES.get(str(dtype), "BYTES")


def _dims(shape: Sequence[Any] | None) -> list[int]:
    return [-1 if d is None else int(d) for d in (shape or [None])]


class InputCodec:
    """Turns v2 input tensors into JSON rows for one input schema type."""

    schema_type: ClassVar[str] = ""

    def __init__(self, schema: Mapping[str, Any]) -> None:
        self.schema = schema

    def metadata(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def rows(self, inputs: list[Mapping[str, Any]]) -> list[Any]:
        raise NotImplementedError

    def _single(self, inputs: list[Mapping[str, Any]]) -> Mapping[str, Any]:
        if len(inputs) != 1:
            name = self.metadata()[0]["name"]
            raise SchemaError("inputs", f"expected one input tensor ({name!r}), got {len(inputs)}")
        return inputs[0]


_CODECS: dict[str, type[InputCodec]] = {}


def register(cls: type[InputCodec]) -> type[InputCodec]:
    _CODECS[cls.schema_type] = cls
    return cls


def input_codec(schema: Mapping[str, Any]) -> InputCodec:
    kind = schema.get("type", "any")
    cls = _CODECS.get(kind)
    if cls is None:
        raise ValueError(f"no v2 codec for input schema type {kind!r}; known: {', '.join(sorted(_CODECS))}")
    return cls(schema)


@register
class TextCodec(InputCodec):
    schema_type = "text"

    def metadata(self) -> list[dict[str, Any]]:
        return [{"name": "text", "datatype": "BYTES", "shape": [-1]}]

    def rows(self, inputs: list[Mapping[str, Any]]) -> list[Any]:
        tensor = self._single(inputs)
        _expect_datatype(tensor, 0, {"BYTES"})
        return _column(tensor, 0)


@register
class TensorCodec(InputCodec):
    schema_type = "tensor"

    def metadata(self) -> list[dict[str, Any]]:
        dtype = self.schema.get("dtype", "float64")
        return [{"name": "input", "datatype": datatype(dtype), "shape": _dims(self.schema.get("shape"))}]

    def rows(self, inputs: list[Mapping[str, Any]]) -> list[Any]:
        tensor = self._single(inputs)
        _expect_datatype(tensor, 0, NUMERIC | {"BOOL"})
        shape = _shape(tensor, 0)
        flat = _flat(tensor, 0, shape)
        return _unflatten(flat, shape)


@register
class TableCodec(InputCodec):
    schema_type = "table"

    def metadata(self) -> list[dict[str, Any]]:
        return [{"name": c["name"], "datatype": datatype(c.get("dtype")), "shape": [-1]}
                for c in self.schema.get("columns", [])]

    def rows(self, inputs: list[Mapping[str, Any]]) -> list[Any]:
        names = [c["name"] for c in self.schema.get("columns", [])]
        by_name: dict[str, list[Any]] = {}
        for i, tensor in enumerate(inputs):
            name = tensor.get("name")
            if not isinstance(name, str) or name not in names:
                raise SchemaError(f"inputs[{i}].name", f"no column {name!r}; the columns are {', '.join(names)}")
            by_name[name] = _column(tensor, i)
        missing = [n for n in names if n not in by_name]
        if missing:
            raise SchemaError("inputs", f"missing input(s) {', '.join(missing)}: send one input per column")
        lengths = {len(v) for v in by_name.values()}
        if len(lengths) > 1:
            counts = ", ".join(f"{n}={len(by_name[n])}" for n in names)
            raise SchemaError("inputs", f"columns have different lengths ({counts})")
        n = lengths.pop() if lengths else 0
        return [{name: by_name[name][r] for name in names} for r in range(n)]


@register
class AnyCodec(InputCodec):
    schema_type = "any"

    def metadata(self) -> list[dict[str, Any]]:
        return [{"name": "input", "datatype": "BYTES", "shape": [-1]}]

    def rows(self, inputs: list[Mapping[str, Any]]) -> list[Any]:
        tensor = self._single(inputs)
        data = tensor.get("data")
        if not isinstance(data, list):
            raise SchemaError("inputs[0].data", f"expected a list, got {json_type(data)}")
        return data


def _expect_datatype(tensor: Mapping[str, Any], i: int, allowed: frozenset[str] | set[str]) -> None:
    given = tensor.get("datatype")
    if not isinstance(given, str) or given not in KNOWN:
        raise SchemaError(f"inputs[{i}].datatype",
                          f"unknown datatype {shorten(given)}; known: {', '.join(sorted(KNOWN))}")
    if given not in allowed:
        raise SchemaError(f"inputs[{i}].datatype", f"expected {' or '.join(sorted(allowed))}, got {given}")


def _shape(tensor: Mapping[str, Any], i: int) -> list[int]:
    shape = tensor.get("shape")
    if (not isinstance(shape, list) or not shape
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
        raise SchemaError(f"inputs[{i}].shape", f"expected a list of sizes like [2, 3], got {shorten(shape)}")
    return shape


def _flat(tensor: Mapping[str, Any], i: int, shape: list[int]) -> list[Any]:
    data = tensor.get("data")
    if not isinstance(data, list):
        raise SchemaError(f"inputs[{i}].data", f"expected a list, got {json_type(data)}")
    flat = _flatten(data, len(shape)) if data and isinstance(data[0], list) else data
    if len(flat) != math.prod(shape):
        raise SchemaError(f"inputs[{i}].data",
                          f"shape {shape} holds {math.prod(shape)} values, got {len(flat)}")
    return flat


def _column(tensor: Mapping[str, Any], i: int) -> list[Any]:
    """The values of a ``[n]`` or ``[n, 1]`` tensor, as a list of n."""
    shape = _shape(tensor, i)
    if len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
        raise SchemaError(f"inputs[{i}].shape", f"expected [n] or [n, 1], got {shape}")
    return _flat(tensor, i, shape)


def _flatten(data: list[Any], depth: int) -> list[Any]:
    for _ in range(depth - 1):
        if not all(isinstance(item, list) for item in data):
            break
        data = [x for item in data for x in item]
    return data


def _unflatten(flat: list[Any], shape: list[int]) -> list[Any]:
    rows: list[Any] = flat
    for size in reversed(shape[1:]):
        rows = [rows[j:j + size] for j in range(0, len(rows), size)] if size else []
    return rows


def output_tensor(name: str, values: list[Any], dtype: object | None = None) -> dict[str, Any]:
    """One v2 output tensor from JSON values (a list of rows); a ragged output travels as JSON strings."""
    shape = [len(values)]
    probe: Any = values
    while probe and isinstance(probe[0], list):
        width = len(probe[0])
        if not all(isinstance(item, list) and len(item) == width for item in probe):
            return {"name": name, "datatype": "BYTES", "shape": [len(values)],
                    "data": [orjson.dumps(v).decode() for v in values]}
        shape.append(width)
        probe = [x for item in probe for x in item]
    kind = datatype(dtype) if dtype is not None else _infer_datatype(probe)
    if kind == "BYTES":
        probe = [v if isinstance(v, str) else orjson.dumps(v).decode() for v in probe]
    return {"name": name, "datatype": kind, "shape": shape, "data": probe}


def _infer_datatype(values: list[Any]) -> str:
    if values and all(isinstance(v, bool) for v in values):
        return "BOOL"
    if values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return "INT64"
    if values and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return "FP64"
    return "BYTES"


def output_metadata(name: str, schema: Mapping[str, Any]) -> dict[str, Any]:
    shape = _dims(schema.get("shape")) if schema.get("type") == "tensor" else [-1]
    return {"name": name, "datatype": datatype(schema.get("dtype", "object")), "shape": shape}


def json_type(value: Any) -> str:
    """The JSON name of a parsed value's type, for messages."""
    if value is None:
        return "null"
    return {dict: "object", list: "array", str: "string", bool: "boolean"}.get(type(value), "number")


def shorten(value: Any) -> str:
    text = orjson.dumps(value, default=str).decode()
    return text if len(text) <= 60 else text[:57] + "..."
