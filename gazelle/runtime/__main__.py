"""``python -m gazelle.runtime BUNDLE [--host H] [--port P] [--workers N]``: the same as ``gazelle runtime``."""
from __future__ import annotations

import sys

from gazelle.cli import main

sys.exit(main(["runtime", *sys.argv[1:]]))
