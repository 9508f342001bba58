"""Azure Container Registry housekeeping: list a model's image tags, delete old versions past a retention.

Scope: what ACR adds to the OCI distribution protocol that ``Registry.push`` speaks, through
Microsoft's ``azure-containerregistry`` client: listing a repository's tags (``/acr/v1/{repo}/_tags``)
and manifests with their tags (``/acr/v1/{repo}/_manifests``), and deleting a manifest by digest
(``DELETE /v2/{repo}/manifests/{digest}``, which removes every tag on it). The caller builds the
``ContainerRegistryClient`` with its endpoint and credential (an ``azure.identity`` credential for
Azure AD, whose token the client exchanges at ``/oauth2/exchange`` and ``/oauth2/token``; None for
anonymous read): this module reads no setting and opens no connection of its own. The build server
does not call it yet (it has no Azure AD credential to build a client with): it is for a cleanup job
or a script that has one.

Tags follow ``v{version}-{unix time}`` in the model's image repository (``{prefix}/{name}``).
``prune`` keeps the ``keep`` highest versions and deletes the manifests of the others, except:

- a digest in ``protect``: the live version and every one a rollback could need. Deployments run
  images by digest, so the caller must protect each digest a target still runs or may run again;
- a manifest with no version tag (untagged, or pushed by someone else) or with any tag that is not a
  version tag (``latest``, a human's tag): deleting it would take that tag away;
- a manifest ACR has locked (``deleteEnabled: false``).

Limits: versions are compared as integers, a manifest tagged with several versions counts as each
of them (kept if any is kept); deletions run one by one, oldest version first, so a failure stops
midway, and the ``RegistryError`` lists on ``detail`` what was deleted before it. Registry errors
carry the registry, the status and ACR's error code, never a token.
"""
from __future__ import annotations

import json
import re
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Collection, Iterable, Iterator, Protocol

from azure.core.exceptions import AzureError, HttpResponseError

from gazelle.errors import ConfigError, RegistryError

