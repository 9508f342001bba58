"""The registry client against the test environment's real registries (plain :5000, basic auth :5001).

Faults (a 500 or a dropped connection in the middle of a blob upload) come from the fault proxy in
front of the real registry (``registry_proxy``); a registry that is down is a port nobody listens on.
"""
from __future__ import annotations

import json
import os
import socket
import uuid
from pathlib import Path

import pytest

from gazelle.errors import RegistryError
from gazelle.server import oci
from gazelle.server.registry.client import RegistryClient
from gazelle.server.registry.keychain import StaticKeychain
from gazelle.server.registry.push import OCIRegistry
from tests.conftest import AuthRegistry
from tests.faultproxy import FaultProxy


def _registry(keychain: StaticKeychain | None = None, **kw: object) -> OCIRegistry:
    client = RegistryClient(keychain or StaticKeychain("nowhere.invalid", "", ""), backoff=0.01, **kw)  # type: ignore[arg-type]
    return OCIRegistry(client)


def _repo(host: str) -> str:
    return f"{host}/gazelle-test/push-{uuid.uuid4().hex[:8]}"


def _image(base: oci.Image, payload: bytes = b"hello") -> oci.Image:
    layer = oci.layer_from_files({"/opt/test/payload.bin": payload, "/opt/test/id": uuid.uuid4().hex.encode()})
    return oci.configure(oci.append(base, layer), entrypoint=["python3", "-c", "print('hi')"], labels={"t": "1"})


@pytest.fixture(scope="module")
def base(base_image: str) -> oci.Image:
    registry = _registry()
    try:
        return registry.resolve(base_image)[1]
    finally:
        registry.close()


def test_resolving_the_base_by_tag_pins_the_registrys_digest(base_image: str, testenv: dict[str, str]) -> None:
    registry = _registry()
    try:
        name, image = registry.resolve(base_image)
    finally:
        registry.close()
    assert name.reference == testenv.get("GAZELLE_TEST_BASE_IMAGE_DIGEST", name.reference)
    assert name.reference.startswith("sha256:") and image.layers
    assert all(not layer.local and layer.origin is not None for layer in image.layers)


def test_pushed_image_reads_back_with_the_same_manifest_config_and_blobs(registry_url: str, base: oci.Image) -> None:
    image = _image(base)
    repository = _repo(registry_url)
    registry = _registry()
    try:
        report = registry.push_image(image, repository, ["v1-1", "latest"], lambda line: None)
        repo = repository.split("/", 1)[1]
        body, media_type, digest = registry.client.manifest(registry_url, repo, "v1-1", [oci.OCI_MANIFEST])
        blobs = {layer.digest: registry.client.blob(registry_url, repo, layer.digest)
                 for layer in image.layers if layer.local}
        config = registry.client.blob(registry_url, repo, image.config_digest)
        tags = registry.client.tags(registry_url, repo)
    finally:
        registry.close()
    assert str(report.ref) == f"{repository}@{image.digest}"
    assert (body, media_type, digest) == (image.manifest_bytes, oci.OCI_MANIFEST, image.digest)
    assert {d: oci.sha256(b) for d, b in blobs.items()} == {d: d for d in blobs}
    assert config == image.config_bytes and json.loads(config)["config"]["Labels"] == {"t": "1"}
    assert sorted(tags) == ["latest", "v1-1"]
    assert report.mounted == tuple(layer.digest for layer in base.layers), "base layers come by mount"


def test_pushing_the_same_image_again_sends_only_the_manifest(registry_url: str, base: oci.Image) -> None:
    image, repository = _image(base), _repo(registry_url)
    registry = _registry()
    try:
        registry.push_image(image, repository, ["a"], lambda line: None)
        again = registry.push_image(image, repository, ["b"], lambda line: None)
    finally:
        registry.close()
    assert again.uploaded == () and again.mounted == ()
    assert again.uploaded_bytes == len(image.manifest_bytes)


def test_a_file_larger_than_the_chunk_size_goes_up_in_chunks_and_reads_back(
        registry_url: str, base: oci.Image, tmp_path: Path) -> None:
    layer = oci.layer_from_files({"/opt/test/random": os.urandom(50_000)}, out=tmp_path / "layer.tar.gz")
    image, repository = oci.append(base, layer), _repo(registry_url)
    registry = OCIRegistry(RegistryClient(StaticKeychain("nowhere.invalid", "", "")), chunk_size=8192)
    try:
        report = registry.push_image(image, repository, [], lambda line: None)
        back = registry.client.blob(registry_url, repository.split("/", 1)[1], layer.digest)
    finally:
        registry.close()
    assert layer.data is None and back == (tmp_path / "layer.tar.gz").read_bytes() and layer.size > 8192
    assert report.uploaded_bytes == layer.size + len(image.config_bytes) + len(image.manifest_bytes)
    assert report.tags == () and report.ref.digest == image.digest


