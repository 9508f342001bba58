"""OCI images as values: ``Layer`` and ``Image`` are frozen; ``append`` and ``configure`` return new images.

An ``Image`` is a base (layers known only by their descriptors, never downloaded) plus layers made
here (their bytes in memory or in a file). ``Image.manifest_bytes`` / ``config_bytes`` and the
digests are computed once, on first use. Images written here use the OCI media types (image
manifest v1, config v1, gzip layers); a base may also be a Docker v2 schema 2 image, whose layer
media types are kept as the registry gave them (registries accept both in one OCI manifest).

Determinism: ``layer_from_files`` writes a GNU tar with sorted entries, mtime 0, uid/gid 0, no user
or group names and fixed modes (0644, 0755 for directories and executables), then gzips it with
mtime 0, no file name and a fixed level; image configs carry ``created`` = the epoch and are written
as sorted, compact JSON. The same inputs give the same digests in any process, on any day, as long
as zlib's output for a given level is the same (it is for one zlib build; a different zlib may
compress differently, which changes layer digests but never correctness).

Limits: linux images, one platform per image (no index is written); a layer written without
``out`` is held in memory (meant for small ones: the runtime, a model).
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, BinaryIO, Iterable, Mapping, Union, cast

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)

EPOCH = "1970-01-01T00:00:00Z"
GZIP_LEVEL = 6
FILE_MODE = 0o644
EXEC_MODE = 0o755
DIR_MODE = 0o755

# What a file in a layer is: its bytes (mode 0644), or (bytes, mode), or a path on this host to copy.
FileSource = Union[bytes, tuple[bytes, int], Path]


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class Origin:
    """Where a blob that is not held here can be found: ``registry`` host[:port] and ``repository``."""

    registry: str
    repository: str


@dataclass(frozen=True)
class Layer:
    """One layer: its descriptor, its diff id (sha256 of the uncompressed tar), and where its bytes are.

    ``data`` or ``path`` hold the compressed blob of a layer made here; a base image's layer has
    neither, only ``origin`` (the repository it can be mounted or copied from).
    """

    digest: str
    size: int
    diff_id: str
    media_type: str = OCI_LAYER_GZIP
    created_by: str = ""
    data: bytes | None = field(default=None, repr=False, compare=False)
    path: Path | None = field(default=None, compare=False)
    origin: Origin | None = field(default=None, compare=False)

    @property
    def local(self) -> bool:
        return self.data is not None or self.path is not None

    def read(self) -> bytes:
        if self.data is not None:
            return self.data
        if self.path is not None:
            return self.path.read_bytes()
        raise ValueError(f"layer {self.digest} is a descriptor only: its bytes are in {self.origin}")

    def descriptor(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


@dataclass(frozen=True)
class Image:
    """A manifest's worth of image: ``config`` is the parsed config JSON (never mutated)."""

    layers: tuple[Layer, ...]
    config: Mapping[str, Any] = field(compare=False)
    config_bytes: bytes = field(repr=False)

    @classmethod
    def of(cls, layers: Iterable[Layer], config: Mapping[str, Any]) -> "Image":
        body = canonical_json(config)
        return cls(tuple(layers), json.loads(body), body)

    @cached_property
    def config_digest(self) -> str:
        return sha256(self.config_bytes)

    @cached_property
    def manifest_bytes(self) -> bytes:
        return canonical_json({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": self.config_digest, "size": len(self.config_bytes)},
            "layers": [layer.descriptor() for layer in self.layers],
        })

    @cached_property
    def digest(self) -> str:
        return sha256(self.manifest_bytes)

    @property
    def media_type(self) -> str:
        return OCI_MANIFEST

    @property
    def size(self) -> int:
        """Compressed bytes of every layer, as a registry stores them."""
        return sum(layer.size for layer in self.layers)

    @property
    def platform(self) -> tuple[str, str]:
        """(os, architecture) from the config, e.g. ("linux", "amd64")."""
        return str(self.config.get("os") or "linux"), str(self.config.get("architecture") or "amd64")

    @property
    def env(self) -> dict[str, str]:
        pairs = (item.partition("=") for item in (self.config.get("config") or {}).get("Env") or [])
        return {k: v for k, _, v in pairs}


def empty(os: str = "linux", architecture: str = "amd64") -> Image:
    """FROM scratch."""
    return Image.of((), {"architecture": architecture, "os": os, "created": EPOCH, "config": {},
                         "rootfs": {"type": "layers", "diff_ids": []}, "history": []})


def from_registry(manifest: bytes, config: bytes, origin: Origin) -> Image:
    """A base image read from a registry: its layers stay descriptors that point at ``origin``.

    ``config`` is kept byte for byte only until the image is changed; ``append`` writes a new one.
    """
    parsed = json.loads(manifest)
    if parsed.get("mediaType", OCI_MANIFEST) not in MANIFEST_TYPES:
        raise ValueError(f"not an image manifest: {parsed.get('mediaType')!r}")
    conf = json.loads(config)
    diff_ids = list((conf.get("rootfs") or {}).get("diff_ids") or [])
    descriptors = parsed.get("layers") or []
    if len(diff_ids) != len(descriptors):
        raise ValueError(f"the image config lists {len(diff_ids)} layers, the manifest {len(descriptors)}")
    layers = tuple(Layer(str(d["digest"]), int(d["size"]), diff_id, str(d["mediaType"]), origin=origin)
                   for d, diff_id in zip(descriptors, diff_ids))
    return Image(layers, conf, config)


