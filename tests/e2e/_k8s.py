"""What the kubernetes target's e2e modules share: an API client on the test cluster, the environment of
a ``gazelle server --target kubernetes`` on it."""
from __future__ import annotations

import json
import sys
from typing import Any, Iterator

import pytest

from tests.conftest import kube_api
from tests.e2e._docker import data_dir_sharing_layers


@pytest.fixture(scope="module")
def kube(kubeconfig: str) -> Iterator[Any]:
    """A ``kubernetes.client.ApiClient`` on the test cluster, for reading what the target made."""
    with kube_api(kubeconfig) as api:
        yield api


def k8s_server_env(kubeconfig: str, namespace: str, registry_url: str, base_image: str) -> dict[str, str]:
    """A build server's environment for the test cluster: versions on the node's network (no pod networking)."""
    minor = f"{sys.version_info.major}.{sys.version_info.minor}"
    return {"GAZELLE_TARGET": "kubernetes", "GAZELLE_REGISTRY": f"{registry_url}/gazelle-k8s-e2e",
            "GAZELLE_BASE_IMAGES": json.dumps({minor: base_image}), "KUBECONFIG": kubeconfig,
            "GAZELLE_K8S_NAMESPACE": namespace, "GAZELLE_K8S_HOST_NETWORK": "true",
            "GAZELLE_K8S_READY_TIMEOUT": "150", "GAZELLE_K8S_STARTUP_SECONDS": "20"}


@pytest.fixture(scope="session")
def server_image(registry_url: str, base_image: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The build server's own image (``gazelle.server.selfimage``) pushed to the test registry, as a
    digest reference. Its dependency layer is cached with the model layers, so a warm run runs no pip."""
    from gazelle.server import selfimage
    from gazelle.server.builders.append import AppendBuilder
    from gazelle.server.registry import open_registry

    repository = f"{registry_url}/gazelle/server"
    data = data_dir_sharing_layers(tmp_path_factory.mktemp("server-image") / "data")
    registry = open_registry(repository, None, None, insecure=())
    builder = AppendBuilder(registry, {}, data / "cache")
    try:
        image = selfimage.build(builder, base_image, lambda line: None)
        return str(registry.push(image, repository, ["e2e"], lambda line: None))
    finally:
        builder.close()
