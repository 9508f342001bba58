"""The work behind ``/predict`` and the v2 ``infer``: rows in, schema check, one model call, JSON out.

Both endpoints end in :meth:`DataPlane.run`, so they validate and predict identically. Everything that
does not depend on the request (method lookup, metadata, v2 descriptions) is computed once, when the
app is created, before gunicorn forks. ``?proba=true`` answers
``{"predictions", "probabilities": [{label: p, ...} per row, in class order], "classes"}``; labels are
JSON object keys, hence strings, while ``classes`` keeps their JSON type.
A model that raises becomes :class:`ModelFailure` (500, an error id); the data plane keeps serving.
Validation runs in the request's own thread; the model call goes through the worker's
:class:`~gazelle.runtime.predictor.Predictor`, which batches concurrent requests when the bundle
asks for it (``"batch"`` in gazelle.json; bundles without it batch scikit-learn models only).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import gazelle
from gazelle.bundle import batches_by_default
from gazelle.schema.batching import join
from gazelle.schema.decoding import decode
from gazelle.schema.encoding import jsonable
from gazelle.errors import BadRequest, NotFound, SchemaError
from gazelle.runtime import codecs
from gazelle.runtime.codecs import json_type
from gazelle.runtime.errors import ModelFailure, ModelLoadFailed
from gazelle.runtime.predictor import Observe, Predictor

PLATFORM = "gazelle"


@dataclass(frozen=True)
class Outcome:
    predictions: list[Any]
    probabilities: list[list[float]] | None
    rows: int


class DataPlane:
    def __init__(self, manifest: Mapping[str, Any], model: Any, *, version: int, digest: str,
                 max_batch_rows: int = 512, timeout: float = 60.0, observe: Observe | None = None) -> None:
        self.manifest = manifest
        self.name: str = manifest["name"]
        self.version = version
        self.version_text = str(version)
        self.digest = digest
        self.input_schema: Mapping[str, Any] = manifest.get("input_schema") or {"type": "any"}
        self.output_schema: Mapping[str, Any] = manifest.get("output_schema") or {"type": "any"}
        method = manifest.get("method") or "predict"
        predict = model if method == "__call__" else getattr(model, method, None)
        if not callable(predict):
            raise ModelLoadFailed(AttributeError(f"the bundle says to call {method!r}, which the "
                                                 f"{type(model).__name__} model does not have"))
        self._predict: Callable[[Any], Any] = predict
        proba = getattr(model, "predict_proba", None) if manifest.get("proba") else None
        self._proba: Callable[[Any], Any] | None = proba
        classes = manifest.get("classes")
        if classes is None and proba is not None:
            classes = jsonable(getattr(model, "classes_", []))
        self.classes: list[Any] | None = list(classes) if classes is not None else None
        self._class_keys = [str(c) for c in self.classes or []]
        self._codec = codecs.input_codec(self.input_schema)
        self._outputs = ["predictions"] + (["probabilities"] if self._proba is not None else [])
        batch = manifest.get("batch")
        self.batch: bool = batches_by_default(model, method) if batch is None else bool(batch)
        schema = self.input_schema
        self.predictor = Predictor(
            lambda features: self._call(predict, features),
            (lambda features: self._call(proba, features)) if proba is not None else None,
            lambda parts: join(parts, schema), batch=self.batch, max_rows=max_batch_rows,
            timeout=timeout, observe=observe)

    @property
    def has_proba(self) -> bool:
        return self._proba is not None

    # -- the shared path --------------------------------------------------------------------------

    def run(self, rows: Any, *, field: str, proba: bool) -> Outcome:
        if proba and self._proba is None:
            raise BadRequest("this model has no predict_proba: ask without proba=true")
        try:
            features = decode(rows, self.input_schema, field)
        except RecursionError:
            raise BadRequest(f"{field} is nested too deeply to be a batch of rows") from None
        predictions, probabilities = self.predictor.submit(features, len(rows), proba)
        return Outcome(predictions, probabilities, len(rows))

    def _call(self, fn: Callable[[Any], Any], features: Any) -> list[Any]:
        try:
            output = fn(features)
        except Exception as err:
            raise ModelFailure(err) from err
        try:
            return jsonable(output)
        except Exception as err:
            raise ModelFailure(err, what="the model's output is not JSON-friendly:") from err

    # -- POST /predict ----------------------------------------------------------------------------

    def predict(self, body: Any, *, proba: bool = False) -> tuple[dict[str, Any], int]:
        """The answer to ``POST /predict`` and the number of rows predicted."""
        if not isinstance(body, dict):
            raise SchemaError("", f'expected a JSON object {{"instances": [row, ...]}}, got {json_type(body)}')
        if "instances" not in body:
            hint = " (v2 inputs go to /v2/models/{name}/infer)" if "inputs" in body else ""
            raise SchemaError("instances", f'missing: send {{"instances": [row, ...]}}{hint}')
        instances = body["instances"]
        if not isinstance(instances, list):
            raise SchemaError("instances", f"expected a list of rows, got {json_type(instances)}")
        outcome = self.run(instances, field="instances", proba=proba)
        answer: dict[str, Any] = {"predictions": outcome.predictions, "model": self.name,
                                  "version": self.version}
        if outcome.probabilities is not None:
            keys = self._class_keys or [str(i) for i in range(len(outcome.probabilities[0]))]
            answer["probabilities"] = [dict(zip(keys, row)) for row in outcome.probabilities]
            answer["classes"] = self.classes
        return answer, outcome.rows

    # -- Open Inference Protocol v2 ---------------------------------------------------------------

    def check_model(self, name: str, version: str | None = None) -> None:
        if name != self.name:
            raise NotFound(f"model {name!r} is not served here; this endpoint serves {self.name!r}")
        if version is not None and version != self.version_text:
            raise NotFound(f"model {name!r} has no version {version!r} here; the version served is "
                           f"{self.version_text!r}")

    def v2_metadata(self) -> dict[str, Any]:
        outputs = [codecs.output_metadata("predictions", self.output_schema)]
        if self._proba is not None:
            outputs.append({"name": "probabilities", "datatype": "FP64",
                            "shape": [-1, len(self.classes or [])]})
        return {"name": self.name, "versions": [self.version_text], "platform": PLATFORM,
                "inputs": self._codec.metadata(), "outputs": outputs}

    def infer(self, body: Any) -> tuple[dict[str, Any], int]:
        """The answer to ``POST /v2/models/{name}/infer`` and the number of rows predicted."""
        if not isinstance(body, dict):
            raise SchemaError("", f'expected a JSON object {{"inputs": [...]}}, got {json_type(body)}')
        inputs = body.get("inputs")
        if not isinstance(inputs, list) or not inputs:
            raise SchemaError("inputs", "expected a non-empty list of input tensors "
                                        '({"name", "shape", "datatype", "data"})')
        for i, tensor in enumerate(inputs):
            if not isinstance(tensor, dict):
                raise SchemaError(f"inputs[{i}]", f"expected an object, got {json_type(tensor)}")
        if "id" in body and not isinstance(body["id"], str):
            raise SchemaError("id", f"expected a string, got {json_type(body['id'])}")
        wanted = self._requested_outputs(body.get("outputs"))
        rows = self._codec.rows(inputs)
        field = "rows" if self.input_schema.get("type") == "table" else "inputs[0].data"
        outcome = self.run(rows, field=field, proba="probabilities" in wanted)
        outputs = []
        if "predictions" in wanted:
            outputs.append(codecs.output_tensor("predictions", outcome.predictions, self._output_dtype()))
        if outcome.probabilities is not None:
            tensor = codecs.output_tensor("probabilities", outcome.probabilities, "float64")
            tensor["parameters"] = {"classes": self.classes}
            outputs.append(tensor)
        answer: dict[str, Any] = {"model_name": self.name, "model_version": self.version_text,
                                  "outputs": outputs}
        if "id" in body:
            answer["id"] = body["id"]
        return answer, outcome.rows

    def _requested_outputs(self, requested: Any) -> list[str]:
        if requested is None:
            return list(self._outputs)
        if not isinstance(requested, list):
            raise SchemaError("outputs", f"expected a list of {{\"name\"}} objects, got {json_type(requested)}")
        names = []
        for i, item in enumerate(requested):
            name = item.get("name") if isinstance(item, dict) else None
            if name not in self._outputs:
                raise SchemaError(f"outputs[{i}].name",
                                  f"no output {name!r}; this model has {', '.join(self._outputs)}")
            names.append(name)
        return names

    def _output_dtype(self) -> str | None:
        dtype = self.output_schema.get("dtype")
        return str(dtype) if dtype else None

    # -- descriptions -----------------------------------------------------------------------------

    def metadata(self) -> dict[str, Any]:
        m = self.manifest
        return {
            "name": self.name, "version": self.version, "digest": self.digest,
            "method": m.get("method"), "proba": self.has_proba, "classes": self.classes,
            "schema": {"input": self.input_schema, "output": self.output_schema},
            "sample": m.get("sample"), "pins": m.get("requirements"), "by_value": m.get("by_value"),
            "python": m.get("python"), "platform": m.get("platform"), "serializer": m.get("serializer"),
            "bundle_gazelle": m.get("gazelle"), "runtime_gazelle": gazelle.__version__,
            "batch": self.batch,
        }

