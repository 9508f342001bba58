"""``deploy()``: pack a model, send the bundle to the build server, follow the job until it is live.

The model name is checked before anything is packed or sent. The job is followed as
``gazelle.client.jobs`` describes. A failed job raises ``DeployError`` naming the stage and the cause,
with the last log lines; the previous version of the model keeps serving, as the server guarantees.
"""
from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

from gazelle.client.config import resolve
from gazelle.client.endpoints import Endpoint
from gazelle.client.http import Client
from gazelle.client.jobs import failure, follow
from gazelle.client.progress import Progress, default_progress
from gazelle.names import validate_name

UPLOAD_TIMEOUT = 300.0


def deploy(model: Any, name: str, *, sample: Any = None, server: str | None = None, token: str | None = None,
           requirements: Sequence[str] | None = None, method: str = "predict", public: bool = False,
           replicas: int | None = None, resources: Mapping[str, Any] | None = None,
           wait: bool = True, batch: bool | None = None) -> Endpoint:
    """Deploy ``model`` as ``name`` and return its endpoint once the new version is live.

    ``model`` has a ``predict`` method (or ``method``), or is a plain callable. ``sample`` (a few input
    rows: list, ndarray, DataFrame) gives the input schema, the try-it page's example and the sanity
    check. ``requirements`` adds pins to the captured ones. ``public`` serves predictions without a
    token. With ``wait=False`` the call returns as soon as the server accepted the bundle; the new
    version answers once its job (``Endpoint.job``) is done. ``batch`` lets the runtime join
    concurrent requests into one model call (default: scikit-learn models only; ``True`` for a
    function or class that predicts each row on its own, ``False`` to turn it off). A failed deploy
    raises ``DeployError``.
    """
    validate_name(name)
    from gazelle.bundle import pack

    bundle = pack(model, name=name, sample=sample, requirements=requirements, method=method, batch=batch)
    return deploy_bundle(bundle, server=server, token=token, public=public, replicas=replicas,
                         resources=resources, wait=wait)


def deploy_bundle(bundle: Any, *, name: str | None = None, server: str | None = None, token: str | None = None,
                  public: bool = False, replicas: int | None = None, resources: Mapping[str, Any] | None = None,
                  wait: bool = True, progress: Progress | None = None) -> Endpoint:
    """Send an already packed ``gazelle.bundle.Bundle`` and follow its job (``gazelle deploy`` uses this)."""
    name = validate_name(name or bundle.name)
    connection = resolve(server, token)
    params: dict[str, str] = {"public": "true" if public else "false"}
    if replicas is not None:
        params["replicas"] = str(int(replicas))
    if resources is not None:
        params["resources"] = json.dumps(dict(resources), separators=(",", ":"))
    manifest = dict(bundle.manifest)
    with Client(connection) as client:
        answer = client.api("POST", f"/models/{name}/versions", params=params, content=bundle.data,
                            headers={"Content-Type": "application/x-tar"}, timeout=UPLOAD_TIMEOUT)
        version = int(answer["version"])
        job_id = answer.get("job")
        url = answer.get("url") or f"{connection.server}/m/{name}"
        if job_id is None or not wait:
            return Endpoint(name, version, url, connection=connection, public=public, manifest=manifest,
                            job=job_id)
        shown = progress or default_progress()
        shown.start(name, version, job_id)
        job = follow(client, str(job_id), shown)
    shown.finish(job)
    if job.get("status") != "succeeded":
        raise failure(job, str(job_id))
    return Endpoint(name, int(job.get("version") or version), job.get("url") or url, connection=connection,
                    public=public, manifest=manifest, job=str(job_id))
