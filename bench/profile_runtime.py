"""Where a request's time goes: the runtime's WSGI app against the baseline app, in one process.

The HTTP benchmark (``runtime.py``) measures what a client sees, which on a shared machine moves with
everything else running there. This measures the part the runtime controls: CPU time per request
of each WSGI app, called directly with the same request environ (no sockets, no gunicorn, which both
servers share anyway), alternating apps in blocks so drift hits both. It then splits the runtime's
time into the model call and everything around it, and prints a cProfile of the runtime's path.

The runtime is built as ``gazelle runtime`` builds it: prometheus multiprocess mode on (metrics in
mmap'd files) and the JSON access log on, written to a file on fd 2 as under gunicorn. Its model
call runs on the predictor thread (one request at a time here, so nothing is batched): CPU time
counts every thread, and the profile adds the predictor thread's own profile to the caller's.

    python bench/profile_runtime.py [--requests 2000] [--models text,forest] [--batches 1,100]

Output: one JSON object on stdout; the cProfile listings on stderr (``--no-profile`` to skip).
"""
from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import cloudpickle

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import runtime as bench  # noqa: E402  (puts notebooks/ and the repo on sys.path)

WSGI = Callable[[dict[str, Any], Callable[..., Any]], Any]


def environ_for(body: bytes) -> Callable[[], dict[str, Any]]:
    from werkzeug.test import EnvironBuilder

    template = EnvironBuilder(path="/predict", method="POST", data=body,
                              content_type="application/json").get_environ()

    def fresh() -> dict[str, Any]:
        env = dict(template)
        env["wsgi.input"] = io.BytesIO(body)
        env["REMOTE_ADDR"] = "127.0.0.1"
        return env

    return fresh


