"""The Open Inference Protocol v2 on the wire: JSON or the binary tensor data extension, both ways.

What Triton's ``tritonclient.http`` and KServe's REST client send at their defaults:

- a body with no ``Content-Type`` is JSON (tritonclient sends none); ``application/octet-stream`` is
  accepted only together with ``Inference-Header-Content-Length`` (KServe's binary requests);
- ``Inference-Header-Content-Length: N``: the first N bytes are the JSON header, the rest holds the
  binary inputs in order, each input saying its size in ``parameters.binary_data_size``. Tensors are
  little-endian, row-major; a BYTES element is a 4-byte little-endian length and that many bytes
  (UTF-8 text here: the models take strings);
- outputs come back binary when asked: per output ``parameters.binary_data``, else the request's
  ``parameters.binary_data_output``; the answer then carries ``Inference-Header-Content-Length``.

Binary data is decoded into the same JSON ``data`` lists the codecs read, so validation is the one of
JSON requests and nothing here needs numpy. Errors on v2 routes are ``{"error": "<message>"}``, the
protocol's own shape (tritonclient prints that string); Gazelle's own routes keep
``{"error": {"type", "message"}}``. FP16 and BF16 tensors are not supported (no model input here has
them): they are refused naming the input.
"""
from __future__ import annotations

import struct
from typing import Any, Mapping

import orjson

from gazelle.errors import BadRequest, SchemaError, UnsupportedMediaType
from gazelle.runtime.codecs import json_type, shorten

HEADER = "Inference-Header-Content-Length"
EXTENSION = "binary_tensor_data"
_HEADER_ENVIRON = "HTTP_INFERENCE_HEADER_CONTENT_LENGTH"
_JSON = "application/json"
_BINARY = "application/octet-stream"

# v2 datatype -> struct format letter (all little-endian, standard sizes).
_FORMATS = {"BOOL": "?", "UINT8": "B", "UINT16": "H", "UINT32": "I", "UINT64": "Q", "INT8": "b",
            "INT16": "h", "INT32": "i", "INT64": "q", "FP32": "f", "FP64": "d"}


def header_length(environ: Mapping[str, Any]) -> int | None:
    """The JSON header's length for a binary request, ``None`` for plain JSON; refuses other media types."""
    raw = environ.get(_HEADER_ENVIRON)
    media = (environ.get("CONTENT_TYPE") or "").partition(";")[0].strip().lower()
    if raw is None:
        if media in ("", _JSON):
            return None
        hint = f"; binary tensors need the {HEADER} header" if media == _BINARY else ""
        raise UnsupportedMediaType(f"v2 request bodies must be JSON, got Content-Type {media}{hint}",
                                   hint="send Content-Type: application/json, or no Content-Type")
    if media not in ("", _JSON, _BINARY):
        raise UnsupportedMediaType(f"a v2 request with {HEADER} must be JSON followed by binary tensors, "
                                   f"got Content-Type {media}")
    try:
        length = int(raw)
    except ValueError:
        raise BadRequest(f"{HEADER} must be a number of bytes, got {raw[:40]!r}") from None
    if length < 0:
        raise BadRequest(f"{HEADER} must not be negative, got {length}")
    return length


def split(body: bytes, length: int | None) -> tuple[bytes, bytes]:
    """(JSON header, binary part) of a request body."""
    if length is None:
        return body, b""
    if length > len(body):
        raise BadRequest(f"{HEADER} is {length} but the body has only {len(body)} bytes")
    return body[:length], body[length:]


def attach_binary_inputs(request: Any, binary: bytes) -> None:
    """Fill ``data`` of each input sent as binary, in place; refuses sizes that do not add up."""
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list):
        if binary:
            raise SchemaError("inputs", "expected a list of input tensors to go with the binary data")
        return
    offset = 0
    for i, tensor in enumerate(request["inputs"]):
        if not isinstance(tensor, dict):
            continue  # the data plane names it
        size = _binary_size(tensor.get("parameters"), f"inputs[{i}].parameters")
        if size is None:
            continue
        if "data" in tensor:
            raise SchemaError(f"inputs[{i}]", "has both data and parameters.binary_data_size: send one")
        if offset + size > len(binary):
            raise SchemaError(f"inputs[{i}].parameters.binary_data_size",
                              f"{size} bytes from offset {offset}, but only {len(binary) - offset} follow the header")
        tensor["data"] = decode_tensor(binary[offset:offset + size], tensor.get("datatype"), f"inputs[{i}]")
        offset += size
    if offset != len(binary):
        raise SchemaError("inputs", f"{len(binary) - offset} bytes of binary data belong to no input "
                                    "(their parameters.binary_data_size add up to less)")


