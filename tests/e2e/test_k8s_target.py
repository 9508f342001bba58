"""KubernetesTarget on the test environment's real one-node cluster (host-network mode: no pod network
there), with model images the append builder pushed to the test registry.

The module shares one namespace; tests run in file order and build on each other where the behaviour is
a sequence (deploy v1, switch, deploy v2 beside it, retire v1, roll back)."""
from __future__ import annotations

import sys
import uuid
from typing import Any, Callable, Iterator

import httpx
import pytest

from gazelle.bundle import read_manifest, save
from gazelle.errors import TargetError
from gazelle.server.artifacts import ImageRef
from gazelle.server.builders.append import AppendBuilder
from gazelle.server.registry import open_registry
from gazelle.server.targets import Release
from gazelle.server.targets import _k8s_objects as objects
from gazelle.server.targets.kubernetes import KubernetesTarget
from tests.e2e._k8s import kube  # noqa: F401  (a fixture)
from tests.helpers import SlowToLoad
from tests.integration._server import wait_for
from tests.integration._local import Boom

MODEL = "wordcount"



def scaled_counts(factor: int) -> Callable[[list[str]], list[int]]:
    def model(texts: list[str]) -> list[int]:
        return [len(text.split()) * factor for text in texts]
    return model


@pytest.fixture(scope="module")
def image(registry_url: str, base_image: str,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[Any, str], tuple[ImageRef, dict[str, Any]]]]:
    """Build and push a model image: ``image(model, name) -> (ref, manifest)``; one warm dependency cache."""
    minor = f"{sys.version_info.major}.{sys.version_info.minor}"
    registry = open_registry(None, None, None)
    builder = AppendBuilder(registry, {minor: base_image}, tmp_path_factory.mktemp("cache"))
    directory = tmp_path_factory.mktemp("bundles")

    def make(model: Any, name: str) -> tuple[ImageRef, dict[str, Any]]:
        path = save(model, directory / f"{uuid.uuid4().hex[:8]}.tar", name=name, sample=["a b", "c"])
        manifest = dict(read_manifest(path))
        built = builder.build(path, manifest, lambda line: None)
        return registry.push(built, f"{registry_url}/gazelle-test/{name}", ["t"], lambda line: None), manifest
    yield make
    registry.close()


@pytest.fixture(scope="module")
def target(kubeconfig: str, k8s_namespace: str) -> Iterator[KubernetesTarget]:
    t = KubernetesTarget(objects.Options(namespace=k8s_namespace, host_network=True, progress_deadline=120),
                         kubeconfig=kubeconfig, keep_versions=2, ready_timeout=150)
    yield t
    t.close()


def release(ref: ImageRef, manifest: dict[str, Any], version: int, **changes: Any) -> Release:
    values: dict[str, Any] = {"name": manifest["name"], "version": version, "artifact": ref,
                              "manifest": manifest, "resources": {"cpu": "50m", "memory": "128Mi"}}
    values.update(changes)
    return Release(**values)


def predict(url: str, rows: list[str]) -> Any:
    return httpx.post(f"{url}/predict", json={"instances": rows}, timeout=10).json()


def names_of(kube: Any, namespace: str, name: str, version: int) -> dict[str, list[str]]:
    """The objects of one version the cluster holds, by kind."""
    from kubernetes import client

    selector = f"gazelle.dev/model={name},gazelle.dev/version={version}"
    return {
        "deployments": [d.metadata.name for d in client.AppsV1Api(kube).list_namespaced_deployment(
            namespace, label_selector=selector).items],
        "services": [s.metadata.name for s in client.CoreV1Api(kube).list_namespaced_service(
            namespace, label_selector=selector).items],
        "pods": [p.metadata.name for p in client.CoreV1Api(kube).list_namespaced_pod(
            namespace, label_selector=selector).items if p.metadata.deletion_timestamp is None],
    }


@pytest.fixture(scope="module")
def v1(image: Any, target: KubernetesTarget) -> tuple[Release, str]:
    ref, manifest = image(scaled_counts(1), MODEL)
    rel = release(ref, manifest, 1)
    lines: list[str] = []
    running = target.deploy(rel, lines.append)
    target.switch(MODEL, 1)
    assert any(line.startswith("ready 1/1") for line in lines), lines
    return rel, running.url


