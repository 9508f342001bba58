"""Deploys through a real ``gazelle server`` (gunicorn) with the real local target: every stage, the
gateway, redeploys, failures that leave the previous version serving, rollback, delete, and secrets
that never reach the server's log or any job event."""
from __future__ import annotations

import json
from typing import Iterator

import pytest

from tests.integration._server import (Boom, ServerProcess, bundle, doubled_lengths, kill_runtimes,
                                       lengths, process_id, runtime_pids, start_server, wait_for)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    s = start_server(tmp_path_factory.mktemp("server") / "data")
    try:
        yield s
    finally:
        code = s.terminate()
        leftovers = runtime_pids(s.data_dir)
        kill_runtimes(s.data_dir)
        assert code == 0, s.log_text()[-3000:]
        assert leftovers == [], "a clean server stop must stop the runtimes it started"


def _sse(text: str) -> list[tuple[str, dict[str, object]]]:
    found = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line and not line.startswith(":"))
        if "event" in fields:
            found.append((fields["event"], json.loads(fields["data"])))
    return found


def test_deploy_runs_every_stage_and_goes_live_behind_the_gateway(server: ServerProcess) -> None:
    job = server.deploy("lens", bundle(lengths, "lens"))
    assert job["status"] == "succeeded", json.dumps(job, indent=1)
    assert [(s["name"], s["status"]) for s in job["stages"]] == [
        ("check", "done"), ("build", "done"), ("push", "skipped"), ("deploy", "done"), ("sanity", "done"),
        ("live", "done")]
    assert job["url"] == f"{server.url}/m/lens"
    answer = server.predict("/m/lens/predict", ["hello", "hi"])
    assert answer.status_code == 200, answer.text
    assert answer.json()["predictions"] == [5, 2] and answer.json()["version"] == 1
    pinned = server.predict("/m/lens/v/1/predict", ["four"])
    assert pinned.status_code == 200 and pinned.json()["predictions"] == [4]
    model = server.model("lens")
    assert model["live_version"] == 1 and model["versions"][0]["status"] == "live"


def test_job_events_replay_every_stage_over_http(server: ServerProcess) -> None:
    job = server.deploy("evented", bundle(lengths, "evented"))
    events = _sse(server.events(job["id"]))
    stages = [(d["stage"], d["status"]) for kind, d in events if kind == "stage"]
    assert stages[0] == ("check", "running") and stages[-1] == ("live", "done")
    assert ("push", "skipped") in stages and ("sanity", "done") in stages
    assert any(kind == "log" for kind, _ in events)
    assert events[-1][0] == "end" and events[-1][1]["status"] == "succeeded"


def test_private_models_need_a_predict_token_and_public_ones_do_not(server: ServerProcess) -> None:
    server.deploy("private", bundle(lengths, "private"))
    server.deploy("open", bundle(lengths, "open"), public=True)
    refused = server.predict("/m/private/predict", ["a"], token="")
    assert refused.status_code == 401 and refused.headers["WWW-Authenticate"].startswith("Bearer")
    assert refused.json()["error"]["type"] == "unauthorized"
    assert server.predict("/m/open/predict", ["a"], token="").status_code == 200
    with server.client() as c:
        predict = c.post("/api/v1/tokens", json={"scope": "predict"}).json()["token"]
    server.extra_tokens.append(predict)
    assert server.predict("/m/private/predict", ["a"], token=predict).status_code == 200
    assert server.upload("private", bundle(doubled_lengths, "private"), token=predict).status_code == 403


def test_redeploy_switches_to_the_new_version_and_retires_the_old(server: ServerProcess) -> None:
    server.deploy("swap", bundle(lengths, "swap"))
    job = server.deploy("swap", bundle(doubled_lengths, "swap"))
    assert job["status"] == "succeeded" and job["version"] == 2
    answer = server.predict("/m/swap/predict", ["abc"])
    assert answer.json()["predictions"] == [6] and answer.json()["version"] == 2
    wait_for(lambda: {v["version"]: v["status"] for v in server.model("swap")["versions"]} == {1: "retired", 2: "live"},
             "version 1 to be retired after the drain delay")
    assert server.predict("/m/swap/v/1/predict", ["abc"]).status_code == 404


def test_the_same_bundle_again_is_the_live_version_without_a_new_deploy(server: ServerProcess) -> None:
    data = bundle(lengths, "same")
    first = server.deploy("same", data)
    again = server.upload("same", data)
    assert again.status_code == 200 and again.json()["version"] == first["version"] == 1
    assert server.job(again.json()["job"])["status"] == "succeeded"
    assert len(server.model("same")["versions"]) == 1


