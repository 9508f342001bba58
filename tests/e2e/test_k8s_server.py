"""``gazelle server --target kubernetes`` end to end: the append builder pushes to the test registry, the
versions run on the test cluster (host-network mode), the gateway and the stable Service follow the live
version, a failed deploy leaves the live one serving, a rollback runs no build and no push. The restart
test kills the module's server: it stays last."""
from __future__ import annotations

import json
import threading
from typing import Any, Iterator

import pytest

from tests.e2e._docker import data_dir_sharing_layers
from tests.e2e._k8s import k8s_server_env, kube  # noqa: F401  (kube: a fixture)
from tests.helpers import SlowToLoad
from tests.integration._server import (Boom, ServerProcess, bundle, doubled_lengths, lengths, process_id, start_server,
                                      wait_for)

NAME = "lengths"


def tripled_lengths(rows: list[str]) -> list[int]:
    return [3 * len(r) for r in rows]



@pytest.fixture(scope="module")
def server_env(kubeconfig: str, k8s_namespace: str, registry_url: str, base_image: str) -> dict[str, str]:
    return k8s_server_env(kubeconfig, k8s_namespace, registry_url, base_image)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, server_env: dict[str, str]) -> Iterator[ServerProcess]:
    process = start_server(data_dir_sharing_layers(tmp_path_factory.mktemp("k8s-server") / "data"), env=server_env)
    yield process
    process.terminate()


def stages(job: dict[str, Any]) -> dict[str, str]:
    return {s["name"]: s["status"] for s in job["stages"]}


def live_selector(kube: Any, namespace: str) -> str:
    from kubernetes import client

    return str(client.CoreV1Api(kube).read_namespaced_service(f"gazelle-{NAME}", namespace)
               .spec.selector["gazelle.dev/version"])


def test_a_deploy_goes_live_on_the_cluster_and_answers_through_the_gateway(
        server: ServerProcess, kube: Any, k8s_namespace: str) -> None:
    job = server.deploy(NAME, bundle(lengths, NAME))
    assert job["status"] == "succeeded", json.dumps(job, indent=1)
    answer = server.predict(f"/m/{NAME}/predict", ["ab", "abc"])
    assert answer.json()["predictions"] == [2, 3]
    assert live_selector(kube, k8s_namespace) == "1"
    assert "ready 1/1" in server.events(job["id"])


def test_a_redeploy_switches_the_gateway_and_the_stable_service_and_keeps_v1_at_zero(
        server: ServerProcess, kube: Any, k8s_namespace: str) -> None:
    from kubernetes import client

    job = server.deploy(NAME, bundle(doubled_lengths, NAME))
    assert job["status"] == "succeeded", json.dumps(job, indent=1)
    assert server.predict(f"/m/{NAME}/predict", ["ab"]).json()["predictions"] == [4]
    assert live_selector(kube, k8s_namespace) == "2"
    apps = client.AppsV1Api(kube)

    def retired() -> bool:
        return apps.read_namespaced_deployment(f"gazelle-{NAME}-v1", k8s_namespace).spec.replicas == 0

    wait_for(retired, "version 1 scaled to zero after the drain")


def test_a_model_that_raises_while_loading_fails_the_deploy_stage_with_its_message(
        server: ServerProcess, kube: Any, k8s_namespace: str) -> None:
    from kubernetes import client

    job = server.deploy(NAME, bundle(Boom(), NAME))
    assert job["status"] == "failed"
    failed = [s for s in job["stages"] if s["status"] == "failed"]
    assert failed and failed[0]["name"] == "deploy"
    assert "the model raised while loading: RuntimeError: boom while loading" in json.dumps(job)
    leftover = client.AppsV1Api(kube).list_namespaced_deployment(
        k8s_namespace, label_selector=f"gazelle.dev/model={NAME},gazelle.dev/version={job['version']}").items
    assert leftover == []
    assert server.predict(f"/m/{NAME}/predict", ["ab"]).json()["predictions"] == [4], "v2 keeps serving"


def test_resources_no_node_can_satisfy_fail_the_deploy_with_the_schedulers_reason(
        server: ServerProcess, kube: Any, k8s_namespace: str) -> None:
    from kubernetes import client

    with server.client() as c:
        answer = c.post(f"/api/v1/models/{NAME}/versions", params={"resources": json.dumps({"memory": "64Ti"})},
                        content=bundle(tripled_lengths, NAME), headers={"Content-Type": "application/x-tar"})
    assert answer.status_code == 202, answer.text
    job = server.wait_job(answer.json()["job"])
    assert job["status"] == "failed" and stages(job)["deploy"] == "failed"
    assert "Insufficient memory" in job["error"]["message"], job["error"]
    selector = f"gazelle.dev/model={NAME},gazelle.dev/version={job['version']}"
    assert client.AppsV1Api(kube).list_namespaced_deployment(k8s_namespace, label_selector=selector).items == []
    assert server.predict(f"/m/{NAME}/predict", ["ab"]).json()["predictions"] == [4], "v2 keeps serving"


