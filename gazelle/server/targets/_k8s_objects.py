"""The Kubernetes objects of one model version, as plain dicts: pure functions, no client, no I/O.

Version N of model M (blue/green, DESIGN section 5):

- Deployment ``gazelle-M-vN``: the image by digest, probes on the runtime's v2 health paths (a
  startup probe gives a slow-loading model its time before liveness may kill it), requests and
  limits, ``RollingUpdate`` with ``maxUnavailable: 0``, non-root with a read-only root filesystem
  (an ``emptyDir`` at ``/tmp``, where the runtime keeps its metrics directory), env from Secret refs.
- Service ``gazelle-M-vN``: that version's pods, for the sanity check and the gateway.
- Service ``gazelle-M`` (stable): its selector names the live version; the live switch patches it.
- Optional: Ingress ``gazelle-M`` (host from a template; TLS with a certificate Secret) to the stable
  Service's port, the model's own address (``gazelle.server.urls``); HorizontalPodAutoscaler
  ``gazelle-M-vN``; a PodDisruptionBudget ``gazelle-M-vN`` when replicas > 1.

Host-network mode (clusters without pod networking): each version listens on its own port on the
node. The pods declare no container ports there, since the API server would turn them into host
ports and the scheduler would then refuse a second replica on the same node; instead the runtime
binds with ``SO_REUSEPORT`` (``GAZELLE_RUNTIME_REUSE_PORT``) so replicas on one node share the port.
Limit of that mode: the kernel spreads connections over whichever replicas already listen, so a probe
of a replica still loading its model can be answered by a sibling on the same node (it counts as ready
early; traffic still reaches only the replicas that listen).

Tokens (``Options.runtime_tokens``, once the server hands the target its tokens): the Secret
``gazelle-runtime-tokens`` holds the tokens file (hashes and scopes, never tokens; ``runtime_access``)
and every private version's pods mount it read-only at ``/gazelle-access``, so their runtimes check
tokens themselves; the kubelet refreshes a mounted Secret in place (within its sync period, about a
minute by default). Public versions mount nothing and answer everyone.

API versions that differ across clusters (HPA, PDB) come in as ``ApiVersions``, found by discovery.
"""
from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any, Mapping

from gazelle.server.artifacts import ImageRef
from gazelle.server.targets import Release
from gazelle.server.targets.resources import Resources, parse_quantity

MODEL_LABEL = "gazelle.dev/model"
VERSION_LABEL = "gazelle.dev/version"
PORT_ANNOTATION = "gazelle.dev/port"
CONTAINER = "runtime"
CONTAINER_PORT = 8080           # the model image's default (DESIGN section 2)
SERVICE_PORT = 80
TOKENS_SECRET = "gazelle-runtime-tokens"
TOKENS_KEY = "tokens.json"
TOKENS_MOUNT = "/gazelle-access"
DEFAULT_RESOURCES: Mapping[str, Mapping[str, str]] = {
    "requests": {"cpu": "100m", "memory": "512Mi"},
    "limits": {"memory": "1Gi"},
}


@dataclass(frozen=True)
class ApiVersions:
    """What the cluster serves for the kinds whose version moved (``discover`` in the target)."""

    hpa: str = "autoscaling/v2"
    pdb: str = "policy/v1"
    endpoint_slice: str = "discovery.k8s.io/v1"


@dataclass(frozen=True)
class Options:
    """How versions are laid out in the cluster; from the ``GAZELLE_K8S_*`` settings."""

    namespace: str = "gazelle-models"
    host_network: bool = False
    image_pull_secrets: tuple[str, ...] = ()
    env_secrets: tuple[str, ...] = ()           # Secrets whose keys become the runtime's environment
    ingress_host: str | None = None             # "{name}.models.example.com"
    ingress_class: str | None = None
    ingress_tls_secret: str | None = None       # the certificate of those hosts (a TLS Secret)
    hpa_max_replicas: int = 0                   # 0: no HorizontalPodAutoscaler
    hpa_cpu_percent: int = 80
    revision_history_limit: int = 2
    progress_deadline: int = 600                # seconds, the Deployment's progressDeadlineSeconds
    startup_seconds: int = 600                  # how long a model may take to load before it is killed
    termination_grace: int = 30
    runtime_tokens: bool = False                # private versions mount the tokens Secret
    gateway: str = "endpoints"                  # how the gateway reaches a version: choices.K8S_GATEWAYS
    api: ApiVersions = field(default_factory=ApiVersions)


def deployment_name(name: str, version: int) -> str:
    return f"gazelle-{name}-v{version}"


def service_url(name: str, version: int, options: Options) -> str:
    """The version Service's address inside the cluster."""
    return f"http://{deployment_name(name, version)}.{options.namespace}.svc:{SERVICE_PORT}"


def stable_name(name: str) -> str:
    return f"gazelle-{name}"


def ingress_host(template: str, name: str) -> str:
    """The Ingress host of model ``name`` from a template such as ``{name}.models.example.com``."""
    return template.replace("{name}", name)


