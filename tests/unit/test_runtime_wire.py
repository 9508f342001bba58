"""The runtime's small parts: reading and parsing bodies, request ids, settings, log lines, metric files."""
from __future__ import annotations

import io
import json
import logging
import math

import pytest

from gazelle.errors import BadRequest, ConfigError, PayloadTooLarge, UnsupportedMediaType
from gazelle.runtime import logs, wire
from gazelle.runtime.settings import DEFAULT_MAX_BODY_BYTES, RuntimeSettings


class Unreadable(io.BytesIO):
    def read(self, *args: object) -> bytes:
        raise AssertionError("the body was read although its declared length was over the limit")


def environ(body: bytes = b"", **extra: object) -> dict[str, object]:
    env: dict[str, object] = {"wsgi.input": io.BytesIO(body), "CONTENT_LENGTH": str(len(body))}
    env.update(extra)
    return env


def test_declared_length_over_the_limit_is_refused_and_the_body_drained_for_the_client():
    stream = io.BytesIO(b"x" * 2000)
    with pytest.raises(PayloadTooLarge, match="2000 bytes; this endpoint takes at most 1000"):
        wire.read_body({"wsgi.input": stream, "CONTENT_LENGTH": "2000"}, 1000)
    assert stream.tell() == 2000


def test_declared_length_far_over_the_limit_is_refused_without_reading():
    huge = str(wire.DRAIN_MAX_BYTES + 1)
    with pytest.raises(PayloadTooLarge):
        wire.read_body({"wsgi.input": Unreadable(), "CONTENT_LENGTH": huge}, 1000)


def test_chunked_body_is_read_up_to_the_limit_and_refused_past_it():
    chunked = {"CONTENT_LENGTH": "", "wsgi.input_terminated": True}
    assert wire.read_body({**chunked, "wsgi.input": io.BytesIO(b"x" * 1000)}, 1000) == b"x" * 1000
    with pytest.raises(PayloadTooLarge):
        wire.read_body({**chunked, "wsgi.input": io.BytesIO(b"x" * 1001)}, 1000)


def test_body_without_length_from_a_server_that_does_not_terminate_input_is_empty():
    assert wire.read_body({"wsgi.input": io.BytesIO(b"abc")}, 1000) == b""


@pytest.mark.parametrize("length", ["abc", "-5"])
def test_nonsense_content_length_is_a_bad_request(length):
    with pytest.raises(BadRequest, match="Content-Length"):
        wire.read_body({"wsgi.input": io.BytesIO(b"{}"), "CONTENT_LENGTH": length}, 1000)


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8",
                                          "APPLICATION/JSON;CHARSET=UTF8", 'application/json; charset="utf-8"'])
def test_json_content_types_pass(content_type):
    wire.check_content_type({"CONTENT_TYPE": content_type})


@pytest.mark.parametrize("content_type", ["", "text/json", "application/json-seq", "multipart/form-data",
                                          "application/json; charset=utf-16"])
def test_other_content_types_are_unsupported(content_type):
    with pytest.raises(UnsupportedMediaType):
        wire.check_content_type({"CONTENT_TYPE": content_type})


def test_parse_json_reads_valid_json_with_orjson():
    assert wire.parse_json(b'{"instances": ["a", 1.5, null]}') == {"instances": ["a", 1.5, None]}


def test_parse_json_lets_non_finite_numbers_through_for_the_schema_to_refuse():
    parsed = wire.parse_json(b'{"instances": [[NaN, Infinity, -Infinity, 1e400]]}')
    row = parsed["instances"][0]
    assert math.isnan(row[0]) and row[1] == math.inf and row[2] == -math.inf and row[3] == math.inf


@pytest.mark.parametrize("body, words", [
    (b"", "empty"),
    (b"{", "not valid JSON"),
    (b'{"a": NaN', "not valid JSON"),
    (b"\xff\xfe{}", "not valid UTF-8"),
    (b"[" * 100000, "nested too deeply"),
    (b"[NaN, " + b"[" * 300 + b"]" * 300 + b"]", "nested too deeply"),
])
def test_parse_json_refusals_say_what_is_wrong(body, words):
    with pytest.raises(BadRequest, match=words):
        wire.parse_json(body)


def test_depth_guard_ignores_brackets_inside_strings():
    body = ('{"instances": [NaN, "' + "[" * 1000 + '"]}').encode()
    assert wire.parse_json(body)["instances"][1] == "[" * 1000


def test_request_id_keeps_safe_tokens_and_replaces_everything_else():
    assert wire.request_id("abc.DEF_123-x") == "abc.DEF_123-x"
    for bad in (None, "", "a b", "x" * 129, "a/b", "ü"):
        generated = wire.request_id(bad)
        assert generated != bad and len(generated) == 24
    assert wire.request_id(None) != wire.request_id(None)