def test_a_model_slower_to_load_than_the_startup_budget_fails_the_deploy_saying_the_probe_failed(
        server: ServerProcess, kube: Any, k8s_namespace: str) -> None:
    from kubernetes import client

    import gazelle

    with pytest.raises(gazelle.DeployError) as failed:
        gazelle.deploy(SlowToLoad(3600), NAME, sample=["ab"], server=server.url, token=server.token)
    assert failed.value.stage == "deploy"
    assert "failed its startup probe" in failed.value.cause and "Startup probe failed:" in failed.value.cause
    versions = {v["version"]: v["status"] for v in server.model(NAME)["versions"]}
    number = max(v for v, status in versions.items() if status == "failed")
    selector = f"gazelle.dev/model={NAME},gazelle.dev/version={number}"
    assert client.AppsV1Api(kube).list_namespaced_deployment(k8s_namespace, label_selector=selector).items == []
    assert client.CoreV1Api(kube).list_namespaced_service(k8s_namespace, label_selector=selector).items == []
    assert server.predict(f"/m/{NAME}/predict", ["ab"]).json()["predictions"] == [4], "v2 keeps serving"


def test_a_version_that_fails_the_sanity_check_is_removed_from_the_cluster(
        server: ServerProcess, kube: Any, k8s_namespace: str) -> None:
    from kubernetes import client

    job = server.deploy(NAME, bundle(process_id, NAME))
    assert job["status"] == "failed" and stages(job)["sanity"] == "failed", json.dumps(job, indent=1)
    selector = f"gazelle.dev/model={NAME},gazelle.dev/version={job['version']}"
    assert client.AppsV1Api(kube).list_namespaced_deployment(k8s_namespace, label_selector=selector).items == []
    assert client.CoreV1Api(kube).list_namespaced_service(k8s_namespace, label_selector=selector).items == []
    assert live_selector(kube, k8s_namespace) == "2"


def test_rollback_scales_version_1_back_up_without_a_build_or_a_push(
        server: ServerProcess, kube: Any, k8s_namespace: str) -> None:
    with server.client() as c:
        answer = c.post(f"/api/v1/models/{NAME}/rollback", json={"version": 1})
    assert answer.status_code == 202, answer.text
    job = server.wait_job(answer.json()["job"])
    assert job["status"] == "succeeded", json.dumps(job, indent=1)
    assert stages(job)["build"] == "skipped" and stages(job)["push"] == "skipped"
    assert server.predict(f"/m/{NAME}/predict", ["ab"]).json()["predictions"] == [2]
    assert live_selector(kube, k8s_namespace) == "1"


def test_a_redeploy_under_traffic_loses_no_request_and_never_goes_back(server: ServerProcess) -> None:
    answers: list[tuple[int, Any]] = []
    done = threading.Event()

    def traffic() -> None:
        with server.client() as c:
            while not done.is_set():
                r = c.post(f"/m/{NAME}/predict", json={"instances": ["ab"]})
                answers.append((r.status_code, r.json().get("version") if r.status_code == 200 else r.text))

    thread = threading.Thread(target=traffic)
    thread.start()
    try:
        job = server.deploy(NAME, bundle(tripled_lengths, NAME))
        wait_for(lambda: any(a[1] == job["version"] for a in answers[-5:]), "answers from the new version")
    finally:
        done.set()
        thread.join(30)
    assert job["status"] == "succeeded", json.dumps(job, indent=1)
    assert [a for a in answers if a[0] != 200] == []
    versions = [a[1] for a in answers]
    first_new = versions.index(job["version"])
    assert set(versions[:first_new]) == {1} and set(versions[first_new:]) == {job["version"]}


def test_delete_removes_the_models_objects_from_the_cluster(
        server: ServerProcess, kube: Any, k8s_namespace: str) -> None:
    from kubernetes import client

    with server.client() as c:
        answer = c.delete(f"/api/v1/models/{NAME}")
    assert answer.status_code == 202, answer.text   # a job deletes it, as a deploy makes it
    assert server.wait_job(answer.json()["job"])["status"] == "succeeded"
    selector = f"gazelle.dev/model={NAME}"
    assert client.AppsV1Api(kube).list_namespaced_deployment(k8s_namespace, label_selector=selector).items == []
    assert client.CoreV1Api(kube).list_namespaced_service(k8s_namespace, label_selector=selector).items == []


