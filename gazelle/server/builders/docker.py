"""``DockerBuilder``: a generated Dockerfile, built by a Docker engine, for models that need system
packages or dependencies compiled from source (the append builder takes only wheels).

What it builds, from the bundle's ``gazelle.json`` alone (the server never unpickles):

- two stages on the base image chosen for the bundle's python ``major.minor`` through
  ``GAZELLE_BASE_IMAGES`` (default ``python:{major}.{minor}-slim``). The ``deps`` stage runs
  ``pip install --no-cache-dir --target /opt/gazelle/site`` of the bundle's exact pins plus the
  runtime's own requirements; the final stage copies only ``/opt/gazelle/site`` out of it, then
  gazelle's runtime modules (nothing of client or server) and the bundle.
- optional system packages (``GAZELLE_DOCKER_APT_PACKAGES``), installed with apt in both stages: in
  ``deps`` so a source build finds its headers, in the final stage so the libraries are there at run
  time.
- a non-root numeric user (10001), ``ENTRYPOINT ["python3", "-m", "gazelle.runtime"]`` serving
  ``GAZELLE_RUNTIME_BUNDLE`` on ``GAZELLE_RUNTIME_HOST=0.0.0.0``, ``GAZELLE_RUNTIME_PORT=8080``,
  the labels ``gazelle.model``, ``gazelle.version``, ``gazelle.bundle-digest`` and OCI
  ``org.opencontainers.image.*`` labels.

Where TLS is intercepted, pip in the build needs the build host's CA bundle. The legacy engine build
API that the ``docker`` package speaks has no build secrets, so the CA file goes into the build
context and is copied into the ``deps`` stage only: it never reaches the final image, which must not
carry the build host's trust decisions into production (nor a private CA). By default it is the CA
file this server's own TLS uses (``SSL_CERT_FILE``, else OpenSSL's default file); ``ca_bundle=False``
leaves it out.

The build context is a tar in memory (sorted entries, mtime 0), so the engine's layer cache reuses
the ``deps`` stage for every bundle with the same pins. The engine's build log is streamed line by
line into the job's log. A failed build is a ``BuildError`` naming the failing step (and, when pip
says so, the package) with the last log lines as ``detail``.

Limits: the whole context, bundle included, is held in memory while it is sent. pip reads its index
settings from the base image, not from this server (index URLs can carry credentials, and every
instruction of a Dockerfile is kept in the image's history). The engine must be able to reach the
package index (``network_mode="host"`` by default, for engines without a bridge network).
"""
from __future__ import annotations

import hashlib
import io
import json
import re
import ssl
import sys
import tarfile
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import gazelle
from gazelle.errors import BuildError, ConfigError
from gazelle.names import validate_name
from gazelle.server.artifacts import EngineImage
from gazelle.server.builders import Log
# The append builder's choices, so that both image builders take the same base and the same runtime.
from gazelle.server.builders.append import base_image_for, runtime_files
from gazelle.server.engine import engine_message
from gazelle.server.builders.pip import manifest_minor, manifest_pins, pip_failure, runtime_requirements

USER = "10001:10001"
PORT = 8080
ROOT = "/opt/gazelle"
BUNDLE_PATH = f"{ROOT}/bundle.tar"
_CA_NAME = "gazelle-build/ca-certificates.crt"
_REQUIREMENTS_NAME = "gazelle-build/requirements.txt"
_TAIL = 40
_APT_NAME = re.compile(r"^[a-z0-9][a-z0-9+.\-]+(?:=[A-Za-z0-9.+~:\-]+)?$")
_STEP = re.compile(r"^Step (\d+)/(\d+) : (.*)$")
_ASSIGNMENTS = re.compile(r"^(?:[A-Z_][A-Z0-9_]*=\S*\s+)+")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def apt_packages(raw: str | Iterable[str], setting: str = "GAZELLE_DOCKER_APT_PACKAGES") -> tuple[str, ...]:
    """``"libgomp1, libpq5"`` -> ``("libgomp1", "libpq5")``; ConfigError naming ``setting`` for a bad name."""
    names = raw.replace(",", " ").split() if isinstance(raw, str) else [str(n).strip() for n in raw]
    for name in names:
        if not _APT_NAME.match(name):
            raise ConfigError(f"{setting}: {name!r} is not a Debian package name (e.g. libgomp1 or libpq5=15.5-0)")
    return tuple(names)


def base_image(manifest: Mapping[str, Any], base_images: Mapping[str, str]) -> str:
    """The base image for the bundle's python ``major.minor``; ConfigError when none is configured."""
    return base_image_for(manifest_minor(manifest), base_images)


