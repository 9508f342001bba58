"""The runtime's own files, as an image builder copies them: complete, and nothing of client or server."""
from __future__ import annotations

from gazelle.server.builders.runtime_files import runtime_files


def test_runtime_files_hold_the_runtime_and_the_modules_it_imports():
    files = runtime_files()
    for key in ("gazelle/__init__.py", "gazelle/cli.py", "gazelle/errors.py", "gazelle/bundle.py",
                "gazelle/runtime/__main__.py", "gazelle/runtime/serve.py", "gazelle/runtime/templates/tryit.html"):
        assert key in files
    assert all(path.is_file() for path in files.values())


def test_runtime_files_leave_out_client_and_server():
    assert not [key for key in runtime_files() if key.startswith(("gazelle/client", "gazelle/server"))]
    assert not [key for key in runtime_files() if "__pycache__" in key or key.endswith(".pyc")]
