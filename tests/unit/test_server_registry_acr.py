"""The Azure Container Registry adapter (gazelle.server.registry.acr).

No ACR runs on this machine: these tests run Microsoft's real ``ContainerRegistryClient`` (its whole
pipeline: the challenge policy, the Azure AD -> ACR token exchange, paging, deserialisation) against
recorded HTTP exchanges replayed through an azure-core transport (tests/unit/_acr_replay.py). The
recordings (tests/unit/recordings/acr/) are hand-made in ACR's data-plane shapes, and hold exactly
the requests the pinned SDK sends; any other request fails the test, and so does a recorded request
that never came. Azure AD is faked too: ``StaticCredential`` hands out one fixed token.
"""
from __future__ import annotations

from typing import Any

import pytest
from azure.containerregistry import ContainerRegistryClient
from azure.core.exceptions import ServiceRequestError

from gazelle.errors import ConfigError, RegistryError
from gazelle.server.registry.acr import Deleted, ModelTag, list_tags, parse_tag, prune
from tests.unit._acr_replay import ReplayTransport, StaticCredential, UnexpectedRequest, load

ENDPOINT = "https://gazelletest.azurecr.io"
REPO = "gazelle/accounts"
AAD_TOKEN = "aad-access-token-placeholder"
SECRETS = (AAD_TOKEN, "acr-access-token-placeholder", "eyJhbGciOi")


def digest(n: int) -> str:
    return "sha256:" + f"{n:02x}" * 32


def client_for(transport: Any, credential: StaticCredential | None = None) -> ContainerRegistryClient:
    return ContainerRegistryClient(ENDPOINT, credential or StaticCredential(AAD_TOKEN), transport=transport)


def test_prune_deletes_versions_past_retention_but_never_protected_locked_or_foreign_ones() -> None:
    # the registry holds v1..v8: v3 (a rollback target) and v7 (live) are protected, v4 is locked,
    # v5 also carries "latest", one manifest is untagged, v8 has two tags; keep the 3 newest
    transport = ReplayTransport.of("prune.json")
    credential = StaticCredential(AAD_TOKEN)
    deleted = prune(client_for(transport, credential), REPO, 3, {digest(7), digest(3)})
    assert deleted == [Deleted(digest(1), (1,), ("v1-1700000100",)),
                       Deleted(digest(2), (2,), ("v2-1700000200",))]
    transport.assert_done()
    assert credential.scopes == [("https://containerregistry.azure.net/.default",)]


def test_prune_within_retention_lists_once_and_deletes_nothing() -> None:
    listing_only = load("prune.json")[:4]   # challenge, token exchange, the manifests
    transport = ReplayTransport(listing_only)
    assert prune(client_for(transport), REPO, 10, set()) == []
    transport.assert_done()


def test_prune_counts_a_foreign_tagged_version_toward_retention() -> None:
    # keep=6: v8..v3 are the newest six only if v5 (whose manifest also carries "latest", so it is
    # never deleted) counts as a version; then v2 and v1 are past retention, else only v1 would be
    transport = ReplayTransport.of("prune.json")
    deleted = prune(client_for(transport), REPO, 6, {digest(7), digest(3)})
    assert [d.digest for d in deleted] == [digest(1), digest(2)]
    transport.assert_done()


def test_refused_delete_raises_registry_error_naming_registry_and_manifest_without_tokens() -> None:
    transport = ReplayTransport.of("prune_denied.json")
    with pytest.raises(RegistryError) as info:
        prune(client_for(transport), REPO, 1, set())
    err = info.value
    transport.assert_done()
    assert err.status == 401 and err.registry_code == "UNAUTHORIZED" and not err.retryable
    assert str(err).startswith(f"gazelletest.azurecr.io refused deleting {REPO}@{digest(1)} (version 1): "
                               "401 UNAUTHORIZED")
    assert "AcrDelete" in (err.hint or "")
    assert err.url == f"{ENDPOINT}/v2/gazelle%2Faccounts/manifests/sha256%3A{'01' * 32}"
    assert err.detail == "deleted before the failure: nothing"
    shown = " ".join([str(err), err.detail or "", err.url or "", repr(err.to_json())])
    assert not [s for s in SECRETS if s in shown]


def test_list_tags_follows_the_link_header_and_leaves_out_other_tags() -> None:
    transport = ReplayTransport.of("tags_paged.json")
    tags = list_tags(client_for(transport), REPO, page_size=2)
    assert tags == [ModelTag("v3-1700000300", 3, 1700000300, digest(3)),
                    ModelTag("v2-1700000200", 2, 1700000200, digest(2)),
                    ModelTag("v1-1700000100", 1, 1700000100, digest(1))]
    transport.assert_done()
    assert [url for _, url in transport.sent][-1].endswith("/_tags?last=v1-1700000100&n=2&orderby=")


def test_list_tags_of_an_unknown_repository_raises_registry_error_with_acr_code() -> None:
    transport = ReplayTransport.of("tags_unknown_repository.json")
    with pytest.raises(RegistryError) as info:
        list_tags(client_for(transport), REPO)
    assert info.value.status == 404 and info.value.registry_code == "NAME_UNKNOWN"
    assert str(info.value) == ("gazelletest.azurecr.io refused listing the tags of gazelle/accounts: "
                               "404 NAME_UNKNOWN: repository name not known to registry")


def test_unreachable_registry_is_a_retryable_registry_error() -> None:
    class Unreachable(ReplayTransport):
        def send(self, request: Any, **kwargs: Any) -> Any:
            raise ServiceRequestError("connection refused")

    client = ContainerRegistryClient(ENDPOINT, StaticCredential(AAD_TOKEN), transport=Unreachable([]),
                                     retry_total=0)
    with pytest.raises(RegistryError) as info:
        list_tags(client, REPO)
    assert info.value.retryable and info.value.status is None
    assert str(info.value) == ("gazelletest.azurecr.io could not be reached while listing the tags of "
                               "gazelle/accounts: ServiceRequestError")


def test_replay_fails_the_test_on_a_request_the_recording_does_not_have() -> None:
    transport = ReplayTransport.of("tags_paged.json")
    with pytest.raises(UnexpectedRequest, match="_manifests"):
        prune(client_for(transport), REPO, 3, set())


@pytest.mark.parametrize("keep", [0, -1, True, "3"])
def test_prune_refuses_a_retention_below_one_before_any_request(keep: Any) -> None:
    with pytest.raises(ConfigError, match="versions to keep"):
        prune(client_for(ReplayTransport([])), REPO, keep, set())


def test_prune_refuses_a_protected_digest_that_is_not_one() -> None:
    with pytest.raises(ConfigError, match="'v7-1700000700'"):
        prune(client_for(ReplayTransport([])), REPO, 3, {"v7-1700000700"})


@pytest.mark.parametrize("tag, parsed", [
    ("v3-1700000000", (3, 1700000000)), ("v12-1", (12, 1)),
    ("latest", None), ("v3", None), ("3-1700000000", None), ("v-1", None), ("v3-17x", None),
])
def test_parse_tag_reads_only_version_tags(tag: str, parsed: tuple[int, int] | None) -> None:
    assert parse_tag(tag) == parsed