def test_the_account_suggestion_model_from_the_python_api_runs_two_replicas_with_a_budget(
        server: ServerProcess, kube: Any, k8s_namespace: str) -> None:
    """The notebook's flagship model through ``gazelle.deploy``: scikit-learn and its pins in the image,
    ``replicas`` and ``resources`` reaching the Deployment, a PodDisruptionBudget, predictions through
    the endpoint URL."""
    from kubernetes import client

    import gazelle
    from tests.integration._runtime import TRAVEL, accounts_model

    ep = gazelle.deploy(accounts_model(), "accounts", sample=["taxi to the airport", "hotel in Berlin"],
                        server=server.url, token=server.token, replicas=2,
                        resources={"requests": {"cpu": "50m", "memory": "256Mi"}, "limits": {"memory": "768Mi"}})
    assert ep.predict(["Taxi to conference"]) == [TRAVEL]
    name = f"gazelle-accounts-v{ep.version}"
    dep = client.AppsV1Api(kube).read_namespaced_deployment(name, k8s_namespace)
    (container,) = dep.spec.template.spec.containers
    assert "@sha256:" in container.image
    assert container.resources.requests == {"cpu": "50m", "memory": "256Mi"}
    assert container.resources.limits == {"memory": "768Mi"}
    assert container.startup_probe.http_get.path == "/v2/health/live"
    assert dep.spec.template.metadata.labels["gazelle.dev/model"] == "accounts"
    assert dep.status.ready_replicas == 2
    from kubernetes.dynamic import DynamicClient

    # policy/v1beta1 on the 1.20 test cluster: the current typed client no longer has it
    budgets = DynamicClient(kube).resources.get(api_version="policy/v1beta1", kind="PodDisruptionBudget")
    assert budgets.get(name=name, namespace=k8s_namespace).spec.maxUnavailable == 1


def test_the_gateway_serves_again_once_a_deleted_pod_is_replaced_without_a_restart(
        server: ServerProcess, kube: Any, k8s_namespace: str) -> None:
    """The gateway follows the version's EndpointSlice: while no pod is ready it says so (503 with
    Retry-After), then it answers again from the Deployment's replacement pod; the store still says
    version 1 is live, as the stable Service does."""
    from kubernetes import client

    name = "replaced"
    job = server.deploy(name, bundle(lengths, name))
    assert job["status"] == "succeeded", json.dumps(job, indent=1)
    core = client.CoreV1Api(kube)
    selector = f"gazelle.dev/model={name},gazelle.dev/version=1"
    (pod,) = core.list_namespaced_pod(k8s_namespace, label_selector=selector).items
    core.delete_namespaced_pod(pod.metadata.name, k8s_namespace, grace_period_seconds=0)
    wait_for(lambda: server.predict(f"/m/{name}/predict", ["abcde"]).status_code == 200,
             "the gateway answering from the replacement pod", timeout=150)
    assert server.predict(f"/m/{name}/predict", ["abcde"]).json() == {"predictions": [5], "model": name,
                                                                        "version": 1}
    pods = [p for p in core.list_namespaced_pod(k8s_namespace, label_selector=selector).items
            if p.metadata.deletion_timestamp is None]
    assert [p.metadata.name for p in pods] != [pod.metadata.name] and len(pods) == 1
    model = server.model(name)
    assert model["live_version"] == 1 and {v["version"]: v["status"] for v in model["versions"]} == {1: "live"}
    assert core.read_namespaced_service(f"gazelle-{name}", k8s_namespace).spec.selector[
        "gazelle.dev/version"] == "1"


def test_a_restarted_server_serves_again_after_a_pod_was_deleted_and_its_store_matches_the_cluster(
        server: ServerProcess, server_env: dict[str, str], kube: Any, k8s_namespace: str) -> None:
    from kubernetes import client

    name = "restarts"
    job = server.deploy(name, bundle(lengths, name))
    assert job["status"] == "succeeded", json.dumps(job, indent=1)
    server.kill()
    core = client.CoreV1Api(kube)
    selector = f"gazelle.dev/model={name},gazelle.dev/version=1"
    (pod,) = core.list_namespaced_pod(k8s_namespace, label_selector=selector).items
    core.delete_namespaced_pod(pod.metadata.name, k8s_namespace, grace_period_seconds=0)
    again = start_server(server.data_dir, env=server_env)
    try:
        wait_for(lambda: again.predict(f"/m/{name}/predict", ["abcd"]).status_code == 200,
                 "the gateway serving the restored version", timeout=150)
        assert again.predict(f"/m/{name}/predict", ["abcd"]).json()["predictions"] == [4]
        model = again.model(name)
        assert model["live_version"] == 1, model
        pods = core.list_namespaced_pod(k8s_namespace, label_selector=selector).items
        assert [p.metadata.name for p in pods if p.metadata.deletion_timestamp is None] != [pod.metadata.name]
    finally:
        again.terminate()