@dataclass(frozen=True)
class BuildPlan:
    """Everything the engine gets: the Dockerfile and the other files of the context."""

    dockerfile: str
    files: Mapping[str, bytes]
    labels: Mapping[str, str]

    def context(self) -> io.BytesIO:
        """The build context as a tar (sorted, mtime 0, root-owned, world-readable): same plan, same bytes."""
        buf = io.BytesIO()
        members = {"Dockerfile": self.dockerfile.encode(), **self.files}
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for name in sorted(members):
                data = members[name]
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.mtime = len(data), 0o644, 0
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                tar.addfile(info, io.BytesIO(data))
        buf.seek(0)
        return buf


class DockerBuilder:
    """Builds a bundle into an image held by a Docker engine (see the module docstring).

    ``client_factory`` makes a ``docker.DockerClient``; it is called on the first build, not here:
    constructors do no I/O. ``registry_prefix`` (``HOST[:PORT]/PREFIX``) names the image
    ``{prefix}/{model}:bundle-<first 16 hex of the bundle digest>``; the publish step
    (``registry.engine.EnginePublisher``) adds the ``v{version}-{unix time}`` tag and pushes.
    ``version`` labels the image (``gazelle.version``) where the caller knows it.
    """

    def __init__(self, client_factory: Callable[[], Any], registry_prefix: str, *,
                 base_images: Mapping[str, str] | None = None, apt: Sequence[str] = (),
                 ca_bundle: Path | bool = True, network_mode: str = "host", pull: bool = False) -> None:
        self.client_factory = client_factory
        self.registry_prefix = registry_prefix.rstrip("/")
        self.base_images = dict(base_images or {})
        self.apt = apt_packages(apt)
        self.ca_bundle = ca_bundle
        self.network_mode = network_mode
        self.pull = pull
        self._client: Any = None

    def build(self, bundle_path: Path, manifest: Mapping[str, Any], log: Log, *,
              version: int = 0) -> EngineImage:
        name = validate_name(manifest.get("name"))
        try:
            bundle = Path(bundle_path).read_bytes()
        except OSError as err:
            raise BuildError(f"the bundle of {name} cannot be read: {err.strerror or err}") from None
        plan = self.plan(bundle, manifest, version=version)
        tag = f"{self.registry_prefix}/{name}:bundle-{plan.labels['gazelle.bundle-digest'][7:23]}"
        log(f"docker build of {tag} on {plan.dockerfile.splitlines()[0].split()[1]}"
            + (f" with apt packages {' '.join(self.apt)}" if self.apt else ""))
        client = self.engine()
        try:
            stream = client.api.build(fileobj=plan.context(), custom_context=True, tag=tag, rm=True,
                                      forcerm=True, pull=self.pull, network_mode=self.network_mode,
                                      decode=True)
            image_id = _follow(stream, log, manifest_minor(manifest))
            if image_id is None:
                image_id = client.api.inspect_image(tag)["Id"]
        except BuildError:
            raise
        except Exception as err:   # the engine refused the request itself (unreachable, API error)
            raise BuildError(f"the Docker engine could not build {tag}: {engine_message(err)}") from None
        log(f"built {tag} ({image_id[:19]})")
        return EngineImage(id=image_id, tag=tag)

    def plan(self, bundle: bytes, manifest: Mapping[str, Any], *, version: int = 0) -> BuildPlan:
        """The Dockerfile and context for ``bundle`` (pure: reads only the CA bundle file, if any)."""
        name = validate_name(manifest.get("name"))
        minor = manifest_minor(manifest)
        base = base_image(manifest, self.base_images)
        pins = manifest_pins(manifest)
        own = f"{sys.version_info.major}.{sys.version_info.minor}"
        # The server's own versions of flask, gunicorn ... where they exist for the bundle's python.
        runtime = runtime_requirements(exact=(minor == own), exclude=pins)
        files: dict[str, bytes] = {_REQUIREMENTS_NAME: "".join(f"{r}\n" for r in [*pins, *runtime]).encode(),
                                   "bundle.tar": bundle}
        ca = self._ca_bytes()
        if ca is not None:
            files[_CA_NAME] = ca
        root = Path(gazelle.__file__).resolve().parent
        for path in runtime_files():
            files[f"runtime/gazelle/{path.relative_to(root).as_posix()}"] = path.read_bytes()
        digest = "sha256:" + hashlib.sha256(bundle).hexdigest()
        labels = {
            "gazelle.model": name,
            "gazelle.version": str(version),
            "gazelle.bundle-digest": digest,
            "org.opencontainers.image.title": name,
            "org.opencontainers.image.version": f"v{version}",
            "org.opencontainers.image.description": f"gazelle model {name} version {version}",
            "org.opencontainers.image.base.name": base,
            "org.opencontainers.image.vendor": f"gazelle {gazelle.__version__}",
        }
        return BuildPlan(_dockerfile(base, self.apt, ca is not None, labels), files, labels)

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    def engine(self) -> Any:
        """The engine client (made on first use); the publish step pushes through the same engine."""
        if self._client is None:
            self._client = self.client_factory()
        return self._client

    def _ca_bytes(self) -> bytes | None:
        if self.ca_bundle is False:
            return None
        path = self.ca_bundle if isinstance(self.ca_bundle, Path) else _default_ca()
        if path is None:
            return None
        try:
            return path.read_bytes()
        except OSError as err:
            raise BuildError(f"the CA bundle for pip in the build, {path}, cannot be read: "
                             f"{err.strerror or err}") from None