def test_a_sanity_mismatch_fails_and_the_previous_version_keeps_serving(server: ServerProcess) -> None:
    server.deploy("steady", bundle(lengths, "steady"))
    job = server.deploy("steady", bundle(process_id, "steady"))
    assert job["status"] == "failed"
    assert job["error"]["stage"] == "sanity"
    assert "row 0: expected" in job["error"]["message"]
    assert [s["status"] for s in job["stages"]][-2:] == ["failed", "pending"]
    answer = server.predict("/m/steady/predict", ["abcd"])
    assert answer.status_code == 200 and answer.json()["predictions"] == [4] and answer.json()["version"] == 1
    statuses = {v["version"]: v["status"] for v in server.model("steady")["versions"]}
    assert statuses == {1: "live", 2: "failed"}
    assert not any("steady-v2" in " ".join(psutil_cmdline(pid)) for pid in runtime_pids(server.data_dir))


def psutil_cmdline(pid: int) -> list[str]:
    import psutil

    try:
        return psutil.Process(pid).cmdline()
    except psutil.Error:
        return []


def test_a_model_that_raises_while_loading_fails_at_deploy_with_its_message(server: ServerProcess) -> None:
    server.deploy("fragile", bundle(lengths, "fragile"))
    job = server.deploy("fragile", bundle(Boom(), "fragile", sample=[[1.0]]))
    assert job["status"] == "failed" and job["error"]["stage"] == "deploy"
    assert "boom while loading" in job["error"]["message"]
    assert job["error"]["logs"], "the runtime's last log lines explain the failure"
    answer = server.predict("/m/fragile/predict", ["xy"])
    assert answer.status_code == 200 and answer.json()["version"] == 1


def test_rollback_makes_an_earlier_version_live_again(server: ServerProcess) -> None:
    server.deploy("back", bundle(lengths, "back"))
    server.deploy("back", bundle(doubled_lengths, "back"))
    with server.client() as c:
        answer = c.post("/api/v1/models/back/rollback", json={"version": 1})
    assert answer.status_code == 202, answer.text
    job = server.wait_job(answer.json()["job"])
    assert job["status"] == "succeeded" and job["kind"] == "rollback" and job["version"] == 1
    answer = server.predict("/m/back/predict", ["abc"])
    assert answer.json()["predictions"] == [3] and answer.json()["version"] == 1
    assert server.model("back")["live_version"] == 1


def test_delete_stops_the_model_and_forgets_it(server: ServerProcess) -> None:
    server.deploy("doomed", bundle(lengths, "doomed"))
    with server.client() as c:
        answer = c.delete("/api/v1/models/doomed")
        assert answer.status_code == 202 and answer.json()["model"] == "doomed"
        assert server.wait_job(answer.json()["job"])["status"] == "succeeded"
        assert c.get("/api/v1/models/doomed").status_code == 404
    gone = server.predict("/m/doomed/predict", ["a"])
    assert gone.status_code == 404 and "doomed" in gone.json()["error"]["message"]
    assert not any(any("doomed" in part for part in psutil_cmdline(pid)) for pid in runtime_pids(server.data_dir))


def test_metrics_and_readiness_answer_on_the_real_server(server: ServerProcess) -> None:
    with server.client(token="") as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        ready = c.get("/readyz").json()
        assert ready["status"] == "ready" and ready["runs_jobs"] is True
        text = c.get("/metrics").text
    assert "gazelle_models_live" in text and "gazelle_server_requests_total" in text


def test_tokens_never_appear_in_the_server_log_or_any_job_event(server: ServerProcess) -> None:
    """Runs last in this module: it checks what every earlier test left in the log and the events."""
    wrong = "gz_this-is-a-wrong-token-that-must-not-echo"
    assert wrong not in server.predict("/m/lens/predict", ["a"], token=wrong).text
    with server.client(wrong) as c:
        assert wrong not in c.get("/api/v1/models").text
    secrets = [server.token, wrong, *server.extra_tokens]
    log = server.log_text()
    assert "Gazelle server at" in log and str(server.data_dir / "token") in log
    job_ids = _all_job_ids(server)
    assert len(job_ids) > 10, "expected the jobs of the earlier tests"
    events = "".join(server.events(job_id) for job_id in sorted(job_ids))
    for secret in secrets:
        assert secret not in log, "a token leaked into the server log"
        assert secret not in events, "a token leaked into a job event"


def _all_job_ids(server: ServerProcess) -> list[str]:
    """Every job the server recorded, read straight from its store (the API lists models, not jobs)."""
    from gazelle.server.store import Store

    store = Store(f"sqlite:///{server.data_dir / 'gazelle.db'}")
    try:
        return [job.id for job in store.jobs(limit=10_000)]
    finally:
        store.close()
