"""The bundle: one model, everything needed to serve it, and the proof of what it answered.

A bundle is a plain tar with two members, ``gazelle.json`` (the manifest) then ``model.pkl`` (the
model, pickled with cloudpickle). It is written deterministically (sorted entries, mtime 0, uid/gid 0,
no owner names, GNU format without pax timestamps), so the same model and sample give the same bytes,
and the sha256 of those bytes (:attr:`Bundle.digest`) is the bundle's identity.

Limits, on purpose:

- Load only bundles you trust. Unpickling runs code; :func:`read` checks the format, the members and
  that ``model.pkl`` matches ``model_sha256``, which catches damage, not malice. The build server never
  unpickles: it reads the manifest only.
- A bundle loads only on the python ``major.minor`` it was written with (pickled code objects do not
  cross minor versions), with the pinned distributions installed (see :mod:`gazelle.envspec`).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import tarfile
import tempfile
import traceback
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, BinaryIO, Mapping, Sequence

from gazelle import envspec, schema
from gazelle.errors import BadRequest, BundleError, GazelleError, ModelError
from gazelle.names import validate_name

FORMAT_VERSION = 1
MANIFEST = "gazelle.json"
MODEL = "model.pkl"
MEMBERS = (MANIFEST, MODEL)
MAX_MANIFEST_BYTES = 16 * 1024 * 1024  # the sample and expected output live here; models do not
MANIFEST_KEYS = (
    "format", "name", "gazelle", "python", "platform", "serializer", "requirements", "by_value",
    "method", "proba", "classes", "input_schema", "output_schema", "sample", "expected", "model_sha256",
)
# Written by every bundle, but read as optional: bundles from before the key existed stay readable.
OPTIONAL_MANIFEST_KEYS = ("batch",)


@dataclass(frozen=True)
class Bundle:
    """A bundle read into memory. Build one with :func:`pack` or :func:`read`."""

    manifest: dict[str, Any]
    data: bytes = field(repr=False)

    @cached_property
    def digest(self) -> str:
        """``sha256:<hex>`` of the tar's bytes: the bundle's identity."""
        return "sha256:" + hashlib.sha256(self.data).hexdigest()

    @property
    def name(self) -> str:
        return str(self.manifest["name"])

    def model_bytes(self) -> bytes:
        """The pickled model, as stored."""
        with _open_tar(self.data) as tar:
            return _member_bytes(tar, _members(tar)[MODEL])

    def load_model(self) -> Any:
        """Unpickle the model. Runs code from the bundle: only the runtime calls this, after
        :func:`gazelle.envspec.check`."""
        pickled = self.model_bytes()
        _check_sha(hashlib.sha256(pickled).hexdigest(), self.manifest)
        return pickle.loads(pickled)

    def __repr__(self) -> str:
        return f"Bundle(name={self.name!r}, digest={self.digest!r}, size={len(self.data)})"


# ---------------------------------------------------------------------------------------------
# writing


def pack(model: Any, *, name: str, sample: Any = None, requirements: Sequence[str] | None = None,
         method: str = "predict", batch: bool | None = None) -> Bundle:
    """Bundle ``model``: pickle it, capture its environment, and record what it answers for ``sample``.

    ``method`` is the model's method the runtime calls; a plain callable without ``predict`` is called
    directly (``"__call__"``). ``requirements`` are extra pins that win over the captured ones.
    ``batch``: whether the runtime may join concurrent requests' rows into one model call (the model
    must answer each row independently of the others); ``None`` means yes for scikit-learn
    estimators and pipelines, no for anything else.
    """
    validate_name(name)
    method = _resolve_method(model, method)
    if batch is not None and not isinstance(batch, bool):
        raise BadRequest(f"batch must be True, False or None, got {type(batch).__name__}")
    if isinstance(requirements, str):
        requirements = [requirements]
    input_schema = schema.infer(sample)
    sample_rows = expected = None
    output_schema: dict[str, Any] = {"type": "any"}
    if sample is not None:
        # Through JSON and back: the expectation is computed from exactly what the runtime will see.
        sample_rows = json.loads(json.dumps(schema.rows(sample), allow_nan=False))
        output = _run(model, method, schema.decode(sample_rows, input_schema, field="sample"))
        expected = schema.jsonable(output)
        output_schema = schema.output_schema(output)
    pickled, by_value = envspec.dumps(model)
    env = envspec.capture(model, pickled, extra=[*_codec_pins(input_schema), *(requirements or ())])
    env["by_value"] = sorted(set(env["by_value"]) | set(by_value))
    import cloudpickle

    from gazelle import __version__

    manifest: dict[str, Any] = {
        "format": FORMAT_VERSION,
        "name": name,
        "gazelle": __version__,
        "python": env["python"],
        "platform": env["platform"],
        "serializer": {"name": "cloudpickle", "version": cloudpickle.__version__,
                       "protocol": envspec.PROTOCOL},
        "requirements": env["requirements"],
        "by_value": env["by_value"],
        "method": method,
        "proba": method != "__call__" and hasattr(model, "predict_proba"),
        "classes": _classes(model),
        "input_schema": input_schema,
        "output_schema": output_schema,
        "sample": sample_rows,
        "expected": expected,
        "model_sha256": hashlib.sha256(pickled).hexdigest(),
        "batch": batches_by_default(model, method) if batch is None else batch,
    }
    text = _dump_manifest(manifest)
    return Bundle(manifest=json.loads(text), data=_write_tar({MANIFEST: text.encode(), MODEL: pickled}))


def save(model: Any, path: str | os.PathLike[str], *, name: str, sample: Any = None,
         requirements: Sequence[str] | None = None, method: str = "predict",
         batch: bool | None = None) -> Path:
    """Write the bundle that ``gazelle.deploy`` would send to ``path`` (for ``gazelle deploy`` later)."""
    bundle = pack(model, name=name, sample=sample, requirements=requirements, method=method, batch=batch)
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(bundle.data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def batches_by_default(model: Any, method: str = "predict") -> bool:
    """Whether a model batches when the bundle does not say: scikit-learn's own estimators and
    pipelines do (they predict each row on its own); functions and other classes are not assumed to."""
    return method != "__call__" and type(model).__module__.split(".")[0] == "sklearn"


def _resolve_method(model: Any, method: str) -> str:
    if method == "predict" and not hasattr(model, "predict") and callable(model):
        return "__call__"
    if method == "__call__":
        if not callable(model):
            raise BadRequest(f"the model ({type(model).__name__}) is not callable")
        return method
    if not callable(getattr(model, method, None)):
        raise BadRequest(f"the model ({type(model).__name__}) has no method {method!r}",
                         hint="pass method= naming the method that makes predictions")
    return method


def _codec_pins(input_schema: Mapping[str, Any]) -> list[str]:
    """The runtime decodes tensors with numpy and tables with pandas, whatever the pickle references."""
    needs = {"tensor": ["numpy"], "table": ["numpy", "pandas"]}.get(input_schema.get("type", ""), [])
    return [f"{name}=={version}" for name in needs if (version := _installed(name))]


def _installed(name: str) -> str | None:
    import importlib.metadata

    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _run(model: Any, method: str, inputs: Any) -> Any:
    call = model if method == "__call__" else getattr(model, method)
    try:
        return call(inputs)
    except Exception as exc:
        raise ModelError(f"the model raised on the sample: {type(exc).__name__}: {exc}",
                         detail=traceback.format_exc()) from exc


def _classes(model: Any) -> list[Any] | None:
    classes = getattr(model, "classes_", None)
    steps = getattr(model, "steps", None)
    if classes is None and isinstance(steps, list) and steps:
        classes = getattr(steps[-1][-1], "classes_", None)
    if classes is None:
        return None
    try:
        return schema.jsonable(classes)
    except GazelleError:
        return None


def _dump_manifest(manifest: Mapping[str, Any]) -> str:
    try:
        return json.dumps(manifest, sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    except (TypeError, ValueError) as exc:
        raise BundleError(f"the manifest cannot be written as JSON: {exc}") from None


def _write_tar(members: Mapping[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for member in sorted(members):
            data = members[member]
            info = tarfile.TarInfo(member)
            info.size = len(data)
            info.mtime = 0
            info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.type = tarfile.REGTYPE
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# reading


def read(source: bytes | str | os.PathLike[str]) -> Bundle:
    """Read and check a bundle (tar bytes or a path). Never unpickles.

    Raises :class:`BundleError` naming the problem: not a tar, unexpected or unsafe members, a
    manifest that is not JSON, a format newer than this gazelle, an invalid name, or a ``model.pkl``
    that does not match ``model_sha256``.
    """
    data = _source_bytes(source)
    with _open_tar(data) as tar:
        manifest = _checked_manifest(tar)
    return Bundle(manifest=manifest, data=data)


def read_manifest(source: bytes | str | os.PathLike[str] | BinaryIO) -> dict[str, Any]:
    """The checked manifest of a bundle (the same checks as :func:`read`); never unpickles.

    A path or an open file is read a member at a time, never whole into memory: this is what the
    server runs on every stored bundle, whatever the model's size.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        return read(source).manifest
    if isinstance(source, (str, os.PathLike)):
        with _open_file(source) as f:
            return read_manifest(f)
    with _open_tar(source) as tar:
        return _checked_manifest(tar)


