"""``KubernetesTarget``: every model version as its own Deployment and Service in one namespace.

Blue/green (DESIGN section 5; the objects are in ``_k8s_objects``): ``deploy`` creates version N beside
the live one and returns once its pods are ready (``_k8s_rollout`` turns a failing rollout into a
``TargetError`` with the pods' events and the container's last lines, and the failed version's objects
are removed). The pipeline checks the sample against the returned URL, then calls ``switch``, which
points the stable Service ``gazelle-M`` (and the optional Ingress) at the new version. ``stop`` scales a
version that has been live to zero and keeps it (the newest ``keep_versions`` of them), so a rollback
scales it back up without a rebuild; a version that never went live is removed.

Addresses: ``Running.url`` is ``http://ip:port`` of one ready endpoint of the version's Service, read
from its EndpointSlices (so the sanity check needs no kube-proxy); ``restore`` reads it again. The
gateway asks ``addresses`` instead, which answers from an EndpointSlice watch (``_k8s_endpoints``,
started on first use): every ready pod of the version, as pods are replaced. In
host-network mode each version gets its own port on the node, chosen free among the namespace's
versions. The cluster comes from ``KUBECONFIG`` (or ``kubeconfig``), else the in-cluster service
account; EndpointSlice, HPA and PDB API versions are chosen by discovery on first use.

Limits: ``Running.url`` is one pod's; it is what the gateway uses while the watch cannot say (before
its first list, or while the API server is away). Versions are found by labels, so objects edited by
hand to drop them are not seen. The constructor does no I/O; versions never stop with the server
(``close`` stops the watch and closes the client). ``options.gateway == "service"`` sends the gateway
to each version's Service instead (kube-proxy balances), with no watch.
"""
from __future__ import annotations

import dataclasses
import random
import socket
import threading
from typing import Any, Callable, Iterator, Mapping

from gazelle.errors import TargetError
from gazelle.server.targets import Log, Release, Running
from gazelle.server.targets import _k8s_objects as objects
from gazelle.server.targets._k8s_endpoints import SELECTOR, Endpoint, EndpointWatch, parse_slice
from gazelle.server.targets._k8s_rollout import Rollout, wait_until

LIVE_ANNOTATION = "gazelle.dev/was-live"
_RESTORE_AT_ONCE = 4
WATCH_SECONDS = 240   # the API server ends each watch after this; it is resumed at once
PORT_RANGE = (20000, 29999)   # below the kernel's ephemeral range: no client socket sits on them
_API_CHOICES = {"hpa": ("HorizontalPodAutoscaler", ("autoscaling/v2", "autoscaling/v2beta2")),
                "pdb": ("PodDisruptionBudget", ("policy/v1", "policy/v1beta1")),
                "endpoint_slice": ("EndpointSlice", ("discovery.k8s.io/v1", "discovery.k8s.io/v1beta1"))}


