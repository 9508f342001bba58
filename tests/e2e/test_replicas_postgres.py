"""Three real ``gazelle server`` processes (gunicorn), each with its own data dir, on one PostgreSQL
database (a fresh schema) and the docker target: the store is the only shared state.

Deploys posted round-robin succeed wherever they land; every replica's gateway serves every model; a
token made on one replica works on all; SIGKILL of the replica that holds a job's lease ends that job
failed with the reason (never running forever, never twice) while the survivors keep deploying and
serving."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator

import pytest
import sqlalchemy as sa

from gazelle.server.jobs import REPLICA_STOPPED
from tests.e2e._docker import unique
from tests.e2e.test_docker_server import bundle_of
from tests.integration._server import ServerProcess, start_server, wait_for
from tests.integration.test_server_store_postgres import schema_url  # noqa: F401 (a fixture)

pytestmark = pytest.mark.e2e

SLOW = "slow"          # the model whose build stage is held, so that its replica can be killed mid-job


@pytest.fixture
def replicas(tmp_path: Path, schema_url: str, testenv: dict[str, str], registry_url: str,  # noqa: F811
             base_image: str, docker_client: Any) -> Iterator[list[ServerProcess]]:
    env = {"GAZELLE_TARGET": "docker", "GAZELLE_BUILDER": "append",
           "DOCKER_HOST": testenv["GAZELLE_TEST_DOCKER_HOST"],
           "GAZELLE_REGISTRY": f"{registry_url}/{unique('t-replicas')}",
           "GAZELLE_BASE_IMAGES": json.dumps({base_image.rsplit(":", 1)[1]: base_image}),
           "GAZELLE_DATABASE_URL": schema_url, "GAZELLE_JOB_LEASE_SECONDS": "3",
           "GAZELLE_TEST_STAGE_DELAY": f"{SLOW}:build=600"}
    servers: list[ServerProcess] = []
    try:
        for i in range(3):
            servers.append(start_server(tmp_path / f"replica{i}", env=env))
        yield servers
    finally:
        for server in servers:
            server.kill()
        for container in docker_client.containers.list(all=True, filters={"label": "gazelle.model"}):
            if container.labels.get("gazelle.model", "").startswith(("rr-", SLOW)):
                container.remove(force=True)


def _lease_owner(url: str, job_id: str) -> str | None:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as c:
            return c.execute(sa.text("SELECT lease_owner FROM jobs WHERE id = :id"), {"id": job_id}).scalar()
    finally:
        engine.dispose()


def test_three_replicas_share_deploys_tokens_and_the_gateway_and_survive_a_killed_one(
        replicas: list[ServerProcess], schema_url: str) -> None:  # noqa: F811
    names = [unique("rr") for _ in replicas]
    for server, name in zip(replicas, names):
        job = server.deploy(name, bundle_of(name), public=True)
        assert job["status"] == "succeeded", json.dumps(job, indent=1)
    for server in replicas:
        for name in names:
            answer = server.predict(f"/m/{name}/predict", ["taxi"])
            assert answer.status_code == 200, answer.text
            assert answer.json()["predictions"] == ["TAXI"]
    for maker in replicas:          # every replica's own admin token is accepted by the others
        for other in replicas:
            with other.client(maker.token) as c:
                assert c.get("/api/v1/models").status_code == 200
    with replicas[0].client() as c:
        made = c.post("/api/v1/tokens", json={"scope": "deploy", "name": "ci"}).json()
    for server in replicas:
        with server.client(made["token"]) as c:
            assert c.get("/api/v1/models").status_code == 200
    with replicas[1].client() as c:
        assert c.delete(f"/api/v1/tokens/{made['id']}").status_code == 200

    def refused_everywhere() -> bool:
        codes = []
        for server in replicas:
            with server.client(made["token"]) as c:
                codes.append(c.get("/api/v1/models").status_code)
        return codes == [401, 401, 401]

    wait_for(refused_everywhere, "the revoked token to be refused by every replica (within the cache bound)")

    # Kill the replica that holds the slow job's lease, mid-build.
    posted = replicas[0].upload(SLOW, bundle_of(SLOW), public=True)
    assert posted.status_code == 202, posted.text
    job_id = posted.json()["job"]
    wait_for(lambda: replicas[0].job(job_id)["stage"] == "build", "the slow job to reach its build stage")
    owner = _lease_owner(schema_url, job_id)
    assert owner is not None
    pid = int(owner.split(":")[1])
    (victim,) = [s for s in replicas if os.getpgid(pid) == s.popen.pid]
    victim.kill()
    survivors = [s for s in replicas if s is not victim]
    job = survivors[0].wait_job(job_id, timeout=120)
    assert job["status"] == "failed" and job["error"]["message"] == REPLICA_STOPPED, json.dumps(job, indent=1)
    events = [json.loads(line[len("data: "):]) for line in survivors[1].events(job_id).splitlines()
              if line.startswith("data: ")]
    builds = [e for e in events if e.get("stage") == "build" and e.get("status") == "running"]
    assert len(builds) == 1, "the build stage started more than once"
    assert not any(e.get("stage") in ("push", "deploy", "sanity", "live") for e in events)

    # The survivors keep deploying and serving.
    again = unique("rr")
    job = survivors[1].deploy(again, bundle_of(again), public=True)
    assert job["status"] == "succeeded", json.dumps(job, indent=1)
    for server in survivors:
        for name in names + [again]:
            answer = server.predict(f"/m/{name}/predict", ["hotel"])
            assert answer.status_code == 200, answer.text
            assert answer.json()["predictions"] == ["HOTEL"]
