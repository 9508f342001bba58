"""Resources of a deploy: Kubernetes quantities and both shapes of DESIGN section 1."""
from __future__ import annotations

from decimal import Decimal

import pytest

from gazelle.errors import BadRequest
from gazelle.server.targets.resources import Resources, parse_quantity


@pytest.mark.parametrize("text, expected", [
    ("500m", Decimal("0.5")), ("2", Decimal(2)), ("0.25", Decimal("0.25")), (1, Decimal(1)),
    ("1Gi", Decimal(1 << 30)), ("512Mi", Decimal(512 << 20)), ("1G", Decimal(10 ** 9)),
    ("1.5Gi", Decimal(3 << 29)), ("1e3", Decimal(1000)), ("128974848", Decimal(128974848)),
    ("64k", Decimal(64000)), ("100Ki", Decimal(102400)),
])
def test_quantities_parse_as_kubernetes_does(text, expected):
    assert parse_quantity(text, "resources.limits.memory") == expected


@pytest.mark.parametrize("text", ["1Gb", "one", "", "-1Gi", "1 Gi", "Gi", "1ki", "0"])
def test_a_bad_quantity_names_the_field(text):
    with pytest.raises(BadRequest) as err:
        parse_quantity(text, "resources.limits.memory")
    assert str(err.value).startswith("resources.limits.memory: ")


def test_the_kubernetes_shape_keeps_requests_and_limits_apart():
    res = Resources.of({"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}})
    assert res.memory_limit == 1 << 30
    assert res.memory_request == 512 << 20
    assert res.cpus == Decimal("0.25")


def test_the_shorthand_means_requests_and_a_memory_limit_of_the_same_size():
    res = Resources.of({"cpu": "500m", "memory": "1Gi"})
    assert res.requests == {"cpu": Decimal("0.5"), "memory": Decimal(1 << 30)}
    assert res.limits == {"memory": Decimal(1 << 30)}
    assert res.memory_limit == 1 << 30


def test_a_cpu_limit_wins_over_the_request():
    assert Resources.of({"requests": {"cpu": "1"}, "limits": {"cpu": "1500m"}}).cpus == Decimal("1.5")


def test_no_resources_ask_for_nothing():
    res = Resources.of(None)
    assert (res.memory_limit, res.memory_request, res.cpus) == (None, None, None)


@pytest.mark.parametrize("value, field", [
    ({"gpu": "1"}, "resources.gpu"),
    ({"limits": {"memory": "1Gi"}, "memory": "1Gi"}, "resources.memory"),
    ({"limits": {"memory": "1Gx"}}, "resources.limits.memory"),
    ({"requests": "1Gi"}, "resources.requests"),
    ({"requests": {"memory": "2Gi"}, "limits": {"memory": "1Gi"}}, "resources.limits.memory"),
    ({"memory": "10k"}, "resources.memory"),
    ({"cpu": True}, "resources.cpu"),
])
def test_a_wrong_shape_names_the_field(value, field):
    with pytest.raises(BadRequest) as err:
        Resources.of(value)
    assert str(err.value).startswith(f"{field}: ")
