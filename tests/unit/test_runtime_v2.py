"""The Open Inference Protocol v2 side of the runtime: health, metadata, infer, the codecs, and the wire
(JSON without a Content-Type, the binary tensor data extension both ways, and errors in the protocol's
``{"error": "<message>"}`` shape while Gazelle's own routes keep theirs)."""
from __future__ import annotations

import json
import struct

import pytest
from _runtime_models import TRAVEL, runtime_app

from gazelle.errors import SchemaError
from gazelle.runtime import codecs, v2wire
from gazelle.runtime.settings import RuntimeSettings

SETTINGS = RuntimeSettings(access_log=False, model_version=2)


@pytest.fixture(scope="module")
def accounts():
    return runtime_app("text", SETTINGS, name="accounts").test_client()


@pytest.fixture(scope="module")
def tensor():
    return runtime_app("tensor", SETTINGS).test_client()


@pytest.fixture(scope="module")
def table():
    return runtime_app("table", SETTINGS, name="costs").test_client()


def infer(client, name, body, version=None):
    path = f"/v2/models/{name}" + (f"/versions/{version}" if version else "") + "/infer"
    return client.post(path, json=body)


def test_health_live_and_ready_answer_200(accounts):
    assert accounts.get("/v2/health/live").get_json() == {"live": True}
    assert accounts.get("/v2/health/ready").get_json() == {"ready": True}
    assert accounts.get("/v2/models/accounts/ready").get_json() == {"name": "accounts", "ready": True}


def test_model_metadata_names_platform_versions_and_typed_inputs_and_outputs(accounts, tensor, table):
    text = accounts.get("/v2/models/accounts").get_json()
    assert text["name"] == "accounts" and text["versions"] == ["2"] and text["platform"] == "gazelle"
    assert text["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert text["outputs"][0] == {"name": "predictions", "datatype": "BYTES", "shape": [-1]}
    assert text["outputs"][1]["name"] == "probabilities" and text["outputs"][1]["datatype"] == "FP64"
    assert tensor.get("/v2/models/tensor").get_json()["inputs"] == [
        {"name": "input", "datatype": "FP64", "shape": [-1, 4]}]
    assert table.get("/v2/models/costs").get_json()["inputs"] == [
        {"name": "amount", "datatype": "FP64", "shape": [-1]}, {"name": "city", "datatype": "BYTES", "shape": [-1]}]


def test_unknown_model_name_is_a_404_naming_the_model_served(accounts):
    for response in (accounts.get("/v2/models/other"), infer(accounts, "other", {"inputs": []})):
        assert response.status_code == 404
        message = response.get_json()["error"]
        assert "'other'" in message and "'accounts'" in message


def test_unknown_version_is_a_404_and_the_served_version_answers(accounts):
    assert accounts.get("/v2/models/accounts/versions/9").status_code == 404
    assert accounts.get("/v2/models/accounts/versions/2").status_code == 200


def test_infer_without_outputs_answers_every_output_the_metadata_lists_and_echoes_the_id(accounts):
    body = {"id": "req-7", "inputs": [{"name": "text", "shape": [2], "datatype": "BYTES",
                                       "data": ["taxi to conference", "taxi to the airport"]}]}
    response = infer(accounts, "accounts", body, version="2")
    assert response.status_code == 200, response.get_data(as_text=True)
    answer = response.get_json()
    assert answer["model_name"] == "accounts" and answer["model_version"] == "2" and answer["id"] == "req-7"
    listed = [o["name"] for o in accounts.get("/v2/models/accounts").get_json()["outputs"]]
    assert [o["name"] for o in answer["outputs"]] == listed == ["predictions", "probabilities"]
    assert answer["outputs"][0] == {"name": "predictions", "datatype": "BYTES", "shape": [2], "data": [TRAVEL, TRAVEL]}


def test_infer_can_ask_for_probabilities_as_a_second_output(accounts):
    body = {"inputs": [{"name": "text", "shape": [1, 1], "datatype": "BYTES", "data": [["taxi to conference"]]}],
            "outputs": [{"name": "predictions"}, {"name": "probabilities"}]}
    outputs = infer(accounts, "accounts", body).get_json()["outputs"]
    probabilities = outputs[1]
    classes = probabilities["parameters"]["classes"]
    assert probabilities["datatype"] == "FP64" and probabilities["shape"] == [1, len(classes)]
    best = max(range(len(classes)), key=lambda i: probabilities["data"][i])
    assert classes[best] == TRAVEL


def test_infer_tensor_accepts_flat_row_major_data(tensor):
    body = {"inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP64",
                        "data": [1.0, 1.0, 0.0, 0.0, -1.0, -1.0, 0.0, 0.0]}]}
    response = infer(tensor, "tensor", body)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["outputs"][0] == {"name": "predictions", "datatype": "INT64", "shape": [2],
                                                 "data": [1, 0]}


