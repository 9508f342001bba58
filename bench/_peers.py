"""The peers of the endpoint benchmark: BentoML and MLServer serving the benchmark's own pickle.

Each peer runs from a virtualenv of its own, made once and kept under
``${GAZELLE_BENCH_CACHE:-~/.cache/gazelle-bench}/peers/<peer>-<hash>``, the hash taken over the
python version and the requirements: the peer's pinned release plus the scikit-learn, numpy, pandas,
cloudpickle (and scipy, joblib, threadpoolctl) versions of the environment running the benchmark, read
from its ``pip freeze``, so the peers unpickle the very model the other paths serve. A venv whose
build did not finish (no ``.complete`` marker) is made anew.

Per model, a small service file is written into the work directory:

- ``bentoml``: a ``@bentoml.service`` class that ``cloudpickle.load``s the model, with one batchable
  API ``predict(instances: list) -> list`` (adaptive batching on), under ``bentoml serve`` with as
  many workers as the baseline. Its JSON API takes the baseline's own body, ``{"instances": [...]}``,
  at ``/predict`` and answers the bare list of predictions.
- ``mlserver``: a custom runtime (``MLModel``) that ``cloudpickle.load``s the model, under
  ``mlserver start`` with ``parallel_workers`` as many as the baseline's workers (one HTTP process in
  front of them; MLServer's adaptive batching left off, its default). It speaks the V2 inference
  protocol: ``POST /v2/models/{name}/infer`` with ``{"inputs": [{"name", "shape", "datatype",
  "data"}]}`` (strings as ``BYTES``, numbers as ``FP64``, data flattened in row-major order), and
  answers the predictions in ``outputs[0].data``. Its scikit-learn runtime is not used: it loads
  joblib files and takes only numeric tensors, and the text pipeline takes strings.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _servers  # noqa: E402
from _servers import Server  # noqa: E402

# The peers' own releases (current ones that install on Python 3.11 beside the pins below).
PEERS: dict[str, list[str]] = {
    "bentoml": ["bentoml==1.4.40"],
    # uvloop 0.22 and later raise in asyncio.get_event_loop() without a running loop, which
    # MLServer 1.7.1's parallel inference workers call at start: they die and no model loads.
    "mlserver": ["mlserver==1.7.1", "uvloop==0.21.0"],
}
# Taken from the benchmark's environment at the versions it has: the pickle must load the same.
SHARED = ("scikit-learn", "numpy", "pandas", "cloudpickle", "scipy", "joblib", "threadpoolctl")
# BentoML's adaptive batching: the rows one model call may take (the runtime's default
# GAZELLE_RUNTIME_MAX_BATCH) and the dispatcher's latency budget.
BENTOML_MAX_BATCH = 512
BENTOML_MAX_LATENCY_MS = 1000
INSTALL_TIMEOUT = 1200

BENTOML_SERVICE = '''\
"""BentoML service of the endpoint benchmark (written by bench/_peers.py)."""
import os

import bentoml
import cloudpickle


@bentoml.service(workers={workers})
class Model:
    def __init__(self) -> None:
        with open(os.environ["BENCH_MODEL"], "rb") as f:
            self.model = cloudpickle.load(f)

    @bentoml.api(batchable=True, max_batch_size={max_batch}, max_latency_ms={max_latency_ms})
    def predict(self, instances: list) -> list:
        return self.model.predict(instances).tolist()
'''

MLSERVER_RUNTIME = '''\
"""MLServer custom runtime of the endpoint benchmark (written by bench/_peers.py)."""
import cloudpickle
from mlserver import MLModel
from mlserver.codecs import NumpyCodec, StringCodec
from mlserver.types import InferenceRequest, InferenceResponse


class PickleModel(MLModel):
    async def load(self) -> bool:
        with open(self.settings.parameters.uri, "rb") as f:
            self.model = cloudpickle.load(f)
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        tensor = payload.inputs[0]
        if tensor.datatype == "BYTES":
            rows = StringCodec.decode_input(tensor)
        else:
            rows = NumpyCodec.decode_input(tensor)
        out = self.model.predict(rows)
        if out.dtype.kind in "OUS":
            output = StringCodec.encode_output("predictions", [str(x) for x in out])
        else:
            output = NumpyCodec.encode_output("predictions", out)
        return InferenceResponse(model_name=self.name, outputs=[output])
'''


class PeerError(Exception):
    """A peer could not be installed, started or trusted; the message is one sentence for the JSON."""


# -- pure helpers -------------------------------------------------------------------------------

def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins_from_freeze(freeze: str, names: Iterable[str]) -> list[str]:
    """``name==version`` for each of ``names`` from ``pip freeze`` output, in the order asked."""
    found: dict[str, str] = {}
    for line in freeze.splitlines():
        name, sep, ver = line.strip().partition("==")
        if sep and ver:
            found[_canonical(name)] = f"{name}=={ver}"
    missing = [n for n in names if _canonical(n) not in found]
    if missing:
        raise PeerError(f"the benchmark's environment has no {', '.join(missing)} to pin the peers to")
    return [found[_canonical(n)] for n in names]


def cache_root(environ: Mapping[str, str]) -> Path:
    given = environ.get("GAZELLE_BENCH_CACHE")
    return Path(given) if given else Path(environ.get("HOME", "~")).expanduser() / ".cache" / "gazelle-bench"


def env_dir(root: Path, peer: str, requirements: list[str], python: str) -> Path:
    """Where the venv of these requirements lives: a new set of pins gets a new venv."""
    text = "\n".join([f"python {python}", *sorted(requirements)])
    return root / "peers" / f"{peer}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def v2_body(name: str, rows: list[Any]) -> dict[str, Any]:
    """The V2 inference request for ``rows``: a 1-d BYTES tensor of strings, or a 2-d FP64 tensor of
    numeric rows, flattened row-major."""
    if rows and all(isinstance(r, str) for r in rows):
        return {"inputs": [{"name": name, "shape": [len(rows)], "datatype": "BYTES", "data": rows}]}
    width = len(rows[0]) if rows else 0
    if any(len(r) != width for r in rows):
        raise ValueError("rows of unequal length")
    return {"inputs": [{"name": name, "shape": [len(rows), width], "datatype": "FP64",
                        "data": [float(x) for r in rows for x in r]}]}


def bentoml_predictions(payload: Any) -> list[Any]:
    """BentoML answers a ``-> list`` API with the bare JSON list."""
    if not isinstance(payload, list):
        raise PeerError(f"BentoML answered {str(payload)[:200]} instead of a list of predictions")
    return payload


def v2_predictions(payload: Any) -> list[Any]:
    """The predictions in a V2 inference response: the first output's data, one value per row (shape
    ``[rows]``, or ``[rows, 1]`` as MLServer's string codec gives it)."""
    try:
        output = payload["outputs"][0]
        data, shape = output["data"], output["shape"]
    except (KeyError, IndexError, TypeError):
        raise PeerError(f"MLServer answered {str(payload)[:200]} instead of a V2 inference response") from None
    if not isinstance(data, list) or shape not in ([len(data)], [len(data), 1]):
        raise PeerError(f"MLServer's output has shape {shape} for {len(data)} values, not one per row")
    return data


