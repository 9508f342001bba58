"""``python -m gazelle.runtime [BUNDLE] [--host H] [--port P] [--socket PATH] [--workers N]``: the same as
``gazelle runtime`` (an image's entrypoint: every option also has a ``GAZELLE_RUNTIME_*`` twin)."""
from __future__ import annotations

import sys

from gazelle.cli import main

sys.exit(main(["runtime", *sys.argv[1:]]))