def test_infer_table_takes_one_input_per_column(table):
    body = {"inputs": [{"name": "city", "shape": [2], "datatype": "BYTES", "data": ["Vienna", "Berlin"]},
                       {"name": "amount", "shape": [2], "datatype": "FP64", "data": [900.0, 10.0]}]}
    response = infer(table, "costs", body)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["outputs"][0]["data"] == ["large", "small"]


@pytest.mark.parametrize("body, field", [
    ({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "BYTES", "data": ["a", "b", "c", "d"]}]},
     "inputs[0].datatype"),
    ({"inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP64", "data": [1.0, 2.0]}]}, "inputs[0].data"),
    ({"inputs": [{"name": "input", "shape": "2x4", "datatype": "FP64", "data": [1.0]}]}, "inputs[0].shape"),
    ({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP64", "data": [1, "x", 3, 4]}]},
     "inputs[0].data[0][1]"),
    ({"inputs": []}, "inputs"),
    ({"instances": [[1, 2, 3, 4]]}, "inputs"),
    ({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP64", "data": [1, 2, 3, 4]}],
      "outputs": [{"name": "scores"}]}, "outputs[0].name"),
])
def test_bad_infer_requests_are_422_naming_the_field(tensor, body, field):
    response = infer(tensor, "tensor", body)
    assert response.status_code == 422, response.get_data(as_text=True)
    assert response.get_json()["error"].startswith(f"{field}:")
    ok = infer(tensor, "tensor", {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP64",
                                              "data": [1, 1, 0, 0]}]})
    assert ok.status_code == 200


def test_table_infer_names_missing_and_unknown_columns(table):
    only_city = {"inputs": [{"name": "city", "shape": [1], "datatype": "BYTES", "data": ["Paris"]}]}
    assert "amount" in infer(table, "costs", only_city).get_json()["error"]
    extra = {"inputs": [*only_city["inputs"], {"name": "colour", "shape": [1], "datatype": "BYTES", "data": ["red"]}]}
    message = infer(table, "costs", extra).get_json()["error"]
    assert message.startswith("inputs[1].name:") and "colour" in message


# -- codecs -------------------------------------------------------------------------------------

def test_tensor_codec_rebuilds_rows_from_flat_or_nested_data():
    codec = codecs.input_codec({"type": "tensor", "dtype": "float64", "shape": [None, 2, 2]})
    flat = {"name": "input", "shape": [1, 2, 2], "datatype": "FP64", "data": [1, 2, 3, 4]}
    nested = {**flat, "data": [[[1, 2], [3, 4]]]}
    assert codec.rows([flat]) == codec.rows([nested]) == [[[1, 2], [3, 4]]]
    scalar_rows = codecs.input_codec({"type": "tensor", "dtype": "int64", "shape": [None]})
    assert scalar_rows.rows([{"name": "input", "shape": [3], "datatype": "INT64", "data": [1, 2, 3]}]) == [1, 2, 3]


def test_text_codec_refuses_more_than_one_tensor_and_other_shapes():
    codec = codecs.input_codec({"type": "text"})
    tensor = {"name": "text", "shape": [1], "datatype": "BYTES", "data": ["a"]}
    with pytest.raises(SchemaError, match="one input tensor"):
        codec.rows([tensor, tensor])
    with pytest.raises(SchemaError, match=r"inputs\[0\].shape"):
        codec.rows([{**tensor, "shape": [1, 2], "data": ["a", "b"]}])
    with pytest.raises(SchemaError, match="unknown datatype"):
        codec.rows([{**tensor, "datatype": "STRING"}])


def test_output_tensor_reads_shape_from_nesting_and_types_from_values():
    assert codecs.output_tensor("p", [[0.5, 0.5], [1.0, 0.0]]) == {
        "name": "p", "datatype": "FP64", "shape": [2, 2], "data": [0.5, 0.5, 1.0, 0.0]}
    assert codecs.output_tensor("p", [1, 2])["datatype"] == "INT64"
    assert codecs.output_tensor("p", [True])["datatype"] == "BOOL"
    assert codecs.output_tensor("p", ["a", "b"], "object")["datatype"] == "BYTES"
    ragged = codecs.output_tensor("p", [[1], [1, 2]])
    assert ragged["datatype"] == "BYTES" and ragged["shape"] == [2] and ragged["data"] == ["[1]", "[1,2]"]
    assert codecs.output_tensor("p", [{"a": 1}])["data"] == ['{"a":1}']


# -- the wire: JSON without a Content-Type, the binary tensor data extension, v2 error shape --

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