def selector(name: str, version: int) -> dict[str, str]:
    return {MODEL_LABEL: name, VERSION_LABEL: str(version)}


def labels(name: str, version: int | None = None) -> dict[str, str]:
    """The standard ``app.kubernetes.io/*`` labels plus gazelle's own (no version on per-model objects)."""
    out = {"app.kubernetes.io/name": name, "app.kubernetes.io/component": "model",
           "app.kubernetes.io/part-of": "gazelle", "app.kubernetes.io/managed-by": "gazelle",
           MODEL_LABEL: name}
    if version is not None:
        out.update({"app.kubernetes.io/instance": deployment_name(name, version),
                    "app.kubernetes.io/version": str(version), VERSION_LABEL: str(version)})
    return out


def container_resources(spec: Mapping[str, Any] | None) -> dict[str, dict[str, str]]:
    """``deploy(resources=...)`` (either shape of DESIGN section 1) over the defaults, as the pod spec
    takes it. What was asked wins: a default request above an asked limit comes down to the limit, a
    default limit below an asked request goes up to it. BadRequest names a bad field."""
    Resources.of(spec)
    if not spec:
        given: dict[str, dict[str, str]] = {"requests": {}, "limits": {}}
    elif set(spec) & {"requests", "limits"}:
        given = {kind: {name: str(value) for name, value in (spec.get(kind) or {}).items()}
                 for kind in ("requests", "limits")}
    else:
        given = {"requests": {name: str(value) for name, value in spec.items()},
                 "limits": {"memory": str(spec["memory"])} if "memory" in spec else {}}
    out = {kind: {**DEFAULT_RESOURCES[kind], **given[kind]} for kind in ("requests", "limits")}
    for name in list(out["requests"]):
        limit = out["limits"].get(name)
        if limit is None or _amount(out["requests"][name]) <= _amount(limit):
            continue
        if name in given["limits"]:
            out["requests"][name] = limit
        else:
            out["limits"][name] = out["requests"][name]
    return out


def _amount(quantity: str) -> Any:
    return parse_quantity(quantity, "resources")


def _version_metadata(release: Release, options: Options) -> dict[str, Any]:
    return {"name": deployment_name(release.name, release.version), "namespace": options.namespace,
            "labels": labels(release.name, release.version)}


def _probe(path: str, port: int | str, *, period: int, failures: int, timeout: int = 2) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": port}, "periodSeconds": period, "timeoutSeconds": timeout,
            "failureThreshold": failures}


def deployment(release: Release, options: Options, port: int) -> dict[str, Any]:
    """The Deployment of ``release``; ``port`` is where its runtime listens (a node port in host-network mode)."""
    if not isinstance(release.artifact, ImageRef):
        raise TypeError(f"the kubernetes target runs images, not {type(release.artifact).__name__}")
    name, version = release.name, release.version
    target: int | str = port if options.host_network else "http"
    env = [{"name": "GAZELLE_RUNTIME_PORT", "value": str(port)},
           {"name": "GAZELLE_RUNTIME_HOST", "value": "0.0.0.0"},
           {"name": "GAZELLE_MODEL_VERSION", "value": str(version)}]
    if options.host_network:
        env.append({"name": "GAZELLE_RUNTIME_REUSE_PORT", "value": "1"})
    env += [{"name": key, "value": value} for key, value in sorted(release.env.items())]
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": str(release.artifact),
        "imagePullPolicy": "IfNotPresent",
        "env": env,
        "resources": container_resources(release.resources),
        # Probed every second while starting: a deploy waits for the first probe after the model loads.
        # A timeout no longer than the period keeps the budget at startup_seconds (a probe that times
        # out holds the next one back).
        "startupProbe": _probe("/v2/health/live", target, period=1, failures=max(1, options.startup_seconds),
                               timeout=1),
        "readinessProbe": _probe("/v2/health/ready", target, period=1, failures=3),
        "livenessProbe": _probe("/v2/health/live", target, period=10, failures=3),
        # The image's own numeric user (65532 append, 10001 docker builder); the kubelet refuses root.
        "securityContext": {"runAsNonRoot": True, "allowPrivilegeEscalation": False,
                            "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    if options.runtime_tokens and not release.public:
        env.append({"name": "GAZELLE_RUNTIME_TOKENS_FILE", "value": f"{TOKENS_MOUNT}/{TOKENS_KEY}"})
        container["volumeMounts"].append({"name": "tokens", "mountPath": TOKENS_MOUNT, "readOnly": True})
    if not options.host_network:
        container["ports"] = [{"name": "http", "containerPort": port, "protocol": "TCP"}]
    if options.env_secrets:
        container["envFrom"] = [{"secretRef": {"name": secret}} for secret in options.env_secrets]
    pod: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": options.termination_grace,
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container],
        "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}],
    }
    if options.runtime_tokens and not release.public:
        # Readable by the image's non-root user; a missing Secret leaves the file out: every token refused.
        pod["volumes"].append({"name": "tokens", "secret": {"secretName": TOKENS_SECRET, "defaultMode": 0o444,
                                                            "optional": True}})
    if options.host_network:
        pod.update({"hostNetwork": True, "dnsPolicy": "ClusterFirstWithHostNet"})
    if options.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": secret} for secret in options.image_pull_secrets]
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {**_version_metadata(release, options), "annotations": {PORT_ANNOTATION: str(port)}},
        "spec": {
            "replicas": release.replicas,
            "selector": {"matchLabels": selector(name, version)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "revisionHistoryLimit": options.revision_history_limit,
            "progressDeadlineSeconds": options.progress_deadline,
            "template": {"metadata": {"labels": labels(name, version)}, "spec": pod},
        },
    }


