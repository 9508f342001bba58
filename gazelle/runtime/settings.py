"""The runtime's settings, read once from ``GAZELLE_*`` environment variables.

    GAZELLE_RUNTIME_ENV_CHECK         strict (default): refuse to start when the python minor or a pin
                                      differs from the bundle's; warn: log the differences and start
    GAZELLE_MODEL_VERSION             integer shown in answers and v2 metadata (default 0)
    GAZELLE_MAX_BODY_BYTES            largest request body accepted (default 10 MiB); larger -> 413
    GAZELLE_RUNTIME_ACCESS_LOG        1 (default) or 0: one JSON line per request on stderr
    GAZELLE_RUNTIME_TIMEOUT           seconds a request may wait for the model (60); then a JSON 504,
                                      and the worker restarts
    GAZELLE_RUNTIME_GRACEFUL_TIMEOUT  seconds in-flight requests get to finish on SIGTERM (30)
    GAZELLE_RUNTIME_THREADS           request threads per worker (16): requests read, validated and
                                      answered at once per worker; the model sees one call at a time
    GAZELLE_RUNTIME_MAX_BATCH         most rows joined into one batched model call (512)
    GAZELLE_RUNTIME_REUSE_PORT        0 (default) or 1: bind with SO_REUSEPORT, so that replicas sharing
                                      a host network (pods with hostNetwork on one node) share the port
    GAZELLE_RUNTIME_TOKENS_FILE       the tokens file the server keeps for this runtime (see
                                      :mod:`gazelle.runtime.access`): requests need a token listed there
                                      unless it says public; unset (default): everyone is answered

A value that cannot work raises :class:`gazelle.errors.ConfigError` naming the variable.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Mapping

from gazelle.booleans import parse_bool
from gazelle.errors import ConfigError

ENV_CHECK_MODES = ("strict", "warn")
DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024


@dataclass(frozen=True)
class RuntimeSettings:
    env_check: str = "strict"
    model_version: int = 0
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    access_log: bool = True
    timeout: int = 60
    graceful_timeout: int = 30
    threads: int = 16
    max_batch: int = 512
    reuse_port: bool = False
    tokens_file: str | None = None

    def __post_init__(self) -> None:
        if self.env_check not in ENV_CHECK_MODES:
            raise ConfigError(f"GAZELLE_RUNTIME_ENV_CHECK must be one of {', '.join(ENV_CHECK_MODES)}, "
                              f"got {self.env_check!r}")
        if self.model_version < 0:
            raise ConfigError(f"GAZELLE_MODEL_VERSION must be 0 or more, got {self.model_version}")
        for name, value in (("GAZELLE_MAX_BODY_BYTES", self.max_body_bytes),
                            ("GAZELLE_RUNTIME_TIMEOUT", self.timeout),
                            ("GAZELLE_RUNTIME_GRACEFUL_TIMEOUT", self.graceful_timeout),
                            ("GAZELLE_RUNTIME_THREADS", self.threads),
                            ("GAZELLE_RUNTIME_MAX_BATCH", self.max_batch)):
            if value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RuntimeSettings:
        env = os.environ if environ is None else environ
        defaults = cls()
        return cls(
            env_check=env.get("GAZELLE_RUNTIME_ENV_CHECK", defaults.env_check).strip().lower(),
            model_version=_int(env, "GAZELLE_MODEL_VERSION", defaults.model_version),
            max_body_bytes=_int(env, "GAZELLE_MAX_BODY_BYTES", defaults.max_body_bytes),
            access_log=_flag(env, "GAZELLE_RUNTIME_ACCESS_LOG", defaults.access_log),
            timeout=_int(env, "GAZELLE_RUNTIME_TIMEOUT", defaults.timeout),
            graceful_timeout=_int(env, "GAZELLE_RUNTIME_GRACEFUL_TIMEOUT", defaults.graceful_timeout),
            threads=_int(env, "GAZELLE_RUNTIME_THREADS", defaults.threads),
            max_batch=_int(env, "GAZELLE_RUNTIME_MAX_BATCH", defaults.max_batch),
            reuse_port=_flag(env, "GAZELLE_RUNTIME_REUSE_PORT", defaults.reuse_port),
            tokens_file=env.get("GAZELLE_RUNTIME_TOKENS_FILE", "").strip() or None,
        )

    def replace(self, **changes: object) -> RuntimeSettings:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    value = env_int(env, name)
    return default if value is None else value


def env_int(env: Mapping[str, str], name: str, label: str | None = None) -> int | None:
    """The integer in ``env[name]``; ``None`` when unset or blank. ``label`` names it in the error
    (default: the variable)."""
    raw = env.get(name, "").strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{label or name} must be an integer, got {raw!r}") from None


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    value = parse_bool(raw)
    if value is not None:
        return value
    raise ConfigError(f"{name} must be 1 or 0, got {raw!r}")