def _checked_manifest(tar: tarfile.TarFile) -> dict[str, Any]:
    """The manifest, once the members, the manifest and model.pkl's digest (read in chunks) pass."""
    members = _members(tar)
    manifest = _parse_manifest(_member_bytes(tar, members[MANIFEST], limit=MAX_MANIFEST_BYTES))
    _check_sha(_member_sha256(tar, members[MODEL]), manifest)
    return manifest


def _open_file(source: str | os.PathLike[str]) -> BinaryIO:
    try:
        return open(source, "rb")
    except FileNotFoundError:
        raise BundleError(f"bundle {os.fspath(source)!r} does not exist") from None
    except IsADirectoryError:
        raise BundleError(f"bundle {os.fspath(source)!r} is a directory, not a tar") from None


def _source_bytes(source: bytes | str | os.PathLike[str]) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    with _open_file(source) as f:
        return f.read()


def _open_tar(source: bytes | BinaryIO) -> tarfile.TarFile:
    if isinstance(source, bytes):
        if not source:
            raise BundleError("the bundle is empty, not a tar archive")
        source = io.BytesIO(source)
    try:
        # "r:" only: a bundle is never compressed, so its digest is the digest of what is read.
        return tarfile.open(fileobj=source, mode="r:")
    except tarfile.TarError as exc:
        raise BundleError(f"the bundle is not a tar archive ({exc})") from None


