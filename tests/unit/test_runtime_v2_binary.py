"""The v2 wire of the runtime: JSON without a Content-Type, the binary tensor data extension both
ways, and errors in the protocol's ``{"error": "<message>"}`` shape (Gazelle's own routes keep theirs)."""
from __future__ import annotations

import json
import struct

import pytest
from _runtime_models import TRAVEL, runtime_app

from gazelle.runtime import v2wire
from gazelle.runtime.settings import RuntimeSettings

SETTINGS = RuntimeSettings(access_log=False)


@pytest.fixture(scope="module")
def accounts():
    return runtime_app("text", SETTINGS, name="accounts").test_client()


@pytest.fixture(scope="module")
def tensor():
    return runtime_app("tensor", SETTINGS).test_client()


def _binary(header: dict, *tensors: bytes, content_type: str | None = None) -> dict:
    head = json.dumps(header).encode()
    headers = {v2wire.HEADER: str(len(head))}
    if content_type:
        headers["Content-Type"] = content_type
    return {"data": head + b"".join(tensors), "headers": headers}


def _strings(*texts: str) -> bytes:
    return b"".join(struct.pack("<I", len(t.encode())) + t.encode() for t in texts)


def test_a_body_without_content_type_is_json_on_v2_but_not_on_predict(accounts):
    body = json.dumps({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["taxi"]}]})
    answer = accounts.post("/v2/models/accounts/infer", data=body, content_type="")
    assert answer.status_code == 200, answer.get_data(as_text=True)
    refused = accounts.post("/predict", data=json.dumps({"instances": ["taxi"]}), content_type="")
    assert refused.status_code == 415 and refused.get_json()["error"]["type"] == "unsupported_media_type"


def test_binary_bytes_input_and_binary_outputs_on_request(accounts):
    header = {"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES",
                          "parameters": {"binary_data_size": len(_strings("taxi to conference", "hotel"))}}],
              "outputs": [{"name": "predictions", "parameters": {"binary_data": True}}]}
    answer = accounts.post("/v2/models/accounts/infer",
                           **_binary(header, _strings("taxi to conference", "hotel"),
                                     content_type="application/octet-stream"))
    assert answer.status_code == 200, answer.get_data(as_text=True)
    length = int(answer.headers[v2wire.HEADER])
    head = json.loads(answer.data[:length])
    [output] = head["outputs"]
    assert "data" not in output and output["parameters"]["binary_data_size"] == len(answer.data) - length
    assert v2wire.decode_tensor(answer.data[length:], "BYTES", "out")[0] == TRAVEL


def test_binary_fp64_input_and_binary_data_output_for_every_output(tensor):
    values = [1.0, 1.0, 0.0, 0.0, -1.0, -1.0, 0.0, 0.0]
    raw = struct.pack("<8d", *values)
    header = {"inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP64",
                          "parameters": {"binary_data_size": len(raw)}}],
              "parameters": {"binary_data_output": True}}
    answer = tensor.post("/v2/models/tensor/infer", **_binary(header, raw))
    assert answer.status_code == 200, answer.get_data(as_text=True)
    length = int(answer.headers[v2wire.HEADER])
    predictions, probabilities = json.loads(answer.data[:length])["outputs"]
    assert predictions["datatype"] == "INT64" and probabilities["datatype"] == "FP64"
    assert "data" not in predictions and "data" not in probabilities
    assert struct.unpack("<2q", answer.data[length:length + 16]) == (1, 0)
    assert len(answer.data) - length == 16 + probabilities["parameters"]["binary_data_size"]


@pytest.mark.parametrize("header, tail, field", [
    ({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 40}}]},
     _strings("taxi"), "inputs[0].parameters.binary_data_size"),
    ({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": "8"}}]},
     _strings("taxi"), "inputs[0].parameters.binary_data_size"),
    ({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "parameters": []}]}, b"", "inputs[0].parameters"),
    ({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 2}}]},
     b"\x09\x00", "inputs[0].data"),
    ({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["x"]}]}, b"xx", "inputs"),
    ({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["x"]}],
      "parameters": {"binary_data_output": "yes"}}, b"", "parameters.binary_data_output"),
    ({"inputs": [{"name": "text", "shape": [1], "datatype": {}, "data": ["x"]}]}, b"", "inputs[0].datatype"),
])
def test_malformed_v2_requests_are_422_strings_naming_the_field(accounts, header, tail, field):
    answer = accounts.post("/v2/models/accounts/infer", **_binary(header, tail))
    assert answer.status_code == 422, answer.get_data(as_text=True)
    message = answer.get_json()["error"]
    assert isinstance(message, str) and message.startswith(f"{field}:")


def test_v2_errors_are_strings_and_gazelle_routes_keep_typed_errors(accounts):
    assert accounts.get("/v2/models/nope").get_json() == {
        "error": "model 'nope' is not served here; this endpoint serves 'accounts'"}
    octet = accounts.post("/v2/models/accounts/infer", data=b"{}", content_type="application/octet-stream")
    assert octet.status_code == 415 and v2wire.HEADER in octet.get_json()["error"]
    assert isinstance(accounts.get("/v2/nowhere").get_json()["error"], str)
    assert accounts.post("/predict", json={"instances": [5]}).get_json()["error"]["type"] == "schema_error"


def test_server_metadata_lists_the_binary_extension(accounts):
    assert accounts.get("/v2").get_json()["extensions"] == ["binary_tensor_data"]