def call(app: WSGI, make_env: Callable[[], dict[str, Any]]) -> bytes:
    status: list[str] = []

    def start_response(line: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        status.append(line)

    result = app(make_env(), start_response)
    try:
        data = b"".join(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    if not status or not status[0].startswith("200"):
        raise RuntimeError(f"{status}: {data[:300]!r}")
    return data


def cpu_per_call(fn: Callable[[], Any], n: int) -> float:
    start = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - start) / n


def measure(apps: dict[str, Callable[[], Any]], n: int, blocks: int = 10) -> dict[str, float]:
    """Median over blocks of CPU microseconds per call, apps alternating block by block."""
    per: dict[str, list[float]] = {name: [] for name in apps}
    size = max(1, n // blocks)
    for b in range(blocks):
        order = list(apps) if b % 2 == 0 else list(apps)[::-1]
        for name in order:
            per[name].append(cpu_per_call(apps[name], size) * 1e6)
    return {name: round(statistics.median(v), 1) for name, v in per.items()}


# The steps of the runtime's request path, outermost first: (label, file suffix, function name).
STEPS = (
    ("whole request (Instrumented wrapper)", "gazelle/runtime/app.py", "__call__"),
    ("flask dispatch (Flask.wsgi_app)", "flask/app.py", "wsgi_app"),
    ("  request context push/pop", "flask/ctx.py", "push"),
    ("  view: predict()", "gazelle/runtime/app.py", "predict"),
    ("    read_json (content type, read, orjson)", "gazelle/runtime/app.py", "read_json"),
    ("    DataPlane.predict", "gazelle/runtime/dataplane.py", "predict"),
    ("      schema.decode", "gazelle/schema/decoding.py", "decode"),
    ("      hand-off to the predictor thread, wait (the model call included)", "gazelle/runtime/predictor.py", "submit"),
    ("      model call + jsonable (DataPlane._call)", "gazelle/runtime/dataplane.py", "_call"),
    ("      schema.jsonable", "gazelle/schema/encoding.py", "jsonable"),
    ("    _json (orjson answer)", "gazelle/runtime/app.py", "_json"),
    ("  finalize_request (after-request, response)", "flask/app.py", "finalize_request"),
    ("metrics.observe (prometheus, mmap)", "gazelle/runtime/metrics.py", "observe"),
    ("prometheus inc() (in-flight gauge, counters)", "prometheus_client/metrics.py", "inc"),
    ("access log line (orjson + write(2))", "gazelle/runtime/logs.py", "__call__"),
    ("request id (urandom)", "gazelle/runtime/wire.py", "request_id"),
)


def profile(fn: Callable[[], Any], n: int, top: int, predictor: Any = None) -> tuple[str, dict[str, float]]:
    """cProfile ``n`` calls: the top functions by own time, and the path's steps in us per request
    (cProfile's own overhead inflates Python-heavy steps; compare steps with each other). cProfile
    sees one thread: ``predictor``'s thread gets a profile of its own, added to the caller's."""
    prof = cProfile.Profile()
    worker = cProfile.Profile()
    if predictor is not None:
        run = predictor.run

        def profiled_run(jobs: Any) -> None:
            worker.enable()
            try:
                run(jobs)
            finally:
                worker.disable()

        predictor.run = profiled_run
    prof.enable()
    try:
        for _ in range(n):
            fn()
    finally:
        prof.disable()
        if predictor is not None:
            del predictor.run
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out)
    if predictor is not None:
        stats.add(worker)
    stats.sort_stats("tottime").print_stats(top)
    raw: dict[tuple[str, int, str], tuple[Any, ...]] = stats.stats  # type: ignore[attr-defined]
    steps: dict[str, float] = {}
    for label, suffix, func in STEPS:
        cum = sum(v[3] for (file, _, name), v in raw.items() if file.endswith(suffix) and name == func)
        steps[label] = round(cum / n * 1e6, 1)
    lines = [f"{us:10.1f} us  {label}" for label, us in steps.items()]
    return "\n".join(lines) + "\n\n" + out.getvalue(), steps


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=2000, help="per app and cell (forest: a tenth)")
    p.add_argument("--models", type=lambda s: s.split(","), default=list(bench.MODELS))
    p.add_argument("--batches", type=lambda s: [int(x) for x in s.split(",")], default=[1, 100])
    p.add_argument("--no-profile", action="store_true")
    p.add_argument("--top", type=int, default=25)
    args = p.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="gazelle-profile-"))
    # As under `gazelle runtime`: metrics shared through files, access log lines on fd 2.
    from gazelle.runtime import metrics as runtime_metrics

    runtime_metrics.enable_multiprocess(str(work / "metrics"))
    (work / "metrics").mkdir()
    saved_stderr = os.dup(2)
    log_fd = os.open(work / "stderr.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND)

    result: dict[str, Any] = {"benchmark": "runtime-profile", "unit": "CPU microseconds per request",
                              "models": {}}
    listings: list[str] = []
    try:
        for kind in args.models:
            name, make = bench.MODELS[kind]
            model, sample, rows = make()
            n = args.requests if kind == "text" else max(50, args.requests // 10)
            pkl = work / f"{kind}.pkl"
            pkl.write_bytes(cloudpickle.dumps(model))
            os.environ["BENCH_MODEL"] = str(pkl)
            sys.modules.pop("baseline_app", None)
            import baseline_app

            import gazelle.bundle
            from gazelle.runtime import create_app

            bundle = gazelle.bundle.save(model, work / f"{kind}.tar", name=name, sample=sample)
            os.dup2(log_fd, 2)
            try:
                gz_app = create_app(bundle)
                gz = gz_app.wsgi_app
                base = baseline_app.app.wsgi_app
                cells: dict[str, Any] = {}
                for batch in args.batches:
                    body = json.dumps({"instances": rows[batch]}).encode()
                    env = environ_for(body)
                    if json.loads(call(gz, env))["predictions"] != json.loads(call(base, env))["predictions"]:
                        raise RuntimeError(f"{kind} b{batch}: the apps disagree")
                    features: Any = rows[batch]
                    if kind == "forest":
                        import numpy as np

                        features = np.asarray(features, dtype="float64")
                    apps = {
                        "baseline": lambda: call(base, env),
                        "gazelle": lambda: call(gz, env),
                        "model_only": lambda: model.predict(features),
                    }
                    for fn in apps.values():  # warm caches, label children, lazy imports
                        for _ in range(20):
                            fn()
                    us = measure(apps, n)
                    cells[f"b{batch}"] = {
                        **us,
                        "gazelle_minus_baseline": round(us["gazelle"] - us["baseline"], 1),
                        "baseline_overhead": round(us["baseline"] - us["model_only"], 1),
                        "gazelle_overhead": round(us["gazelle"] - us["model_only"], 1),
                        "ratio": round(us["gazelle"] / us["baseline"], 3),
                    }
                    if not args.no_profile:
                        text, steps = profile(apps["gazelle"], n, args.top,
                                              gz_app.extensions["gazelle.runtime"].predictor)
                        cells[f"b{batch}"]["profiled_steps_us"] = steps
                        listings.append(f"==== {kind} b{batch}: gazelle runtime WSGI app, {n} requests ====\n"
                                        + text)
                result["models"][kind] = cells
            finally:
                os.dup2(saved_stderr, 2)
    finally:
        os.close(log_fd)
        shutil.rmtree(work, ignore_errors=True)
    for text in listings:
        print(text, file=sys.stderr)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