def _dockerfile(base: str, apt: Sequence[str], with_ca: bool, labels: Mapping[str, str]) -> str:
    apt_step = []
    if apt:
        # One RUN, lists removed in it: the package index never becomes a layer of the image.
        apt_step = ["RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y "
                    f"--no-install-recommends {' '.join(apt)} && rm -rf /var/lib/apt/lists/*"]
    # Variables, not options, so that an older pip in the base ignores what it does not know.
    pip_env = "PIP_ROOT_USER_ACTION=ignore " + (f"PIP_CERT=/tmp/{Path(_CA_NAME).name} " if with_ca else "")
    lines = [
        f"FROM {base} AS deps",
        *apt_step,
        *([f"COPY {_CA_NAME} /tmp/{Path(_CA_NAME).name}"] if with_ca else []),
        f"COPY {_REQUIREMENTS_NAME} /tmp/requirements.txt",
        # --target, not the base's site-packages: PEP 668 bases refuse that, and the final stage
        # takes this one directory and nothing else of the stage (the CA bundle stays behind).
        f"RUN {pip_env}python3 -m pip install --no-cache-dir --no-input --disable-pip-version-check "
        f"--progress-bar off --no-warn-script-location --target {ROOT}/site -r /tmp/requirements.txt",
        "",
        f"FROM {base}",
        *apt_step,
        f"COPY --from=deps {ROOT}/site {ROOT}/site",
        f"COPY runtime/gazelle {ROOT}/lib/gazelle",
        f"COPY bundle.tar {BUNDLE_PATH}",
        f"ENV PYTHONPATH={ROOT}/lib:{ROOT}/site PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 HOME=/tmp "
        f"GAZELLE_RUNTIME_BUNDLE={BUNDLE_PATH} GAZELLE_RUNTIME_HOST=0.0.0.0 GAZELLE_RUNTIME_PORT={PORT}",
        "LABEL " + " ".join(f"{key}={json.dumps(value)}" for key, value in labels.items()),
        f"WORKDIR {ROOT}",
        f"USER {USER}",
        f"EXPOSE {PORT}",
        'ENTRYPOINT ["python3", "-m", "gazelle.runtime"]',
    ]
    return "\n".join(lines) + "\n"


def _follow(stream: Iterator[Mapping[str, Any]], log: Log, minor: str) -> str | None:
    """Stream the engine's build output into ``log``; the image id, or BuildError at the failing step."""
    tail: deque[str] = deque(maxlen=_TAIL)
    step = ""
    image_id: str | None = None
    partial = ""
    for chunk in stream:
        if "stream" in chunk:
            partial += str(chunk["stream"])
            *lines, partial = partial.split("\n")
            for line in lines:
                line = _ANSI.sub("", line).rstrip()
                if not line:
                    continue
                tail.append(line)
                log(line)
                match = _STEP.match(line)
                if match:
                    step = f"step {match.group(1)}/{match.group(2)} ({_short(match.group(3))})"
        elif "aux" in chunk and isinstance(chunk["aux"], Mapping) and "ID" in chunk["aux"]:
            image_id = str(chunk["aux"]["ID"])
        elif "error" in chunk:
            if partial.strip():
                tail.append(partial.rstrip())
            raise _failure(step, str(chunk.get("error") or ""), list(tail), minor)
    return image_id


def _failure(step: str, error: str, tail: list[str], minor: str) -> BuildError:
    cause = pip_failure(tail, minor) or _apt_failure(tail) or error.strip() or "the engine gave no reason"
    where = f" at {step}" if step else ""
    return BuildError(f"docker build failed{where}: {cause}",
                      hint="check the pins in the bundle's gazelle.json and GAZELLE_DOCKER_APT_PACKAGES",
                      detail="\n".join([*tail, error.strip()]))


def _apt_failure(lines: Sequence[str]) -> str | None:
    for line in reversed(lines):
        if line.startswith("E: "):
            return f"apt-get: {line[3:]}"
    return None


def _short(instruction: str, width: int = 80) -> str:
    """The instruction as a person recognises it: a RUN step without its variable assignments, cut short."""
    if instruction.startswith("RUN "):
        instruction = "RUN " + _ASSIGNMENTS.sub("", instruction[4:])
    return instruction if len(instruction) <= width else instruction[:width - 3] + "..."


def _default_ca() -> Path | None:
    """The CA file this server's own TLS trusts, if there is one (``SSL_CERT_FILE`` wins)."""
    cafile = ssl.get_default_verify_paths().cafile
    return Path(cafile) if cafile else None