def append(base: Image, *layers: Layer) -> Image:
    """A new image: ``base`` with ``layers`` on top (their diff ids and history entries added)."""
    config = json.loads(base.config_bytes)
    rootfs = config.setdefault("rootfs", {"type": "layers", "diff_ids": []})
    rootfs["diff_ids"] = [*rootfs.get("diff_ids", []), *(layer.diff_id for layer in layers)]
    config["history"] = [*config.get("history", []),
                         *({"created": EPOCH, "created_by": layer.created_by or "gazelle"} for layer in layers)]
    config["created"] = EPOCH
    return Image.of((*base.layers, *layers), config)


def configure(image: Image, *, entrypoint: list[str] | None = None, cmd: list[str] | None = None,
              env: Mapping[str, str] | None = None, user: str | None = None, working_dir: str | None = None,
              exposed_ports: Iterable[str] = (), labels: Mapping[str, str] | None = None) -> Image:
    """A new image with its runtime config changed: ``env`` and ``labels`` are merged over the base's;
    ``cmd`` is cleared whenever an ``entrypoint`` is set (as a Dockerfile ENTRYPOINT does)."""
    config = json.loads(image.config_bytes)
    run = dict(config.get("config") or {})
    if entrypoint is not None:
        run["Entrypoint"] = list(entrypoint)
        run["Cmd"] = list(cmd) if cmd is not None else None
    elif cmd is not None:
        run["Cmd"] = list(cmd)
    if env:
        merged = {**image.env, **env}
        run["Env"] = [f"{k}={v}" for k, v in merged.items()]
    if user is not None:
        run["User"] = user
    if working_dir is not None:
        run["WorkingDir"] = working_dir
    ports = {**(run.get("ExposedPorts") or {}), **{p: {} for p in exposed_ports}}
    if ports:
        run["ExposedPorts"] = ports
    if labels:
        run["Labels"] = {**(run.get("Labels") or {}), **labels}
    config["config"] = {k: v for k, v in run.items() if v is not None}
    config["created"] = EPOCH
    return Image.of(image.layers, config)


# --- writing layers ------------------------------------------------------------------------------

def layer_from_files(files: Mapping[str, FileSource], *, created_by: str = "", out: Path | None = None) -> Layer:
    """A layer holding ``files`` (archive path -> content), parent directories included.

    Paths are absolute inside the image (``/opt/gazelle/model/bundle.tar``); a ``Path`` source is
    streamed from this host (an executable keeps mode 0755, anything else gets 0644; symlinks are
    followed). With ``out``, the compressed blob is written to that file (memory stays flat however
    large the files are) and the layer points at it; otherwise it is held in memory.
    """
    entries: dict[str, FileSource | None] = {}   # None: a directory
    for name, source in files.items():
        path = _member_name(name)
        parts = path.split("/")
        for depth in range(1, len(parts)):
            entries.setdefault("/".join(parts[:depth]), None)
        entries[path] = source
    sink: BinaryIO = open(out, "wb") if out is not None else io.BytesIO()
    with sink:
        blob = _Hashing(sink)
        with gzip.GzipFile(filename="", mode="wb", fileobj=cast(BinaryIO, blob), mtime=0, compresslevel=GZIP_LEVEL) as gz:
            tar_bytes = _Hashing(gz)
            with tarfile.open(fileobj=cast(BinaryIO, tar_bytes), mode="w", format=tarfile.GNU_FORMAT) as tar:
                for path in sorted(entries):
                    _add(tar, path, entries[path])
        data = sink.getvalue() if isinstance(sink, io.BytesIO) else None
    return Layer(blob.digest(), blob.size, tar_bytes.digest(), OCI_LAYER_GZIP, created_by, data=data, path=out)


def layer_from_tree(root: Path, prefix: str, *, created_by: str = "", out: Path | None = None) -> Layer:
    """Every file under ``root`` (this host), placed under ``prefix`` in the image."""
    files: dict[str, FileSource] = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            files[f"{prefix.rstrip('/')}/{path.relative_to(root).as_posix()}"] = path
    return layer_from_files(files, created_by=created_by, out=out)


class _Hashing:
    """A write-only file that hashes and counts what passes through it to ``target``."""

    def __init__(self, target: Any) -> None:
        self.target = target
        self.size = 0
        self._sha = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self._sha.update(data)
        self.size += len(data)
        self.target.write(data)
        return len(data)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self.target.flush()

    def digest(self) -> str:
        return "sha256:" + self._sha.hexdigest()


def _add(tar: tarfile.TarFile, path: str, source: FileSource | None) -> None:
    info = tarfile.TarInfo(path)
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if source is None:
        info.type = tarfile.DIRTYPE
        info.mode = DIR_MODE
        tar.addfile(info)
    elif isinstance(source, Path):
        info.size = source.stat().st_size
        info.mode = EXEC_MODE if source.stat().st_mode & 0o111 else FILE_MODE
        with open(source, "rb") as handle:
            tar.addfile(info, handle)
    else:
        data, info.mode = (source, FILE_MODE) if isinstance(source, bytes) else source
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


def _member_name(name: str) -> str:
    path = name.strip("/")
    if not path or any(part in ("", ".", "..") for part in path.split("/")):
        raise ValueError(f"not a clean absolute path for a file in an image: {name!r}")
    return path