def tokens_secret(document: bytes, options: Options) -> dict[str, Any]:
    """The Secret private versions mount: ``document`` is the tokens file (``runtime_access``)."""
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": TOKENS_SECRET, "namespace": options.namespace,
                         "labels": {"app.kubernetes.io/managed-by": "gazelle"}},
            "data": {TOKENS_KEY: base64.b64encode(document).decode()}}


def version_service(name: str, version: int, options: Options, port: int) -> dict[str, Any]:
    """The Service of one version's pods: the sanity check and the gateway find them through it."""
    return _service(deployment_name(name, version), labels(name, version), selector(name, version), options, port)


def stable_service(name: str, version: int, options: Options, port: int) -> dict[str, Any]:
    """The per-model Service ``gazelle-M``, selecting the live ``version`` (which listens on ``port``)."""
    service = _service(stable_name(name), labels(name), selector(name, version), options, port)
    service["metadata"]["annotations"] = {"gazelle.dev/live-version": str(version)}
    return service


def _service(object_name: str, object_labels: dict[str, str], pods: dict[str, str], options: Options,
             port: int) -> dict[str, Any]:
    # Named in pod networking (each pod's "http" port); in host-network mode the node port itself.
    target: int | str = port if options.host_network else "http"
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": object_name, "namespace": options.namespace, "labels": object_labels},
            "spec": {"type": "ClusterIP", "selector": pods,
                     "ports": [{"name": "http", "port": SERVICE_PORT, "targetPort": target, "protocol": "TCP"}]}}


def stable_switch(name: str, version: int, options: Options, port: int) -> dict[str, Any]:
    """The patch that points ``gazelle-M`` at ``version``: selector, target port and annotation at once."""
    service = stable_service(name, version, options, port)
    return {"metadata": {"annotations": service["metadata"]["annotations"]}, "spec": service["spec"]}


def ingress(name: str, options: Options) -> dict[str, Any] | None:
    """Ingress ``gazelle-M`` to the stable Service, when a host template is set: the whole host to the
    Service's port, as the gateway's ``/m/{name}`` reaches the runtime (its paths, no prefix), so
    ``{host}/predict`` is the runtime's ``/predict``; the runtime checks tokens for a private model."""
    if not options.ingress_host:
        return None
    host = ingress_host(options.ingress_host, name)
    spec: dict[str, Any] = {"rules": [{"host": host, "http": {"paths": [{
        "path": "/", "pathType": "Prefix",
        "backend": {"service": {"name": stable_name(name), "port": {"number": SERVICE_PORT}}}}]}}]}
    if options.ingress_class:
        spec["ingressClassName"] = options.ingress_class
    if options.ingress_tls_secret:
        spec["tls"] = [{"hosts": [host], "secretName": options.ingress_tls_secret}]
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": stable_name(name), "namespace": options.namespace, "labels": labels(name)},
            "spec": spec}


def autoscaler(release: Release, options: Options) -> dict[str, Any] | None:
    """A CPU HorizontalPodAutoscaler from ``replicas`` up to ``hpa_max_replicas``, when that is set."""
    if options.hpa_max_replicas <= 0:
        return None
    return {"apiVersion": options.api.hpa, "kind": "HorizontalPodAutoscaler",
            "metadata": _version_metadata(release, options),
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                        "name": deployment_name(release.name, release.version)},
                     "minReplicas": release.replicas,
                     "maxReplicas": max(release.replicas, options.hpa_max_replicas),
                     # autoscaling/v2 and v2beta2 share this shape
                     "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                         "type": "Utilization", "averageUtilization": options.hpa_cpu_percent}}}]}}


def disruption_budget(release: Release, options: Options) -> dict[str, Any] | None:
    """At most one pod of a multi-replica version down at a time during node drains."""
    if release.replicas <= 1:
        return None
    return {"apiVersion": options.api.pdb, "kind": "PodDisruptionBudget",
            "metadata": _version_metadata(release, options),
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector(release.name, release.version)}}}


def version_objects(release: Release, options: Options, port: int) -> list[dict[str, Any]]:
    """Everything one version creates, in creation order (the Deployment first: it owns nothing else)."""
    out = [deployment(release, options, port), version_service(release.name, release.version, options, port)]
    out += [o for o in (disruption_budget(release, options), autoscaler(release, options)) if o is not None]
    return out
