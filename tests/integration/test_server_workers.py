"""``gazelle server --workers 2``: every worker serves the API and the gateway from the shared store;
exactly one, the holder of the runner lock, runs the jobs; when it dies another takes over."""
from __future__ import annotations

import os
import signal
from pathlib import Path

import psutil
import pytest

from tests.integration._server import bundle, doubled_lengths, kill_runtimes, lengths, start_server, wait_for

pytestmark = pytest.mark.integration


def _runner_pid(data_dir: Path) -> int:
    text = (data_dir / "runner.lock").read_text().strip()
    return int(text) if text else 0


def test_one_worker_runs_jobs_all_serve_and_another_takes_over(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server = start_server(data_dir, workers=2)
    try:
        # /readyz answers as soon as one worker serves; the second may still be forking.
        wait_for(lambda: len(server.workers()) == 2, "gunicorn to start its second worker")
        workers = {p.pid for p in server.workers()}
        assert server.deploy("shared", bundle(lengths, "shared"))["status"] == "succeeded"
        runner = _runner_pid(data_dir)
        assert runner in workers
        answers = [server.predict("/m/shared/predict", ["abc"]) for _ in range(40)]
        assert {a.status_code for a in answers} == {200}
        assert {a.json()["predictions"][0] for a in answers} == {3}

        os.kill(runner, signal.SIGKILL)
        wait_for(lambda: _runner_pid(data_dir) not in (0, runner) and
                 psutil.pid_exists(_runner_pid(data_dir)), "another worker to take the runner lock")
        job = server.deploy("shared", bundle(doubled_lengths, "shared"))
        assert job["status"] == "succeeded" and job["version"] == 2
        wait_for(lambda: server.predict("/m/shared/predict", ["abc"]).json().get("predictions") == [6],
                 "every worker to route to version 2", timeout=10)
    finally:
        server.terminate()
        kill_runtimes(data_dir)


def test_a_revoked_token_is_refused_by_every_worker_within_the_cache_bound(tmp_path: Path) -> None:
    from gazelle.server.auth import CACHE_SECONDS

    server = start_server(tmp_path / "data", workers=2)
    try:
        wait_for(lambda: len(server.workers()) == 2, "gunicorn to start its second worker")
        with server.client() as admin:
            made = admin.post("/api/v1/tokens", json={"scope": "predict", "name": "leaked"}).json()

        def statuses() -> set[int]:
            # A fresh connection each time, so the requests spread over both workers (and their caches).
            seen = set()
            for _ in range(20):
                with server.client(made["token"]) as c:
                    seen.add(c.get("/api/v1/models").status_code)
            return seen

        assert statuses() == {200}
        with server.client() as admin:
            assert admin.delete(f"/api/v1/tokens/{made['id']}").status_code == 200
        wait_for(lambda: statuses() == {401}, "every worker to refuse the revoked token",
                 timeout=CACHE_SECONDS + 10)
    finally:
        server.terminate()
        kill_runtimes(server.data_dir)
