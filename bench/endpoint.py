"""Endpoint benchmark: what a user gets at ``Endpoint.url`` against the runtime's own port and a bare
Flask + gunicorn app serving the same pickle, all measured in the same run.

Targets (issue 12): through ``Endpoint.url`` (``/m/{name}/predict`` on a real ``gazelle server``,
local target, private model, a predict token on every request), one-row requests at concurrency 8
reach at least 2.0x the bare app's requests/s, p50 at concurrency 1 within 1.15x of the bare app's,
and the URL keeps at least 0.85x of the runtime's own port's requests/s.

What runs, per model (the account-suggestion text pipeline and a 100-tree random forest, as in
``bench/runtime.py``): the bare app (``baseline``); ``gazelle runtime`` on its own TCP port from a
bundle saved with ``batch=True`` (``port``) and with ``batch=False`` (``port-nobatch``); and one
``gazelle server`` (``--server-workers``, local target) to which both bundles are deployed as private
models, measured through the gateway (``url``, ``url-nobatch``). The server's runtimes listen on
private unix sockets, which wrk cannot reach, so the runtime's own port is a standalone runtime with
the same bundle and workers. Every path must give the same predictions before anything is timed.
Per round, concurrency and rows per request: a warm-up and a measured ``wrk -t1`` run on each path,
the order alternating between rounds. Reported: median requests/s, p50, p99 and server CPU per
request; ratios to the baseline and ``url`` to ``port``; RSS/PSS of every serving process group
(the server's alone: its runtimes run in their own sessions, and use what ``port`` uses); seconds
from start to ready.

With ``--peers`` (or ``--peers bentoml``, ``--peers mlserver``), the same pickles are also served, in
the same run and with the same wrk cells, by BentoML (adaptive batching on) and MLServer (a custom
runtime that loads the cloudpickle), each from a virtualenv of its own made once and cached outside
the repository (``bench/_peers.py``). Each peer's answers must equal the model's in-process
predictions before it is timed. A peer that fails to install, start or agree is reported as
``{"error": ...}`` and the run goes on without it. Each cell then also has ``url_vs_peers``: the
URL's requests/s over the peer's and its p50 over the peer's.

Limits: servers and wrk share the machine (nothing pinned), so absolute numbers swing with other
load; the ratios of one run are the point. Output: one JSON object on stdout (and ``--out``).

    python bench/endpoint.py [--seconds 2] [--rounds 1] [--peers] [--out bench/results/endpoint.json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import cloudpickle
import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _peers  # noqa: E402
import _servers  # noqa: E402
import runtime as rt  # noqa: E402
from _servers import Server  # noqa: E402

TARGET_URL_VS_PORT = 0.85


class Target:
    """One measured address: the server whose CPU and memory count, the URL, the credentials; for a
    peer, its own request bodies (None: the common ones) and how to read predictions from its answer."""

    def __init__(self, server: Server, url: str, auth: str | None = None, bodies: dict[int, Path] | None = None,
                 predictions: Callable[[Any], list[Any]] = lambda payload: payload["predictions"]) -> None:
        self.server, self.url, self.auth, self.bodies, self.predictions = server, url, auth, bodies, predictions

    def body(self, common: dict[int, Path], batch: int) -> Path:
        return (self.bodies or common)[batch]

    def ask(self, body: Path) -> list[Any]:
        """The predictions this path answers for one body."""
        headers = {"Content-Type": "application/json", **({"Authorization": self.auth} if self.auth else {})}
        answer = httpx.post(self.url, content=body.read_bytes(), headers=headers, timeout=60, trust_env=False)
        if answer.status_code != 200:
            raise RuntimeError(f"{self.url} answered {answer.status_code} for {body.name}: {answer.text[:500]}")
        return self.predictions(answer.json())


def start_gazelle_server(workers: int, logdir: Path, data_dir: Path) -> tuple[Server, str]:
    port = _servers.free_port()
    argv = [*_servers.gazelle_cli(), "server", "--host", "127.0.0.1", "--port", str(port),
            "--data-dir", str(data_dir), "--workers", str(workers)]
    server = Server("gazelle-server", argv, port, logdir / "gazelle-server.log",
                    env={"PYTHONPATH": str(rt.ROOT), "GAZELLE_RUNTIME_ACCESS_LOG": "1"})
    server.start("/readyz", timeout=120)
    return server, (data_dir / "token").read_text().strip()


def deploy(server: Server, token: str, name: str, bundle_path: Path) -> float:
    """Deploy a private model; the seconds from upload to live."""
    started = time.monotonic()
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=120,
                      trust_env=False) as c:
        answer = c.post(f"/api/v1/models/{name}/versions", params={"public": "false"},
                        content=bundle_path.read_bytes(), headers={"Content-Type": "application/x-tar"})
        answer.raise_for_status()
        job = answer.json()["job"]
        while True:
            status = c.get(f"/api/v1/jobs/{job}").json()
            if status["status"] == "succeeded":
                return round(time.monotonic() - started, 3)
            if status["status"] == "failed":
                raise RuntimeError(f"deploy of {name} failed: {json.dumps(status)[:2000]}")
            time.sleep(0.1)


def check_same_answers(paths: dict[str, Target], bodies: dict[int, Path]) -> None:
    for batch, body in bodies.items():
        answers = {}
        for name, path in paths.items():
            answers[name] = path.ask(body)
        first, *rest = answers.values()
        if any(other != first for other in rest):
            raise RuntimeError(f"paths disagree on batch {batch}: "
                               + "; ".join(f"{k}: {str(v)[:200]}" for k, v in answers.items()))


def measure(paths: dict[str, Target], bodies: dict[int, Path], args: argparse.Namespace,
            log: Callable[[str], None]) -> dict[str, dict[str, list[dict[str, Any]]]]:
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
    names = list(paths)
    for rnd in range(args.rounds):
        order = names if rnd % 2 == 0 else names[::-1]
        for conc in args.concurrency:
            for batch in args.batches:
                key = rt.cell_key(conc, batch)
                for name in order:
                    path = paths[name]
                    body = path.body(bodies, batch)
                    if args.warmup > 0:
                        _servers.run_wrk(path.url, body, connections=conc, seconds=args.warmup, auth=path.auth)
                    cpu_before = path.server.cpu_seconds()
                    r = _servers.run_wrk(path.url, body, connections=conc, seconds=args.seconds, auth=path.auth)
                    cpu = path.server.cpu_seconds() - cpu_before
                    r["cpu_ms_per_request"] = 1000 * cpu / r["requests"] if r["requests"] else None
                    runs.setdefault(key, {}).setdefault(name, []).append(r)
                    log(f"round {rnd + 1} {key} {name}: {r['rps']:.1f} req/s p50 {r['p50_us'] / 1000:.2f} ms"
                        + (f" errors {r['errors']}" if any(r["errors"].values()) else ""))
    return runs


def start_peer(peer: str, env: dict[str, Any], kind: str, name: str, pickle_path: Path, bodies: dict[int, Path],
               rows: dict[int, list[Any]], workers: int, work: Path) -> _peers.Peer:
    if peer == "bentoml":
        return _peers.start_bentoml(env, kind, pickle_path, bodies, workers, work)
    return _peers.start_mlserver(env, kind, name, pickle_path, {b: rows[b] for b in bodies}, workers, work)


def check_peer(peer: _peers.Peer, bodies: dict[int, Path], expected: dict[int, list[Any]]) -> None:
    """The peer must answer every body with the model's own in-process predictions."""
    target = Target(peer.server, peer.url, bodies=peer.bodies, predictions=peer.predictions)
    for batch in bodies:
        try:
            got = target.ask(target.body(bodies, batch))
        except (RuntimeError, httpx.HTTPError, ValueError) as err:
            raise _peers.PeerError(f"{peer.server.name} failed a {batch}-row request: "
                                   f"{_peers.first_sentence(str(err))}") from None
        if got != expected[batch]:
            raise _peers.PeerError(f"{peer.server.name}'s predictions for {batch} rows differ from the model's "
                                   f"in-process ones ({str(got)[:120]} against {str(expected[batch])[:120]})")


