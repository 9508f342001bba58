"""The bearer-token challenge flow against the test environment's token-auth registry and its token
server (user ``gazelle`` may push ``gazelle/*``; ``gazelle-reader`` may only pull)."""
from __future__ import annotations

import uuid

import pytest

from gazelle.errors import RegistryError
from gazelle.server import oci
from gazelle.server.registry.client import RegistryClient
from gazelle.server.registry.keychain import StaticKeychain
from gazelle.server.registry.push import OCIRegistry, PushReport
from tests.conftest import TokenRegistry


def _push(host: str, user: str, password: str) -> tuple[oci.Image, PushReport]:
    image = oci.append(oci.empty(), oci.layer_from_files({"/opt/t/id": uuid.uuid4().bytes}))
    registry = OCIRegistry(RegistryClient(StaticKeychain(host, user, password), backoff=0.01))
    try:
        report = registry.push_image(image, f"{host}/gazelle/bearer-{uuid.uuid4().hex[:6]}", ["v1"],
                                     lambda line: None)
        body, _, digest = registry.client.manifest(host, report.ref.repository, "v1", [oci.OCI_MANIFEST])
    finally:
        registry.close()
    assert body == image.manifest_bytes and digest == image.digest
    return image, report


def test_a_bearer_registry_takes_a_push_with_a_token_from_its_realm(token_registry: TokenRegistry) -> None:
    image, report = _push(token_registry.host, token_registry.user, token_registry.password)
    assert set(report.uploaded) == {image.layers[0].digest, image.config_digest}


def test_a_token_refused_for_the_push_scope_is_a_registry_error_naming_registry_and_scope(token_registry: TokenRegistry) -> None:
    with pytest.raises(RegistryError) as raised:
        _push(token_registry.host, token_registry.pull_user, token_registry.pull_password)
    err = raised.value
    assert f"registry {token_registry.host} refused access to repository:gazelle/bearer-" in str(err)
    assert ":pull,push" in str(err) and not err.retryable
    assert token_registry.pull_password not in f"{err} {err.url} {err.hint}"


def test_a_wrong_password_at_the_token_service_names_the_registry_and_user_not_the_secret(token_registry: TokenRegistry) -> None:
    secret = "wrong-" + uuid.uuid4().hex
    with pytest.raises(RegistryError) as raised:
        _push(token_registry.host, token_registry.user, secret)
    err = raised.value
    assert f"the token service of registry {token_registry.host} refused the credentials of user {token_registry.user}" in str(err)
    assert err.status == 401 and secret not in f"{err} {err.url} {err.hint}"
