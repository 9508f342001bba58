"""The client against the real build server app, in-process (``httpx.WSGITransport``).

The app queues jobs but does not run them (``run_jobs=False``: no target, no process); where a test
needs a job to progress, it records the stages itself through the server's own ``JobRecorder``, from
a thread, as the pipeline would.
"""
from __future__ import annotations

import io
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

import gazelle
from gazelle.bundle import pack
from gazelle.cli import main as cli_main
from gazelle.client import configure
from gazelle.client.config import resolve
from gazelle.client.deployment import deploy_bundle, follow
from gazelle.client.http import Client
from gazelle.client.progress import TerminalProgress
from gazelle.errors import DeployError, GazelleError, InvalidName, NotFound, Unauthorized
from gazelle.server.app import create_app
from gazelle.server.settings import Settings

SERVER = "http://127.0.0.1:8000"
STAGES = ("check", "build", "push", "deploy", "sanity", "live")


def lengths(rows):
    return [len(r) for r in rows]


class Server:
    def __init__(self, tmp_path: Path, **settings: Any) -> None:
        self.data_dir = tmp_path / "data"
        self.app = create_app(Settings(data_dir=self.data_dir, run_jobs=False, **settings))
        self.state = self.app.extensions["gazelle"]
        self.token = (self.data_dir / "token").read_text().strip()
        self.transport = httpx.WSGITransport(app=self.app)

    def drive(self, job_id: str, *, fail_at: str | None = None, delay: float = 0.02) -> threading.Thread:
        """Record the job's stages from a thread, as the pipeline would."""
        def run() -> None:
            job = self.state.store.job(job_id)
            rec = self.state.pipeline.recorder(job)
            for stage in STAGES:
                time.sleep(delay)
                rec.start(stage)
                rec.log(f"{stage}: working")
                if stage == fail_at:
                    rec.log("Traceback: ValueError: boom")
                    rec.fail(stage, "row 0: expected 1, got 2")
                    return
                rec.done(stage)
            rec.succeed()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread


