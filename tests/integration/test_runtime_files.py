"""The runtime's files, copied alone to a directory, are enough to import and start the runtime's code."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from gazelle.server.builders.runtime_files import runtime_files

_PROBE = """
import json, sys
import gazelle, gazelle.cli, gazelle.runtime.serve, gazelle.runtime.app, gazelle.runtime.loader
gazelle.cli.build_parser()
print(json.dumps({"file": gazelle.__file__, "loaded": sorted(m for m in sys.modules if m.startswith("gazelle"))}))
"""


def test_the_copied_files_alone_import_the_runtime(tmp_path: Path):
    for key, path in runtime_files().items():
        (tmp_path / key).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, tmp_path / key)
    got = subprocess.run([sys.executable, "-c", _PROBE], cwd=tmp_path, env={"PYTHONPATH": str(tmp_path)},
                         capture_output=True, text=True, timeout=120)
    assert got.returncode == 0, got.stderr
    probe = json.loads(got.stdout)
    assert Path(probe["file"]).resolve() == (tmp_path / "gazelle" / "__init__.py").resolve()
    assert not [m for m in probe["loaded"] if m.startswith(("gazelle.client", "gazelle.server"))]
