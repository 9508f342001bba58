"""The front's choice (``resolve``) and the nginx config it renders (``Front.render``)."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from gazelle.errors import ConfigError
from gazelle.server import front
from gazelle.server.front import Front, Listen
from gazelle.server.gateway import Route

LISTEN = Listen("127.0.0.1", 8123, header_timeout=7, body_timeout=9, per_client=50)


def test_auto_uses_nginx_for_one_machine_targets_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(front.shutil, "which", lambda name: "/usr/bin/nginx")
    assert front.resolve("auto", "local") == "nginx"
    assert front.resolve("auto", "docker") == "nginx"
    assert front.resolve("auto", "kubernetes") == "off"
    assert front.resolve("off", "local") == "off"


def test_nginx_without_an_executable_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(front.shutil, "which", lambda name: None)
    monkeypatch.setattr(front.os, "access", lambda path, mode: False)
    assert front.resolve("auto", "local") == "off"
    with pytest.raises(ConfigError, match="nginx-light"):
        front.resolve("nginx", "local")


def _config(tmp_path: Path, routes: list[tuple[Route, str]]) -> tuple[str, str]:
    return Front(LISTEN, tmp_path, gateway_token="gz_gateway").render(routes)


def test_a_private_route_is_checked_by_the_server_and_reaches_the_runtime_with_the_gateway_token(
        tmp_path: Path) -> None:
    text, generation = _config(tmp_path, [(Route("acct", 3, "unix:/x/http.sock", public=False), "unix:/l/1.sock")])
    assert f'return 200 "{generation}"' in text
    location = text.split("location /m/acct/ {", 1)[1].split("}", 1)[0]
    assert "auth_request /_gazelle/front/authorize;" in location
    assert 'proxy_set_header Authorization "Bearer gz_gateway";' in location
    assert "proxy_set_header Cookie" in location and "X-Forwarded-Prefix /m/acct;" in location
    assert "upstream gz_m0 { server unix:/l/1.sock;" in text
    # Pinned versions and the sign-in stay with the Python gateway.
    assert "location /m/acct/v/ {" in text and "location /m/acct/_gazelle/ {" in text
    assert "client_header_timeout 7s;" in text and "limit_conn gz_clients 50;" in text


def test_a_public_route_sends_no_credentials_and_the_config_changes_with_the_routes(tmp_path: Path) -> None:
    one, first = _config(tmp_path, [(Route("pub", 1, "http://127.0.0.1:9000", public=True), "127.0.0.1:9000")])
    location = one.split("location /m/pub/ {", 1)[1].split("}", 1)[0]
    assert "auth_request" not in location and 'proxy_set_header Authorization "";' in location
    two, second = _config(tmp_path, [(Route("pub", 2, "http://127.0.0.1:9001", public=True), "127.0.0.1:9001")])
    assert first != second and "127.0.0.1:9001" in two and "gz_gateway" not in one + two


@pytest.mark.skipif(shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists(),
                    reason="nginx is not installed")
def test_nginx_accepts_the_rendered_config(tmp_path: Path) -> None:
    f = Front(LISTEN, tmp_path, gateway_token="gz_gateway")
    f.dir = tmp_path / "front"
    for sub in ("", "tmp", "auth", "sockets"):
        (f.dir / sub).mkdir(exist_ok=True)
    text, _ = f.render([(Route("a", 1, "unix:/x", public=False), "unix:/tmp/none.sock"),
                        (Route("b", 1, "http://127.0.0.1:9", public=True), "127.0.0.1:9")])
    f.config.write_text(text)
    checked = subprocess.run([front.executable(), "-t", "-p", str(f.dir), "-c", str(f.config), "-e", "stderr"],
                             capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
