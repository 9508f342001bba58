"""``Endpoint``: a deployed model as the notebook sees it, and the calls that manage models by name.

``Endpoint.url`` is the address the server reports for the model: its gateway address
(``{server}/m/{name}``), or on Kubernetes with an Ingress host template the model's own Ingress
(``http[s]://{host}``, which the build server is not in the path of; the runtime checks the token).
Requests through it go to whichever version is live *now*, so ``version`` says which version was live when the object was
made, not a pin. ``predict`` returns what the model returned in the notebook as closely as JSON
allows: with numpy installed, labels and tensors come back as a numpy array (strings as a ``<U``
array, as scikit-learn returns them), tables as a pandas DataFrame where pandas is installed, and
anything else as the parsed JSON list.
"""
from __future__ import annotations

import html
import json
from typing import Any, Mapping

from gazelle.client.config import Connection, resolve
from gazelle.client.http import Client
from gazelle.client.progress import Progress
from gazelle.errors import BadRequest, GazelleError
from gazelle.names import validate_name

PREDICT_TIMEOUT = 120.0


class Endpoint:
    """A model behind the Gazelle gateway or its own Ingress: ``predict``, ``predict_proba``, ``info``, a rich HTML view."""

    def __init__(self, name: str, version: int | None, url: str, *, connection: Connection,
                 public: bool = False, manifest: Mapping[str, Any] | None = None, job: str | None = None) -> None:
        self.name = name
        self.version = version
        self.url = url.rstrip("/")
        self.public = public
        self.job = job
        self._connection = connection
        self._manifest: Mapping[str, Any] | None = manifest
        self._client: Client | None = None

    def __repr__(self) -> str:
        return f"Endpoint(name={self.name!r}, version={self.version}, url={self.url!r})"

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Endpoint) and (other.name, other.version, other.url)
                == (self.name, self.version, self.url))

    def __hash__(self) -> int:
        return hash((self.name, self.version, self.url))

    # -- requests ------------------------------------------------------------------------------

    def _http(self) -> Client:
        if self._client is None:
            self._client = Client(self._connection, timeout=PREDICT_TIMEOUT)
        return self._client

    def close(self) -> None:
        """Close the endpoint's HTTP connections (they are reopened on the next call)."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def _post(self, X: Any, *, proba: bool = False) -> dict[str, Any]:
        from gazelle.schema.inference import rows

        if isinstance(X, (str, bytes, dict)):
            raise BadRequest(f"{self.name} predicts rows: pass a list of them, e.g. [{X!r:.40}]")
        instances = rows(X)
        if not instances:
            raise GazelleError(f"nothing to predict: {self.name} needs at least one row")
        return self.predict_json({"instances": instances}, proba=proba)

    def predict_json(self, body: Mapping[str, Any], *, proba: bool = False) -> dict[str, Any]:
        """POST ``body`` (``{"instances": [...]}``) to the live version as it is; the answer as JSON."""
        params = {"proba": "true"} if proba else None
        return dict(self._http().request("POST", f"{self.url}/predict", json_body=body, params=params).json())

    def predict(self, X: Any) -> Any:
        """The live version's predictions for the rows of ``X`` (a list, numpy array or DataFrame)."""
        predictions = self._post(X)["predictions"]
        return _as_output(predictions, self.manifest.get("output_schema") or {})

    def predict_proba(self, X: Any) -> Any:
        """Class probabilities, one row per input row, columns in ``classes`` order (see ``info()``).

        A numpy array where numpy is installed, else a list of lists.
        """
        manifest = self.manifest
        if not manifest.get("proba"):
            raise GazelleError(f"model {self.name} has no predict_proba",
                               hint="only models with a predict_proba method answer ?proba=true")
        answer = self._post(X, proba=True)
        classes = answer.get("classes") or manifest.get("classes") or []
        keys = [str(c) for c in classes]
        table = [[float(row[k]) for k in keys] for row in answer["probabilities"]]
        try:
            import numpy as np
        except ImportError:
            return table
        return np.asarray(table, dtype="float64").reshape(len(table), len(keys))

    @property
    def manifest(self) -> Mapping[str, Any]:
        """The deployed bundle's description (schemas, classes, sample), from the runtime's /metadata."""
        if self._manifest is None:
            self._manifest = _manifest_from_metadata(self._metadata())
        return self._manifest

    @property
    def classes(self) -> list[Any] | None:
        classes = self.manifest.get("classes")
        return list(classes) if classes is not None else None

    def _metadata(self) -> dict[str, Any]:
        return dict(self._http().request("GET", f"{self.url}/metadata").json())

    def info(self) -> dict[str, Any]:
        """The model as the build server describes it, with the live runtime's metadata under ``metadata``."""
        model = dict(self._http().api("GET", f"/models/{self.name}"))
        model["metadata"] = self._metadata()
        return model

    # -- display -------------------------------------------------------------------------------

    def curl(self) -> str:
        """A curl command that calls this endpoint; the token is the ``$GAZELLE_TOKEN`` placeholder.

        The header reaches curl on its standard input (``-H @-``) from ``printf``, a shell builtin, so
        the token is never on a command line, where ``ps`` would show it to every user of the machine.
        """
        sample = (self._manifest or {}).get("sample") or []
        body = json.dumps({"instances": sample[:1]}) if sample else '{"instances": [...]}'
        quoted = "'" + body.replace("'", "'\\''") + "'"
        if self.public:
            lines = [f"curl -X POST {self.url}/predict"]
        else:
            lines = [f"printf 'Authorization: Bearer %s\\n' \"$GAZELLE_TOKEN\" | curl -X POST {self.url}/predict",
                     "-H @-"]
        lines += ['-H "Content-Type: application/json"', f"-d {quoted}"]
        return " \\\n     ".join(lines)

    def _repr_html_(self) -> str:
        url = html.escape(self.url)
        access = ("public: anyone who can reach the server can call it" if self.public else
                  "needs a token with the predict scope (<code>gazelle token create --scope predict</code>)")
        version = f" version {self.version}" if self.version is not None else ""
        try_note = "" if self.public else " (the page asks for a predict token first)"
        return (
            "<div style='font-family:sans-serif;line-height:1.5'>"
            f"<div><b>{html.escape(self.name)}</b>{version} &middot; {access}</div>"
            f"<div>URL: <a href='{url}/' target='_blank'><code>{url}</code></a></div>"
            f"<div>Try it: <a href='{url}/' target='_blank'>{url}/</a>{try_note}</div>"
            f"<pre style='background:#f5f5f5;padding:.5em'>{html.escape(self.curl())}</pre>"
            "</div>"
        )