def test_deleting_the_manifest_leaves_nothing_to_pull(registry_url: str, base: oci.Image) -> None:
    image, repository = _image(base), _repo(registry_url)
    repo = repository.split("/", 1)[1]
    registry = _registry()
    try:
        registry.push_image(image, repository, ["gone"], lambda line: None)
        registry.client.delete(registry_url, repo, image.digest)
        with pytest.raises(RegistryError) as raised:
            registry.client.manifest(registry_url, repo, image.digest, [oci.OCI_MANIFEST])
    finally:
        registry.close()
    assert raised.value.status == 404 and raised.value.registry_code == "MANIFEST_UNKNOWN"


def test_the_basic_auth_registry_takes_the_keychains_password(auth_registry: AuthRegistry, base: oci.Image) -> None:
    keychain = StaticKeychain(auth_registry.host, auth_registry.user, auth_registry.password)
    registry = _registry(keychain)
    try:
        report = registry.push_image(_image(base), _repo(auth_registry.host), ["v1"], lambda line: None)
    finally:
        registry.close()
    # another registry's base layers cannot be mounted: they were copied through this process
    assert report.mounted == () and len(report.uploaded) == len(base.layers) + 2


def test_a_wrong_password_is_a_registry_error_naming_the_registry_and_not_the_secret(
        auth_registry: AuthRegistry) -> None:
    secret = "wrong-" + uuid.uuid4().hex
    registry = _registry(StaticKeychain(auth_registry.host, auth_registry.user, secret))
    try:
        with pytest.raises(RegistryError) as raised:
            registry.push_image(oci.append(oci.empty(), oci.layer_from_files({"/x": b"x"})),
                                _repo(auth_registry.host), ["v1"], lambda line: None)
    finally:
        registry.close()
    err = raised.value
    assert f"registry {auth_registry.host} rejected the credentials of user {auth_registry.user}" in str(err)
    assert err.status == 401 and not err.retryable
    assert secret not in f"{err} {err.url} {err.detail} {err.hint}"


def test_no_credentials_for_an_auth_registry_says_it_needs_them(auth_registry: AuthRegistry) -> None:
    registry = _registry()
    try:
        with pytest.raises(RegistryError, match=f"registry {auth_registry.host} needs credentials"):
            registry.client.tags(auth_registry.host, "gazelle-test/anything")
    finally:
        registry.close()


def test_a_registry_that_is_down_is_a_retryable_error_naming_it() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        host = f"127.0.0.1:{s.getsockname()[1]}"
    registry = _registry(retries=1)
    try:
        with pytest.raises(RegistryError, match=f"registry {host} is unreachable") as raised:
            registry.resolve(f"{host}/gazelle/python:3.11")
    finally:
        registry.close()
    assert raised.value.retryable and raised.value.status is None


def test_one_500_in_the_middle_of_a_blob_upload_is_retried_and_the_push_succeeds(
        registry_proxy: FaultProxy) -> None:
    image = _image(oci.empty())   # a base in another registry would be copied
    fault = registry_proxy.fail("PUT", r"/blobs/uploads/")
    registry = _registry()
    try:
        report = registry.push_image(image, _repo(registry_proxy.host), ["v1"], lambda line: None)
        body, _, _ = registry.client.manifest(registry_proxy.host, report.ref.repository, "v1", [oci.OCI_MANIFEST])
    finally:
        registry.close()
    assert fault.fired == 1 and body == image.manifest_bytes
    assert registry_proxy.uploaded_blobs() == {layer.digest: layer.size for layer in image.layers} | {
        image.config_digest: len(image.config_bytes)}


def test_a_connection_dropped_during_a_blob_upload_is_retried_and_the_push_succeeds(
        registry_proxy: FaultProxy) -> None:
    image = _image(oci.empty())
    fault = registry_proxy.drop("PUT", r"/blobs/uploads/")
    registry = _registry()
    try:
        report = registry.push_image(image, _repo(registry_proxy.host), ["v1"], lambda line: None)
    finally:
        registry.close()
    assert fault.fired == 1 and report.ref.digest == image.digest
    assert set(report.uploaded) == {image.layers[-1].digest, image.config_digest}


def test_a_500_that_persists_ends_in_a_retryable_registry_error(registry_proxy: FaultProxy) -> None:
    fault = registry_proxy.fail("PUT", r"/blobs/uploads/", times=100)
    registry = _registry(retries=2)
    try:
        with pytest.raises(RegistryError) as raised:
            registry.push_image(_image(oci.empty()), _repo(registry_proxy.host), ["v1"], lambda line: None)
    finally:
        registry.close()
    err = raised.value
    assert err.status == 500 and err.retryable
    assert f"registry {registry_proxy.host} could not upload the blob" in str(err)
    assert fault.fired == 3, "the first try and two retries"
    assert err.url is not None and "_state=***" in err.url
