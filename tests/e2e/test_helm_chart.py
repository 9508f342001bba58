"""charts/gazelle installed into the test cluster with Helm's Go SDK (``helm-python-sdk``), running the
server image ``gazelle.server.selfimage`` builds: the server pod gets ready, a model deployed through
it with ``gazelle.deploy`` answers on the URL it returns, and uninstall removes every object the chart
made (listed by the release's labels). The model's own objects stay: the namespace goes at the end."""
from __future__ import annotations

import json
import secrets
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import helm_python as helm
import pytest
from kubernetes import client

import gazelle
from tests.conftest import kube_api
from tests.e2e._k8s import server_image  # noqa: F401  (a fixture)
from tests.helpers import free_port
from tests.integration._server import SAMPLE, lengths

CHART = Path(__file__).resolve().parents[2] / "charts" / "gazelle"
RELEASE = "gz"
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
READY_WITHIN = 240   # seconds: a cold node pulls the server image first


def labelled(api: Any, namespace: str) -> dict[str, list[str]]:
    """Names of the objects carrying the release's instance label, by kind."""
    selector = f"app.kubernetes.io/instance={RELEASE}"
    core, apps, rbac = client.CoreV1Api(api), client.AppsV1Api(api), client.RbacAuthorizationV1Api(api)
    lists = {"Deployment": apps.list_namespaced_deployment, "Service": core.list_namespaced_service,
             "Secret": core.list_namespaced_secret, "ServiceAccount": core.list_namespaced_service_account,
             "PersistentVolumeClaim": core.list_namespaced_persistent_volume_claim,
             "Role": rbac.list_namespaced_role, "RoleBinding": rbac.list_namespaced_role_binding}
    found = {kind: sorted(o.metadata.name for o in call(namespace, label_selector=selector).items)
             for kind, call in lists.items()}
    return {kind: names for kind, names in found.items() if names}


def server_pods(core: Any, namespace: str) -> list[Any]:
    return list(core.list_namespaced_pod(namespace, label_selector=f"app.kubernetes.io/instance={RELEASE}").items)


def ready(pod: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or []))


def diagnosis(core: Any, namespace: str) -> str:
    """The server pods' logs and the namespace's events, for an assertion message."""
    lines = []
    for pod in server_pods(core, namespace):
        lines.append(f"pod {pod.metadata.name}: phase {pod.status.phase}")
        try:
            lines.append(core.read_namespaced_pod_log(pod.metadata.name, namespace, tail_lines=80))
        except client.ApiException as e:
            lines.append(f"(no logs: {e.reason})")
    for event in core.list_namespaced_event(namespace).items:
        lines.append(f"event {event.involved_object.kind}/{event.involved_object.name}: "
                     f"{event.reason}: {event.message}")
    return "\n".join(lines)


def api_server(kubeconfig: str) -> str:
    """HOST:PORT of the cluster's API server from the kubeconfig: with no kube-proxy the in-cluster
    Service IP does not route, the node's own address does (the server pod is on the node's network)."""
    with kube_api(kubeconfig) as api:
        return str(api.configuration.host).split("://", 1)[-1].rstrip("/")


@pytest.fixture
def ca_config_map(kubeconfig: str, k8s_namespace: str) -> Iterator[str]:
    """A ConfigMap with this host's CA bundle (pip in the server pod reaches the index through the
    same proxy as pip here), or "" when the host has none."""
    if not HOST_CA.is_file():
        yield ""
        return
    with kube_api(kubeconfig) as api:
        client.CoreV1Api(api).create_namespaced_config_map(k8s_namespace, {
            "metadata": {"name": "host-ca"}, "data": {"ca-certificates.crt": HOST_CA.read_text()}})
    yield "host-ca"


def test_the_chart_runs_the_server_image_which_deploys_a_model_and_uninstall_removes_every_object(
        kubeconfig: str, k8s_namespace: str, registry_url: str, base_image: str, server_image: str,
        ca_config_map: str) -> None:
    repository, _, digest = server_image.partition("@")
    port, token = free_port(), secrets.token_urlsafe(24)
    minor = f"{sys.version_info.major}.{sys.version_info.minor}"
    values = {"image": {"repository": repository, "digest": digest},
              "registry": {"address": f"{registry_url}/helm-e2e"}, "hostNetwork": True,
              "server": {"port": port, "baseImages": {minor: base_image},
                         "extraEnv": {"GAZELLE_K8S_READY_TIMEOUT": "150"}},
              "apiServer": api_server(kubeconfig),
              "adminToken": {"value": token}, "persistence": {"enabled": False},
              "extraCACerts": {"configMap": ca_config_map},
              "resources": {"requests": {"cpu": "10m", "memory": "64Mi"}}}
    config = helm.Config(kubeconfig_path=kubeconfig, namespace=k8s_namespace)
    try:
        release = config.install(CHART, RELEASE, values, namespace=k8s_namespace, timeout=120)
        assert "Read the admin token" in str(release)
        with kube_api(kubeconfig) as api:
            core = client.CoreV1Api(api)
            deadline = time.monotonic() + READY_WITHIN
            while not (any(ready(p) for p in server_pods(core, k8s_namespace)) or time.monotonic() > deadline):
                time.sleep(1)
            assert any(ready(p) for p in server_pods(core, k8s_namespace)), diagnosis(core, k8s_namespace)
            made = labelled(api, k8s_namespace)
            assert set(made) == {"Deployment", "Service", "Secret", "ServiceAccount", "Role", "RoleBinding"}

            url = f"http://127.0.0.1:{port}"
            try:
                endpoint = gazelle.deploy(lengths, "lengths", sample=SAMPLE, server=url, token=token)
            except gazelle.GazelleError as err:
                raise AssertionError(f"{err}\n{getattr(err, 'detail', '')}\n{diagnosis(core, k8s_namespace)}")
            assert endpoint.url.startswith(url + "/")
            assert [int(v) for v in endpoint.predict(["ab", "abc"])] == [2, 3], json.dumps(endpoint.url)

        config.uninstall(RELEASE, timeout=120, wait="watcher")
        with kube_api(kubeconfig) as api:
            assert labelled(api, k8s_namespace) == {}
    finally:
        config.uninstall(RELEASE, ignore_not_found=True)
        config.close()
