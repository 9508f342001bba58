"""A build server on the test cluster with an Ingress host template: the URL it reports for a model is
the model's own Ingress, the Ingress names the model's stable Service and port, and that Service's
backend answers predictions itself, a private model only with a token (the build server is not in
that path). The gateway keeps answering.

No ingress controller image is available offline on this machine, so nothing serves the Ingress host
here: the test sends its requests where a controller would, to the ready endpoints of the Service and
port the Ingress names (read from the Service's EndpointSlices, as ingress-nginx does), with the
Ingress host in the Host header.
"""
from __future__ import annotations

import json
from typing import Any, Iterator

import httpx
import pytest

from tests.e2e._docker import data_dir_sharing_layers
from tests.e2e._k8s import k8s_server_env, kube  # noqa: F401  (kube: a fixture)
from tests.integration._server import ServerProcess, bundle, lengths, start_server, wait_for

NAME = "routed"
TEMPLATE = "{name}.models.gazelle.test"
HOST = TEMPLATE.replace("{name}", NAME)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, kubeconfig: str, k8s_namespace: str, registry_url: str,
           base_image: str) -> Iterator[ServerProcess]:
    env = {**k8s_server_env(kubeconfig, k8s_namespace, registry_url, base_image),
           "GAZELLE_K8S_INGRESS_HOST": TEMPLATE}
    process = start_server(data_dir_sharing_layers(tmp_path_factory.mktemp("k8s-ingress") / "data"), env=env)
    yield process
    process.terminate()


def ready_backends(kube: Any, namespace: str, service: Any, port: int) -> list[str]:
    """``host:port`` of every ready endpoint behind ``port`` of ``service``: what a controller sends to."""
    from kubernetes.dynamic import DynamicClient
    from kubernetes.dynamic.exceptions import ResourceNotFoundError

    (wanted,) = [p for p in service.spec.ports if p.port == port]
    dynamic = DynamicClient(kube)
    for version in ("discovery.k8s.io/v1", "discovery.k8s.io/v1beta1"):
        try:
            slices = dynamic.resources.get(api_version=version, kind="EndpointSlice")
        except ResourceNotFoundError:
            continue
        items = slices.get(namespace=namespace,
                           label_selector=f"kubernetes.io/service-name={service.metadata.name}").to_dict()["items"]
        return [f"{address}:{p['port']}" for item in items for p in item.get("ports") or []
                if p.get("name") == wanted.name
                for e in item.get("endpoints") or [] if (e.get("conditions") or {}).get("ready")
                for address in e["addresses"]]
    raise AssertionError("the cluster serves no EndpointSlice API")


def test_the_reported_url_is_the_models_ingress_whose_service_answers_a_token_only(
        server: ServerProcess, kube: Any, k8s_namespace: str) -> None:
    from kubernetes import client

    import gazelle

    job = server.deploy(NAME, bundle(lengths, NAME))   # private: the default
    assert job["status"] == "succeeded", json.dumps(job, indent=1)
    assert (job["url"], job["gateway_url"]) == (f"http://{HOST}", f"{server.url}/m/{NAME}")
    assert server.model(NAME)["url"] == f"http://{HOST}"
    assert gazelle.endpoint(NAME, server=server.url, token=server.token).url == f"http://{HOST}"

    ingress = client.NetworkingV1Api(kube).read_namespaced_ingress(f"gazelle-{NAME}", k8s_namespace)
    (rule,) = ingress.spec.rules
    (path,) = rule.http.paths
    assert rule.host == HOST and (path.path, path.path_type) == ("/", "Prefix")
    backend = path.backend.service
    service = client.CoreV1Api(kube).read_namespaced_service(backend.name, k8s_namespace)
    assert backend.name == f"gazelle-{NAME}" and service.spec.selector["gazelle.dev/version"] == str(job["version"])
    assert backend.port.number in [p.port for p in service.spec.ports]

    def backends() -> list[str]:
        return ready_backends(kube, k8s_namespace, service, backend.port.number)

    wait_for(backends, "a ready endpoint behind the stable Service", timeout=30)
    with httpx.Client(base_url=f"http://{backends()[0]}", headers={"Host": HOST}, timeout=30, trust_env=False) as c:
        refused = c.post("/predict", json={"instances": ["ab"]})
        assert refused.status_code == 401, refused.text
        answer = c.post("/predict", json={"instances": ["ab", "abc"]},
                        headers={"Authorization": f"Bearer {server.token}"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["predictions"] == [2, 3] and answer.json()["version"] == job["version"]

    assert server.predict(f"/m/{NAME}/predict", ["abcd"]).json()["predictions"] == [4], "the gateway still answers"