def _members(tar: tarfile.TarFile) -> dict[str, tarfile.TarInfo]:
    try:
        infos = tar.getmembers()
    except tarfile.TarError as exc:
        raise BundleError(f"the bundle's tar is damaged ({exc})") from None
    found: dict[str, tarfile.TarInfo] = {}
    for info in infos:
        name = info.name
        parts = name.replace("\\", "/").split("/")
        if name.startswith(("/", "\\")) or ".." in parts or (len(name) > 1 and name[1] == ":"):
            raise BundleError(f"the bundle holds an unsafe path {name!r}")
        if not info.isreg():
            kind = "link" if info.issym() or info.islnk() else "directory" if info.isdir() else "special file"
            raise BundleError(f"the bundle member {name!r} is a {kind}; only regular files are allowed")
        if name not in MEMBERS:
            raise BundleError(f"the bundle holds an unexpected member {name!r}; "
                              f"a bundle holds exactly {' and '.join(MEMBERS)}")
        if name in found:
            raise BundleError(f"the bundle holds {name!r} twice")
        found[name] = info
    missing = [m for m in MEMBERS if m not in found]
    if missing:
        raise BundleError(f"the bundle lacks {' and '.join(missing)}")
    return found


def _member_bytes(tar: tarfile.TarFile, info: tarfile.TarInfo, limit: int | None = None) -> bytes:
    if limit is not None and info.size > limit:
        raise BundleError(f"the bundle's {info.name} is {info.size} bytes; the limit is {limit}")
    try:
        stream = tar.extractfile(info)
        data = stream.read() if stream is not None else None
    except (tarfile.TarError, OSError) as exc:
        raise BundleError(f"the bundle's {info.name} cannot be read ({exc})") from None
    if data is None or len(data) != info.size:
        raise BundleError(f"the bundle's {info.name} is truncated")
    return data


def _parse_manifest(raw: bytes) -> dict[str, Any]:
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BundleError(f"the bundle's {MANIFEST} is not valid JSON ({exc})") from None
    except RecursionError:
        raise BundleError(f"the bundle's {MANIFEST} is nested too deeply to be a manifest") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"the bundle's {MANIFEST} is not a JSON object")
    fmt = manifest.get("format")
    if type(fmt) is not int or fmt < 1:
        raise BundleError(f"the bundle's {MANIFEST} has an unknown format {fmt!r}")
    if fmt > FORMAT_VERSION:
        raise BundleError(f"bundle format {fmt} is newer than this gazelle (reads {FORMAT_VERSION}): "
                          "upgrade gazelle")
    missing = [key for key in MANIFEST_KEYS if key not in manifest]
    if missing:
        raise BundleError(f"the bundle's {MANIFEST} lacks {', '.join(missing)}")
    try:
        validate_name(manifest["name"])
    except GazelleError as exc:
        raise BundleError(f"the bundle's {MANIFEST} has an invalid name: {exc.message}") from None
    sha = manifest["model_sha256"]
    if not isinstance(sha, str) or len(sha) != 64:
        raise BundleError(f"the bundle's {MANIFEST} has no valid model_sha256")
    _check_types(manifest)
    return manifest


