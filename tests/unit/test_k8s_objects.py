"""The Kubernetes objects of a version: shape, defaults, resource parsing, and strict schema validation
against a current Kubernetes release (``kubernetes-validate``, offline)."""
from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest

from gazelle.errors import BadRequest
from gazelle.server.artifacts import ImageRef
from gazelle.server.targets import Release
from gazelle.server.targets import _k8s_objects as k8s

REF = ImageRef("127.0.0.1:5000", "gazelle/accounts", "sha256:" + "ab" * 32)
SCHEMA_VERSION = "1.33"


def release(**changes: Any) -> Release:
    values: dict[str, Any] = {"name": "accounts", "version": 3, "artifact": REF, "manifest": {}}
    values.update(changes)
    return Release(**values)


def every_object(options: k8s.Options, rel: Release) -> list[dict[str, Any]]:
    out = k8s.version_objects(rel, options, 20123)
    out.append(k8s.stable_service(rel.name, rel.version, options, 20123))
    extra = k8s.ingress(rel.name, options)
    return out + ([extra] if extra else [])


FULL = k8s.Options(namespace="models", image_pull_secrets=("regcred",), env_secrets=("model-keys",),
                   ingress_host="{name}.models.example.com", ingress_class="nginx", ingress_tls_secret="models-tls",
                   hpa_max_replicas=5)


@pytest.mark.parametrize("options", [k8s.Options(), FULL, k8s.Options(host_network=True)],
                         ids=["defaults", "everything", "host-network"])
def test_every_manifest_validates_strictly_against_current_kubernetes(options: k8s.Options) -> None:
    objects = every_object(options, release(replicas=2))
    for obj in objects:
        kubernetes_validate.validate(obj, SCHEMA_VERSION, strict=True)
    kinds = {o["kind"] for o in objects}
    assert {"Deployment", "Service", "PodDisruptionBudget"} <= kinds