def test_deployment_and_services_carry_probes_resources_labels_and_the_digest(
        v1: tuple[Release, str], kube: Any, k8s_namespace: str) -> None:
    from kubernetes import client

    rel, url = v1
    dep = client.AppsV1Api(kube).read_namespaced_deployment("gazelle-wordcount-v1", k8s_namespace)
    (container,) = dep.spec.template.spec.containers
    assert container.image == str(rel.artifact) and "@sha256:" in container.image
    assert container.readiness_probe.http_get.path == "/v2/health/ready"
    assert container.liveness_probe.http_get.path == "/v2/health/live"
    assert container.startup_probe is not None
    assert container.resources.requests == {"cpu": "50m", "memory": "128Mi"}
    assert container.resources.limits == {"memory": "128Mi"}
    assert container.security_context.read_only_root_filesystem is True
    assert dep.spec.strategy.rolling_update.max_unavailable == 0
    assert dep.metadata.labels["app.kubernetes.io/version"] == "1"
    assert dep.metadata.labels["gazelle.dev/model"] == MODEL
    core = client.CoreV1Api(kube)
    assert core.read_namespaced_service("gazelle-wordcount-v1", k8s_namespace).spec.selector == {
        "gazelle.dev/model": MODEL, "gazelle.dev/version": "1"}
    stable = core.read_namespaced_service("gazelle-wordcount", k8s_namespace)
    assert stable.spec.selector == {"gazelle.dev/model": MODEL, "gazelle.dev/version": "1"}
    assert url.startswith("http://127.0.0.1:")


def test_predictions_through_the_pod_url_are_the_models(v1: tuple[Release, str]) -> None:
    assert predict(v1[1], ["one two three", "four"]) == {"predictions": [3, 1], "model": MODEL, "version": 1}


def test_logs_are_the_runtimes_own_lines(v1: tuple[Release, str], target: KubernetesTarget) -> None:
    lines = target.logs(MODEL, 1, tail=50)
    assert any('"event":"ready"' in line or '"event": "ready"' in line for line in lines), lines


def test_two_replicas_give_two_ready_pods_and_a_disruption_budget(
        v1: tuple[Release, str], image: Any, target: KubernetesTarget, kube: Any, k8s_namespace: str) -> None:
    from kubernetes import client

    ref, manifest = image(scaled_counts(2), MODEL)
    lines: list[str] = []
    running = target.deploy(release(ref, manifest, 2, replicas=2), lines.append)
    pods = client.CoreV1Api(kube).list_namespaced_pod(
        k8s_namespace, label_selector="gazelle.dev/model=wordcount,gazelle.dev/version=2").items
    ready = [p for p in pods if any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])]
    assert len(ready) == 2
    assert "ready 2/2" in lines
    budgets = target._resource(target.options.api.pdb, "PodDisruptionBudget").get(
        namespace=k8s_namespace, name="gazelle-wordcount-v2")
    assert budgets.spec.maxUnavailable == 1
    assert predict(running.url, ["a b"])["predictions"] == [4]
    assert predict(v1[1], ["a b"])["predictions"] == [2], "version 1 keeps serving beside version 2"


def test_switch_then_stop_keeps_the_replaced_version_at_zero_and_rollback_scales_it_back(
        v1: tuple[Release, str], target: KubernetesTarget, kube: Any, k8s_namespace: str) -> None:
    from kubernetes import client

    target.switch(MODEL, 2)
    core, apps = client.CoreV1Api(kube), client.AppsV1Api(kube)
    assert core.read_namespaced_service("gazelle-wordcount", k8s_namespace).spec.selector[
        "gazelle.dev/version"] == "2"
    target.stop(MODEL, 1)
    kept = apps.read_namespaced_deployment("gazelle-wordcount-v1", k8s_namespace)
    assert kept.spec.replicas == 0
    assert {r.version for r in target.running()} == {2}
    # a rollback: the same release again, no build and no push, only a scale back up
    running = target.deploy(v1[0], lambda line: None)
    assert predict(running.url, ["a b c"]) == {"predictions": [3], "model": MODEL, "version": 1}
    target.switch(MODEL, 1)
    assert {r.version for r in target.running()} == {1, 2}


def test_a_model_that_raises_while_loading_fails_with_its_message_and_leaves_nothing(
        v1: tuple[Release, str], image: Any, target: KubernetesTarget, kube: Any, k8s_namespace: str) -> None:
    ref, manifest = image(Boom(), MODEL)
    with pytest.raises(TargetError) as failed:
        target.deploy(release(ref, manifest, 7), lambda line: None)
    assert "the model raised while loading: RuntimeError: boom" in str(failed.value)
    assert failed.value.detail and "events:" in failed.value.detail
    found = names_of(kube, k8s_namespace, MODEL, 7)
    assert not found["deployments"] and not found["services"]
    assert predict(v1[1], ["a b"])["predictions"] == [2], "the previous version is untouched"


