"""What the kubernetes target's e2e modules share: an API client on the test cluster."""
from __future__ import annotations

from typing import Any, Iterator

import pytest

from tests.conftest import kube_api


@pytest.fixture(scope="module")
def kube(kubeconfig: str) -> Iterator[Any]:
    """A ``kubernetes.client.ApiClient`` on the test cluster, for reading what the target made."""
    with kube_api(kubeconfig) as api:
        yield api