def first_sentence(text: str, limit: int = 300) -> str:
    """The last non-empty line of a log (where pip and servers say what went wrong), one line, trimmed."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    last = lines[-1] if lines else "no output"
    return last if len(last) <= limit else last[:limit - 3] + "..."


# -- virtualenvs ----------------------------------------------------------------------------------

def shared_pins() -> list[str]:
    out = subprocess.run([sys.executable, "-m", "pip", "freeze"], capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise PeerError(f"pip freeze of the benchmark's environment failed: {first_sentence(out.stderr)}")
    return pins_from_freeze(out.stdout, SHARED)


def ensure_env(peer: str, log: Callable[[str], None]) -> dict[str, Any]:
    """The peer's venv, made when missing: its path, requirements and whether it was built now."""
    requirements = [*PEERS[peer], *shared_pins()]
    venv = env_dir(cache_root(os.environ), peer, requirements, platform.python_version())
    python = venv / "bin" / "python"
    info: dict[str, Any] = {"venv": venv.name, "requirements": requirements}
    if (venv / ".complete").exists() and python.exists():
        return {**info, "built_seconds": None, "python": str(python)}
    started = time.monotonic()
    log(f"{peer}: building its venv ({' '.join(requirements)})")
    shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    install_log = venv.with_suffix(".log")
    with open(install_log, "w") as logf:
        steps = [[sys.executable, "-m", "venv", str(venv)],
                 [str(python), "-m", "pip", "install", "--disable-pip-version-check", *requirements]]
        for argv in steps:
            try:
                rc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                    timeout=INSTALL_TIMEOUT).returncode
            except subprocess.TimeoutExpired:
                raise PeerError(f"installing {peer} took more than {INSTALL_TIMEOUT} s") from None
            if rc != 0:
                raise PeerError(f"installing {peer} failed (exit {rc}): "
                                f"{first_sentence(install_log.read_text(errors='replace'))}")
    (venv / ".complete").write_text("\n".join(requirements) + "\n")
    return {**info, "built_seconds": round(time.monotonic() - started, 1), "python": str(python)}