def _binary_size(parameters: Any, path: str) -> int | None:
    if parameters is None:
        return None
    if not isinstance(parameters, dict):
        raise SchemaError(path, f"expected an object, got {json_type(parameters)}")
    size = parameters.get("binary_data_size")
    if size is None:
        return None
    if type(size) is not int or size < 0:
        raise SchemaError(f"{path}.binary_data_size", f"expected a number of bytes, got {shorten(size)}")
    return size


def decode_tensor(raw: bytes, datatype: Any, path: str) -> list[Any]:
    """Binary tensor data -> a flat list of values."""
    if datatype == "BYTES":
        return _decode_bytes(raw, path)
    fmt = _FORMATS.get(datatype) if isinstance(datatype, str) else None
    if fmt is None:
        known = ", ".join(["BYTES", *_FORMATS])
        raise SchemaError(f"{path}.datatype", f"cannot read binary data of datatype {shorten(datatype)}; "
                                              f"known: {known}")
    width = struct.calcsize(fmt)
    if len(raw) % width:
        raise SchemaError(f"{path}.parameters.binary_data_size",
                          f"{len(raw)} bytes is not a whole number of {datatype} values ({width} bytes each)")
    return list(struct.unpack(f"<{len(raw) // width}{fmt}", raw))


def _decode_bytes(raw: bytes, path: str) -> list[Any]:
    values: list[Any] = []
    offset = 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise SchemaError(f"{path}.data", f"BYTES element {len(values)} is cut off in its length prefix")
        (size,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + size > len(raw):
            raise SchemaError(f"{path}.data", f"BYTES element {len(values)} says {size} bytes, "
                                              f"{len(raw) - offset} are left")
        try:
            values.append(raw[offset:offset + size].decode("utf-8"))
        except UnicodeDecodeError:
            raise SchemaError(f"{path}.data[{len(values)}]", "expected UTF-8 text") from None
        offset += size
    return values


def binary_outputs(request: Mapping[str, Any]) -> dict[str, bool]:
    """Per output name asked for, whether it goes back binary; ``"*"`` holds the request's default."""
    parameters = request.get("parameters")
    default = False
    if parameters is not None:
        if not isinstance(parameters, dict):
            raise SchemaError("parameters", f"expected an object, got {json_type(parameters)}")
        default = _flag(parameters.get("binary_data_output"), "parameters.binary_data_output")
    wanted = {"*": default}
    outputs = request.get("outputs")
    if isinstance(outputs, list):
        for i, item in enumerate(outputs):
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                continue  # the data plane names it
            params = item.get("parameters")
            if params is None:
                continue
            if not isinstance(params, dict):
                raise SchemaError(f"outputs[{i}].parameters", f"expected an object, got {json_type(params)}")
            if params.get("binary_data") is not None:
                wanted[item["name"]] = _flag(params["binary_data"], f"outputs[{i}].parameters.binary_data")
    return wanted


def _flag(value: Any, path: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise SchemaError(path, f"expected true or false, got {shorten(value)}")
    return value


def encode(answer: dict[str, Any], binary: Mapping[str, bool]) -> tuple[bytes, list[tuple[str, str]]]:
    """The body and headers of an infer answer; outputs marked binary travel after the JSON header."""
    chunks: list[bytes] = []
    for tensor in answer["outputs"]:
        if not binary.get(tensor["name"], binary.get("*", False)):
            continue
        raw = encode_tensor(tensor["data"], tensor["datatype"])
        del tensor["data"]
        tensor.setdefault("parameters", {})["binary_data_size"] = len(raw)
        chunks.append(raw)
    head = orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return head, [("Content-Type", _JSON)]
    return b"".join([head, *chunks]), [("Content-Type", _BINARY), (HEADER, str(len(head)))]


def encode_tensor(values: list[Any], datatype: str) -> bytes:
    if datatype == "BYTES":
        parts = []
        for value in values:
            data = value.encode("utf-8") if isinstance(value, str) else orjson.dumps(value)
            parts.append(struct.pack("<I", len(data)) + data)
        return b"".join(parts)
    return struct.pack(f"<{len(values)}{_FORMATS[datatype]}", *values)


def error_body(body: Mapping[str, Any]) -> dict[str, Any]:
    """Gazelle's ``{"error": {"type", "message"}}`` as the protocol's ``{"error": "<message>"}``."""
    error = body.get("error")
    message = error.get("message", "") if isinstance(error, Mapping) else str(error)
    return {"error": message}