@pytest.mark.parametrize("raw, value", [("true", True), ("1", True), ("", True), ("FALSE", False), ("0", False)])
def test_boolean_query_parameters(raw, value):
    assert wire.flag({"proba": raw}, "proba") is value
    assert wire.flag({}, "proba") is False


# -- settings -----------------------------------------------------------------------------------

def test_settings_defaults_and_environment_values():
    assert RuntimeSettings.from_env({}) == RuntimeSettings()
    assert RuntimeSettings().max_body_bytes == DEFAULT_MAX_BODY_BYTES == 10 * 1024 * 1024
    settings = RuntimeSettings.from_env({"GAZELLE_RUNTIME_ENV_CHECK": "WARN", "GAZELLE_MODEL_VERSION": "7",
                                         "GAZELLE_MAX_BODY_BYTES": "2048", "GAZELLE_RUNTIME_ACCESS_LOG": "0"})
    assert (settings.env_check, settings.model_version, settings.max_body_bytes, settings.access_log) == (
        "warn", 7, 2048, False)
    assert RuntimeSettings().reuse_port is False
    assert RuntimeSettings.from_env({"GAZELLE_RUNTIME_REUSE_PORT": "1"}).reuse_port is True


@pytest.mark.parametrize("env, name", [
    ({"GAZELLE_RUNTIME_ENV_CHECK": "maybe"}, "GAZELLE_RUNTIME_ENV_CHECK"),
    ({"GAZELLE_MODEL_VERSION": "v3"}, "GAZELLE_MODEL_VERSION"),
    ({"GAZELLE_MAX_BODY_BYTES": "0"}, "GAZELLE_MAX_BODY_BYTES"),
    ({"GAZELLE_RUNTIME_ACCESS_LOG": "sometimes"}, "GAZELLE_RUNTIME_ACCESS_LOG"),
    ({"GAZELLE_RUNTIME_REUSE_PORT": "sometimes"}, "GAZELLE_RUNTIME_REUSE_PORT"),
])
def test_settings_that_cannot_work_name_their_variable(env, name):
    with pytest.raises(ConfigError, match=name):
        RuntimeSettings.from_env(env)


# -- logs ---------------------------------------------------------------------------------------

def test_access_log_line_is_one_json_object_ending_in_a_newline():
    written: list[bytes] = []
    logs.AccessLog(written.append)("POST", "/predict", 422, 1.23456, "rid-1", "10.0.0.1")
    assert len(written) == 1 and written[0].endswith(b"\n") and written[0].count(b"\n") == 1
    line = json.loads(written[0])
    assert line["event"] == "request" and line["status"] == 422 and line["duration_ms"] == 1.235
    assert (line["method"], line["path"], line["request_id"], line["remote"]) == (
        "POST", "/predict", "rid-1", "10.0.0.1")
    assert line["ts"].endswith("Z") and "T" in line["ts"]


def test_access_log_cuts_absurd_paths():
    written: list[bytes] = []
    logs.AccessLog(written.append)("GET", "/" + "a" * 5000, 404, 0.1, "r", "127.0.0.1")
    assert len(json.loads(written[0])["path"]) < 600


def test_json_formatter_writes_events_with_fields_and_other_records_as_messages():
    formatter = logs.JsonFormatter()
    event = logging.LogRecord("gazelle.runtime", logging.WARNING, __file__, 1, "model_loaded", None, None)
    event.gazelle_fields = {"seconds": 0.5}
    assert json.loads(formatter.format(event)) | {"ts": "-"} == {
        "ts": "-", "level": "warning", "event": "model_loaded", "seconds": 0.5}
    other = logging.LogRecord("gunicorn.error", logging.INFO, __file__, 1, "Booting worker %s", (42,), None)
    assert json.loads(formatter.format(other))["message"] == "Booting worker 42"


def test_timestamps_are_iso_utc_with_milliseconds():
    assert logs.timestamp(0.25) == "1970-01-01T00:00:00.250Z"
    assert logs.timestamp(86400.5) == "1970-01-02T00:00:00.500Z"


# -- metrics directory ----------------------------------------------------------------------------

def test_metrics_directory_is_private_and_sweeps_those_of_dead_masters(tmp_path, monkeypatch):
    import os
    import tempfile

    from gazelle.runtime import metrics

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = tmp_path / f"gazelle-metrics-{2**22 + 12345}-abc"  # above any pid_max: never a live process
    alive = tmp_path / f"gazelle-metrics-{os.getpid()}-def"
    unrelated = tmp_path / "gazelle-metrics-nopid"
    for d in (dead, alive, unrelated):
        d.mkdir()
    made = metrics.make_directory()
    assert os.path.basename(made).startswith(f"gazelle-metrics-{os.getpid()}-")
    assert oct(os.stat(made).st_mode & 0o777) == "0o700"
    assert not dead.exists() and alive.exists() and unrelated.exists()