def _manifest_from_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The runtime's ``/metadata`` in the bundle manifest's terms (``input_schema``, ``output_schema`` ...)."""
    schemas = metadata.get("schema") or {}
    return {**metadata, "input_schema": schemas.get("input"), "output_schema": schemas.get("output")}


def _as_output(predictions: list[Any], schema: Mapping[str, Any]) -> Any:
    """JSON predictions as the model returned them, as far as the output schema tells."""
    kind = schema.get("type")
    try:
        if kind == "table":
            import pandas as pd

            columns = [c["name"] for c in schema.get("columns", [])]
            return pd.DataFrame(predictions, columns=columns or None)
        if kind in ("labels", "tensor"):
            import numpy as np

            dtype = schema.get("dtype") or "object"
            if dtype == "object":
                strings = all(isinstance(p, str) for p in predictions)
                return np.asarray(predictions) if strings else np.asarray(predictions, dtype=object)
            return np.asarray(predictions, dtype=dtype)
    except ImportError:
        pass
    return predictions


def endpoint(name: str, *, server: str | None = None, token: str | None = None) -> Endpoint:
    """The endpoint of an existing model (raises ``NotFound`` if there is no such model)."""
    validate_name(name)
    connection = resolve(server, token)
    with Client(connection) as client:
        model = client.api("GET", f"/models/{name}")
    return _from_model(model, connection)


def _from_model(model: Mapping[str, Any], connection: Connection) -> Endpoint:
    name = str(model["name"])
    url = model.get("url") or f"{connection.server}/m/{name}"
    return Endpoint(name, model.get("live_version"), url, connection=connection,
                    public=bool(model.get("public")))


def list_models(*, server: str | None = None, token: str | None = None) -> list[dict[str, Any]]:
    """Every model on the server, as the server describes them (name, live version, versions ...)."""
    with Client(resolve(server, token)) as client:
        answer = client.api("GET", "/models")
    models = answer.get("models", []) if isinstance(answer, Mapping) else answer
    return [dict(m) for m in models]


def rollback(name: str, version: int, *, server: str | None = None, token: str | None = None,
             progress: Progress | None = None) -> Endpoint:
    """Make an earlier ``version`` of ``name`` live again (after its sanity check); its endpoint.

    Raises ``DeployError`` if that version cannot be brought back; what was live stays live.
    """
    from gazelle.client.jobs import failure, follow

    validate_name(name)
    connection = resolve(server, token)
    with Client(connection) as client:
        answer = client.api("POST", f"/models/{name}/rollback", json_body={"version": int(version)})
        job = follow(client, str(answer["job"]), progress)
        if job.get("status") != "succeeded":
            raise failure(job, str(answer["job"]))
        model = client.api("GET", f"/models/{name}")
    return _from_model(model, connection)


def delete(name: str, *, server: str | None = None, token: str | None = None,
           progress: Progress | None = None) -> None:
    """Delete ``name`` and every version of it; returns once the delete job has ended and its URL is gone.

    Raises ``DeployError`` (stage ``delete``) if the server could not stop or remove a version.
    """
    from gazelle.client.jobs import failure, follow

    validate_name(name)
    with Client(resolve(server, token)) as client:
        answer = client.api("DELETE", f"/models/{name}")
        job = follow(client, str(answer["job"]), progress)
        if job.get("status") != "succeeded":
            raise failure(job, str(answer["job"]))
