"""gazelle.server.selfimage: what goes into the server's own image, without a registry."""
from __future__ import annotations

from pathlib import Path

import yaml

from gazelle.server import selfimage

VALUES = Path(__file__).resolve().parents[2] / "charts" / "gazelle" / "values.yaml"


def test_the_image_runs_as_the_charts_user_and_listens_on_its_default_port() -> None:
    values = yaml.safe_load(VALUES.read_text())
    assert selfimage.USER == f"{values['runAsUser']}:{values['runAsGroup']}"
    assert selfimage.PORT == values["server"]["port"]


def test_server_requirements_pin_what_gazelle_server_imports() -> None:
    names = {pin.split("==")[0].lower() for pin in selfimage.server_requirements()}
    assert {"flask", "gunicorn", "kubernetes", "sqlalchemy", "alembic", "httpx", "cloudpickle"} <= names
    assert all("==" in pin for pin in selfimage.server_requirements())


def test_the_package_layer_holds_the_cli_and_no_bytecode() -> None:
    layer = selfimage.package_layer()
    import gzip
    import io
    import tarfile

    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(layer.read()))) as tar:
        names = tar.getnames()
    assert "opt/gazelle/app/gazelle/cli.py" in names
    assert not [n for n in names if n.endswith(".pyc")]
