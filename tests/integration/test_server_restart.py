"""A real ``gazelle server`` killed mid-job (SIGKILL of gunicorn's whole process group) and started
again on the same data directory: the interrupted job reads failed with the reason, and the live
version answers again through the new server's gateway."""
from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import psutil
import pytest

from gazelle.server.jobs import RESTART_MESSAGE
from tests.helpers import SlowToLoad
from tests.integration._server import (bundle, doubled_lengths, kill_runtimes, lengths, runtime_pids, start_server,
                                       wait_for)

pytestmark = pytest.mark.integration


def test_a_killed_server_fails_the_interrupted_job_and_restores_live_versions(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = start_server(data_dir, env={"GAZELLE_TEST_STAGE_DELAY": "slow:build=120"})
    second = None
    try:
        assert first.deploy("steady", bundle(lengths, "steady"))["status"] == "succeeded"
        accepted = first.upload("slow", bundle(lengths, "slow"))
        assert accepted.status_code == 202
        slow_job = accepted.json()["job"]
        wait_for(lambda: first.job(slow_job)["stage"] == "build", "the slow job to reach its build stage")
        first.kill()

        second = start_server(data_dir)
        job = second.wait_job(slow_job, timeout=30)
        assert job["status"] == "failed", json.dumps(job, indent=1)
        assert job["error"]["stage"] == "build" and job["error"]["message"] == RESTART_MESSAGE
        assert second.events(slow_job).rstrip().split("\n\n")[-1].startswith("id: ")
        assert "event: end" in second.events(slow_job)
        assert {v["version"]: v["status"] for v in second.model("slow")["versions"]} == {1: "failed"}

        answer = second.predict("/m/steady/predict", ["abc"])
        assert answer.status_code == 200, answer.text
        assert answer.json()["predictions"] == [3] and answer.json()["version"] == 1

        again = second.deploy("slow", bundle(lengths, "slow"))
        assert again["status"] == "succeeded" and again["version"] == 1
    finally:
        first.kill()
        if second is not None:
            second.terminate()
        kill_runtimes(data_dir)


def test_a_cleanly_stopped_server_brings_its_live_versions_back_on_start(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = start_server(data_dir)
    second = None
    try:
        first.deploy("kept", bundle(lengths, "kept"))
        first.deploy("kept", bundle(doubled_lengths, "kept"))
        assert first.terminate() == 0
        second = start_server(data_dir)   # ready only once the live versions are restored
        answer = second.predict("/m/kept/predict", ["ab"])
        assert answer.json()["predictions"] == [4] and answer.json()["version"] == 2
    finally:
        first.kill()
        if second is not None:
            second.terminate()
        kill_runtimes(data_dir)


def test_a_clean_stop_ends_open_event_streams_and_the_next_start_fails_the_cut_job(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = start_server(data_dir, env={"GAZELLE_TEST_STAGE_DELAY": "slow:build=120"})
    second = None
    received: list[str] = []
    try:
        job_id = first.upload("slow", bundle(lengths, "slow")).json()["job"]
        wait_for(lambda: first.job(job_id)["stage"] == "build", "the slow job to reach its build stage")

        def follow() -> None:
            with first.client() as c, c.stream("GET", f"/api/v1/jobs/{job_id}/events") as answer:
                for text in answer.iter_text():
                    received.append(text)

        reader = threading.Thread(target=follow, daemon=True)
        reader.start()
        wait_for(lambda: "event: stage" in "".join(received), "the stream to replay the job's stages")
        assert first.terminate() == 0
        reader.join(25)   # a guard against a hang, not a timing assertion
        assert not reader.is_alive(), "the event stream stayed open after the server stopped"
        assert "event: end" not in "".join(received)

        second = start_server(data_dir)
        job = second.job(job_id)
        assert job["status"] == "failed" and job["error"]["message"] == RESTART_MESSAGE
    finally:
        first.kill()
        if second is not None:
            second.terminate()
        kill_runtimes(data_dir)


def test_ctrl_c_stops_the_server_and_the_model_processes_it_started(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server = start_server(data_dir)
    try:
        server.deploy("one", bundle(lengths, "one"))
        server.deploy("two", bundle(lengths, "two"))
        assert runtime_pids(data_dir)
        os.killpg(server.popen.pid, signal.SIGINT)   # what a terminal sends to the whole group
        assert server.popen.wait(60) == 0, server.log_text()[-2000:]
        wait_for(lambda: runtime_pids(data_dir) == [], "the model processes to stop", timeout=10)
    finally:
        server.kill()
        kill_runtimes(data_dir)


def test_kill_9_of_the_master_leaves_the_models_serving_for_the_next_start(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = start_server(data_dir)
    second = None
    try:
        first.deploy("sturdy", bundle(lengths, "sturdy"))
        before = sorted(runtime_pids(data_dir))
        assert before
        workers = [p.pid for p in first.workers()]
        os.kill(first.popen.pid, signal.SIGKILL)   # the master only: its worker sees "Parent changed"
        first.popen.wait(30)
        wait_for(lambda: not any(psutil.pid_exists(w) and psutil.Process(w).status() != psutil.STATUS_ZOMBIE
                                 for w in workers), "the orphaned worker to exit", timeout=90)
        assert sorted(runtime_pids(data_dir)) == before   # not one model process was stopped
        assert "leaving the model versions running" in first.log_text()

        second = start_server(data_dir)
        answer = second.predict("/m/sturdy/predict", ["abcd"])
        assert answer.status_code == 200 and answer.json()["predictions"] == [4]
        assert sorted(runtime_pids(data_dir)) == before   # adopted, not started again
    finally:
        first.kill()
        if second is not None:
            second.terminate()
        kill_runtimes(data_dir)


def test_after_a_restart_each_model_serves_once_its_own_runtime_is_back_and_never_502s(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = start_server(data_dir)
    second = None
    try:
        first.deploy("quick", bundle(lengths, "quick"))
        first.deploy("sluggish", bundle(SlowToLoad(5), "sluggish"))
        first.kill()
        kill_runtimes(data_dir)   # both must be started again, not adopted

        second = start_server(data_dir, ready="/healthz")
        seen: dict[str, set[int]] = {"quick": set(), "sluggish": set()}
        quick_first = None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            for name in seen:
                answer = second.predict(f"/m/{name}/predict", ["abc"])
                seen[name].add(answer.status_code)
                if answer.status_code == 503:
                    assert answer.json()["error"]["type"] == "restoring"
                    assert answer.headers["Retry-After"] == "2"
                if name == "quick" and answer.status_code == 200 and quick_first is None:
                    quick_first = 200 not in seen["sluggish"]
            if 200 in seen["sluggish"]:
                break
            time.sleep(0.05)
        assert 200 in seen["quick"] and 200 in seen["sluggish"], seen
        assert quick_first is True   # the quick model served while the slow one was still loading
        assert 503 in seen["sluggish"]
        assert all(code in (200, 503) for codes in seen.values() for code in codes), seen   # never a 502
    finally:
        first.kill()
        if second is not None:
            second.terminate()
        kill_runtimes(data_dir)