def test_a_misspelt_field_fails_strict_validation() -> None:
    # the check above can fail: strict mode refuses a field the schema does not have
    obj = k8s.deployment(release(), k8s.Options(), 8080)
    obj["spec"]["template"]["spec"]["containers"][0]["readynessProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(obj, SCHEMA_VERSION, strict=True)


def test_deployment_runs_the_digest_with_probes_labels_and_a_locked_down_pod() -> None:
    obj = k8s.deployment(release(replicas=2), FULL, 8080)
    assert obj["metadata"]["name"] == "gazelle-accounts-v3"
    spec = obj["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    assert spec["selector"]["matchLabels"] == {"gazelle.dev/model": "accounts", "gazelle.dev/version": "3"}
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == f"127.0.0.1:5000/gazelle/accounts@sha256:{'ab' * 32}"
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert container["envFrom"] == [{"secretRef": {"name": "model-keys"}}]
    pod_labels = spec["template"]["metadata"]["labels"]
    assert pod_labels["app.kubernetes.io/name"] == "accounts"
    assert pod_labels["app.kubernetes.io/version"] == "3"
    assert pod_labels["app.kubernetes.io/managed-by"] == "gazelle"
    assert "hostNetwork" not in pod


def test_host_network_pods_share_their_port_instead_of_declaring_it() -> None:
    pod = k8s.deployment(release(), k8s.Options(host_network=True), 20123)["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["hostNetwork"] is True
    assert "ports" not in container     # declared ports become host ports: a second replica would not fit
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["GAZELLE_RUNTIME_PORT"] == "20123"
    assert env["GAZELLE_RUNTIME_REUSE_PORT"] == "1"
    assert container["readinessProbe"]["httpGet"]["port"] == 20123


def test_stable_service_selects_the_live_version_and_its_switch_patch_moves_it() -> None:
    options = k8s.Options(host_network=True)
    stable = k8s.stable_service("accounts", 1, options, 20001)
    assert stable["metadata"]["name"] == "gazelle-accounts"
    assert "gazelle.dev/version" not in stable["metadata"]["labels"]
    patch = k8s.stable_switch("accounts", 2, options, 20002)
    assert patch["spec"]["selector"] == {"gazelle.dev/model": "accounts", "gazelle.dev/version": "2"}
    assert patch["spec"]["ports"][0]["targetPort"] == 20002


def test_no_budget_for_one_replica_and_no_optional_objects_by_default() -> None:
    kinds = [o["kind"] for o in k8s.version_objects(release(replicas=1), k8s.Options(), 8080)]
    assert kinds == ["Deployment", "Service"]
    assert k8s.ingress("accounts", k8s.Options()) is None


def test_the_ingress_sends_the_models_whole_host_to_the_stable_services_port() -> None:
    route = k8s.ingress("accounts", k8s.Options(namespace="models", ingress_host="{name}.models.example.com"))
    assert route is not None
    assert route["metadata"]["name"] == "gazelle-accounts" and route["metadata"]["namespace"] == "models"
    assert "ingressClassName" not in route["spec"] and "tls" not in route["spec"]
    (rule,) = route["spec"]["rules"]
    assert rule["host"] == "accounts.models.example.com"
    (path,) = rule["http"]["paths"]
    assert (path["path"], path["pathType"]) == ("/", "Prefix"), "the runtime's own paths, no prefix"
    stable = k8s.stable_service("accounts", 3, k8s.Options(namespace="models"), 8080)
    assert path["backend"]["service"] == {"name": stable["metadata"]["name"],
                                          "port": {"number": stable["spec"]["ports"][0]["port"]}}


def test_an_ingress_with_a_certificate_secret_terminates_tls_for_the_models_host() -> None:
    route = k8s.ingress("accounts", FULL)
    assert route is not None
    assert route["spec"]["ingressClassName"] == "nginx"
    assert route["spec"]["tls"] == [{"hosts": ["accounts.models.example.com"], "secretName": "models-tls"}]


def test_discovered_api_versions_are_used_for_budget_and_autoscaler() -> None:
    old = k8s.Options(hpa_max_replicas=3, api=k8s.ApiVersions(hpa="autoscaling/v2beta2", pdb="policy/v1beta1",
                                                              endpoint_slice="discovery.k8s.io/v1beta1"))
    budget = k8s.disruption_budget(release(replicas=2), old)
    scaler = k8s.autoscaler(release(replicas=2), old)
    assert budget is not None and budget["apiVersion"] == "policy/v1beta1"
    assert scaler is not None and scaler["apiVersion"] == "autoscaling/v2beta2"
    assert scaler["spec"]["minReplicas"] == 2 and scaler["spec"]["maxReplicas"] == 3


def test_default_resources_request_memory_and_cpu_and_limit_memory() -> None:
    assert k8s.container_resources(None) == {"requests": {"cpu": "100m", "memory": "512Mi"},
                                             "limits": {"memory": "1Gi"}}


def test_shorthand_resources_are_requests_and_the_memory_limit() -> None:
    assert k8s.container_resources({"cpu": "500m", "memory": "2Gi"}) == {
        "requests": {"cpu": "500m", "memory": "2Gi"}, "limits": {"memory": "2Gi"}}


def test_kubernetes_shape_resources_are_merged_over_the_defaults() -> None:
    out = k8s.container_resources({"requests": {"cpu": "250m"}, "limits": {"memory": "768Mi", "cpu": "1"}})
    assert out == {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": "768Mi", "cpu": "1"}}


def test_what_was_asked_wins_over_a_default_on_the_other_side() -> None:
    assert k8s.container_resources({"limits": {"memory": "256Mi"}})["requests"]["memory"] == "256Mi"
    assert k8s.container_resources({"requests": {"memory": "4Gi"}})["limits"]["memory"] == "4Gi"


def test_bad_resources_are_refused_naming_the_field() -> None:
    with pytest.raises(BadRequest) as refused:
        k8s.container_resources({"requests": {"memory": "1 GB"}})
    assert str(refused.value).startswith("resources.requests.memory:")


def test_private_versions_mount_the_tokens_secret_read_only_and_public_ones_do_not() -> None:
    import base64
    import dataclasses as dc

    from gazelle.runtime.access import render

    guarded = dc.replace(k8s.Options(), runtime_tokens=True)
    private = k8s.deployment(Release("m", 1, REF, {}, public=False), guarded, 8080)
    pod = private["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert {"name": "GAZELLE_RUNTIME_TOKENS_FILE", "value": "/gazelle-access/tokens.json"} in container["env"]
    assert {"name": "tokens", "mountPath": "/gazelle-access", "readOnly": True} in container["volumeMounts"]
    assert {"name": "tokens", "secret": {"secretName": k8s.TOKENS_SECRET, "defaultMode": 0o444,
                                         "optional": True}} in pod["volumes"]
    public = k8s.deployment(Release("m", 1, REF, {}, public=True), guarded, 8080)
    assert "tokens" not in str(public["spec"]["template"]["spec"]["volumes"])
    secret = k8s.tokens_secret(render(False, {"a" * 64: "predict"}), guarded)
    assert secret["kind"] == "Secret" and secret["metadata"]["namespace"] == guarded.namespace
    assert b"a" * 64 in base64.b64decode(secret["data"]["tokens.json"])


def test_the_tokens_secret_and_a_guarded_deployment_validate_strictly() -> None:
    from gazelle.runtime.access import render

    guarded = k8s.Options(runtime_tokens=True)
    for obj in (k8s.deployment(release(), guarded, 8080), k8s.tokens_secret(render(False, {}), guarded)):
        kubernetes_validate.validate(obj, SCHEMA_VERSION, strict=True)