def test_an_image_that_cannot_be_pulled_fails_with_the_pull_error_and_leaves_nothing(
        v1: tuple[Release, str], target: KubernetesTarget, kube: Any, k8s_namespace: str,
        registry_url: str) -> None:
    missing = ImageRef(*registry_url.split("/", 1)[:1], "gazelle-test/absent", "sha256:" + "0" * 64)
    with pytest.raises(TargetError) as failed:
        target.deploy(release(missing, dict(v1[0].manifest), 8), lambda line: None)
    message = str(failed.value)
    assert "cannot be pulled" in message and "absent" in message
    assert not names_of(kube, k8s_namespace, MODEL, 8)["deployments"]
    assert not names_of(kube, k8s_namespace, MODEL, 8)["services"]


@pytest.mark.parametrize("version, resources, reason", [
    (9, {"memory": "64Ti"}, "Insufficient memory"),                    # the scheduler's reason
    (10, {"memory": "12Mi"}, "more memory than its limit (12Mi)"),     # the OOM killer while loading
], ids=["no-node-fits", "killed-for-memory"])
def test_resources_that_cannot_work_fail_with_the_reason_and_leave_nothing(
        version: int, resources: dict[str, str], reason: str, v1: tuple[Release, str], target: KubernetesTarget,
        kube: Any, k8s_namespace: str) -> None:
    with pytest.raises(TargetError) as failed:
        target.deploy(release(v1[0].artifact, dict(v1[0].manifest), version, resources=resources), lambda line: None)
    assert reason in str(failed.value)
    assert not names_of(kube, k8s_namespace, MODEL, version)["deployments"]
    assert predict(v1[1], ["a b"])["predictions"] == [2]


def test_a_missing_environment_secret_fails_naming_it(
        v1: tuple[Release, str], kubeconfig: str, kube: Any, k8s_namespace: str) -> None:
    options = objects.Options(namespace=k8s_namespace, host_network=True, env_secrets=("absent-keys",))
    strict = KubernetesTarget(options, kubeconfig=kubeconfig, ready_timeout=120)
    try:
        with pytest.raises(TargetError) as failed:
            strict.deploy(release(v1[0].artifact, dict(v1[0].manifest), 11), lambda line: None)
    finally:
        strict.close()
    assert "cannot start its container" in str(failed.value) and "absent-keys" in str(failed.value)
    assert not names_of(kube, k8s_namespace, MODEL, 11)["deployments"]


def test_restore_brings_back_the_live_version_and_reports_what_the_store_does_not_know(
        v1: tuple[Release, str], target: KubernetesTarget) -> None:
    lines: list[str] = []
    seen: list[int] = []
    back = target.restore([v1[0]], lines.append, on_ready=lambda r: seen.append(r.version))
    assert [(r.version, predict(r.url, ["x y"])["predictions"]) for r in back] == [(1, [2])]
    assert seen == [1]
    assert any("wordcount v2 runs in the cluster but is not live in the store" in line for line in lines), lines


def test_restore_creates_again_a_live_version_the_cluster_lost(
        v1: tuple[Release, str], target: KubernetesTarget, kube: Any, k8s_namespace: str) -> None:
    from kubernetes import client

    client.AppsV1Api(kube).delete_namespaced_deployment("gazelle-wordcount-v1", k8s_namespace)
    back = target.restore([v1[0]], lambda line: None)
    assert [(r.version, predict(r.url, ["x y z"])["predictions"]) for r in back] == [(1, [3])]
    stable = client.CoreV1Api(kube).read_namespaced_service("gazelle-wordcount", k8s_namespace)
    assert stable.spec.selector["gazelle.dev/version"] == "1"


def test_the_endpoint_watch_follows_a_pod_the_deployment_replaces(
        v1: tuple[Release, str], target: KubernetesTarget, kube: Any, k8s_namespace: str) -> None:
    """Host-network mode: the replacement listens on the same node port, so what changes is the pod
    behind the address; the watch drops the deleted pod's endpoint and lists the new pod once ready."""
    from kubernetes import client

    wait_for(lambda: target.addresses(MODEL, 1), "the watch seeing version 1's ready endpoint")
    before = target.addresses(MODEL, 1)
    (old,) = [e.pod for e in target.endpoints(MODEL, 1) or [] if e.ready]
    client.CoreV1Api(kube).delete_namespaced_pod(old, k8s_namespace, grace_period_seconds=0)

    def replaced() -> bool:
        found = target.endpoints(MODEL, 1) or []
        return old not in {e.pod for e in found} and any(e.ready for e in found)

    wait_for(replaced, "the watch listing the replacement pod ready and not the deleted one", timeout=150)
    (new,) = [e.pod for e in target.endpoints(MODEL, 1) or [] if e.ready]
    assert new != old and new in names_of(kube, k8s_namespace, MODEL, 1)["pods"]
    assert target.addresses(MODEL, 1) == before, "the same node port, another pod behind it"
    assert predict(before[0], ["x y z w"])["predictions"] == [4]


