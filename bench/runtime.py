"""Runtime benchmark: ``gazelle runtime`` against a bare Flask + gunicorn app serving the same pickle.

Targets (DESIGN.md section 8, adaptive batching): one-row requests at concurrency 8 reach at least
2.0x the baseline's requests/s (batching on), one-row median latency at concurrency 1 is within
1.15x of the baseline's, and 100-row requests at concurrency 8 are no slower than the baseline's.

What runs: for each model (the account-suggestion text pipeline, TF-IDF + MultinomialNB on the
synthetic expense corpus; a 100-tree RandomForestClassifier on 20 numeric features), three servers
are started on 127.0.0.1 with the same worker count: ``bench/baseline_app.py`` under gunicorn
(its default logging), ``gazelle runtime BUNDLE --workers N`` as shipped (metrics and JSON access
logs on) from a bundle saved with ``batch=True`` (``gazelle``), and the same from a bundle saved
with ``batch=False`` (``gazelle-nobatch``). All must give the same predictions for the request
bodies before anything is timed. Each server's seconds from start to ready and, after its runs,
the memory of its processes (RSS and PSS, master plus workers) are reported. Then, per round, for each concurrency (wrk connections), batch size (rows per request)
and server, a warm-up run and a measured ``wrk -t1 -cC -dS --latency -s post.lua`` run; the
servers alternate who goes first from round to round so slow drift on a shared machine hits
both. The result is the median over rounds of requests/s, p50 and p99.

Limits: servers and wrk share the machine (nothing is pinned to cores), so absolute numbers
depend on the machine and what else runs on it; the ratios are the point. wrk's one thread costs
both servers the same CPU. Output: one JSON object on stdout (and in ``--out`` if given).

    python bench/runtime.py [--seconds 5] [--rounds 3] [--out bench/results/runtime.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Callable

import cloudpickle
import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "notebooks"))
sys.path.insert(0, str(ROOT))

import _servers  # noqa: E402
from _servers import Server  # noqa: E402

TARGET_THROUGHPUT_C8 = 2.0  # one-row requests, batching on
TARGET_P50_C1 = 1.15
TARGET_B100_C8 = 1.0
SERVERS = ("baseline", "gazelle", "gazelle-nobatch")
GAZELLES = {"gazelle": True, "gazelle-nobatch": False}  # server -> the bundle's batch


# -- models and request bodies ---------------------------------------------------------------

def text_model() -> tuple[Any, list[Any], dict[int, list[Any]]]:
    """The account-suggestion pipeline, its bundle sample and request rows per batch size."""
    import expenses

    model = expenses.train(*expenses.make_corpus(2000, seed=0))
    rows, _ = expenses.make_corpus(100, seed=1)
    return model, rows[:5], {1: ["taxi to conference"], 100: rows}


def forest_model() -> tuple[Any, Any, dict[int, list[Any]]]:
    """A 100-tree random forest on 20 synthetic numeric features."""
    from sklearn.datasets import make_classification
    from sklearn.ensemble import RandomForestClassifier

    X, y = make_classification(n_samples=2100, n_features=20, n_informative=10, n_classes=3,
                               random_state=0)
    model = RandomForestClassifier(n_estimators=100, random_state=0).fit(X[:2000], y[:2000])
    test = X[2000:]
    return model, test[:5], {1: test[:1].tolist(), 100: test[:100].tolist()}


MODELS: dict[str, tuple[str, Callable[[], tuple[Any, Any, dict[int, list[Any]]]]]] = {
    "text": ("accounts", text_model),
    "forest": ("forest", forest_model),
}


# -- servers ----------------------------------------------------------------------------------

def start_baseline(pickle_path: Path, workers: int, logdir: Path) -> Server:
    port = _servers.free_port()
    argv = [sys.executable, "-m", "gunicorn", "--workers", str(workers),
            "--bind", f"127.0.0.1:{port}", "--chdir", str(HERE), "baseline_app:app"]
    server = Server("baseline", argv, port, logdir / "baseline.log",
                    env={"BENCH_MODEL": str(pickle_path)})
    return server.start("/health")


def start_gazelle(name: str, bundle_path: Path, workers: int, logdir: Path) -> Server:
    port = _servers.free_port()
    argv = [*_servers.gazelle_cli(), "runtime", str(bundle_path), "--host", "127.0.0.1",
            "--port", str(port), "--workers", str(workers)]
    # As shipped: access log on (set explicitly so a changed default cannot flatter the result).
    # PYTHONPATH: the gazelle of this checkout, whatever the environment has installed.
    server = Server(name, argv, port, logdir / f"{name}.log",
                    env={"GAZELLE_RUNTIME_ACCESS_LOG": "1", "PYTHONPATH": str(ROOT)})
    return server.start("/v2/health/ready")


def check_same_answers(servers: dict[str, Server], bodies: dict[int, Path]) -> None:
    """Refuse to time servers that do not give the same predictions for the same bodies."""
    for batch, body in bodies.items():
        answers = {}
        for name, server in servers.items():
            status, payload = _servers.post_json(server.url + "/predict", body.read_bytes())
            if status != 200 or not isinstance(payload, dict):
                raise RuntimeError(f"{name} answered {status} for batch {batch}: {str(payload)[:500]}")
            answers[name] = payload["predictions"]
        first, *rest = answers.values()
        if any(other != first for other in rest):
            raise RuntimeError(f"servers disagree on batch {batch}: "
                               + "; ".join(f"{k}: {str(v)[:200]}" for k, v in answers.items()))


# -- measurement ------------------------------------------------------------------------------

def cell_key(conc: int, batch: int) -> str:
    return f"c{conc}/b{batch}"


def measure_model(servers: dict[str, Server], bodies: dict[int, Path], args: argparse.Namespace,
                  log: Callable[[str], None]) -> dict[str, dict[str, list[dict[str, Any]]]]:
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
    names = list(servers)
    for rnd in range(args.rounds):
        order = names if rnd % 2 == 0 else names[::-1]
        for conc in args.concurrency:
            for batch in args.batches:
                key = cell_key(conc, batch)
                for name in order:
                    url = servers[name].url + "/predict"
                    if args.warmup > 0:
                        _servers.run_wrk(url, bodies[batch], connections=conc, seconds=args.warmup)
                    cpu_before = servers[name].cpu_seconds()
                    r = _servers.run_wrk(url, bodies[batch], connections=conc, seconds=args.seconds)
                    cpu = servers[name].cpu_seconds() - cpu_before
                    r["cpu_ms_per_request"] = 1000 * cpu / r["requests"] if r["requests"] else None
                    runs.setdefault(key, {}).setdefault(name, []).append(r)
                    log(f"round {rnd + 1} {key} {name}: {r['rps']:.1f} req/s "
                        f"p50 {r['p50_us'] / 1000:.2f} ms p99 {r['p99_us'] / 1000:.2f} ms "
                        f"cpu {r['cpu_ms_per_request'] or 0:.2f} ms/req"
                        + (f" errors {r['errors']}" if any(r["errors"].values()) else ""))
    return runs


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    errors = {k: sum(r["errors"][k] for r in runs) for k in runs[0]["errors"]}
    return {
        "rps": round(statistics.median(r["rps"] for r in runs), 1),
        "p50_ms": round(statistics.median(r["p50_us"] for r in runs) / 1000, 3),
        "p99_ms": round(statistics.median(r["p99_us"] for r in runs) / 1000, 3),
        "cpu_ms_per_request": round(statistics.median(r["cpu_ms_per_request"] or 0 for r in runs), 3),
        "requests": sum(r["requests"] for r in runs),
        "errors": errors,
        "rounds": [{"rps": round(r["rps"], 1), "p50_ms": r["p50_us"] / 1000, "p99_ms": r["p99_us"] / 1000,
                    "cpu_ms_per_request": r["cpu_ms_per_request"]} for r in runs],
    }


def ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


def run_model(kind: str, args: argparse.Namespace, work: Path, log: Callable[[str], None]) -> dict[str, Any]:
    name, make = MODELS[kind]
    model, sample, rows = make()
    pickle_path = work / f"{kind}.pkl"
    pickle_path.write_bytes(cloudpickle.dumps(model))
    bodies = {}
    for batch in args.batches:
        if batch not in rows:
            raise SystemExit(f"no request rows for batch size {batch} (have {sorted(rows)})")
        bodies[batch] = work / f"{kind}-{batch}.json"
        bodies[batch].write_text(json.dumps({"instances": rows[batch]}))

    logdir = work / kind
    logdir.mkdir()
    servers: dict[str, Server] = {}
    try:
        if "baseline" in args.servers:
            servers["baseline"] = start_baseline(pickle_path, args.workers, logdir)
        import gazelle.bundle

        for server_name, batch in GAZELLES.items():
            if server_name in args.servers:
                bundle_path = gazelle.bundle.save(model, work / f"{kind}-{server_name}.tar", name=name,
                                                  sample=sample, batch=batch)
                servers[server_name] = start_gazelle(server_name, Path(bundle_path), args.workers, logdir)
        check_same_answers(servers, bodies)
        log(f"{kind}: servers up and agreeing: " + ", ".join(f"{k} {s.url}" for k, s in servers.items()))
        runs = measure_model(servers, bodies, args, log)
        memory = {n: s.memory() for n, s in servers.items()}
    finally:
        for server in servers.values():
            server.stop()

    cells: dict[str, Any] = {}
    for key, per_server in runs.items():
        cell: dict[str, Any] = {name: summarise(r) for name, r in per_server.items()}
        for server_name in GAZELLES:
            if "baseline" in cell and server_name in cell:
                ratios = compare(cell[server_name], cell["baseline"], per_server[server_name],
                                 per_server["baseline"])
                # The batching server's ratios sit at the top of the cell: the targets apply to them.
                if server_name == "gazelle":
                    cell.update(ratios)
                else:
                    cell[server_name + "_ratios"] = ratios
        # How far apart the rounds of one server are: the noise floor any ratio must be read against.
        cell["rps_spread"] = {n: round(max(r["rps"] for r in rs) / min(r["rps"] for r in rs) - 1, 3)
                              for n, rs in per_server.items() if min(r["rps"] for r in rs) > 0}
        cells[key] = cell
    logs = {n: s.log.stat().st_size if s.log.exists() else 0 for n, s in servers.items()}
    return {"model": type(model).__name__, "bundle_name": name, "cells": cells,
            "pickle_bytes": pickle_path.stat().st_size, "server_log_bytes": logs,
            "ready_seconds": {n: s.ready_seconds for n, s in servers.items()}, "memory": memory}


def compare(g: dict[str, Any], b: dict[str, Any], g_runs: list[dict[str, Any]],
            b_runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One runtime's ratios to the baseline in one cell."""
    # Runs of one round are back to back, so their ratio cancels slow drift of the machine.
    pairs = list(zip(g_runs, b_runs))
    return {
        "throughput_ratio": ratio(g["rps"], b["rps"]),
        "p50_ratio": ratio(g["p50_ms"], b["p50_ms"]),
        "p99_ratio": ratio(g["p99_ms"], b["p99_ms"]),
        "cpu_per_request_ratio": ratio(g["cpu_ms_per_request"], b["cpu_ms_per_request"]),
        "paired_throughput_ratio": round(statistics.median(x["rps"] / y["rps"] for x, y in pairs), 3),
        "paired_p50_ratio": round(statistics.median(x["p50_us"] / y["p50_us"] for x, y in pairs), 3),
    }


