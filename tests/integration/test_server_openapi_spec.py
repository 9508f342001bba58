"""The build server's OpenAPI document validates against the OpenAPI 3 specification.

The validator (openapi-spec-validator) is not a project dependency: the test uses it from this
interpreter if it is there, else from a ``python3`` on PATH that has it, else skips."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gazelle.server.openapi import document
from tests.conftest import require

pytestmark = pytest.mark.integration

CHECK = "import json, sys; from openapi_spec_validator import validate; validate(json.load(sys.stdin)); print('valid')"


def _python_with_validator() -> str | None:
    for python in (sys.executable, shutil.which("python3")):
        if python and subprocess.run([python, "-c", "import openapi_spec_validator"],
                                     capture_output=True).returncode == 0:
            return python
    return None


def test_openapi_document_is_valid_openapi_3(tmp_path: Path) -> None:
    python = _python_with_validator()
    require(python is not None, "openapi-spec-validator is not installed (pip install openapi-spec-validator)")
    assert python is not None
    result = subprocess.run([python, "-c", CHECK], input=json.dumps(document("http://127.0.0.1:8000")),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "valid"
