"""The test environment's bearer-token registry and its token server, over the real protocol: the
registry's 401 challenge names the realm, service and scope; the token server grants what a user
may do of what the scope asks; the registry honours exactly what the token grants. The registry
client's own tests rely on these behaviours ("a bearer-token registry refusing the scope")."""
from __future__ import annotations

import base64
import hashlib
import json
import re
import uuid
from typing import Any

import httpx
import pytest

from tests.conftest import TokenRegistry
from tests.faultproxy import FaultProxy

pytestmark = pytest.mark.e2e

TIMEOUT = 10.0


def challenge(response: httpx.Response) -> dict[str, str]:
    """The parameters of a ``WWW-Authenticate: Bearer k="v",...`` header."""
    header = response.headers.get("www-authenticate", "")
    assert header.startswith("Bearer "), header
    return dict(re.findall(r'(\w+)="([^"]*)"', header))


def claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def get_token(reg: TokenRegistry, user: str, password: str, scope: str) -> httpx.Response:
    params = {"service": "gazelle-test-registry", "scope": scope}
    return httpx.get(reg.realm, params=params, auth=(user, password), timeout=TIMEOUT)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def upload_blob(host: str, repository: str, data: bytes, token: str) -> httpx.Response:
    """Monolithic upload (POST, then PUT with the digest); returns the last answer."""
    start = httpx.post(f"http://{host}/v2/{repository}/blobs/uploads/", headers=bearer(token),
                       timeout=TIMEOUT)
    if start.status_code != 202:
        return start
    location = httpx.URL(f"http://{host}").join(start.headers["location"])
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    return httpx.put(location.copy_merge_params({"digest": digest}), content=data,
                     headers={**bearer(token), "Content-Type": "application/octet-stream"},
                     timeout=TIMEOUT)


@pytest.fixture
def repository() -> str:
    return f"gazelle/token-test-{uuid.uuid4().hex[:8]}"


def test_registry_challenge_names_token_server_service_and_scope(token_registry: TokenRegistry,
                                                                  repository: str) -> None:
    r = httpx.post(f"http://{token_registry.host}/v2/{repository}/blobs/uploads/", timeout=TIMEOUT)
    assert r.status_code == 401
    params = challenge(r)
    assert params["realm"] == token_registry.realm
    assert params["service"] == "gazelle-test-registry"
    kind, name, actions = params["scope"].split(":")
    # the registry lists the actions in no fixed order
    assert (kind, name, sorted(actions.split(","))) == ("repository", repository, ["pull", "push"])


def test_push_user_uploads_a_blob_and_pull_user_reads_it(token_registry: TokenRegistry,
                                                         repository: str) -> None:
    reg = token_registry
    push = get_token(reg, reg.user, reg.password, f"repository:{repository}:pull,push")
    assert push.status_code == 200
    token = push.json()["token"]
    assert claims(token)["access"] == [{"type": "repository", "name": repository,
                                        "actions": ["pull", "push"]}]
    data = uuid.uuid4().bytes * 64
    done = upload_blob(reg.host, repository, data, token)
    assert done.status_code == 201, done.text

    pull = get_token(reg, reg.pull_user, reg.pull_password, f"repository:{repository}:pull").json()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    blob = httpx.get(f"http://{reg.host}/v2/{repository}/blobs/{digest}", headers=bearer(pull["token"]),
                     timeout=TIMEOUT, follow_redirects=True)
    assert blob.status_code == 200
    assert blob.content == data


def test_pull_user_asking_for_push_gets_pull_only_and_registry_refuses_the_scope(
        token_registry: TokenRegistry, repository: str) -> None:
    reg = token_registry
    r = get_token(reg, reg.pull_user, reg.pull_password, f"repository:{repository}:pull,push")
    assert r.status_code == 200
    token = r.json()["token"]
    assert claims(token)["access"] == [{"type": "repository", "name": repository, "actions": ["pull"]}]

    refused = upload_blob(reg.host, repository, b"not allowed", token)
    assert refused.status_code == 401
    assert challenge(refused)["error"] == "insufficient_scope"
    assert refused.json()["errors"][0]["code"] == "UNAUTHORIZED"


def test_push_user_gets_nothing_outside_gazelle_repositories(token_registry: TokenRegistry) -> None:
    reg = token_registry
    r = get_token(reg, reg.user, reg.password, "repository:other/app:pull,push")
    assert r.status_code == 200
    token = r.json()["token"]
    assert claims(token)["access"] == []
    listed = httpx.get(f"http://{reg.host}/v2/other/app/tags/list", headers=bearer(token), timeout=TIMEOUT)
    assert listed.status_code == 401
    assert challenge(listed)["error"] == "insufficient_scope"


@pytest.mark.parametrize("who", ["wrong password", "unknown user", "no credentials"])
def test_token_server_refuses_bad_credentials(token_registry: TokenRegistry, who: str) -> None:
    reg = token_registry
    params = {"service": "gazelle-test-registry", "scope": "repository:gazelle/x:pull"}
    auth = {"wrong password": (reg.user, reg.password + "x"), "unknown user": ("mallory", reg.password),
            "no credentials": None}[who]
    r = httpx.get(reg.realm, params=params, auth=auth, timeout=TIMEOUT)
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Basic ")
    assert reg.password not in r.text


def test_token_server_accepts_the_oauth2_password_grant(token_registry: TokenRegistry,
                                                        repository: str) -> None:
    reg = token_registry
    form = {"grant_type": "password", "username": reg.user, "password": reg.password,
            "service": "gazelle-test-registry", "scope": f"repository:{repository}:pull",
            "client_id": "gazelle-tests"}
    r = httpx.post(reg.realm, data=form, timeout=TIMEOUT)
    assert r.status_code == 200
    access = claims(r.json()["access_token"])
    assert access["aud"] == "gazelle-test-registry"
    assert access["access"] == [{"type": "repository", "name": repository, "actions": ["pull"]}]
    tags = httpx.get(f"http://{reg.host}/v2/{repository}/tags/list",
                     headers=bearer(r.json()["access_token"]), timeout=TIMEOUT)
    assert tags.status_code == 404   # authorised; the repository does not exist yet
    assert tags.json()["errors"][0]["code"] == "NAME_UNKNOWN"


def test_token_server_rejects_another_service_and_a_malformed_scope(token_registry: TokenRegistry) -> None:
    reg = token_registry
    auth = (reg.user, reg.password)
    other = httpx.get(reg.realm, params={"service": "elsewhere", "scope": "repository:gazelle/x:pull"},
                      auth=auth, timeout=TIMEOUT)
    assert other.status_code == 400
    assert "elsewhere" in other.text
    malformed = httpx.get(reg.realm, params={"scope": "gazelle-x-pull"}, auth=auth, timeout=TIMEOUT)
    assert malformed.status_code == 400
    assert "gazelle-x-pull" in malformed.text


def test_a_fault_proxy_in_front_of_the_token_registry_counts_an_authorised_upload(
        token_registry: TokenRegistry, repository: str) -> None:
    reg = token_registry
    token = get_token(reg, reg.user, reg.password, f"repository:{repository}:pull,push").json()["token"]
    data = uuid.uuid4().bytes * 100
    with FaultProxy(reg.host) as proxy:
        refused = upload_blob(proxy.host, repository, data, "not-a-token")
        assert refused.status_code == 401   # the registry's answer, relayed
        assert upload_blob(proxy.host, repository, data, token).status_code == 201
    assert proxy.uploaded_blobs() == {"sha256:" + hashlib.sha256(data).hexdigest(): len(data)}
