"""Resources of a version: the defaults, both shapes of DESIGN section 1, and errors naming the field."""
from __future__ import annotations

from typing import Any

import pytest

from gazelle.errors import BadRequest
from gazelle.server.resources import parse as parse_resources


def test_default_resources_request_memory_and_cpu_and_limit_memory() -> None:
    assert parse_resources(None) == {"requests": {"cpu": "100m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}}


def test_shorthand_resources_are_requests_and_the_memory_limit() -> None:
    assert parse_resources({"cpu": "500m", "memory": "2Gi"}) == {
        "requests": {"cpu": "500m", "memory": "2Gi"}, "limits": {"memory": "2Gi"}}


def test_kubernetes_shape_resources_are_merged_over_the_defaults() -> None:
    out = parse_resources({"requests": {"cpu": "250m"}, "limits": {"memory": "768Mi", "cpu": "1"}})
    assert out == {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": "768Mi", "cpu": "1"}}


@pytest.mark.parametrize("spec, field", [
    ({"cpu": "lots"}, "resources.cpu"),
    ({"requests": {"memory": "1 GB"}}, "resources.requests.memory"),
    ({"gpu": "1"}, "resources.gpu"),
    ({"requests": "1Gi"}, "resources.requests"),
    ({"requests": {"memory": "2Gi"}, "limits": {"memory": "1Gi"}}, "resources.requests.memory"),
])
def test_bad_resources_are_refused_naming_the_field(spec: dict[str, Any], field: str) -> None:
    with pytest.raises(BadRequest) as refused:
        parse_resources(spec)
    assert str(refused.value).startswith(field + ":")