@pytest.fixture
def server(tmp_path, monkeypatch, request):
    for var in ("GAZELLE_SERVER", "GAZELLE_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    s = Server(tmp_path, **getattr(request, "param", {}))
    monkeypatch.setenv("GAZELLE_DATA_DIR", str(s.data_dir))   # the local token file is the admin's
    configure(SERVER, transport=s.transport)
    yield s
    configure()
    s.state.shutdown()


def upload(name="lengths", sample=("a", "bb")):
    return gazelle.deploy(lengths, name, sample=list(sample), wait=False)


def test_no_models_at_first(server):
    assert gazelle.list_models() == []


def test_deploy_without_wait_returns_the_new_version_and_its_job(server):
    ep = upload()
    assert (ep.name, ep.version, ep.url) == ("lengths", 1, f"{SERVER}/m/lengths")
    assert ep.job and server.state.store.job(ep.job) is not None
    [model] = gazelle.list_models()
    assert model["name"] == "lengths" and model["versions"][0]["status"] == "deploying"


INGRESS = {"target": "kubernetes", "registry": "127.0.0.1:5000/models", "k8s_ingress_host": "{name}.models.test"}


@pytest.mark.parametrize("server", [INGRESS], indirect=True)
def test_with_an_ingress_host_template_the_endpoint_url_is_the_models_ingress(server, capsys):
    ep = upload()
    assert ep.url == "http://lengths.models.test"
    server.drive(ep.job)
    with Client(resolve()) as client:
        job = follow(client, ep.job, TerminalProgress(io.StringIO()))
    assert (job["url"], job["gateway_url"]) == ("http://lengths.models.test", f"{SERVER}/m/lengths")
    assert gazelle.endpoint("lengths").url == "http://lengths.models.test"
    assert cli_main(["status", "lengths"]) == 0
    out = capsys.readouterr().out
    assert "url:     http://lengths.models.test\n" in out and f"gateway: {SERVER}/m/lengths\n" in out


def test_same_bundle_twice_is_the_same_version(server):
    assert upload().version == upload().version == 1


def test_a_bad_name_fails_before_anything_is_uploaded(server):
    with pytest.raises(InvalidName):
        gazelle.deploy(lengths, "Not_A_Name", sample=["a"])
    assert gazelle.list_models() == []


def test_unknown_model_is_not_found(server):
    with pytest.raises(NotFound) as err:
        gazelle.endpoint("nope")
    assert isinstance(err.value, LookupError) and "nope" in str(err.value)


def test_wrong_token_is_unauthorized_with_a_hint_and_never_echoed(server):
    with pytest.raises(Unauthorized) as err:
        gazelle.list_models(token="gz_wrong_token_abcdefghijklmnop")
    assert err.value.status == 401 and err.value.hint
    assert "gz_wrong_token" not in str(err.value)


def test_follow_shows_each_stage_once_and_returns_the_finished_job(server):
    ep = upload()
    server.drive(ep.job)
    out = io.StringIO()
    with Client(resolve()) as client:
        job = follow(client, ep.job, TerminalProgress(out))
    assert job["status"] == "succeeded" and job["version"] == 1
    lines = out.getvalue().splitlines()
    assert [line.split()[0] for line in lines] == [f"[{s}]" for s in STAGES]


class DroppingTransport(httpx.BaseTransport):
    """The real app behind a network that cuts each event stream after ``keep`` events."""

    def __init__(self, inner: httpx.BaseTransport, keep: int) -> None:
        self.inner, self.keep, self.drops = inner, keep, 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if not request.url.path.endswith("/events"):
            return response
        transport = self

        class Cut(httpx.SyncByteStream):
            def __iter__(self):
                sent = 0
                for chunk in response.stream:
                    yield chunk
                    sent += chunk.count(b"\n\nid:") + chunk.startswith(b"id:")
                    if sent >= transport.keep:
                        transport.drops += 1
                        response.close()   # end the app's generator now, in its own request context
                        raise httpx.ReadError("connection reset by peer")

        return httpx.Response(response.status_code, headers=response.headers, stream=Cut())


def test_a_dropped_event_stream_is_resumed_without_repeating_events(server):
    ep = upload()
    dropping = DroppingTransport(server.transport, keep=3)
    configure(SERVER, transport=dropping)
    server.drive(ep.job, delay=0.05)
    out = io.StringIO()
    with Client(resolve()) as client:
        job = follow(client, ep.job, TerminalProgress(out))
    assert job["status"] == "succeeded"
    assert dropping.drops >= 2
    assert [line.split()[0] for line in out.getvalue().splitlines()] == [f"[{s}]" for s in STAGES]


def test_a_failed_job_raises_deploy_error_with_stage_cause_and_logs(server):
    bundle = pack(lengths, name="lengths", sample=["a", "bb"])
    failing = {}

    def fail_when_queued() -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            jobs = server.state.store.jobs(model="lengths")
            if jobs:
                failing["job"] = jobs[0].id
                server.drive(jobs[0].id, fail_at="sanity").join()
                return
            time.sleep(0.02)

    threading.Thread(target=fail_when_queued, daemon=True).start()
    with pytest.raises(DeployError) as err:
        deploy_bundle(bundle, progress=TerminalProgress(io.StringIO()))
    e = err.value
    assert (e.stage, e.cause, e.job) == ("sanity", "row 0: expected 1, got 2", failing["job"])
    assert "Traceback: ValueError: boom" in e.logs
    assert "stage 'sanity'" in str(e)


def test_connection_refused_names_the_server_and_how_to_start_one(monkeypatch, tmp_path):
    from gazelle.client.localserver import free_port

    configure()
    monkeypatch.delenv("GAZELLE_SERVER", raising=False)
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ConnectionError) as err:
        gazelle.list_models(server=url, token="gz_secret_never_shown_1234567890")
    assert isinstance(err.value, GazelleError)
    assert str(err.value).startswith(f"no Gazelle server at {url}")
    assert "gz_secret" not in str(err.value) and "gz_secret" not in (err.value.detail or "")


def test_the_local_default_hints_at_gazelle_server():
    from gazelle.client.http import unreachable

    err = unreachable("http://127.0.0.1:8000/api/v1/models", ConnectionRefusedError())
    assert str(err) == ("no Gazelle server at http://127.0.0.1:8000 "
                        "(start one with `gazelle server`, or set GAZELLE_SERVER)")


# -- the CLI's client commands ---------------------------------------------------------------------

