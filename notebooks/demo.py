"""``make demo``: train the account-suggestion model, deploy it to a local Gazelle server, try it.

Uses the server at ``GAZELLE_SERVER`` (default http://127.0.0.1:8000) if one answers there; otherwise
starts ``gazelle server`` on that address with its state in ``GAZELLE_DATA_DIR`` (default
``~/.gazelle``) and keeps it running until Ctrl-C, then stops it and the model processes cleanly.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))

import gazelle  # noqa: E402
from expenses import make_corpus, train  # noqa: E402
from gazelle.client.config import LOCAL_SERVER, data_dir, is_loopback  # noqa: E402
from gazelle.client.localserver import LocalServer, answers  # noqa: E402
from gazelle.errors import GazelleError  # noqa: E402

EXAMPLE = "Taxi to conference"


def main() -> int:
    url = os.environ.get("GAZELLE_SERVER", LOCAL_SERVER).rstrip("/")
    server = None
    if answers(url):
        print(f"using the Gazelle server at {url}")
    elif is_loopback(url):
        parts = urlsplit(url)
        print(f"starting a Gazelle server at {url} (state in {data_dir()}) ...", flush=True)
        server = LocalServer.start(data_dir(), host=parts.hostname or "127.0.0.1", port=parts.port or 80)
        print(f"server log: {server.log_path}")
    else:
        raise GazelleError(f"no Gazelle server at {url}", hint="start it, or unset GAZELLE_SERVER to run one here")
    try:
        token = os.environ.get("GAZELLE_TOKEN") or (server.token if server else None)
        texts, labels = make_corpus(3000, seed=7)
        model = train(texts, labels)
        print(f"trained on {len(texts)} expenses")

        ep = gazelle.deploy(model, name="accounts", sample=texts[:5], server=url, token=token)
        print()
        print(f"endpoint:  {ep.url}")
        print(f"try it:    {ep.url}/")
        print("curl:")
        print("  " + ep.curl().replace("\n", "\n  "))
        if server is not None:
            print(f"token:     export GAZELLE_TOKEN=\"$(cat {server.data_dir / 'token'})\"")
        print(f"{EXAMPLE!r} -> {str(ep.predict([EXAMPLE])[0])!r}")
        print()
        if server is None:
            return 0
        print("the server keeps running; press Ctrl-C to stop it", flush=True)
        _wait_for_interrupt()
        print("\nstopping ...", flush=True)
        return 0
    finally:
        if server is not None:
            server.stop()


def _wait_for_interrupt() -> None:
    """Block until SIGINT or SIGTERM."""
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    while not stop.wait(1.0):
        pass


if __name__ == "__main__":
    try:
        sys.exit(main())
    except GazelleError as err:
        print(f"demo: {err}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