# What each manifest field must be, so that no reader (server, runtime) trips over a wrong type.
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "gazelle": (str,), "python": (str,), "platform": (str,), "serializer": (dict,),
    "requirements": (list,), "by_value": (list,), "method": (str,), "proba": (bool,),
    "classes": (list, type(None)), "input_schema": (dict,), "output_schema": (dict,),
    "sample": (list, type(None)), "expected": (list, type(None)),
}
_SCHEMA_TYPES = ("text", "tensor", "table", "any", "labels")


def _check_types(manifest: Mapping[str, Any]) -> None:
    for key, types in _FIELD_TYPES.items():
        if not isinstance(manifest[key], types):
            wanted = " or ".join("null" if t is type(None) else _JSON_NAMES.get(t, t.__name__) for t in types)
            raise BundleError(f"the bundle's {MANIFEST} field {key} must be {wanted}, "
                              f"got {_JSON_NAMES.get(type(manifest[key]), type(manifest[key]).__name__)}")
    # Optional: bundles written before batching existed lack it, and the runtime then decides.
    if not isinstance(manifest.get("batch", False), bool):
        raise BundleError(f"the bundle's {MANIFEST} field batch must be true or false")
    for key in ("requirements", "by_value"):
        if not all(isinstance(item, str) for item in manifest[key]):
            raise BundleError(f"the bundle's {MANIFEST} field {key} must list strings only")
    for key in ("input_schema", "output_schema"):
        _check_schema(manifest[key], key)


def _check_schema(sch: Mapping[str, Any], key: str) -> None:
    where = f"the bundle's {MANIFEST} field {key}"
    kind = sch.get("type")
    if kind not in _SCHEMA_TYPES:
        raise BundleError(f"{where} has an unknown type {kind!r}; known: {', '.join(_SCHEMA_TYPES)}")
    if kind in ("tensor", "labels") and not isinstance(sch.get("dtype", "object"), str):
        raise BundleError(f"{where}.dtype must be a string")
    if kind == "tensor":
        shape = sch.get("shape")
        if (not isinstance(shape, list) or not shape
                or not all(d is None or (type(d) is int and d >= 0) for d in shape)):
            raise BundleError(f"{where}.shape must be a list of sizes or nulls, like [null, 4]")
    if kind == "table":
        columns = sch.get("columns")
        if not isinstance(columns, list) or not all(
                isinstance(c, dict) and isinstance(c.get("name"), str) and isinstance(c.get("dtype"), str)
                and isinstance(c.get("categories", []), list) for c in columns):
            raise BundleError(f"{where}.columns must be a list of {{\"name\", \"dtype\"}} objects")


_JSON_NAMES = {dict: "an object", list: "a list", str: "a string", bool: "true or false",
               int: "a number", float: "a number", type(None): "null"}


def _member_sha256(tar: tarfile.TarFile, info: tarfile.TarInfo) -> str:
    """The sha256 hex of a member, read in chunks."""
    digest = hashlib.sha256()
    read = 0
    try:
        stream = tar.extractfile(info)
        if stream is not None:
            for chunk in iter(lambda: stream.read(1 << 20), b""):
                digest.update(chunk)
                read += len(chunk)
    except (tarfile.TarError, OSError) as exc:
        raise BundleError(f"the bundle's {info.name} cannot be read ({exc})") from None
    if read != info.size:
        raise BundleError(f"the bundle's {info.name} is truncated")
    return digest.hexdigest()


def _check_sha(got: str, manifest: Mapping[str, Any]) -> None:
    """``got``: the sha256 hex of model.pkl."""
    want = manifest.get("model_sha256")
    if got != want:
        raise BundleError(f"{MODEL} does not match the model_sha256 in {MANIFEST} "
                          f"(expected {str(want)[:12]}..., got {got[:12]}...): the bundle was altered or damaged")