def test_cli_list_and_status_print_tables(server, capsys):
    upload()
    assert cli_main(["list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["NAME", "LIVE", "VERSIONS", "PUBLIC", "URL"]
    assert out[1].split() == ["lengths", "-", "1", "no", f"{SERVER}/m/lengths"]
    assert cli_main(["status", "lengths"]) == 0
    out = capsys.readouterr().out
    assert "live:    none" in out and "deploying" in out and "gateway:" not in out, "the url is the gateway's"


def test_cli_deploy_of_a_saved_bundle_without_wait(server, tmp_path, capsys):
    path = gazelle.save(lengths, tmp_path / "lengths.tar", name="lengths", sample=["a"])
    assert cli_main(["deploy", str(path), "--no-wait"]) == 0
    assert capsys.readouterr().out.startswith("accepted: lengths version 1 (job ")


def test_cli_deploy_refuses_a_bundle_under_another_name(server, tmp_path, capsys):
    path = gazelle.save(lengths, tmp_path / "lengths.tar", name="lengths", sample=["a"])
    assert cli_main(["deploy", str(path), "--name", "other", "--no-wait"]) == 1
    assert "holds model 'lengths', not 'other'" in capsys.readouterr().err


def test_cli_deploys_a_pickled_model_with_a_sample_file(server, tmp_path, capsys):
    import cloudpickle

    (tmp_path / "model.pkl").write_bytes(cloudpickle.dumps(lengths))
    (tmp_path / "rows.json").write_text('["a", "bb"]')
    assert cli_main(["deploy", str(tmp_path / "model.pkl"), "--name", "pickled",
                     "--sample", str(tmp_path / "rows.json"), "--no-wait"]) == 0
    [model] = gazelle.list_models()
    assert model["name"] == "pickled"


def test_cli_errors_are_one_line_on_stderr(server, capsys):
    assert cli_main(["status", "missing"]) == 1
    err = capsys.readouterr().err
    assert err == "gazelle: model missing not found\n"


def test_cli_token_create_prints_a_token_that_works(server, capsys):
    assert cli_main(["token", "create", "--scope", "predict", "--name", "app"]) == 0
    token = capsys.readouterr().out.strip()
    assert token and token != server.token
    assert gazelle.list_models(token=token) == []


def test_cli_predict_rejects_a_body_that_is_not_json(server, capsys):
    assert cli_main(["predict", "lengths", "{not json"]) == 1
    assert "the request body is not valid JSON" in capsys.readouterr().err


@pytest.mark.parametrize("body, problem", [
    ('{"instances": [[NaN, 0.2]]}', "NaN is not a JSON value"),
    ('{"instances": [[Infinity, 0.2]]}', "Infinity is not a JSON value"),
    ('{"instances": [[1e999, 0.2]]}', "1e999 is too large for a JSON number"),
    ("[" * 100_000, "nested too deeply"),
])
def test_cli_predict_refuses_what_json_cannot_carry_in_one_line(server, capsys, body, problem):
    assert cli_main(["predict", "lengths", body]) == 1
    err = capsys.readouterr().err
    assert err.startswith("gazelle: the request body") and problem in err and err.count("\n") == 1


def test_cli_deploy_of_a_file_that_is_neither_bundle_nor_pickle_says_so(server, tmp_path, capsys):
    path = tmp_path / "passwd"
    path.write_text("root:x:0:0:root:/root:/bin/bash\n")
    assert cli_main(["deploy", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path} is neither a bundle" in err and "--name" not in err


def test_cli_logs_shows_the_tail_of_the_version_asked_for(server, capsys):
    upload()
    upload(sample=("a", "bb", "ccc"))
    target = server.state.wiring.target
    for version in (1, 2):
        path = target._files.log("lengths", version)   # where the local target's runtimes write
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"v{version} line {i}\n" for i in range(10)))
    assert cli_main(["logs", "lengths", "--tail", "3", "--version", "1"]) == 0
    assert capsys.readouterr().out.splitlines() == ["v1 line 7", "v1 line 8", "v1 line 9"]
    assert cli_main(["logs", "lengths", "--tail", "1"]) == 0
    assert capsys.readouterr().out.splitlines() == ["v2 line 9"]


def test_cli_token_list_and_revoke(server, capsys):
    assert cli_main(["token", "create", "--scope", "deploy", "--name", "ci"]) == 0
    token = capsys.readouterr().out.strip()
    assert cli_main(["token", "list"]) == 0
    out = capsys.readouterr().out
    assert token not in out and server.token not in out
    header, *rows = out.splitlines()
    assert header.split() == ["ID", "SCOPE", "NAME", "CREATED", "LAST", "USED"]
    [ci] = [row.split() for row in rows if " ci " in row]
    assert ci[1] == "deploy" and ci[-1] == "never"
    assert cli_main(["token", "revoke", ci[0]]) == 0
    assert f"revoked token {ci[0]} (ci)" in capsys.readouterr().out
    with pytest.raises(Unauthorized):
        gazelle.list_models(token=token)


def test_cli_reads_the_token_from_a_file(server, capsys, tmp_path, monkeypatch):
    assert cli_main(["token", "create", "--scope", "predict"]) == 0
    (tmp_path / "tok").write_text(capsys.readouterr().out)
    monkeypatch.setenv("GAZELLE_DATA_DIR", str(tmp_path / "nowhere"))   # no local admin token
    assert cli_main(["--token-file", str(tmp_path / "tok"), "list"]) == 0
    assert capsys.readouterr().out.strip() == "no models"
    assert cli_main(["--token-file", str(tmp_path / "tok"), "token", "list"]) == 1
    assert "needs a token with scope 'admin'" in capsys.readouterr().err
    assert cli_main(["--token-file", str(tmp_path / "missing"), "list"]) == 1
    assert capsys.readouterr().err.startswith("gazelle: --token-file: cannot read")



def test_cli_token_on_the_command_line_still_works_but_warns(server, capsys):
    assert cli_main(["--token", server.token, "list"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == "no models"
    assert "--token shows the token to every user of this machine" in captured.err
    assert server.token not in captured.err
    from gazelle.cli import build_parser

    usage = build_parser().format_help()
    assert "--token-file" in usage and "--token " not in usage
