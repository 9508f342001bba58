"""Shared test wiring. A test that needs a service this machine lacks is skipped with the reason,
except under CI=true, where the missing service fails the run instead.

The services (Docker engine, registries, Kubernetes, PostgreSQL) are started by ``testenv/up.sh``
(``make testenv-up``; ``make test`` does it by itself), which writes their addresses and credentials
to an env file: ``$GAZELLE_TESTENV_ENV``, else ``$GAZELLE_TESTENV_DIR/env``, else
``/tmp/gazelle-testenv/env``. Variables already in ``os.environ`` win over the file. Every fixture
below checks that its service answers before handing it out.
"""
from __future__ import annotations

import os
import re
import shlex
import time
import uuid
from pathlib import Path
from typing import Any, Iterator, NamedTuple

import pytest

from tests.faultproxy import FaultProxy

IN_CI = os.environ.get("CI", "").lower() == "true"


def require(condition: bool, reason: str) -> None:
    """Skip (or, in CI, fail) unless ``condition`` holds."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"required service missing in CI: {reason}", pytrace=False)
    pytest.skip(reason)


# --- the test environment ------------------------------------------------------------------------

PROBE_TIMEOUT = 3.0


def testenv_file() -> Path:
    if os.environ.get("GAZELLE_TESTENV_ENV"):
        return Path(os.environ["GAZELLE_TESTENV_ENV"])
    return Path(os.environ.get("GAZELLE_TESTENV_DIR", "/tmp/gazelle-testenv")) / "env"


def testenv_vars() -> dict[str, str]:
    """The GAZELLE_TEST_* variables: the env file's ``export K=V`` lines, then os.environ on top."""
    values: dict[str, str] = {}
    try:
        text = testenv_file().read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        m = re.match(r"\s*(?:export\s+)?(GAZELLE_TEST_[A-Z0-9_]+)=(.*)$", line)
        if m:
            words = shlex.split(m.group(2))
            values[m.group(1)] = words[0] if words else ""
    values.update({k: v for k, v in os.environ.items() if k.startswith("GAZELLE_TEST_")})
    return values


def _missing(service: str) -> str:
    return f"{service} is not running: run `make testenv-up`"


def _http_status(url: str, auth: tuple[str, str] | None = None) -> int | None:
    import httpx

    try:
        return httpx.get(url, auth=auth, timeout=PROBE_TIMEOUT).status_code
    except httpx.HTTPError:
        return None


class AuthRegistry(NamedTuple):
    """The registry that wants basic auth: ``host`` is host:port."""

    host: str
    user: str
    password: str


class TokenRegistry(NamedTuple):
    """The registry with bearer-token auth: ``host`` is host:port, ``realm`` its token server's URL.
    ``user`` may pull, push and delete ``gazelle/*``; ``pull_user`` may only pull."""

    host: str
    realm: str
    user: str
    password: str
    pull_user: str
    pull_password: str


@pytest.fixture(scope="session")
def testenv() -> dict[str, str]:
    return testenv_vars()


@pytest.fixture(scope="session")
def registry_url(testenv: dict[str, str]) -> str:
    """host:port of the plain-HTTP registry without auth (127.0.0.1:5000)."""
    host = testenv.get("GAZELLE_TEST_REGISTRY", "")
    require(bool(host) and _http_status(f"http://{host}/v2/") == 200, _missing("the registry"))
    return host


@pytest.fixture(scope="session")
def auth_registry(testenv: dict[str, str]) -> AuthRegistry:
    """The basic-auth registry (127.0.0.1:5001) with the user and password it accepts."""
    host = testenv.get("GAZELLE_TEST_AUTH_REGISTRY", "")
    ok = bool(host) and _http_status(f"http://{host}/v2/") == 401
    require(ok, _missing("the authenticated registry"))
    return AuthRegistry(host, testenv.get("GAZELLE_TEST_AUTH_REGISTRY_USER", ""),
                        testenv.get("GAZELLE_TEST_AUTH_REGISTRY_PASSWORD", ""))


@pytest.fixture(scope="session")
def token_registry(testenv: dict[str, str]) -> TokenRegistry:
    """The bearer-token registry (127.0.0.1:5002) and its token server, with both users."""
    import httpx

    host = testenv.get("GAZELLE_TEST_TOKEN_REGISTRY", "")
    realm = testenv.get("GAZELLE_TEST_TOKEN_REGISTRY_REALM", "")
    ok = False
    if host and realm:
        try:
            challenge = httpx.get(f"http://{host}/v2/", timeout=PROBE_TIMEOUT)
            ok = (challenge.status_code == 401
                  and challenge.headers.get("www-authenticate", "").startswith("Bearer ")
                  and _http_status(realm) == 401)
        except httpx.HTTPError:
            ok = False
    require(ok, _missing("the token-auth registry"))
    v = testenv.get
    return TokenRegistry(host, realm, v("GAZELLE_TEST_TOKEN_REGISTRY_USER", ""),
                         v("GAZELLE_TEST_TOKEN_REGISTRY_PASSWORD", ""),
                         v("GAZELLE_TEST_TOKEN_REGISTRY_PULL_USER", ""),
                         v("GAZELLE_TEST_TOKEN_REGISTRY_PULL_PASSWORD", ""))


