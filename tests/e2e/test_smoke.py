"""Smoke tests of the test environment itself: each real service does the one thing the rest of the
suite relies on. An image pushed to the local registry runs as a pod and answers HTTP on loopback;
PostgreSQL stores and returns rows; the authenticated registry turns away a wrong password; the
python base image carries this interpreter's major.minor."""
from __future__ import annotations

import io
import sys
import tarfile
import time
import uuid
from typing import Any

import httpx
import pytest

from tests.conftest import AuthRegistry, kube_api
from tests.helpers import free_port

pytestmark = pytest.mark.e2e

ROLLOUT_TIMEOUT = 180


def tar_of(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def push(docker_client: Any, repository: str, tag: str, auth: dict[str, str] | None = None) -> list[dict]:
    """Push and return the daemon's progress messages (errors arrive there, not as exceptions)."""
    return list(docker_client.images.push(repository, tag, stream=True, decode=True, auth_config=auth))


def build_httpd_image(docker_client: Any, busybox: str, repository: str, tag: str, body: bytes) -> None:
    """busybox + one layer holding /www/index.html; httpd on 127.0.0.1:$PORT. No Dockerfile: a
    container gets the file and is committed."""
    container = docker_client.containers.create(busybox, command=["true"], network_mode="host")
    try:
        assert container.put_archive("/www", tar_of({"index.html": body}))
        container.commit(repository=repository, tag=tag, conf={
            "Cmd": ["sh", "-c", "exec httpd -f -p 127.0.0.1:$PORT -h /www"],
            "Env": ["PATH=/bin"],
        })
    finally:
        container.remove(force=True)


def wait_for_rollout(apps: Any, core: Any, name: str, namespace: str) -> None:
    deadline = time.monotonic() + ROLLOUT_TIMEOUT
    while time.monotonic() < deadline:
        status = apps.read_namespaced_deployment_status(name, namespace).status
        if (status.ready_replicas or 0) >= 1:
            return
        time.sleep(0.5)
    pods = core.list_namespaced_pod(namespace, label_selector=f"app={name}").items
    events = core.list_namespaced_event(namespace).items
    pytest.fail(f"deployment {name} not ready after {ROLLOUT_TIMEOUT}s; pods: "
                f"{[(p.metadata.name, p.status.phase, p.status.container_statuses) for p in pods]}; "
                f"events: {[(e.reason, e.message) for e in events]}")


def test_image_pushed_to_local_registry_runs_as_pod_and_answers_http(
        docker_client: Any, registry_url: str, testenv: dict[str, str], kubeconfig: str,
        k8s_namespace: str) -> None:
    from kubernetes import client

    busybox = testenv["GAZELLE_TEST_BUSYBOX_IMAGE"]
    repository, tag = f"{registry_url}/smoke/httpd", uuid.uuid4().hex[:12]
    body = f"smoke {tag}\n".encode()
    build_httpd_image(docker_client, busybox, repository, tag, body)
    messages = push(docker_client, repository, tag)
    assert not [m for m in messages if "error" in m], messages
    # the pod must get the image from the registry, not from the engine's local store
    docker_client.images.remove(f"{repository}:{tag}")

    port, name = free_port(), "smoke-httpd"
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}}, "spec": {
                     "hostNetwork": True,
                     "automountServiceAccountToken": False,
                     "terminationGracePeriodSeconds": 1,
                     "containers": [{
                         "name": "httpd", "image": f"{repository}:{tag}", "imagePullPolicy": "Always",
                         "env": [{"name": "PORT", "value": str(port)}],
                         "readinessProbe": {"httpGet": {"host": "127.0.0.1", "path": "/index.html",
                                                        "port": port}, "periodSeconds": 1},
                     }]}}}}
    with kube_api(kubeconfig) as api:
        apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
        apps.create_namespaced_deployment(k8s_namespace, deployment)
        try:
            wait_for_rollout(apps, core, name, k8s_namespace)
            answer = httpx.get(f"http://127.0.0.1:{port}/index.html", timeout=5)
        finally:
            apps.delete_namespaced_deployment(name, k8s_namespace)
    assert answer.status_code == 200
    assert answer.content == body


def test_postgres_round_trip(postgres_url: str) -> None:
    import psycopg

    table = f"smoke_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_url) as conn:
        conn.execute(f"create table {table} (id serial primary key, name text not null, score float8)")
        try:
            conn.execute(f"insert into {table} (name, score) values (%s, %s), (%s, %s)",
                         ("accounts", 0.5, "fraud", 1.25))
            rows = conn.execute(f"select name, score from {table} order by id").fetchall()
        finally:
            conn.execute(f"drop table {table}")
    assert rows == [("accounts", 0.5), ("fraud", 1.25)]


def test_auth_registry_answers_right_password_and_refuses_wrong(auth_registry: AuthRegistry) -> None:
    url = f"http://{auth_registry.host}/v2/"
    assert httpx.get(url, auth=(auth_registry.user, auth_registry.password), timeout=5).status_code == 200
    assert httpx.get(url, auth=(auth_registry.user, "wrong-" + auth_registry.password),
                     timeout=5).status_code == 401
    assert httpx.get(url, timeout=5).status_code == 401


def test_docker_login_and_push_with_wrong_password_fail(
        docker_client: Any, auth_registry: AuthRegistry, testenv: dict[str, str]) -> None:
    import docker

    wrong = {"username": auth_registry.user, "password": "wrong-" + auth_registry.password}
    with pytest.raises(docker.errors.APIError) as refused:
        docker_client.login(registry=auth_registry.host, reauth=True, **wrong)
    assert "401" in str(refused.value) or "unauthorized" in str(refused.value).lower()

    repository, tag = f"{auth_registry.host}/smoke/busybox", uuid.uuid4().hex[:12]
    image = docker_client.images.get(testenv["GAZELLE_TEST_BUSYBOX_IMAGE"])
    image.tag(repository, tag)
    try:
        errors = [m["error"] for m in push(docker_client, repository, tag, wrong) if "error" in m]
        assert errors, "push with a wrong password was accepted"
        right = {"username": auth_registry.user, "password": auth_registry.password}
        assert not [m for m in push(docker_client, repository, tag, right) if "error" in m]
    finally:
        docker_client.images.remove(f"{repository}:{tag}")


def test_base_image_runs_this_python_minor(docker_client: Any, base_image: str) -> None:
    out = docker_client.containers.run(
        base_image, ["python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        network_mode="host", remove=True)
    assert out.decode().strip() == "%d.%d" % sys.version_info[:2]