def run_model(kind: str, args: argparse.Namespace, work: Path, log: Callable[[str], None],
              envs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    import gazelle.bundle

    name, make = rt.MODELS[kind]
    model, sample, rows = make()
    pickle_path = work / f"{kind}.pkl"
    pickle_path.write_bytes(cloudpickle.dumps(model))
    bodies = {}
    for batch in args.batches:
        bodies[batch] = work / f"{kind}-{batch}.json"
        bodies[batch].write_text(json.dumps({"instances": rows[batch]}))
    logdir = work / kind
    logdir.mkdir()
    # One bundle per batching mode; the server needs a name of its own for each.
    bundles = {batch: Path(gazelle.bundle.save(model, work / f"{kind}-{batch}.tar", sample=sample, batch=batch,
                                               name=name if batch else f"{name}-nobatch")) for batch in (True, False)}
    servers: dict[str, Server] = {}
    paths: dict[str, Target] = {}
    deploy_seconds: dict[str, float] = {}
    peers: dict[str, dict[str, Any]] = {}
    try:
        servers["baseline"] = rt.start_baseline(pickle_path, args.workers, logdir)
        paths["baseline"] = Target(servers["baseline"], servers["baseline"].url + "/predict")
        for label, batch in (("port", True), ("port-nobatch", False)):
            servers[label] = rt.start_gazelle(label, bundles[batch], args.workers, logdir)
            paths[label] = Target(servers[label], servers[label].url + "/predict")
        server, token = start_gazelle_server(args.server_workers, logdir, work / f"{kind}-data")
        servers["gazelle-server"] = server
        for label, batch, model_name in (("url", True, name), ("url-nobatch", False, f"{name}-nobatch")):
            deploy_seconds[label] = deploy(server, token, model_name, bundles[batch])
            paths[label] = Target(server, f"{server.url}/m/{model_name}/predict", f"Bearer {token}")
        check_same_answers(paths, bodies)
        expected = {batch: model.predict(rows[batch]).tolist() for batch in args.batches}
        for peer, env in envs.items():
            if "error" in env:
                peers[peer] = env
                continue
            try:
                started = start_peer(peer, env, kind, name, pickle_path, bodies, rows, args.workers, work)
                servers[peer] = started.server
                check_peer(started, bodies, expected)
            except Exception as err:  # a peer that fails is reported; the run goes on without it
                if peer in servers:
                    servers.pop(peer).stop()
                message = str(err) if isinstance(err, _peers.PeerError) else f"{peer} failed: {err}"
                peers[peer] = {"error": _peers.first_sentence(message)}
                log(f"{kind}: {peer}: {peers[peer]['error']}")
                continue
            peers[peer] = started.config
            paths[peer] = Target(started.server, started.url, bodies=started.bodies, predictions=started.predictions)
        log(f"{kind}: every path up and agreeing: {', '.join(paths)}")
        runs = measure(paths, bodies, args, log)
        memory = {n: s.memory() for n, s in servers.items()}
    finally:
        for s in servers.values():
            s.stop()
    cells: dict[str, Any] = {}
    for key, per_path in runs.items():
        cell: dict[str, Any] = {n: rt.summarise(r) for n, r in per_path.items()}
        base = cell["baseline"]["rps"]
        cell["vs_baseline"] = {n: {"throughput": rt.ratio(c["rps"], base),
                                   "p50": rt.ratio(c["p50_ms"], cell["baseline"]["p50_ms"])}
                               for n, c in cell.items() if n in per_path and n != "baseline"}
        cell["url_vs_port"] = {"batch": rt.ratio(cell["url"]["rps"], cell["port"]["rps"]),
                               "nobatch": rt.ratio(cell["url-nobatch"]["rps"], cell["port-nobatch"]["rps"])}
        if any(peer in per_path for peer in peers):
            # Gazelle's URL against each peer: above 1 for throughput (below 1 for p50) means Gazelle ahead.
            cell["url_vs_peers"] = {peer: {"throughput": rt.ratio(cell["url"]["rps"], cell[peer]["rps"]),
                                           "p50": rt.ratio(cell["url"]["p50_ms"], cell[peer]["p50_ms"])}
                                    for peer in peers if peer in per_path}
        cells[key] = cell
    return {"model": type(model).__name__, "bundle_name": name, "cells": cells, "memory": memory,
            "ready_seconds": {n: s.ready_seconds for n, s in servers.items()},
            "deploy_seconds": deploy_seconds, **({"peers": peers} if envs else {})}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=2.0, help="measured wrk run per cell (default 2)")
    p.add_argument("--warmup", type=float, default=0.5)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--workers", type=int, default=2, help="gunicorn workers of every runtime and the baseline")
    p.add_argument("--server-workers", type=int, default=2, help="workers of the gazelle server")
    p.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8, 32])
    p.add_argument("--batches", type=lambda s: [int(x) for x in s.split(",")], default=[1, 100])
    p.add_argument("--models", type=lambda s: s.split(","), default=list(rt.MODELS))
    p.add_argument("--peers", nargs="?", const=",".join(_peers.PEERS), default="",
                   type=lambda s: [x for x in s.split(",") if x],
                   help="also serve the pickles with these peers (default with no value: bentoml,mlserver)")
    p.add_argument("--out", type=Path)
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    unknown = set(args.peers) - set(_peers.PEERS)
    if unknown:
        p.error(f"unknown peer: {', '.join(sorted(unknown))} (known: {', '.join(_peers.PEERS)})")
    if _servers.wrk_path() is None:
        raise SystemExit("wrk is not installed (Debian: apt-get install -y wrk)")

    def log(msg: str) -> None:
        if not args.quiet:
            print(msg, file=sys.stderr, flush=True)

    result: dict[str, Any] = {"benchmark": "endpoint", "machine": rt.machine(),
                              "settings": {k: v for k, v in vars(args).items() if k not in ("out", "quiet")},
                              "models": {}}
    envs: dict[str, dict[str, Any]] = {}
    for peer in args.peers:
        try:
            envs[peer] = _peers.ensure_env(peer, log)
        except Exception as err:  # reported; the run goes on without this peer
            message = str(err) if isinstance(err, _peers.PeerError) else f"installing {peer} failed: {err}"
            envs[peer] = {"error": _peers.first_sentence(message)}
            log(f"{peer}: {envs[peer]['error']}")
    if envs:
        result["peers"] = {peer: {k: v for k, v in env.items() if k != "python"} for peer, env in envs.items()}
    with tempfile.TemporaryDirectory(prefix="gazelle-bench-endpoint-") as tmp:
        for kind in args.models:
            result["models"][kind] = run_model(kind, args, Path(tmp), log, envs)
    result["targets"] = {
        kind: {"c8_b1_url_throughput_vs_baseline": m["cells"].get("c8/b1", {}).get("vs_baseline", {}).get("url", {}).get("throughput"),
               "c1_b1_url_p50_vs_baseline": m["cells"].get("c1/b1", {}).get("vs_baseline", {}).get("url", {}).get("p50"),
               "url_vs_port_min": min((c["url_vs_port"]["batch"] or 0) for c in m["cells"].values()),
               "url_vs_port_target": TARGET_URL_VS_PORT}
        for kind, m in result["models"].items()}
    if envs:
        result["url_vs_peers_throughput"] = {
            kind: {peer: {key: c["url_vs_peers"][peer]["throughput"] for key, c in m["cells"].items()
                          if peer in c.get("url_vs_peers", {})} or m["peers"][peer]
                   for peer in envs}
            for kind, m in result["models"].items()}
    text = json.dumps(result, indent=1, default=str)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
