"""The OpenAPI 3 description of one model endpoint, derived from the bundle's input and output schemas.

The request body of ``/predict`` is typed from the input schema (a string per row, an array of numbers
of the row's shape, or an object with one property per column) and carries the sample as its example,
so generated clients and API browsers show a request that works. Paths are relative to the server URL,
which is written relative as well, because the same endpoint is also served under a gateway prefix.
"""
from __future__ import annotations

from typing import Any, Mapping

import gazelle
from gazelle.runtime.dataplane import DataPlane

def _scalar(dtype: str | None) -> dict[str, Any]:
    text = str(dtype or "float64")
    if text == "bool":
        return {"type": "boolean"}
    if text.startswith(("int", "uint")):
        return {"type": "integer"}
    if text.startswith("float"):
        return {"type": "number"}
    if text.startswith("datetime64"):
        return {"type": "string", "format": "date-time"}
    return {"type": "string"}


def row_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON Schema of one row of input."""
    kind = schema.get("type")
    if kind == "text":
        return {"type": "string"}
    if kind == "tensor":
        row = _scalar(schema.get("dtype"))
        for size in reversed(list(schema.get("shape") or [None])[1:]):
            row = {"type": "array", "items": row}
            if size is not None:
                row["minItems"] = row["maxItems"] = size
        return row
    if kind == "table":
        properties = {}
        for column in schema.get("columns", []):
            prop = _scalar(column.get("dtype"))
            if column.get("dtype") == "category" and column.get("categories") is not None:
                prop = {"enum": list(column["categories"])}
            properties[column["name"]] = prop
        return {"type": "object", "properties": properties, "required": list(properties),
                "additionalProperties": False}
    return {}


def output_row_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    kind = schema.get("type")
    if kind == "labels":
        dtype = str(schema.get("dtype") or "object")
        return {} if dtype == "object" else _scalar(dtype)
    if kind == "tensor":
        return row_schema(schema)
    return {}


def _error_response(description: str, schema: str = "Error") -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}}


def _json(schema: dict[str, Any], example: Any = None) -> dict[str, Any]:
    media: dict[str, Any] = {"schema": schema}
    if example is not None:
        media["example"] = example
    return {"content": {"application/json": media}}


def build(plane: DataPlane) -> dict[str, Any]:
    sample = plane.manifest.get("sample")
    request_example = {"instances": sample[:3]} if sample else None
    errors = {
        "400": _error_response("Malformed JSON, bad encoding, or a bad query parameter."),
        "413": _error_response("The body is larger than GAZELLE_MAX_BODY_BYTES."),
        "415": _error_response("The body is not application/json."),
        "422": _error_response("A row does not match the input schema; the message names the field."),
        "500": _error_response("The model raised; the message holds an error id to find in the logs."),
    }
    predict_answer: dict[str, Any] = {
        "type": "object", "required": ["predictions", "model", "version"],
        "properties": {
            "predictions": {"type": "array", "items": output_row_schema(plane.output_schema)},
            "model": {"type": "string", "example": plane.name},
            "version": {"type": "integer", "example": plane.version},
        },
    }
    if plane.has_proba:
        predict_answer["properties"]["probabilities"] = {
            "type": "array", "description": "Only with ?proba=true: per row, each class label's probability.",
            "items": {"type": "object", "additionalProperties": {"type": "number"}}}
        predict_answer["properties"]["classes"] = {"type": "array", "description": "The class labels, in order."}
    v2_tensor = {"type": "object", "required": ["name", "shape", "datatype", "data"],
                 "properties": {"name": {"type": "string"}, "shape": {"type": "array", "items": {"type": "integer"}},
                                "datatype": {"type": "string"}, "data": {"type": "array"}}}
    name = plane.name
    return {
        "openapi": "3.0.3",
        "info": {"title": f"{name} (gazelle model endpoint)", "version": plane.version_text,
                 "description": f"Predictions from the model {name!r}, served by gazelle {gazelle.__version__}."},
        "servers": [{"url": "."}],
        "paths": {
            "/predict": {"post": {
                "summary": "Predict a batch of rows",
                "parameters": [{"name": "proba", "in": "query", "required": False,
                                "schema": {"type": "boolean"},
                                "description": "Also answer class probabilities (classifiers only)."}],
                "requestBody": {"required": True, **_json({
                    "type": "object", "required": ["instances"], "additionalProperties": False,
                    "properties": {"instances": {"type": "array", "minItems": 1,
                                                 "items": row_schema(plane.input_schema)}}},
                    request_example)},
                "responses": {"200": {"description": "One prediction per row.", **_json(predict_answer)},
                              **errors},
            }},
            f"/v2/models/{name}/infer": {"post": {
                "summary": "Open Inference Protocol v2 inference",
                "requestBody": {"required": True, **_json({
                    "type": "object", "required": ["inputs"],
                    "properties": {"id": {"type": "string"}, "inputs": {"type": "array", "items": v2_tensor},
                                   "outputs": {"type": "array", "items": {"type": "object"}}}})},
                "responses": {"200": {"description": "Output tensors.", **_json({
                    "type": "object", "properties": {"model_name": {"type": "string"},
                                                     "model_version": {"type": "string"},
                                                     "outputs": {"type": "array", "items": v2_tensor}}})},
                              "404": _error_response("No such model here.", "V2Error"),
                              **{code: _error_response(e["description"], "V2Error") for code, e in errors.items()}},
            }},
            f"/v2/models/{name}": {"get": {"summary": "v2 model metadata (inputs, outputs, datatypes)",
                                           "responses": {"200": {"description": "Model metadata."}}}},
            "/v2/health/live": {"get": {"summary": "Liveness", "responses": {"200": {"description": "Live."}}}},
            "/v2/health/ready": {"get": {"summary": "Readiness",
                                         "responses": {"200": {"description": "Ready to predict."}}}},
            "/metadata": {"get": {"summary": "Schema, sample, pins, classes",
                                  "responses": {"200": {"description": "The model's metadata."}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics",
                                 "responses": {"200": {"description": "Prometheus text format."}}}},
            "/": {"get": {"summary": "The try-it page", "responses": {"200": {"description": "HTML."}}}},
        },
        "components": {"schemas": {"V2Error": {
            "type": "object", "required": ["error"], "description": "The protocol's own error shape.",
            "properties": {"error": {"type": "string"}}}, "Error": {
            "type": "object", "required": ["error"],
            "properties": {"error": {"type": "object", "required": ["type", "message"],
                                     "properties": {"type": {"type": "string"},
                                                    "message": {"type": "string"},
                                                    "id": {"type": "string"}}}}}}},
    }
