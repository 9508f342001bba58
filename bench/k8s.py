"""Deploy latency on Kubernetes: seconds from the ``gazelle.deploy()`` call to the first correct
prediction through the endpoint, with the append builder and the test environment's cluster.

A real ``gazelle server --target kubernetes`` (host-network mode) on a free loopback port, pushing to the
test environment's registry, in a namespace of its own (created, then deleted). Measured, on the
account-suggestion model:

- ``cold``: the first deploy, whose dependency layer pip builds (depends on pip's cache and network);
- ``warm``: another model (other training data) with the same pins under a new name: the dependency
  layer is cached, only the model layer is pushed (the DESIGN section 8 target: under 15 s on 2 cores);
- ``redeploy``: a third model under the warm model's name, beside the live version, then switched;
- ``rollback``: back to the warm model's version 1, which was kept at zero replicas: no build, no push.

The server start is not timed. Medians over ``--rounds`` rounds go to stdout as one JSON object; the
progress of each deploy goes to stderr. Needs ``make testenv-up`` (it reads the test environment's env
file, as the tests do).
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
import uuid
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "notebooks"))
sys.path.insert(0, str(ROOT))

import gazelle  # noqa: E402
from expenses import make_corpus, train  # noqa: E402
from gazelle.client.localserver import LocalServer  # noqa: E402
from tests.conftest import kube_api, testenv_vars  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from deploy import until_correct  # noqa: E402

def timed(call: Callable[[], Any], name: str) -> float:
    start = time.perf_counter()
    with redirect_stdout(sys.stderr):
        ep = call()
    return until_correct(start, ep, name)


def one_round(index: int, server: LocalServer) -> dict[str, float]:
    models = []
    for seed in (3 * index, 3 * index + 1, 3 * index + 2):
        texts, labels = make_corpus(1500, seed=seed)
        models.append((train(texts, labels), texts[:5]))
    auth = {"server": server.url, "token": server.token}
    cold, warm = f"bench-cold-{index}", f"bench-warm-{index}"
    return {
        "cold_s": timed(lambda: gazelle.deploy(models[0][0], cold, sample=models[0][1], **auth), cold),
        "warm_s": timed(lambda: gazelle.deploy(models[1][0], warm, sample=models[1][1], **auth), warm),
        "redeploy_s": timed(lambda: gazelle.deploy(models[2][0], warm, sample=models[2][1], **auth), warm),
        "rollback_s": timed(lambda: gazelle.rollback(warm, 1, **auth), warm),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=1)
    args = p.parse_args(argv)
    env = testenv_vars()
    from kubernetes import client

    namespace = f"bench-k8s-{uuid.uuid4().hex[:6]}"
    minor = f"{sys.version_info.major}.{sys.version_info.minor}"
    runs = []
    with kube_api(env["GAZELLE_TEST_KUBECONFIG"]) as api, \
            tempfile.TemporaryDirectory(prefix="gazelle-bench-k8s-") as tmp:
        core = client.CoreV1Api(api)
        core.create_namespace({"metadata": {"name": namespace}})
        try:
            for index in range(args.rounds):
                server_env = {
                    "GAZELLE_TARGET": "kubernetes", "GAZELLE_REGISTRY": f"{env['GAZELLE_TEST_REGISTRY']}/bench-k8s",
                    "GAZELLE_BASE_IMAGES": json.dumps({minor: env["GAZELLE_TEST_BASE_IMAGE"]}),
                    "KUBECONFIG": env["GAZELLE_TEST_KUBECONFIG"], "GAZELLE_K8S_NAMESPACE": namespace,
                    "GAZELLE_K8S_HOST_NETWORK": "true", "GAZELLE_DRAIN_SECONDS": "1"}
                with LocalServer.start(Path(tmp) / f"round-{index}", env=server_env) as server:
                    wait_for_account(core, namespace)
                    runs.append(one_round(index, server))
                print(f"round {index + 1}: {json.dumps({k: round(v, 3) for k, v in runs[-1].items()})}",
                      file=sys.stderr)
        finally:
            core.delete_namespace(namespace, _preload_content=False)
    keys = ("cold_s", "warm_s", "redeploy_s", "rollback_s")
    result: dict[str, Any] = {key: round(statistics.median(r[key] for r in runs), 3) for key in keys}
    result.update(target="kubernetes (host network, 1 node)", builder="append", rounds=args.rounds,
                  model="account-suggestion (TF-IDF + NB)", python=platform.python_version(),
                  runs=[{k: round(v, 3) for k, v in r.items()} for r in runs])
    print(json.dumps(result))
    return 0


def wait_for_account(core: Any, namespace: str) -> None:
    """Pods are refused until the controller-manager has given the namespace its default account."""
    from kubernetes.client import ApiException

    deadline = time.monotonic() + 60
    while True:
        try:
            core.read_namespaced_service_account("default", namespace)
            return
        except ApiException as err:
            if err.status != 404 or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


if __name__ == "__main__":
    sys.exit(main())