class KubernetesTarget:
    """Runs releases (digest-pinned images) as Deployments; see the module docstring."""

    def __init__(self, options: objects.Options, *, kubeconfig: str | None = None, keep_versions: int = 3,
                 ready_timeout: float = 600.0, endpoint_timeout: float = 60.0) -> None:
        self.options = options
        self.kubeconfig = kubeconfig
        self.keep_versions = keep_versions
        self.ready_timeout = ready_timeout
        self.endpoint_timeout = endpoint_timeout
        self._lock = threading.Lock()
        self._client: Any = None
        self._dynamic: Any = None
        self._watch: EndpointWatch | None = None

    # -- clients -----------------------------------------------------------------------------------

    def _api(self) -> Any:
        with self._lock:
            if self._client is None:
                from kubernetes import config

                if self.kubeconfig or not _in_cluster():
                    self._client = config.new_client_from_config(config_file=self.kubeconfig)
                else:
                    config.load_incluster_config()
                    from kubernetes import client

                    self._client = client.ApiClient()
            return self._client

    @property
    def core(self) -> Any:
        from kubernetes import client

        return client.CoreV1Api(self._api())

    @property
    def apps(self) -> Any:
        from kubernetes import client

        return client.AppsV1Api(self._api())

    def _resources(self) -> Any:
        api = self._api()
        with self._lock:
            if self._dynamic is None:
                from kubernetes.dynamic import DynamicClient

                self._dynamic = DynamicClient(api)
                self.options = _discovered(self._dynamic, self.options)
            return self._dynamic

    def _resource(self, api_version: str, kind: str) -> Any:
        return self._resources().resources.get(api_version=api_version, kind=kind)

    # -- Target ------------------------------------------------------------------------------------

    def deploy(self, release: Release, log: Log) -> Running:
        name, version = release.name, release.version
        self._resources()   # discovery first: the objects below use its API versions
        existing = self._deployment(name, version)
        subject = f"{name} v{version}"
        if existing is not None:
            port = _port_of(existing)
            if (existing.spec.replicas or 0) != release.replicas:
                log(f"scaling {objects.deployment_name(name, version)} to {release.replicas} replica(s)")
                self.apps.patch_namespaced_deployment_scale(
                    objects.deployment_name(name, version), self.options.namespace,
                    {"spec": {"replicas": release.replicas}})
        else:
            port = self._free_port() if self.options.host_network else objects.CONTAINER_PORT
            log(f"creating {objects.deployment_name(name, version)} in namespace {self.options.namespace}"
                + (f" on node port {port}" if self.options.host_network else ""))
            try:
                for obj in objects.version_objects(release, self.options, port):
                    self._create(obj, replace=True)
            except Exception:
                self._remove_version(name, version)
                raise
        try:
            pods = Rollout(self.core, self.apps, self.options.namespace, objects.deployment_name(name, version),
                           _selector(objects.selector(name, version)), release.replicas, log,
                           timeout=self.ready_timeout, subject=subject).wait()
            url = self._endpoint_url(name, version, set(pods))
        except TargetError:
            if existing is None or not _was_live(existing):
                self._remove_version(name, version)
            else:
                self._scale(name, version, 0)
            raise
        log(f"{subject} answers at {url}")
        return Running(name, version, url)

    def switch(self, name: str, version: int) -> None:
        """Point the stable Service ``gazelle-M`` (and the Ingress, when configured) at ``version``."""
        found = self._deployment(name, version)
        if found is None:
            raise TargetError(f"{name} v{version} has no Deployment in namespace {self.options.namespace}")
        port = _port_of(found)
        resource = self._resource("v1", "Service")
        stable = objects.stable_service(name, version, self.options, port)
        try:
            resource.patch(body=objects.stable_switch(name, version, self.options, port),
                           name=stable["metadata"]["name"], namespace=self.options.namespace)
        except _not_found():
            self._create(stable)
        self.apps.patch_namespaced_deployment(objects.deployment_name(name, version), self.options.namespace,
                                              {"metadata": {"annotations": {LIVE_ANNOTATION: "true"}}})
        route = objects.ingress(name, self.options)
        if route is not None:   # patched to the current settings (a certificate added later, say)
            self._create(route, replace=True)

    def running(self) -> list[Running]:
        out = []
        for item in self._deployments():
            name, version = _identity(item)
            if (item.spec.replicas or 0) > 0 and (item.status.ready_replicas or 0) > 0:
                url = self._ready_url(name, version)
                if url is not None:
                    out.append(Running(name, version, url))
        return out

    def restore(self, releases: list[Release], log: Log,
                on_ready: Callable[[Running], None] | None = None) -> list[Running]:
        """Make the cluster hold every release (scaled up, or created again), then point each model's
        stable Service at it. Running Deployments that are not among ``releases`` are reported here;
        whether they stop is the caller's decision (``stop``)."""
        wanted = {(r.name, r.version) for r in releases}
        for item in self._deployments():
            key = _identity(item)
            if key not in wanted and (item.spec.replicas or 0) > 0:
                log(f"{key[0]} v{key[1]} runs in the cluster but is not live in the store")

        def one(release: Release) -> Running | None:
            try:
                running = self.deploy(release, log)
                self.switch(release.name, release.version)
            except TargetError as err:
                # One version that cannot come back must not keep the others down; the caller sees why.
                log(f"{release.name} v{release.version} could not be restored: {err}")
                return None
            if on_ready is not None:
                on_ready(running)
            return running

        from concurrent.futures import ThreadPoolExecutor

        # Each waits for its own pods: a slow model keeps no other waiting.
        with ThreadPoolExecutor(max_workers=_RESTORE_AT_ONCE, thread_name_prefix="gazelle-k8s-restore") as pool:
            return [r for r in pool.map(one, releases) if r is not None]

    def stop(self, name: str, version: int, *, grace: float = 10.0) -> None:
        """Scale a version that was live to zero and keep it; remove one that never was; prune old ones."""
        found = self._deployment(name, version)
        if found is None:
            return
        if not _was_live(found):
            self._remove_version(name, version)
            return
        self._scale(name, version, 0)
        kept = sorted((_identity(d)[1] for d in self._deployments(name)
                       if (d.spec.replicas or 0) == 0 and _was_live(d)), reverse=True)
        for old in kept[self.keep_versions:]:
            self._remove_version(name, old)

    def logs(self, name: str, version: int, *, tail: int = 200) -> list[str]:
        pods = self.core.list_namespaced_pod(self.options.namespace,
                                             label_selector=_selector(objects.selector(name, version))).items
        lines: list[str] = []
        for pod in pods:
            try:
                text = self.core.read_namespaced_pod_log(pod.metadata.name, self.options.namespace,
                                                         tail_lines=tail)
            except Exception:   # a pod still pulling has no log yet
                continue
            lines += str(text).splitlines()
        return lines[-tail:]

    def delete(self, name: str) -> None:
        """Every object of every version of ``name``, and its stable Service and Ingress."""
        for item in self._deployments(name):
            self._remove_version(name, _identity(item)[1])
        self._delete_quietly("v1", "Service", objects.stable_name(name))
        if self.options.ingress_host:
            self._delete_quietly("networking.k8s.io/v1", "Ingress", objects.stable_name(name))

    def close(self) -> None:
        with self._lock:
            watch, self._watch = self._watch, None
        if watch is not None:
            watch.close()
        with self._lock:
            if self._client is not None:
                self._client.close()
            self._client = self._dynamic = None

    # -- parts -------------------------------------------------------------------------------------

    def accept_tokens(self, tokens: Mapping[str, str]) -> None:
        """Write the tokens Secret that private versions mount (``runtime_access.Guarded``)."""
        from gazelle.runtime.access import render

        self._create(objects.tokens_secret(render(False, tokens), self.options), replace=True)
        self.options = dataclasses.replace(self.options, runtime_tokens=True)

    def _create(self, obj: dict[str, Any], *, exist_ok: bool = False, replace: bool = False) -> None:
        """Create ``obj``; one that exists already is left (``exist_ok``) or patched to it (``replace``:
        a Service that outlived its Deployment, when the cluster lost only the Deployment)."""
        from kubernetes.client.exceptions import ApiException

        resource = self._resource(obj["apiVersion"], obj["kind"])
        try:
            try:
                resource.create(body=obj, namespace=self.options.namespace)
            except ApiException as err:
                if err.status != 409 or not (exist_ok or replace):
                    raise
                if replace:
                    resource.patch(body=obj, name=obj["metadata"]["name"], namespace=self.options.namespace,
                                   content_type="application/merge-patch+json")
        except ApiException as err:
            raise TargetError(f"the cluster refused {obj['kind']} {obj['metadata']['name']}: "
                              f"{_reason(err)}") from None

    def _delete_quietly(self, api_version: str, kind: str, object_name: str) -> None:
        try:
            # The typed client cannot parse some clusters' answer to a Service delete: the dynamic
            # one reads it as plain JSON.
            self._resource(api_version, kind).delete(name=object_name, namespace=self.options.namespace,
                                                     body={"propagationPolicy": "Background"})
        except _not_found():
            pass

    def _remove_version(self, name: str, version: int) -> None:
        object_name = objects.deployment_name(name, version)
        for api_version, kind in (("apps/v1", "Deployment"), ("v1", "Service"),
                                  (self.options.api.pdb, "PodDisruptionBudget"),
                                  (self.options.api.hpa, "HorizontalPodAutoscaler")):
            self._delete_quietly(api_version, kind, object_name)

    def _scale(self, name: str, version: int, replicas: int) -> None:
        self.apps.patch_namespaced_deployment_scale(objects.deployment_name(name, version), self.options.namespace,
                                                    {"spec": {"replicas": replicas}})

    def _deployment(self, name: str, version: int) -> Any:
        from kubernetes.client.exceptions import ApiException

        try:
            return self.apps.read_namespaced_deployment(objects.deployment_name(name, version),
                                                        self.options.namespace)
        except ApiException as err:
            if err.status == 404:
                return None
            raise TargetError(f"cannot read {name} v{version} from the cluster: {_reason(err)}") from None

    def _deployments(self, name: str | None = None) -> Iterator[Any]:
        labels = {"app.kubernetes.io/managed-by": "gazelle"}
        if name is not None:
            labels[objects.MODEL_LABEL] = name
        for item in self.apps.list_namespaced_deployment(self.options.namespace,
                                                         label_selector=_selector(labels)).items:
            if objects.VERSION_LABEL in (item.metadata.labels or {}):
                yield item

    def _free_port(self) -> int:
        used = {_port_of(d) for d in self._deployments()}
        for _ in range(200):
            port = random.randint(*PORT_RANGE)
            if port not in used and _bindable(port):
                return port
        raise TargetError(f"no free port in {PORT_RANGE[0]}-{PORT_RANGE[1]} for a new version")

    def _endpoint_url(self, name: str, version: int, pods: set[str]) -> str:
        return str(wait_until(lambda: self._ready_url(name, version, pods), self.endpoint_timeout,
                              f"{name} v{version} has no ready endpoint in its Service"))

    def _ready_url(self, name: str, version: int, pods: set[str] | None = None) -> str | None:
        """``http://ip:port`` of one ready endpoint of the version's Service (from its EndpointSlices),
        of one of ``pods`` when given (the rollout's own: not a pod of a version deleted a moment ago)."""
        slices = self._resource(self.options.api.endpoint_slice, "EndpointSlice").get(
            namespace=self.options.namespace,
            label_selector=f"kubernetes.io/service-name={objects.deployment_name(name, version)}")
        for item in slices.to_dict().get("items") or []:
            parsed = parse_slice(item)
            for endpoint in parsed[1] if parsed is not None else []:
                if endpoint.ready and (pods is None or endpoint.pod in pods):
                    return endpoint.url
        return None

    # -- the gateway's addresses -------------------------------------------------------------------

    def addresses(self, name: str, version: int) -> list[str] | None:
        """The ready addresses of a version, from the EndpointSlice watch (started on first use); None
        while the watch cannot say, so the caller uses the address ``deploy`` returned. With
        ``options.gateway == "service"``: the version Service's cluster address, and no watch."""
        if self.options.gateway == "service":
            return [objects.service_url(name, version, self.options)]
        watch = self._endpoint_watch()
        watch.start()
        return watch.addresses(name, version)

    def endpoints(self, name: str, version: int) -> list[Endpoint] | None:
        """Every endpoint of a version the watch knows (ready or not, with its pod); None as for ``addresses``."""
        watch = self._endpoint_watch()
        watch.start()
        return watch.endpoints(name, version)

    def _endpoint_watch(self) -> EndpointWatch:
        with self._lock:
            if self._watch is None:
                self._watch = EndpointWatch(self._list_slices, self._watch_slices)
            return self._watch

    def _slices_path(self) -> str:
        self._resources()   # the EndpointSlice API version comes from discovery
        return f"/apis/{self.options.api.endpoint_slice}/namespaces/{self.options.namespace}/endpointslices"

    def _list_slices(self) -> tuple[list[Any], str]:
        import json

        answer = self._get(self._slices_path(), [("labelSelector", SELECTOR)], timeout=30.0)
        try:
            body = json.loads(answer.data)
        finally:
            answer.release_conn()
        return list(body.get("items") or []), str(body["metadata"]["resourceVersion"])

    def _watch_slices(self, resource_version: str) -> "_WatchStream":
        query = [("labelSelector", SELECTOR), ("watch", "true"), ("resourceVersion", resource_version),
                 ("allowWatchBookmarks", "true"), ("timeoutSeconds", str(WATCH_SECONDS))]
        # The read timeout is past the API server's own end of the watch: a silent, dead connection ends too.
        return _WatchStream(self._get(self._slices_path(), query, timeout=WATCH_SECONDS + 30.0))

    def _get(self, path: str, query: list[tuple[str, str]], *, timeout: float) -> Any:
        api = self._api()
        method, url, headers, _, _ = api.param_serialize(
            "GET", path, query_params=query, header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"])
        answer = api.call_api(method, url, header_params=headers, _request_timeout=(10.0, timeout)).response
        if answer.status != 200:
            text = answer.data.decode("utf-8", "replace")[:300]
            answer.release_conn()
            raise TargetError(f"the cluster answered {answer.status} listing EndpointSlices: {text}")
        return answer


class _WatchStream:
    """The lines of one watch answer as event dicts; ``close`` from another thread ends a blocked read."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer

    def __iter__(self) -> Iterator[Any]:
        import json

        from kubernetes.watch.watch import iter_resp_lines

        for line in iter_resp_lines(self.answer):
            if line:
                yield json.loads(line)

    def close(self) -> None:
        try:
            self.answer.shutdown()   # unblocks a read waiting in the watch thread
        except Exception:   # already closed
            pass
        self.answer.release_conn()


def _discovered(dynamic: Any, options: objects.Options) -> objects.Options:
    from dataclasses import replace

    from kubernetes.dynamic.exceptions import ResourceNotFoundError

    chosen = {}
    for field_name, (kind, choices) in _API_CHOICES.items():
        for api_version in choices:
            try:
                dynamic.resources.get(api_version=api_version, kind=kind)
            except ResourceNotFoundError:
                continue
            chosen[field_name] = api_version
            break
    return replace(options, api=replace(options.api, **chosen))


def _not_found() -> type[Exception]:
    from kubernetes.dynamic.exceptions import NotFoundError

    return NotFoundError


def _in_cluster() -> bool:
    import os

    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and not os.environ.get("KUBECONFIG")


def _bindable(port: int) -> bool:
    """Free on this host too (the server may share the node, as on a one-node cluster)."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _selector(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def _identity(item: Any) -> tuple[str, int]:
    found = item.metadata.labels or {}
    return found[objects.MODEL_LABEL], int(found[objects.VERSION_LABEL])


def _port_of(item: Any) -> int:
    return int((item.metadata.annotations or {}).get(objects.PORT_ANNOTATION, objects.CONTAINER_PORT))


def _was_live(item: Any) -> bool:
    return (item.metadata.annotations or {}).get(LIVE_ANNOTATION) == "true"


def _reason(err: Any) -> str:
    import json

    try:
        return str(json.loads(err.body).get("message") or err.reason)
    except (TypeError, ValueError, AttributeError):
        return str(err.reason)
