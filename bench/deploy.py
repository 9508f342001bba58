"""Deploy latency on the local target: seconds from the ``gazelle.deploy()`` call to the first correct
prediction through the endpoint.

Each round starts a real ``gazelle server`` (gunicorn) on a free loopback port with a fresh data dir
(so no environment is cached), then measures three deploys of the account-suggestion model:

- ``cold``: a bundle whose pins the server's own environment lacks (``--pin``, default inflection), so the
  local target builds a virtualenv with ``pip`` (from the pip cache and the configured index);
- ``warm``: another model (other training data, so another bundle) with the same pins under a new
  name: the environment is cached;
- ``redeploy``: a third model under the warm model's name: a new version replaces the live one.

The server start is not timed. Medians over ``--rounds`` rounds go to stdout as one JSON object; the
progress of each deploy goes to stderr. The cold number depends on pip's cache and network.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "notebooks"))
sys.path.insert(0, str(ROOT))

import gazelle  # noqa: E402
from expenses import make_corpus, train  # noqa: E402
from gazelle.client.localserver import LocalServer  # noqa: E402

EXAMPLE, EXPECTED = "Taxi to conference", "2770 Travel expenses"


def timed_deploy(model: Any, sample: list[str], name: str, pins: list[str], server: LocalServer) -> float:
    """Seconds from deploy() to the first prediction equal to the expected one."""
    start = time.perf_counter()
    with redirect_stdout(sys.stderr):
        ep = gazelle.deploy(model, name, sample=sample, requirements=pins, server=server.url, token=server.token)
    return until_correct(start, ep, name)


def until_correct(start: float, ep: Any, name: str) -> float:
    """Seconds since ``start`` once ``ep`` predicts the expected account for the example."""
    deadline = start + 600
    while str(ep.predict([EXAMPLE])[0]) != EXPECTED:
        if time.perf_counter() > deadline:
            raise SystemExit(f"{name}: no correct prediction within 600 s")
        time.sleep(0.01)
    return time.perf_counter() - start


def one_round(index: int, pins: list[str], workdir: Path) -> dict[str, float]:
    models = []
    for seed in (3 * index, 3 * index + 1, 3 * index + 2):
        texts, labels = make_corpus(1500, seed=seed)
        models.append((train(texts, labels), texts[:5]))
    with LocalServer.start(workdir / f"round-{index}", env={"GAZELLE_DRAIN_SECONDS": "1"}) as server:
        return {
            "cold_s": timed_deploy(*models[0], "bench-cold", pins, server),
            "warm_s": timed_deploy(*models[1], "bench-warm", pins, server),
            "redeploy_s": timed_deploy(*models[2], "bench-warm", pins, server),
        }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--pin", action="append", default=None,
                   help="an extra pin the server lacks (repeatable; default inflection==0.5.1)")
    args = p.parse_args(argv)
    pins = args.pin or ["inflection==0.5.1"]
    runs = []
    with tempfile.TemporaryDirectory(prefix="gazelle-bench-deploy-") as tmp:
        for index in range(args.rounds):
            runs.append(one_round(index, pins, Path(tmp)))
            print(f"round {index + 1}: {json.dumps({k: round(v, 3) for k, v in runs[-1].items()})}",
                  file=sys.stderr)
    result: dict[str, Any] = {key: round(statistics.median(r[key] for r in runs), 3)
                              for key in ("cold_s", "warm_s", "redeploy_s")}
    result.update(target="local", rounds=args.rounds, pins=pins, model="account-suggestion (TF-IDF + NB)",
                  python=platform.python_version(), runs=[{k: round(v, 3) for k, v in r.items()} for r in runs])
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
