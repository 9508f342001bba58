"""The build server's settings: one frozen dataclass, read from ``GAZELLE_*`` variables and CLI flags.

Precedence: a CLI flag beats its ``GAZELLE_*`` twin, which beats the default. A value that cannot work
raises :class:`~gazelle.errors.ConfigError` naming the variable (or flag) and, where there are some,
the valid choices. Only ``wiring.py`` turns these values into a builder, a registry and a target.

A model's URL (what the API reports and ``Endpoint.url`` is; :mod:`gazelle.server.urls`) is the
gateway's ``{base_url}/m/{name}``, except on the kubernetes target with ``k8s_ingress_host``: there it
is the model's own Ingress, ``http://{host}`` (``https://`` with ``k8s_ingress_tls_secret``, the Secret
of a certificate for those hosts, in the models' namespace), and the gateway stays as the fallback.

Secrets (the registry password, a password inside ``database_url``) never appear in ``repr()``: the
settings object is logged at start-up.
"""
from __future__ import annotations

import argparse
import json
import os
import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping

from gazelle.booleans import parse_bool
from gazelle.choices import BUILDERS, FRONTS, K8S_GATEWAYS, TARGETS
from gazelle.errors import ConfigError
from gazelle.redaction import redact_url

DOCKER_NETWORKS = ("host", "bridge")