@pytest.fixture
def registry_proxy(registry_url: str) -> Iterator[FaultProxy]:
    """A ``tests.faultproxy.FaultProxy`` in front of the plain registry, fresh for each test: give a
    client ``registry_proxy.host`` instead of ``registry_url``; it counts the bytes that go up and
    injects the faults it is told to (``fail``, ``drop``)."""
    with FaultProxy(registry_url) as proxy:
        yield proxy


@pytest.fixture(scope="session")
def base_image(testenv: dict[str, str], registry_url: str) -> str:
    """The python base image in the plain registry (e.g. 127.0.0.1:5000/gazelle/python:3.11), whose
    python major.minor is this interpreter's."""
    ref = testenv.get("GAZELLE_TEST_BASE_IMAGE", "")
    present = False
    if ref.startswith(registry_url + "/") and ":" in ref[len(registry_url) + 1:]:
        repo, tag = ref[len(registry_url) + 1:].rsplit(":", 1)
        import httpx

        try:
            r = httpx.head(f"http://{registry_url}/v2/{repo}/manifests/{tag}", timeout=PROBE_TIMEOUT,
                           headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"})
            present = r.status_code == 200
        except httpx.HTTPError:
            pass
    require(present, _missing("the python base image") if ref else _missing("the registry"))
    return ref


@pytest.fixture(scope="session")
def docker_client(testenv: dict[str, str]) -> Iterator[Any]:
    """A docker.DockerClient on the test environment's private engine."""
    import docker

    host = testenv.get("GAZELLE_TEST_DOCKER_HOST", "")
    client = None
    if host:
        try:
            client = docker.DockerClient(base_url=host, version="auto", timeout=120)
            client.ping()
        except Exception:  # any failure to reach the engine means: not running
            client = None
    require(client is not None, _missing("the Docker engine"))
    yield client
    client.close()


def kube_api(kubeconfig: str) -> Any:
    """A kubernetes.client.ApiClient for that kubeconfig (not the process-wide default)."""
    from kubernetes import config

    return config.new_client_from_config(config_file=kubeconfig)


@pytest.fixture(scope="session")
def kubeconfig(testenv: dict[str, str]) -> str:
    """Path of the kubeconfig of the one-node test cluster (admin)."""
    path = testenv.get("GAZELLE_TEST_KUBECONFIG", "")
    ok = False
    if path and Path(path).is_file():
        from kubernetes import client

        try:
            with kube_api(path) as api:
                nodes = client.CoreV1Api(api).list_node(_request_timeout=PROBE_TIMEOUT).items
            ok = any(c.type == "Ready" and c.status == "True"
                     for n in nodes for c in (n.status.conditions or []))
        except Exception:  # unreachable, refused, bad config: the cluster is not there
            ok = False
    require(ok, _missing("the Kubernetes cluster"))
    return path


@pytest.fixture(scope="module")
def k8s_namespace(kubeconfig: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A namespace of its own for each test module: created, yielded, deleted."""
    from kubernetes import client

    stem = re.sub(r"[^a-z0-9]+", "-", request.module.__name__.rsplit(".", 1)[-1].lower()).strip("-")
    name = f"t-{stem[:40].strip('-')}-{uuid.uuid4().hex[:6]}"
    with kube_api(kubeconfig) as api:
        core = client.CoreV1Api(api)
        core.create_namespace({"metadata": {"name": name, "labels": {"gazelle-test": "1"}}})
        # pods are refused until the controller-manager has given the namespace its default account
        deadline = time.monotonic() + 60
        while True:
            try:
                core.read_namespaced_service_account("default", name)
                break
            except client.ApiException as e:
                if e.status != 404 or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        try:
            yield name
        finally:
            core.delete_namespace(name, _preload_content=False)


@pytest.fixture(scope="session")
def postgres_url(testenv: dict[str, str]) -> str:
    """postgresql://gazelle:<password>@127.0.0.1:55432/gazelle"""
    url = testenv.get("GAZELLE_TEST_POSTGRES_URL", "")
    ok = False
    if url:
        import psycopg

        try:
            with psycopg.connect(url, connect_timeout=int(PROBE_TIMEOUT)):
                ok = True
        except psycopg.Error:
            ok = False
    require(ok, _missing("PostgreSQL"))
    return url


# --- tiers ---------------------------------------------------------------------------------------

def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test under tests/integration or tests/e2e carries its tier's marker, so
    ``-m "not e2e"`` works even where a module forgot its ``pytestmark``. Under pytest-xdist the
    e2e tests come first (see ``pytest_xdist_make_scheduler``)."""
    for item in items:
        parts = Path(str(item.fspath)).parts
        if "integration" in parts:
            item.add_marker(pytest.mark.integration)
        elif "e2e" in parts:
            item.add_marker(pytest.mark.e2e)
    if os.environ.get("PYTEST_XDIST_WORKER"):
        items.sort(key=lambda item: not _is_e2e(item.nodeid))


def _is_e2e(nodeid: str) -> bool:
    return nodeid.startswith("tests/e2e/")


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """How ``make test`` shares the suite between its two pytest-xdist processes: every e2e test in one
    unit of work, run serially by one process, since they share one Docker engine, registry and
    cluster, and first, as the longest; every other module a unit of its own, so that its module
    fixtures are made once. (xdist's own ``--dist loadgroup`` does not group under this pytest.)"""
    from xdist.scheduler import LoadScopeScheduling

    class TierScheduling(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return "tests/e2e" if _is_e2e(nodeid) else nodeid.split("::", 1)[0]

    config.option.loadscopereorder = False   # collection order: the e2e unit first
    return TierScheduling(config, log)
