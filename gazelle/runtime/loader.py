"""Loading a bundle for serving: read it, check the environment, unpickle the model, time it.

The environment check comes first because unpickling in the wrong environment fails in ways that name
the symptom (an AttributeError deep inside a library), not the cause (a different scikit-learn).
Strict mode raises :class:`gazelle.errors.EnvironmentMismatch` listing every difference; warn mode
logs them and loads anyway. Load only bundles you trust: unpickling runs the bundle's code.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gazelle import bundle as bundles
from gazelle import envspec
from gazelle.runtime import logs
from gazelle.runtime.errors import ModelLoadFailed


@dataclass(frozen=True)
class Loaded:
    bundle: bundles.Bundle
    model: Any
    seconds: float
    differences: tuple[str, ...]


def read(source: bundles.Bundle | str | os.PathLike[str] | bytes) -> bundles.Bundle:
    if isinstance(source, bundles.Bundle):
        return source
    if isinstance(source, Path):
        source = str(source)
    return bundles.read(source)


def load(bundle: bundles.Bundle, env_check: str) -> Loaded:
    """Check the environment, then unpickle. Raises EnvironmentMismatch or ModelLoadFailed."""
    differences = tuple(envspec.check(bundle.manifest, env_check))
    if differences:
        logs.event("environment_differences", level=logging.WARNING, model=bundle.name,
                   differences=list(differences),
                   message="GAZELLE_RUNTIME_ENV_CHECK=warn: serving despite these differences")
    start = time.perf_counter()
    try:
        model = bundle.load_model()
    except Exception as err:
        raise ModelLoadFailed(err) from err
    seconds = time.perf_counter() - start
    logs.event("model_loaded", model=bundle.name, digest=bundle.digest, seconds=round(seconds, 4))
    return Loaded(bundle, model, seconds, differences)
