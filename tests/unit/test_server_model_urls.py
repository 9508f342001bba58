"""The URL the server reports for a model: its own Ingress on Kubernetes with a host template (so the
build server is not in the data path), else the gateway; the gateway URL is always there beside it."""
from __future__ import annotations

from pathlib import Path

import pytest

from gazelle.server.settings import Settings
from gazelle.server.urls import ModelUrls
from tests.unit._server import bundle_bytes, start

K8S = {"target": "kubernetes", "registry": "127.0.0.1:5000/models", "k8s_ingress_host": "{name}.models.example.com"}


@pytest.mark.parametrize("settings, url", [
    (Settings(), "http://127.0.0.1:8000/m/accounts"),
    (Settings(public_url="https://ml.example.com/"), "https://ml.example.com/m/accounts"),
    (Settings(target="kubernetes"), "http://127.0.0.1:8000/m/accounts"),
    (Settings(**K8S), "http://accounts.models.example.com"),
    (Settings(**K8S, k8s_ingress_tls_secret="models-tls"), "https://accounts.models.example.com"),
    # the template means something only to the target that makes the Ingress
    (Settings(target="docker", k8s_ingress_host="{name}.models.example.com"), "http://127.0.0.1:8000/m/accounts"),
], ids=["local", "public-url", "k8s-no-template", "k8s-ingress", "k8s-ingress-tls", "docker-with-template"])
def test_the_reported_url_is_the_ingress_only_where_the_target_makes_one(settings: Settings, url: str) -> None:
    urls = ModelUrls.of(settings)
    assert urls.model("accounts") == url
    assert urls.gateway("accounts") == f"{settings.base_url}/m/accounts"
    assert urls.of_model("accounts") == {"url": url, "gateway_url": f"{settings.base_url}/m/accounts"}


def test_the_api_reports_the_ingress_as_url_and_keeps_the_gateway_beside_it(tmp_path: Path) -> None:
    server = start(tmp_path, **K8S)
    try:
        accepted = server.upload("lens", bundle_bytes("lens")).get_json()
        assert (accepted["url"], accepted["gateway_url"]) == ("http://lens.models.example.com",
                                                              "http://127.0.0.1:8000/m/lens")
        job = server.get(f"/api/v1/jobs/{accepted['job']}").get_json()
        assert (job["url"], job["gateway_url"]) == (accepted["url"], accepted["gateway_url"])
        model = server.get("/api/v1/models/lens").get_json()
        assert (model["url"], model["gateway_url"]) == (accepted["url"], accepted["gateway_url"])
        (listed,) = server.get("/api/v1/models").get_json()["models"]
        assert listed["url"] == "http://lens.models.example.com"
    finally:
        server.state.shutdown()


def test_without_a_template_both_urls_are_the_gateway(tmp_path: Path) -> None:
    server = start(tmp_path)
    try:
        server.upload("lens", bundle_bytes("lens"))
        model = server.get("/api/v1/models/lens").get_json()
        assert model["url"] == model["gateway_url"] == "http://127.0.0.1:8000/m/lens"
    finally:
        server.state.shutdown()