# -- servers --------------------------------------------------------------------------------------

class Peer:
    """One peer serving one model: its server, the URL wrk posts to, its own request bodies and the
    way to read predictions out of its answers."""

    def __init__(self, server: Server, url: str, bodies: dict[int, Path],
                 predictions: Callable[[Any], list[Any]], config: dict[str, Any]) -> None:
        self.server, self.url, self.bodies, self.predictions, self.config = server, url, bodies, predictions, config


def start_bentoml(env: dict[str, Any], kind: str, pickle_path: Path, bodies: dict[int, Path],
                  workers: int, work: Path) -> Peer:
    home = work / f"bentoml-{kind}"
    home.mkdir()
    (home / "service.py").write_text(BENTOML_SERVICE.format(workers=workers, max_batch=BENTOML_MAX_BATCH,
                                                            max_latency_ms=BENTOML_MAX_LATENCY_MS))
    port = _servers.free_port()
    bentoml_cli = str(Path(env["python"]).with_name("bentoml"))
    argv = [bentoml_cli, "serve", "service:Model", "--working-dir", str(home),
            "--host", "127.0.0.1", "--port", str(port)]
    server = Server("bentoml", argv, port, work / kind / "bentoml.log", descendants=True,
                    env={"BENCH_MODEL": str(pickle_path), "BENTOML_HOME": str(home / "home"),
                         "BENTOML_DO_NOT_TRACK": "True", "PYTHONPATH": ""})
    _start(server, "/readyz")
    config = {"workers": workers, "adaptive_batching": True, "max_batch_size": BENTOML_MAX_BATCH,
              "max_latency_ms": BENTOML_MAX_LATENCY_MS, "route": "POST /predict, the baseline's JSON body"}
    # Its JSON API takes the very body the baseline takes.
    return Peer(server, server.url + "/predict", bodies, bentoml_predictions, config)


def start_mlserver(env: dict[str, Any], kind: str, name: str, pickle_path: Path, rows: dict[int, list[Any]],
                   workers: int, work: Path) -> Peer:
    home = work / f"mlserver-{kind}"
    model_dir = home / name
    model_dir.mkdir(parents=True)
    (home / "runtime.py").write_text(MLSERVER_RUNTIME)
    port, grpc_port, metrics_port = _servers.free_port(), _servers.free_port(), _servers.free_port()
    (home / "settings.json").write_text(json.dumps({
        "host": "127.0.0.1", "http_port": port, "grpc_port": grpc_port, "metrics_port": metrics_port,
        "parallel_workers": workers, "load_models_at_startup": True,
        "metrics_dir": str(home / "metrics")}))  # else it writes .metrics/ into the current directory
    (model_dir / "model-settings.json").write_text(json.dumps({
        "name": name, "implementation": "runtime.PickleModel", "parameters": {"uri": str(pickle_path)}}))
    bodies = {}
    for batch, batch_rows in rows.items():
        bodies[batch] = work / f"{kind}-{batch}-v2.json"
        bodies[batch].write_text(json.dumps(v2_body("instances", batch_rows)))
    mlserver_cli = str(Path(env["python"]).with_name("mlserver"))
    server = Server("mlserver", [mlserver_cli, "start", str(home)], port, work / kind / "mlserver.log",
                    descendants=True, env={"PYTHONPATH": str(home)})
    _start(server, f"/v2/models/{name}/ready")
    config = {"workers": workers, "http_processes": 1, "parallel_workers": workers, "adaptive_batching": False,
              "runtime": "custom MLModel loading the cloudpickle",
              "route": f"POST /v2/models/{name}/infer, V2 inference protocol"}
    return Peer(server, f"{server.url}/v2/models/{name}/infer", bodies, v2_predictions, config)


def _start(server: Server, ready_path: str) -> None:
    try:
        server.start(ready_path, timeout=180)
    except RuntimeError:
        raise PeerError(f"{server.name} did not become ready: {first_sentence(server.tail())}") from None
