"""The build server's API in-process (Flask test client), with jobs queued but never run."""
from __future__ import annotations

import io
import json
import tarfile

import pytest

from tests.unit._server import TAR, Server, bundle_bytes, server  # noqa: F401  (fixture)


def _tar(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _error(answer: object) -> dict[str, str]:
    body = answer.get_json()  # type: ignore[attr-defined]
    assert set(body) == {"error"}, body
    assert {"type", "message"} <= set(body["error"])
    return body["error"]  # type: ignore[no-any-return]


def test_upload_queues_a_job_for_version_1(server: Server) -> None:
    answer = server.upload("lens", bundle_bytes("lens"))
    assert answer.status_code == 202
    body = answer.get_json()
    assert body["version"] == 1 and body["model"] == "lens" and body["status"] == "queued"
    job = server.get(f"/api/v1/jobs/{body['job']}").get_json()
    assert job["status"] == "queued" and job["version"] == 1
    assert [s["name"] for s in job["stages"]] == ["check", "build", "push", "deploy", "sanity", "live"]
    assert all(s["status"] == "pending" for s in job["stages"])
    assert job["url"].endswith("/m/lens") and job["error"] is None


def test_bundle_is_stored_by_its_digest(server: Server) -> None:
    data = bundle_bytes("lens")
    server.upload("lens", data)
    model = server.get("/api/v1/models/lens").get_json()
    digest = model["versions"][0]["digest"]
    stored = server.data_dir / "bundles" / f"sha256-{digest.split(':')[1]}.tar"
    assert stored.read_bytes() == data


def test_same_bundle_twice_is_one_version_and_one_job(server: Server) -> None:
    first = server.upload("lens", bundle_bytes("lens")).get_json()
    again = server.upload("lens", bundle_bytes("lens"))
    assert again.status_code == 202
    assert again.get_json()["version"] == 1 and again.get_json()["job"] == first["job"]
    versions = server.get("/api/v1/models/lens").get_json()["versions"]
    assert [v["version"] for v in versions] == [1]


def test_new_bundles_get_the_next_version_numbers(server: Server) -> None:
    numbers = [server.upload("lens", bundle_bytes("lens", v)).get_json()["version"] for v in range(3)]
    assert numbers == [1, 2, 3]
    assert server.upload("other", bundle_bytes("other")).get_json()["version"] == 1


def test_same_bundle_of_the_live_version_answers_200_with_a_succeeded_job(server: Server) -> None:
    server.upload("lens", bundle_bytes("lens"))
    store = server.state.store
    store.update_version("lens", 1, status="live", url="http://127.0.0.1:9/")
    store.switch_live("lens", 1)
    answer = server.upload("lens", bundle_bytes("lens"))
    assert answer.status_code == 200
    job = server.get(f"/api/v1/jobs/{answer.get_json()['job']}").get_json()
    assert job["status"] == "succeeded" and job["version"] == 1
    assert [s["status"] for s in job["stages"]] == ["done"] + ["skipped"] * 5
    assert len(server.get("/api/v1/models/lens").get_json()["versions"]) == 1


def test_same_bundle_of_a_failed_version_redeploys_it(server: Server) -> None:
    first = server.upload("lens", bundle_bytes("lens")).get_json()
    store = server.state.store
    store.update_job(first["job"], status="failed", finished=1.0)
    store.update_version("lens", 1, status="failed")
    again = server.upload("lens", bundle_bytes("lens"))
    assert again.status_code == 202
    body = again.get_json()
    assert body["version"] == 1 and body["job"] != first["job"] and body["status"] == "queued"


@pytest.mark.parametrize("data, problem", [
    (b"certainly not a tar", "not a tar archive"),
    (_tar({"gazelle.json": b"{}"}), "lacks model.pkl"),
    (_tar({"gazelle.json": b"{not json", "model.pkl": b"x"}), "not valid JSON"),
    (_tar({"gazelle.json": json.dumps({"format": 9}).encode(), "model.pkl": b"x"}), "format 9 is newer"),
    (_tar({"../evil": b"x"}), "unsafe path"),
])
def test_unreadable_bundles_answer_422_naming_the_problem(server: Server, data: bytes, problem: str) -> None:
    answer = server.upload("lens", data)
    assert answer.status_code == 422
    error = _error(answer)
    assert error["type"] == "bundle_error" and problem in error["message"]
    assert server.get("/api/v1/models/lens").status_code == 404


def test_tampered_model_pickle_answers_422(server: Server) -> None:
    with tarfile.open(fileobj=io.BytesIO(bundle_bytes("lens"))) as tar:
        manifest = tar.extractfile("gazelle.json").read()  # type: ignore[union-attr]
    answer = server.upload("lens", _tar({"gazelle.json": manifest, "model.pkl": b"tampered"}))
    assert answer.status_code == 422 and "model_sha256" in _error(answer)["message"]


def test_empty_body_answers_422(server: Server) -> None:
    answer = server.upload("lens", b"")
    assert answer.status_code == 422 and "empty" in _error(answer)["message"]


def test_bundle_for_another_model_answers_400(server: Server) -> None:
    answer = server.upload("other", bundle_bytes("lens"))
    assert answer.status_code == 400
    assert "'lens'" in _error(answer)["message"] and "'other'" in _error(answer)["message"]


def test_invalid_model_name_answers_400(server: Server) -> None:
    answer = server.upload("Not_A_Name", bundle_bytes("lens"))
    assert answer.status_code == 400 and _error(answer)["type"] == "invalid_name"


def test_wrong_content_type_answers_415(server: Server) -> None:
    answer = server.client.post("/api/v1/models/lens/versions", data=bundle_bytes("lens"),
                                headers=server.headers(**{"Content-Type": "application/json"}))
    assert answer.status_code == 415
    assert "application/x-tar" in _error(answer)["message"]


def test_bundle_over_the_limit_answers_413(tmp_path: object) -> None:
    from tests.unit._server import start

    s = start(tmp_path, max_bundle_bytes=2048)  # type: ignore[arg-type]
    try:
        answer = s.upload("lens", b"x" * 4096)
        assert answer.status_code == 413
        assert _error(answer)["type"] == "payload_too_large" and "2048" in _error(answer)["message"]
        assert s.upload("lens", b"x" * 100).status_code == 422   # still serving, and reads small bodies
    finally:
        s.state.shutdown()


@pytest.mark.parametrize("query, field", [("?public=maybe", "public"), ("?replicas=0", "replicas"),
                                          ("?replicas=lots", "replicas"), ("?resources=%7B", "resources"),
                                          ("?resources=" + "%5B" * 100_000, "resources"),
                                          ('?resources={"cpu":"lots"}', "resources.cpu"),
                                          ('?resources={"requests":{"memory":"2Gi"},"limits":{"memory":"1Gi"}}',
                                           "resources.limits.memory")])
def test_bad_query_parameters_answer_400_naming_them(server: Server, query: str, field: str) -> None:
    answer = server.upload("lens", bundle_bytes("lens"), query=query)
    assert answer.status_code == 400 and _error(answer)["message"].startswith(field)


def test_public_flag_is_recorded_on_the_version(server: Server) -> None:
    server.upload("lens", bundle_bytes("lens"), query="?public=true&replicas=3")
    version = server.get("/api/v1/models/lens").get_json()["versions"][0]
    assert version["public"] is True and version["replicas"] == 3


def test_unknown_model_and_job_answer_404_naming_them(server: Server) -> None:
    answer = server.get("/api/v1/models/ghost")
    assert answer.status_code == 404 and "ghost" in _error(answer)["message"]
    answer = server.get("/api/v1/jobs/feedfacecafe")
    assert answer.status_code == 404 and "feedfacecafe" in _error(answer)["message"]
    answer = server.get("/api/v1/jobs/feedfacecafe/events")
    assert answer.status_code == 404


def test_model_json_lists_versions_and_url(server: Server) -> None:
    server.upload("lens", bundle_bytes("lens"))
    model = server.get("/api/v1/models/lens").get_json()
    assert model["name"] == "lens" and model["public"] is False and model["live_version"] is None
    assert model["url"] == "http://127.0.0.1:8000/m/lens"
    assert model["versions"][0]["status"] == "deploying"
    listed = server.get("/api/v1/models").get_json()["models"]
    assert [m["name"] for m in listed] == ["lens"]


def test_rollback_to_a_missing_version_answers_404_listing_versions(server: Server) -> None:
    server.upload("lens", bundle_bytes("lens"))
    answer = server.client.post("/api/v1/models/lens/rollback", json={"version": 7}, headers=server.headers())
    assert answer.status_code == 404
    assert _error(answer)["message"] == "model lens version 7 not found (versions: 1)"


@pytest.mark.parametrize("body, problem", [({}, "version: required"), ({"version": "two"}, "version"),
                                           ({"version": True}, "version"), ([1], "JSON object")])
def test_rollback_with_a_bad_body_answers_400(server: Server, body: object, problem: str) -> None:
    server.upload("lens", bundle_bytes("lens"))
    answer = server.client.post("/api/v1/models/lens/rollback", json=body, headers=server.headers())
    assert answer.status_code == 400 and problem in _error(answer)["message"]


def test_rollback_with_malformed_json_answers_400(server: Server) -> None:
    server.upload("lens", bundle_bytes("lens"))
    answer = server.client.post("/api/v1/models/lens/rollback", data=b"{version:", headers=server.headers(
        **{"Content-Type": "application/json"}))
    assert answer.status_code == 400 and "not valid JSON" in _error(answer)["message"]


def test_rollback_queues_a_job_redeploying_the_stored_version(server: Server) -> None:
    first = server.upload("lens", bundle_bytes("lens", 0)).get_json()
    second = server.upload("lens", bundle_bytes("lens", 1)).get_json()
    store = server.state.store
    for job in (first, second):
        store.update_job(job["job"], status="succeeded", finished=1.0)
    store.switch_live("lens", 2)
    store.update_version("lens", 1, status="retired")
    answer = server.client.post("/api/v1/models/lens/rollback", json={"version": 1}, headers=server.headers())
    assert answer.status_code == 202
    job = server.get(f"/api/v1/jobs/{answer.get_json()['job']}").get_json()
    assert job["kind"] == "rollback" and job["version"] == 1 and job["status"] == "queued"


def test_unknown_paths_and_methods_answer_json(server: Server) -> None:
    answer = server.get("/api/v1/nothing-here")
    assert answer.status_code == 404 and _error(answer)["type"] == "not_found"
    answer = server.client.put("/api/v1/models", headers=server.headers())
    assert answer.status_code == 405 and "GET" in answer.headers["Allow"]
    assert _error(answer)["type"] == "method_not_allowed"


def test_gateway_for_an_unknown_model_answers_404_naming_it(server: Server) -> None:
    answer = server.client.post("/m/ghost/predict", json={"instances": [1]})
    assert answer.status_code == 404 and "ghost" in _error(answer)["message"]


def test_gateway_for_a_model_without_live_version_answers_404(server: Server) -> None:
    server.upload("lens", bundle_bytes("lens"))
    answer = server.client.post("/m/lens/predict", json={"instances": ["a"]}, headers=server.headers())
    assert answer.status_code == 404 and "no live version" in _error(answer)["message"]


def test_health_ready_and_metrics_need_no_token(server: Server) -> None:
    assert server.client.get("/healthz").get_json() == {"status": "ok"}
    ready = server.client.get("/readyz")
    assert ready.status_code == 200 and ready.get_json()["status"] == "ready"
    server.upload("lens", bundle_bytes("lens"))
    text = server.client.get("/metrics").get_data(as_text=True)
    assert 'gazelle_jobs{status="queued"} 1.0' in text
    assert "gazelle_models 1.0" in text
    assert 'gazelle_server_requests_total{method="POST",route="/api/v1/models/<name>/versions",status="202"}' in text


def test_readyz_answers_503_when_the_database_is_gone(server: Server) -> None:
    db = server.data_dir / "gazelle.db"
    server.state.store.close()
    db.unlink()
    db.mkdir()   # a directory where the database file was: nothing can open it
    answer = server.client.get("/readyz")
    assert answer.status_code == 503 and answer.get_json()["problems"]


# -- who sees runtime logs ---------------------------------------------------------------------------

def _failed_job_with_logs(server: Server) -> str:
    job_id = server.upload("lens", bundle_bytes("lens")).get_json()["job"]
    job = server.state.store.job(job_id)
    assert job is not None
    rec = server.state.pipeline.recorder(job)
    rec.start("sanity")
    rec.log("model printed: customer 4711 owes 300")
    rec.fail("sanity", "the sample's answer differs")
    return str(job_id)


def _token(server: Server, scope: str) -> str:
    answer = server.client.post("/api/v1/tokens", json={"scope": scope}, headers=server.headers())
    return str(answer.get_json()["token"])


def test_a_jobs_error_logs_are_shown_only_to_a_deploy_token(server: Server) -> None:
    job_id = _failed_job_with_logs(server)
    seen = server.get(f"/api/v1/jobs/{job_id}", token=_token(server, "predict")).get_json()
    assert seen["error"] == {"stage": "sanity", "message": "the sample's answer differs"}
    full = server.get(f"/api/v1/jobs/{job_id}", token=_token(server, "deploy")).get_json()
    assert full["error"]["logs"] == ["model printed: customer 4711 owes 300"]


def test_a_jobs_event_stream_leaves_out_log_lines_for_a_predict_token(server: Server) -> None:
    job_id = _failed_job_with_logs(server)
    predict = server.get(f"/api/v1/jobs/{job_id}/events", token=_token(server, "predict")).get_data(as_text=True)
    assert "event: end" in predict and "event: stage" in predict
    assert "event: log" not in predict and "4711" not in predict
    deploy = server.get(f"/api/v1/jobs/{job_id}/events", token=_token(server, "deploy")).get_data(as_text=True)
    assert deploy.count("4711") == 2   # the log event and the end event's error.logs


# -- a client's mistake is never a 500 -----------------------------------------------------------------

@pytest.mark.parametrize("body, field", [
    ({"scope": {}}, "scope"), ({"scope": ["admin"]}, "scope"), ({"scope": None}, "scope"), ({}, "scope"),
    ({"scope": "predict", "name": "\ud800"}, "name"), ({"scope": "predict", "name": 5}, "name"),
    ({"scope": "predict", "name": "two\nlines"}, "name"), ({"scope": "predict", "name": "x" * 201}, "name"),
    ({"scope": "predict", "name": ""}, "name"), ({"scope": "predict", "name": "tab\there"}, "name"),
])
def test_bad_token_requests_answer_400_naming_the_field(server: Server, body: object, field: str) -> None:
    answer = server.client.post("/api/v1/tokens", json=body, headers=server.headers())
    assert answer.status_code == 400
    assert _error(answer)["message"].startswith(f"{field}:")


@pytest.mark.parametrize("path", ["/api/v1/tokens", "/api/v1/models/lens/rollback"])
def test_deeply_nested_json_answers_400(server: Server, path: str) -> None:
    server.upload("lens", bundle_bytes("lens"))
    nested = "[" * 100_000 + "]" * 100_000
    answer = server.client.post(path, data=nested, headers=server.headers(**{"Content-Type": "application/json"}))
    assert answer.status_code == 400
    assert "nested too deeply" in _error(answer)["message"]


def test_a_version_too_large_for_the_database_answers_4xx(server: Server) -> None:
    server.upload("lens", bundle_bytes("lens"))
    answer = server.client.post("/api/v1/models/lens/rollback", json={"version": 99999999999999999999999},
                                headers=server.headers())
    assert answer.status_code == 400 and _error(answer)["message"].startswith("version:")
    assert server.client.get("/m/lens/v/99999999999999999999999/").status_code == 404


def test_resources_are_checked_at_upload_and_kept_on_the_version(server: Server) -> None:
    bad = server.upload("sized", bundle_bytes("sized"), query='?resources={"memory":"lots"}')
    assert bad.status_code == 400
    assert bad.get_json()["error"]["message"].startswith("resources.memory: 'lots' is not a Kubernetes quantity")
    good = server.upload("sized", bundle_bytes("sized"), query='?resources={"cpu":"500m","memory":"1Gi"}')
    assert good.status_code == 202, good.get_json()
    (version,) = server.get("/api/v1/models/sized").get_json()["versions"]
    assert version["resources"] == {"cpu": "500m", "memory": "1Gi"}
    assert server.state.store.version("sized", 1).resources == {"cpu": "500m", "memory": "1Gi"}


def test_delete_answers_202_with_a_delete_job_at_once(server: Server) -> None:
    server.upload("gone", bundle_bytes("gone"))
    answer = server.client.delete("/api/v1/models/gone", headers=server.headers())
    assert answer.status_code == 202
    body = answer.get_json()
    assert body["model"] == "gone" and body["status"] == "queued"
    job = server.get(f"/api/v1/jobs/{body['job']}").get_json()
    assert job["kind"] == "delete" and [s["name"] for s in job["stages"]] == ["delete"]


def test_a_second_delete_while_one_is_queued_names_the_same_job(server: Server) -> None:
    server.upload("gone", bundle_bytes("gone"))
    first = server.client.delete("/api/v1/models/gone", headers=server.headers()).get_json()
    second = server.client.delete("/api/v1/models/gone", headers=server.headers()).get_json()
    assert second["job"] == first["job"]


def test_delete_of_an_unknown_model_answers_404_naming_it(server: Server) -> None:
    answer = server.client.delete("/api/v1/models/nobody", headers=server.headers())
    assert answer.status_code == 404 and _error(answer)["message"] == "model nobody not found"


def test_the_api_and_the_gateway_say_the_same_sentence_for_a_missing_version(server: Server) -> None:
    server.upload("lens", bundle_bytes("lens"))
    via_api = server.get("/api/v1/models/lens/logs?version=7")
    via_gateway = server.client.post("/m/lens/v/7/predict", json={"instances": ["a"]}, headers=server.headers())
    assert via_api.status_code == via_gateway.status_code == 404
    assert _error(via_api)["message"] == _error(via_gateway)["message"] == \
        "model lens version 7 not found (versions: 1)"
