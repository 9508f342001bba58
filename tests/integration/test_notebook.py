"""The account-suggestion notebook runs top to bottom under nbval against a real server.

The test starts ``gazelle server`` (gunicorn, local target) on a free port with a temporary data dir and
runs ``pytest --nbval-lax`` on the notebook in a subprocess whose ``GAZELLE_SERVER``/``GAZELLE_TOKEN``
point at it; the kernel is ``python3`` of this interpreter (ipykernel's own kernelspec, installed in
the virtualenv with ipykernel). The notebook's cells assert the accuracy and the prediction for
"Taxi to conference"; this test then checks the deployed endpoint from outside.
"""
from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys

import pytest

from tests.conftest import require
from tests.integration._client import ROOT, client_env, http_predict, server  # noqa: F401

pytestmark = pytest.mark.integration

NOTEBOOK = ROOT / "notebooks" / "account-suggestion.ipynb"


def test_account_suggestion_notebook_deploys_and_predicts(server):
    require(all(importlib.util.find_spec(m) for m in ("nbval", "ipykernel")), "nbval and ipykernel are needed")
    nbval = subprocess.Popen(
        [sys.executable, "-m", "pytest", "--nbval-lax", "-p", "no:cacheprovider", "-q", str(NOTEBOOK)],
        env=client_env(server), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True)
    try:
        out, err = nbval.communicate(timeout=600)
    finally:
        if nbval.poll() is None:   # the kernel is nbval's child: end the whole group
            os.killpg(nbval.pid, signal.SIGKILL)
            nbval.wait(30)
    assert nbval.returncode == 0, out[-6000:] + err[-3000:]
    assert " passed" in out.splitlines()[-1]

    url = f"{server.url}/m/accounts"
    assert http_predict(url, server.token, ["Taxi to conference"]) == ["2770 Travel expenses"]