def test_a_model_slower_to_load_than_its_startup_budget_fails_saying_the_probe_failed(
        v1: tuple[Release, str], image: Any, target: KubernetesTarget, kubeconfig: str, kube: Any,
        k8s_namespace: str) -> None:
    options = objects.Options(namespace=k8s_namespace, host_network=True, startup_seconds=5)
    impatient = KubernetesTarget(options, kubeconfig=kubeconfig, ready_timeout=150)
    ref, manifest = image(SlowToLoad(3600), MODEL)
    try:
        with pytest.raises(TargetError) as failed:
            impatient.deploy(release(ref, manifest, 12), lambda line: None)
    finally:
        impatient.close()
    message = str(failed.value)
    assert "failed its startup probe" in message and "Startup probe failed:" in message, message
    assert "GAZELLE_K8S_STARTUP_SECONDS" in message
    assert failed.value.detail and "Unhealthy" in failed.value.detail
    found = names_of(kube, k8s_namespace, MODEL, 12)
    assert not found["deployments"] and not found["services"]
    (live,) = target.addresses(MODEL, 1) or []   # restored on a port of its own, not v1's first one
    assert predict(live, ["a b"])["predictions"] == [2], "the previous version keeps serving"


def test_delete_removes_every_object_of_the_model(
        v1: tuple[Release, str], target: KubernetesTarget, kube: Any, k8s_namespace: str) -> None:
    from kubernetes import client

    target.delete(MODEL)
    for version in (1, 2):
        found = names_of(kube, k8s_namespace, MODEL, version)
        assert not found["deployments"] and not found["services"]
    names = [s.metadata.name for s in client.CoreV1Api(kube).list_namespaced_service(k8s_namespace).items]
    assert "gazelle-wordcount" not in names
    assert target.running() == []


def test_an_image_of_the_docker_builder_runs_too_as_its_own_non_root_user(
        target: KubernetesTarget, testenv: dict[str, str], docker_client: Any, base_image: str,
        registry_url: str, tmp_path: Any) -> None:
    from gazelle.server.builders.docker import DockerBuilder
    from gazelle.server.registry.engine import EnginePublisher
    from tests.e2e._docker import Shout, client_factory, store

    prefix = f"{registry_url}/gazelle-test-k8s-docker"
    builder = DockerBuilder(client_factory(testenv["GAZELLE_TEST_DOCKER_HOST"]), prefix,
                            base_images={base_image.rsplit(":", 1)[1]: base_image})
    try:
        path, manifest = store(tmp_path, Shout(), name="shout")
        built = builder.build(path, manifest, lambda line: None, version=1)
        ref = EnginePublisher(builder.engine, prefix)(built, "shout", 1, lambda line: None)
    finally:
        builder.close()
    running = target.deploy(Release(name="shout", version=1, artifact=ref, manifest=manifest,
                                    resources={"memory": "256Mi"}), lambda line: None)
    try:
        assert predict(running.url, ["taxi"])["predictions"] == ["TAXI"]
    finally:
        target.delete("shout")
        # the engine refuses to remove an image while the deleted pod's container is still stopping
        wait_for(lambda: _removed(docker_client, built.id), "the shout image removed from the engine", timeout=90)


def _removed(docker_client: Any, image_id: str) -> bool:
    import docker

    try:
        docker_client.images.remove(image_id, force=True)
    except docker.errors.ImageNotFound:
        return True
    except docker.errors.APIError as err:
        if err.status_code == 409:
            return False
        raise
    return True


def test_the_cluster_accepts_every_object_kind_with_the_api_versions_discovery_chose(
        target: KubernetesTarget, k8s_namespace: str) -> None:
    from dataclasses import replace

    dynamic = target._resources()
    assert target.options.api.pdb == "policy/v1beta1" and target.options.api.hpa == "autoscaling/v2beta2", \
        "the test cluster is Kubernetes 1.20"
    options = replace(target.options, image_pull_secrets=("regcred",), env_secrets=("model-keys",),
                      ingress_host="{name}.models.example.com", ingress_class="nginx", hpa_max_replicas=4)
    ref = ImageRef("127.0.0.1:5000", "gazelle-test/any", "sha256:" + "ab" * 32)
    rel = Release(name="every", version=1, artifact=ref, manifest={}, replicas=2)
    made = [*objects.version_objects(rel, options, 20500), objects.stable_service("every", 1, options, 20500),
            objects.ingress("every", options)]
    accepted = []
    for obj in made:
        assert obj is not None
        answer = dynamic.resources.get(api_version=obj["apiVersion"], kind=obj["kind"]).create(
            body=obj, namespace=k8s_namespace, dry_run="All")
        accepted.append(answer.kind)
    assert sorted(accepted) == sorted(["Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler",
                                       "Service", "Ingress"])
