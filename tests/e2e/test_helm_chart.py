"""charts/gazelle installed into the test cluster with Helm's Go SDK (``helm-python-sdk``): the API server
accepts every object the chart makes, and uninstall removes every one of them (listed by the release's
labels)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import helm_python as helm
from kubernetes import client

from tests.conftest import kube_api

CHART = Path(__file__).resolve().parents[2] / "charts" / "gazelle"
RELEASE = "gz"


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


def test_install_creates_every_object_of_the_chart_and_uninstall_removes_them(kubeconfig: str,
                                                                               k8s_namespace: str) -> None:
    values = {"image": {"repository": "127.0.0.1:5000/gazelle/server", "tag": "absent"},
              "registry": {"address": "127.0.0.1:5000/models"}, "hostNetwork": True,
              "server": {"port": 18431}, "resources": {"requests": {"cpu": "10m", "memory": "64Mi"}}}
    config = helm.Config(kubeconfig_path=kubeconfig, namespace=k8s_namespace)
    try:
        release = config.install(CHART, RELEASE, values, namespace=k8s_namespace, timeout=120)
        assert "Read the admin token" in str(release)
        with kube_api(kubeconfig) as api:
            made = labelled(api, k8s_namespace)
        assert set(made) == {"Deployment", "Service", "Secret", "ServiceAccount", "PersistentVolumeClaim",
                             "Role", "RoleBinding"}
        config.uninstall(RELEASE, timeout=120, wait="watcher")
        with kube_api(kubeconfig) as api:
            assert labelled(api, k8s_namespace) == {}
    finally:
        config.uninstall(RELEASE, ignore_not_found=True)
        config.close()