def machine() -> dict[str, Any]:
    wrk = _servers.wrk_path()
    wrk_version = ""
    if wrk:
        out = subprocess.run([wrk, "--version"], capture_output=True, text=True)
        wrk_version = (out.stdout or out.stderr).splitlines()[0] if (out.stdout or out.stderr) else ""
    versions: dict[str, str | None] = {}
    for dist in ("flask", "gunicorn", "scikit-learn", "numpy", "cloudpickle", "orjson"):
        try:
            versions[dist] = version(dist)
        except PackageNotFoundError:
            versions[dist] = None
    return {"cpus": os.cpu_count(), "loadavg_start": os.getloadavg(), "python": platform.python_version(),
            "platform": platform.platform(), "wrk": wrk_version, "versions": versions,
            "pinning": "none: servers and wrk share all cores"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=5.0, help="measured wrk run per cell (default 5)")
    p.add_argument("--warmup", type=float, default=1.0, help="warm-up run before each measured run")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--workers", type=int, default=2, help="gunicorn workers, both servers")
    p.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8, 32])
    p.add_argument("--batches", type=lambda s: [int(x) for x in s.split(",")], default=[1, 100])
    p.add_argument("--models", type=lambda s: s.split(","), default=list(MODELS))
    p.add_argument("--servers", type=lambda s: s.split(","), default=list(SERVERS))
    p.add_argument("--out", type=Path, help="also write the JSON here")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    args = p.parse_args(argv)
    unknown = set(args.models) - set(MODELS) | set(args.servers) - set(SERVERS)
    if unknown:
        p.error(f"unknown model or server: {', '.join(sorted(unknown))}")
    if _servers.wrk_path() is None:
        p.error("wrk is not installed (Debian: apt-get install -y wrk)")

    def log(msg: str) -> None:
        if not args.quiet:
            print(msg, file=sys.stderr, flush=True)

    started = time.time()
    result: dict[str, Any] = {
        "benchmark": "runtime",
        "config": {"seconds": args.seconds, "warmup": args.warmup, "rounds": args.rounds,
                   "workers": args.workers, "concurrency": args.concurrency, "batches": args.batches,
                   "servers": args.servers, "host": "127.0.0.1",
                   "wrk": "wrk -t1 -c{conc} -d{secs}s --latency -s bench/post.lua URL/predict",
                   "baseline": "bench/baseline_app.py under gunicorn, sync workers, default logging",
                   "gazelle": "gazelle runtime BUNDLE --workers N, GAZELLE_RUNTIME_ACCESS_LOG=1, "
                              "bundle saved with batch=True",
                   "gazelle-nobatch": "the same, bundle saved with batch=False"},
        "machine": machine(),
        "models": {},
    }
    with tempfile.TemporaryDirectory(prefix="gazelle-bench-") as tmp:
        for kind in args.models:
            result["models"][kind] = run_model(kind, args, Path(tmp), log)

    def pick(cell_key: str, field: str) -> dict[str, Any]:
        return {k: m["cells"][cell_key][field] for k, m in result["models"].items()
                if field in m["cells"].get(cell_key, {})}

    tput = pick("c8/b1", "throughput_ratio")
    p50 = pick("c1/b1", "p50_ratio")
    b100 = pick("c8/b100", "throughput_ratio")
    cpu = {f"{k}/{cell}": v["cpu_per_request_ratio"]
           for k, m in result["models"].items() for cell, v in m["cells"].items()
           if "cpu_per_request_ratio" in v}
    result["summary"] = {"throughput_ratio_c8_b1": tput, "p50_ratio_c1_b1": p50,
                         "throughput_ratio_c8_b100": b100, "cpu_per_request_ratio": cpu}
    spreads = [v for m in result["models"].values() for c in m["cells"].values()
               for v in c["rps_spread"].values()]
    result["summary"]["max_rps_spread"] = max(spreads) if spreads else None
    # A verdict on a 10% margin means little when one server's own rounds differ by more than that.
    result["summary"]["reliable"] = bool(spreads) and max(spreads) <= 0.10
    result["targets"] = {"throughput_ratio_c8_b1_min": TARGET_THROUGHPUT_C8, "p50_ratio_c1_b1_max": TARGET_P50_C1,
                         "throughput_ratio_c8_b100_min": TARGET_B100_C8}
    errors = sum(sum(s["errors"].values()) for m in result["models"].values()
                 for c in m["cells"].values() for n, s in c.items() if n in SERVERS)
    result["errors_total"] = errors
    if tput or p50:
        result["pass"] = (errors == 0
                          and all(r is not None and r >= TARGET_THROUGHPUT_C8 for r in tput.values())
                          and all(r is not None and r <= TARGET_P50_C1 for r in p50.values())
                          and all(r is not None and r >= TARGET_B100_C8 for r in b100.values()))
    else:
        result["pass"] = None  # nothing to compare: only one server was measured
    result["machine"]["loadavg_end"] = os.getloadavg()
    result["elapsed_s"] = round(time.time() - started, 1)

    text = json.dumps(result, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)
    return 0 if result["pass"] in (True, None) else 1


if __name__ == "__main__":
    sys.exit(main())