TAG = re.compile(r"^v(?P<version>[0-9]+)-(?P<time>[0-9]+)$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
PAGE_SIZE = 100      # entries per page asked of ACR's _tags and _manifests


class TagClient(Protocol):
    """What this module uses of ``azure.containerregistry.ContainerRegistryClient``."""

    def list_tag_properties(self, repository: str, **kwargs: Any) -> Iterable[Any]: ...

    def list_manifest_properties(self, repository: str, **kwargs: Any) -> Iterable[Any]: ...

    def delete_manifest(self, repository: str, tag_or_digest: str, **kwargs: Any) -> None: ...


@dataclass(frozen=True)
class ModelTag:
    """One version tag of a model's image: ``v{version}-{pushed_at}`` on ``digest``."""

    tag: str
    version: int
    pushed_at: int       # unix time, from the tag
    digest: str


@dataclass(frozen=True)
class Deleted:
    """A manifest ``prune`` deleted, with the versions and tags that went with it."""

    digest: str
    versions: tuple[int, ...]
    tags: tuple[str, ...]


def parse_tag(tag: str) -> tuple[int, int] | None:
    """``v3-1700000000`` -> (3, 1700000000); None for a tag that is not a version tag."""
    m = TAG.match(tag)
    return (int(m.group("version")), int(m.group("time"))) if m else None


def list_tags(client: TagClient, repository: str, *, page_size: int = PAGE_SIZE) -> list[ModelTag]:
    """The version tags of ``repository``, newest version first (then newest push); other tags are
    left out."""
    tags: list[ModelTag] = []
    with _errors(client, f"listing the tags of {repository}"):
        for props in client.list_tag_properties(repository, results_per_page=page_size):
            parsed = parse_tag(props.name)
            if parsed is not None:
                tags.append(ModelTag(props.name, parsed[0], parsed[1], props.digest))
    return sorted(tags, key=lambda t: (t.version, t.pushed_at), reverse=True)


def prune(client: TagClient, repository: str, keep: int, protect: Collection[str]) -> list[Deleted]:
    """Delete the manifests of every version of ``repository`` past the ``keep`` highest, except the
    ``protect`` digests and what the module docstring lists; returns what was deleted, oldest first."""
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise ConfigError(f"keep: the versions to keep must be an integer of at least 1, got {keep!r}")
    bad = sorted(d for d in protect if not _DIGEST.match(d))
    if bad:
        raise ConfigError(f"digests to protect must look like sha256:<64 hex>, got {', '.join(map(repr, bad))}")
    with _errors(client, f"listing the manifests of {repository}"):
        manifests = list(client.list_manifest_properties(repository, results_per_page=PAGE_SIZE))
    found: set[int] = set()
    candidates: list[tuple[Any, tuple[int, ...]]] = []
    for m in manifests:
        tags = list(m.tags or [])
        parsed = [parse_tag(t) for t in tags]
        versions_of_m = {p[0] for p in parsed if p is not None}
        found |= versions_of_m
        # a foreign tag on the manifest (or none at all) makes it someone else's: never a candidate
        if versions_of_m and None not in parsed:
            candidates.append((m, tuple(sorted(versions_of_m))))
    kept = set(sorted(found, reverse=True)[:keep])
    doomed = [(m, vs) for m, vs in candidates
              if m.digest not in protect and not kept.intersection(vs) and m.can_delete is not False]
    deleted: list[Deleted] = []
    for m, vs in sorted(doomed, key=lambda pair: (pair[1][-1], pair[0].digest)):
        done = "deleted before the failure: " + (", ".join(d.digest for d in deleted) or "nothing")
        with _errors(client, f"deleting {repository}@{m.digest} (version {vs[-1]})", detail=done):
            client.delete_manifest(repository, m.digest)
        deleted.append(Deleted(m.digest, vs, tuple(sorted(m.tags))))
    return deleted


@contextmanager
def _errors(client: TagClient, action: str, detail: str | None = None) -> Iterator[None]:
    """Turns the SDK's exceptions into one ``RegistryError`` naming the registry and the action."""
    try:
        yield
    except HttpResponseError as exc:
        if exc.status_code is None:
            raise _unreachable(client, action, exc, detail) from None
        status = int(exc.status_code)
        code, message = _acr_error(exc.response)
        hint = None
        if status in (401, 403):
            hint = ("the credential needs the AcrDelete role (or Contributor) on the registry"
                    if action.startswith("deleting") else
                    "the credential needs read access (AcrPull, or Reader) on the registry")
        said = f"{status} {code}: {message}" if code else f"{status} {message}"
        raise RegistryError(f"{_registry(client)} refused {action}: {said}", status=status,
                            registry_code=code, retryable=status in (429, 500, 502, 503, 504),
                            url=_redacted_url(exc.response), hint=hint, detail=detail) from None
    except AzureError as exc:
        raise _unreachable(client, action, exc, detail) from None


def _unreachable(client: TagClient, action: str, exc: AzureError, detail: str | None) -> RegistryError:
    return RegistryError(f"{_registry(client)} could not be reached while {action}: {type(exc).__name__}",
                         retryable=True, detail=detail)


def _registry(client: TagClient) -> str:
    # the SDK keeps the endpoint it was built with only on this attribute
    endpoint = str(getattr(client, "_endpoint", "") or "Azure Container Registry")
    return endpoint.removeprefix("https://").removeprefix("http://").rstrip("/")


def _acr_error(response: Any) -> tuple[str | None, str]:
    """ACR's ``{"errors": [{"code", "message"}]}`` -> (code, message); the reason phrase otherwise."""
    reason = str(getattr(response, "reason", "") or "")
    try:
        first = json.loads(response.text())["errors"][0]
        return str(first.get("code") or "") or None, str(first.get("message") or reason)
    except (AttributeError, ValueError, KeyError, IndexError, TypeError):
        return None, reason


def _redacted_url(response: Any) -> str | None:
    """The request's URL without its query (ACR puts no credential in URLs; a query could hold one)."""
    url = getattr(getattr(response, "request", None), "url", None)
    return str(url).split("?", 1)[0] if url else None
