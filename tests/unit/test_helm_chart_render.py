"""The Helm chart (charts/gazelle): it lints, renders offline with Helm's own engine
(``helm-python-sdk``), its manifests validate strictly against a current Kubernetes release, its schema
refuses typos, and its Role stays inside the models' namespace."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

CHART = Path(__file__).resolve().parents[2] / "charts" / "gazelle"
SCHEMA_VERSION = "1.33"
# The two values the chart cannot guess: where the server image is, where model images go.
REQUIRED = {"image": {"repository": "registry.example.com/gazelle/server"},
            "registry": {"address": "registry.example.com/models"}}
POSTGRES = {**REQUIRED, "replicas": 3,
            "database": {"url": "postgresql://gazelle:secret-pw@db.example.com/gazelle"}}
EVERYTHING = {**POSTGRES, "hostNetwork": True,
              "image": {"repository": "registry.example.com/gazelle/server", "digest": "sha256:" + "ab" * 32},
              "registry": {"address": "registry.example.com/models", "username": "u", "password": "registry-pw"},
              "ingress": {"enabled": True, "host": "gazelle.example.com", "className": "nginx", "tlsSecret": "tls"},
              "models": {"namespace": "models", "imagePullSecrets": ["regcred"], "envSecrets": ["keys"],
                         "ingressHost": "{name}.models.example.com", "ingressTlsSecret": "models-tls",
                         "hpaMaxReplicas": 4},
              "server": {"baseImages": {"3.11": "python:3.11-slim"}, "extraEnv": {"GAZELLE_K8S_KEEP_VERSIONS": "5"}},
              "extraCACerts": {"configMap": "corp-ca", "key": "bundle.pem"}, "apiServer": "10.0.0.1:6443"}


def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    chart = helm.Chart.load(CHART)
    out = chart.render(values, name="rel", namespace="gazelle", is_install=True)
    return [doc for path, text in sorted(out.items()) if path.endswith(".yaml")
            for doc in yaml.safe_load_all(text) if doc]


def by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (obj,) = [o for o in objects if o["kind"] == kind]
    return obj


def env_of(objects: list[dict[str, Any]]) -> dict[str, Any]:
    container = by_kind(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


@pytest.mark.parametrize("values", [REQUIRED, POSTGRES, EVERYTHING], ids=["defaults", "postgres-3", "everything"])
def test_chart_lints_without_errors_or_warnings(values: dict[str, Any]) -> None:
    report = helm.lint(CHART, values, strict=True)
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("values", [REQUIRED, POSTGRES, EVERYTHING], ids=["defaults", "postgres-3", "everything"])
def test_rendered_manifests_validate_strictly_against_current_kubernetes(values: dict[str, Any]) -> None:
    objects = render(values)
    for obj in objects:
        kubernetes_validate.validate(obj, SCHEMA_VERSION, strict=True)
    kinds = {o["kind"] for o in objects}
    assert {"Deployment", "Service", "Secret", "ServiceAccount", "Role", "RoleBinding"} <= kinds


def test_defaults_run_one_replica_on_sqlite_on_a_claim() -> None:
    objects = render(REQUIRED)
    deployment = by_kind(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == by_kind(objects, "PersistentVolumeClaim")["metadata"]["name"]
    assert "GAZELLE_DATABASE_URL" not in env_of(objects)
    assert "hostNetwork" not in deployment["spec"]["template"]["spec"]


def test_postgres_replicas_take_the_url_from_a_secret_and_make_no_claim() -> None:
    objects = render(POSTGRES)
    assert by_kind(objects, "Deployment")["spec"]["replicas"] == 3
    assert not [o for o in objects if o["kind"] == "PersistentVolumeClaim"]
    assert env_of(objects)["GAZELLE_DATABASE_URL"] == {"secretKeyRef": {"name": "rel-gazelle", "key": "database-url"}}


def test_secrets_reach_the_pod_only_through_secret_refs() -> None:
    objects = render(EVERYTHING)
    env = env_of(objects)
    for name in ("GAZELLE_ADMIN_TOKEN", "GAZELLE_DATABASE_URL", "GAZELLE_REGISTRY_PASSWORD", "GAZELLE_REGISTRY"):
        assert "secretKeyRef" in env[name], name
    plain = yaml.safe_dump([o for o in objects if o["kind"] != "Secret"])
    assert "secret-pw" not in plain and "registry-pw" not in plain


def test_pod_is_non_root_with_a_read_only_root_and_probes_on_healthz_and_readyz() -> None:
    pod = by_kind(render(REQUIRED), "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    (container,) = pod["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_host_network_runs_server_and_models_on_the_node() -> None:
    objects = render(EVERYTHING)
    pod = by_kind(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True and pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert env_of(objects)["GAZELLE_K8S_HOST_NETWORK"] == "true"


def test_extra_ca_certs_are_mounted_read_only_and_pip_is_pointed_at_them() -> None:
    objects = render(EVERYTHING)
    pod = by_kind(objects, "Deployment")["spec"]["template"]["spec"]
    assert env_of(objects)["PIP_CERT"] == "/etc/gazelle/ca/bundle.pem"
    (volume,) = [v for v in pod["volumes"] if v["name"] == "ca"]
    assert volume["configMap"] == {"name": "corp-ca", "items": [{"key": "bundle.pem", "path": "bundle.pem"}]}
    (mount,) = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "ca"]
    assert mount == {"name": "ca", "mountPath": "/etc/gazelle/ca", "readOnly": True}
    assert "PIP_CERT" not in env_of(render(REQUIRED))


def test_extra_ca_certs_from_both_a_config_map_and_a_secret_fail() -> None:
    with pytest.raises(helm.HelmError, match="configMap or secret, not both"):
        render({**REQUIRED, "extraCACerts": {"configMap": "a", "secret": "b"}})


def test_api_server_overrides_the_in_cluster_service_address() -> None:
    env = env_of(render(EVERYTHING))
    assert (env["KUBERNETES_SERVICE_HOST"], env["KUBERNETES_SERVICE_PORT"]) == ("10.0.0.1", "6443")
    assert "KUBERNETES_SERVICE_HOST" not in env_of(render(REQUIRED))


def test_role_grants_only_namespaced_rights_in_the_models_namespace() -> None:
    objects = render(EVERYTHING)
    assert not [o for o in objects if o["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    role, binding = by_kind(objects, "Role"), by_kind(objects, "RoleBinding")
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == "models"
    assert binding["subjects"][0]["namespace"] == "gazelle"
    rights = {(group, resource): set(rule["verbs"]) for rule in role["rules"]
              for group in rule["apiGroups"] for resource in rule["resources"]}
    assert all("*" not in verbs for verbs in rights.values())
    assert not [key for key in rights if "*" in key]
    read_only = {"get", "list", "watch"}
    for key in [("", "pods"), ("", "pods/log"), ("", "events"), ("discovery.k8s.io", "endpointslices")]:
        assert rights[key] == read_only, key
    assert ("", "secrets") not in rights   # the target only references Secrets by name
    assert "create" in rights[("apps", "deployments")] and "delete" in rights[("", "services")]


def test_a_typo_in_a_value_fails_against_the_schema() -> None:
    chart = helm.Chart.load(CHART)
    with pytest.raises(helm.HelmValuesError, match="hostNetwrok"):
        chart.validate_schema({**REQUIRED, "hostNetwrok": True})
    with pytest.raises(helm.HelmError, match="persistance"):
        render({**REQUIRED, "persistance": {"enabled": False}})


def test_the_models_ingress_values_reach_the_servers_environment() -> None:
    env = env_of(render(EVERYTHING))
    assert env["GAZELLE_K8S_INGRESS_HOST"] == "{name}.models.example.com"
    assert env["GAZELLE_K8S_INGRESS_TLS_SECRET"] == "models-tls"
    assert not {"GAZELLE_K8S_INGRESS_HOST", "GAZELLE_K8S_INGRESS_TLS_SECRET"} & set(env_of(render(REQUIRED)))
    with pytest.raises(helm.HelmError, match=r"models.ingressTlsSecret .* needs models.ingressHost"):
        render({**REQUIRED, "models": {"ingressTlsSecret": "models-tls"}})


def test_sqlite_with_three_replicas_fails_saying_it_needs_postgres() -> None:
    with pytest.raises(helm.HelmError, match=r"replicas: 3 needs PostgreSQL"):
        render({**REQUIRED, "replicas": 3})


def test_every_value_is_documented_in_values_yaml_and_the_schema() -> None:
    import json

    text = (CHART / "values.yaml").read_text()
    defaults = yaml.safe_load(text)
    schema = json.loads((CHART / "values.schema.json").read_text())

    def walk(values: dict[str, Any], node: dict[str, Any], path: str) -> None:
        assert node.get("additionalProperties") is False, path or "(top)"
        assert set(values) == set(node["properties"]), path
        for key, value in values.items():
            sub = node["properties"][key]
            if isinstance(value, dict) and sub.get("additionalProperties") is False:
                walk(value, sub, f"{path}.{key}")

    walk(defaults, schema, "")
    for key in defaults:
        line = text.index(f"\n{key}:")
        assert text[:line].rstrip().splitlines()[-1].lstrip().startswith("#"), f"{key} has no comment"