@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = field(default_factory=lambda: Path("~/.gazelle").expanduser())
    workers: int = 1
    threads: int = 32                      # request threads per worker (slow clients hold none)
    header_timeout: float = 10.0           # seconds a client may take to send a request's headers
    body_timeout: float = 30.0             # ... and then a body of up to 1 MiB
    max_client_connections: int = 100      # open connections per client address (0: no bound)
    max_event_streams: int = 8             # open job event streams per worker (each holds a thread)
    front: str = "auto"                    # nginx on the port, predictions past Python (see front.py)
    target: str = "local"
    builder: str | None = None             # None: the target's own builder
    registry: str | None = None            # HOST[:PORT]/PREFIX
    registry_user: str | None = None
    registry_password: str | None = field(default=None, repr=False)
    registry_insecure: tuple[str, ...] = ()   # host[:port] spoken to over http (loopback always is)
    database_url: str | None = None        # None: sqlite:///{data_dir}/gazelle.db
    admin_token: str | None = field(default=None, repr=False)   # one admin token for every replica
    k8s_namespace: str = "gazelle-models"
    k8s_host_network: bool = False         # each version on the node's network, on its own port
    k8s_keep_versions: int = 3             # replaced versions kept at zero replicas for a rollback
    k8s_image_pull_secrets: tuple[str, ...] = ()
    k8s_env_secrets: tuple[str, ...] = ()  # Secrets whose keys become every runtime's environment
    k8s_ingress_host: str | None = None    # "{name}.models.example.com": an Ingress per model, its URL
    k8s_ingress_class: str | None = None
    k8s_ingress_tls_secret: str | None = None   # a certificate Secret for those hosts: their URLs are https
    k8s_hpa_max_replicas: int = 0          # > 0: a CPU autoscaler from replicas up to this
    k8s_ready_timeout: float = 600.0       # seconds a version may take to become ready
    k8s_startup_seconds: int = 600         # seconds a model may take to load before its pod is restarted
    k8s_gateway: str = "endpoints"         # how the gateway reaches versions: endpoints or service
    base_images: Mapping[str, str] = field(default_factory=dict)
    docker_apt_packages: tuple[str, ...] = ()   # Debian packages the docker builder installs
    docker_network: str = "host"           # docker target: host (a port per version) or bridge
    public_url: str | None = None          # None: http://{host}:{port}
    max_bundle_bytes: int = 1 << 30
    drain_seconds: float = 2.0             # old version keeps serving this long after the switch
    stop_grace: float = 10.0               # in-flight requests get this long when a version stops
    sanity_timeout: float = 60.0
    job_lease_seconds: float = 30.0        # several replicas: a job whose replica is silent this long fails
    run_jobs: bool = True                  # False: accept jobs but never run them (read-only replica)
    stage_delay: Mapping[str, float] = field(default_factory=dict)   # test hook, see from_env

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise ConfigError(f"unknown target {self.target!r}; valid targets: {', '.join(TARGETS)}")
        if self.builder is not None and self.builder not in BUILDERS:
            raise ConfigError(f"unknown builder {self.builder!r}; valid builders: {', '.join(BUILDERS)}")
        if self.front not in FRONTS:
            raise ConfigError(f"GAZELLE_FRONT must be one of {', '.join(FRONTS)}, got {self.front!r}")
        if self.docker_network not in DOCKER_NETWORKS:
            raise ConfigError(f"GAZELLE_DOCKER_NETWORK must be one of {', '.join(DOCKER_NETWORKS)}, "
                              f"got {self.docker_network!r}")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be between 0 and 65535, got {self.port}")
        if self.workers < 1:
            raise ConfigError(f"workers must be at least 1, got {self.workers}")
        if self.threads < 2:
            raise ConfigError(f"threads must be at least 2, got {self.threads}")
        for variable, value in (("GAZELLE_HEADER_TIMEOUT", self.header_timeout),
                                ("GAZELLE_BODY_TIMEOUT", self.body_timeout),
                                ("GAZELLE_MAX_EVENT_STREAMS", self.max_event_streams)):
            if value <= 0:
                raise ConfigError(f"{variable} must be positive, got {value}")
        if self.max_event_streams >= self.threads:
            raise ConfigError(f"GAZELLE_MAX_EVENT_STREAMS ({self.max_event_streams}) must be below the "
                              f"threads ({self.threads}), so that event streams leave threads for predictions")
        if self.max_client_connections < 0:
            raise ConfigError(f"GAZELLE_MAX_CLIENT_CONNECTIONS must be 0 (no bound) or more, "
                              f"got {self.max_client_connections}")
        if self.k8s_keep_versions < 0:
            raise ConfigError(f"GAZELLE_K8S_KEEP_VERSIONS must be 0 or more, got {self.k8s_keep_versions}")
        if self.k8s_hpa_max_replicas < 0:
            raise ConfigError(f"GAZELLE_K8S_HPA_MAX_REPLICAS must be 0 or more, got {self.k8s_hpa_max_replicas}")
        if self.k8s_gateway not in K8S_GATEWAYS:
            raise ConfigError(f"GAZELLE_K8S_GATEWAY must be one of {', '.join(K8S_GATEWAYS)}, got {self.k8s_gateway!r}")
        if self.k8s_startup_seconds < 1:
            raise ConfigError(f"GAZELLE_K8S_STARTUP_SECONDS must be 1 or more, got {self.k8s_startup_seconds}")
        if self.k8s_ingress_host is not None and ("{name}" not in self.k8s_ingress_host
                                                  or "/" in self.k8s_ingress_host):
            raise ConfigError(f"GAZELLE_K8S_INGRESS_HOST must contain {{name}} (the model's name) and be a host "
                              f"with no scheme or path, e.g. {{name}}.models.example.com "
                              f"(GAZELLE_K8S_INGRESS_TLS_SECRET makes the URLs https); got {self.k8s_ingress_host!r}")
        if self.k8s_ingress_tls_secret and not self.k8s_ingress_host:
            raise ConfigError("GAZELLE_K8S_INGRESS_TLS_SECRET is the certificate of the models' Ingresses: "
                              "it needs GAZELLE_K8S_INGRESS_HOST")
        if self.max_bundle_bytes < 1024:
            raise ConfigError(f"max_bundle_bytes must be at least 1024, got {self.max_bundle_bytes}")
        if self.job_lease_seconds < 3:
            raise ConfigError(f"GAZELLE_JOB_LEASE_SECONDS must be at least 3, got {self.job_lease_seconds}")

    def __repr__(self) -> str:
        parts = []
        for f in fields(self):
            if not f.repr:
                value: Any = "***" if getattr(self, f.name) else None
            elif f.name == "database_url":
                value = redact_url(self.db_url)
            else:
                value = getattr(self, f.name)
            parts.append(f"{f.name}={value!r}")
        return f"Settings({', '.join(parts)})"

    @property
    def db_url(self) -> str:
        """The SQLAlchemy URL; PostgreSQL URLs are pointed at the psycopg 3 driver."""
        url = self.database_url or f"sqlite:///{self.data_dir / 'gazelle.db'}"
        for prefix in ("postgresql://", "postgres://"):
            if url.startswith(prefix):
                return "postgresql+psycopg://" + url[len(prefix):]
        return url

    @property
    def base_url(self) -> str:
        """Where clients reach this server: the gateway's ``/m/{name}`` URLs start with it."""
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def token_path(self) -> Path:
        return self.data_dir / "token"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> "Settings":
        """Settings from ``GAZELLE_*`` variables; ``overrides`` (not None) win over them."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for name, (variable, parse) in _ENV.items():
            raw = env.get(variable)
            if raw is not None and raw != "":
                values[name] = parse(variable, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        if "data_dir" in values:
            values["data_dir"] = Path(values["data_dir"]).expanduser()
        return cls(**values)

    @classmethod
    def from_args(cls, args: argparse.Namespace, env: Mapping[str, str] | None = None) -> "Settings":
        """Settings for ``gazelle server``: its flags over the environment."""
        flags = {name: getattr(args, name, None)
                 for name in ("host", "port", "data_dir", "workers", "target", "builder", "registry")}
        return cls.from_env(env, **flags)

    def replace(self, **changes: Any) -> "Settings":
        return replace(self, **changes)


def _str(variable: str, raw: str) -> str:
    return raw


def _int(variable: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{variable} must be an integer, got {raw!r}") from None


def _float(variable: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{variable} must be a number, got {raw!r}") from None
    if value < 0 or value != value:
        raise ConfigError(f"{variable} must be a number >= 0, got {raw!r}")
    return value


def _bool(variable: str, raw: str) -> bool:
    value = parse_bool(raw)
    if value is not None:
        return value
    raise ConfigError(f"{variable} must be true or false, got {raw!r}")


def _json_map(variable: str, raw: str) -> dict[str, str]:
    try:
        value = json.loads(raw)
    except ValueError:
        raise ConfigError(f"{variable} must be a JSON object, e.g. {{\"3.11\": \"python:3.11-slim\"}}") from None
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ConfigError(f"{variable} must map python versions to image names (strings)")
    return value


def _apt_packages(variable: str, raw: str) -> tuple[str, ...]:
    from gazelle.server.builders.docker import apt_packages

    return apt_packages(raw, variable)


def _hosts(variable: str, raw: str) -> tuple[str, ...]:
    return tuple(h.strip() for h in raw.split(",") if h.strip())


def _object_names(variable: str, raw: str) -> tuple[str, ...]:
    """A comma-separated list of Kubernetes object names (DNS-1123 subdomains)."""
    names = tuple(n.strip() for n in raw.split(",") if n.strip())
    for name in names:
        if not re.match(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$", name):
            raise ConfigError(f"{variable}: {name!r} is not a Kubernetes object name "
                              "(lowercase letters, digits, '-' and '.')")
    return names


def _object_name(variable: str, raw: str) -> str | None:
    """One Kubernetes object name."""
    names = _object_names(variable, raw)
    if len(names) > 1:
        raise ConfigError(f"{variable} names one object, got {raw!r}")
    return names[0] if names else None


def _stage_delay(variable: str, raw: str) -> dict[str, float]:
    """``build=5,slow:deploy=1``: seconds to sleep inside those stages (of every model, or of model
    ``slow``), for tests of restarts and queues. Never set it in production."""
    delays: dict[str, float] = {}
    for part in raw.split(","):
        stage, sep, seconds = part.partition("=")
        if not sep:
            raise ConfigError(f"{variable} must look like 'build=5,deploy=1', got {raw!r}")
        delays[stage.strip()] = _float(variable, seconds)
    return delays


_ENV: dict[str, tuple[str, Any]] = {
    "host": ("GAZELLE_HOST", _str),
    "port": ("GAZELLE_PORT", _int),
    "data_dir": ("GAZELLE_DATA_DIR", _str),
    "workers": ("GAZELLE_WORKERS", _int),
    "threads": ("GAZELLE_THREADS", _int),
    "header_timeout": ("GAZELLE_HEADER_TIMEOUT", _float),
    "body_timeout": ("GAZELLE_BODY_TIMEOUT", _float),
    "max_client_connections": ("GAZELLE_MAX_CLIENT_CONNECTIONS", _int),
    "max_event_streams": ("GAZELLE_MAX_EVENT_STREAMS", _int),
    "front": ("GAZELLE_FRONT", _str),
    "target": ("GAZELLE_TARGET", _str),
    "builder": ("GAZELLE_BUILDER", _str),
    "registry": ("GAZELLE_REGISTRY", _str),
    "registry_user": ("GAZELLE_REGISTRY_USER", _str),
    "registry_password": ("GAZELLE_REGISTRY_PASSWORD", _str),
    "registry_insecure": ("GAZELLE_REGISTRY_INSECURE", _hosts),
    "database_url": ("GAZELLE_DATABASE_URL", _str),
    "admin_token": ("GAZELLE_ADMIN_TOKEN", _str),
    "k8s_namespace": ("GAZELLE_K8S_NAMESPACE", _str),
    "k8s_host_network": ("GAZELLE_K8S_HOST_NETWORK", _bool),
    "k8s_keep_versions": ("GAZELLE_K8S_KEEP_VERSIONS", _int),
    "k8s_image_pull_secrets": ("GAZELLE_K8S_IMAGE_PULL_SECRETS", _object_names),
    "k8s_env_secrets": ("GAZELLE_K8S_ENV_SECRETS", _object_names),
    "k8s_ingress_host": ("GAZELLE_K8S_INGRESS_HOST", _str),
    "k8s_ingress_class": ("GAZELLE_K8S_INGRESS_CLASS", _str),
    "k8s_ingress_tls_secret": ("GAZELLE_K8S_INGRESS_TLS_SECRET", _object_name),
    "k8s_hpa_max_replicas": ("GAZELLE_K8S_HPA_MAX_REPLICAS", _int),
    "k8s_ready_timeout": ("GAZELLE_K8S_READY_TIMEOUT", _float),
    "k8s_startup_seconds": ("GAZELLE_K8S_STARTUP_SECONDS", _int),
    "k8s_gateway": ("GAZELLE_K8S_GATEWAY", _str),
    "base_images": ("GAZELLE_BASE_IMAGES", _json_map),
    "docker_apt_packages": ("GAZELLE_DOCKER_APT_PACKAGES", _apt_packages),
    "docker_network": ("GAZELLE_DOCKER_NETWORK", _str),
    "public_url": ("GAZELLE_PUBLIC_URL", _str),
    "max_bundle_bytes": ("GAZELLE_MAX_BUNDLE_BYTES", _int),
    "drain_seconds": ("GAZELLE_DRAIN_SECONDS", _float),
    "stop_grace": ("GAZELLE_STOP_GRACE", _float),
    "sanity_timeout": ("GAZELLE_SANITY_TIMEOUT", _float),
    "job_lease_seconds": ("GAZELLE_JOB_LEASE_SECONDS", _float),
    "run_jobs": ("GAZELLE_RUN_JOBS", _bool),
    "stage_delay": ("GAZELLE_TEST_STAGE_DELAY", _stage_delay),
}

ENVIRONMENT_VARIABLES = {field_name: variable for field_name, (variable, _) in _ENV.items()}
