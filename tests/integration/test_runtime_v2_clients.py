"""The Open Inference Protocol v2 as the clients people already have speak it, at their defaults:
Triton's ``tritonclient.http`` and KServe's ``InferenceRESTClient``, against a real ``gazelle runtime``
process, for a text model (BYTES in) and a numeric one (FP32 in, INT64 and FP64 out).

Both clients send binary tensors by default (the binary tensor data extension); tritonclient sends no
Content-Type and asks for binary outputs when it names none. KServe's REST client has no metadata
call: its own pydantic models of the protocol check the metadata answers instead.
"""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _runtime import TRAVEL, Runtime, accounts_model, save

pytestmark = pytest.mark.integration

httpclient = pytest.importorskip("tritonclient.http")
kserve = pytest.importorskip("kserve")
from kserve.protocol.rest import v2_datamodels  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

TEXTS = ["taxi to conference", "printer paper"]


def _numeric_model() -> tuple[Any, np.ndarray]:
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 4)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] > 0).astype(np.int64)
    return LogisticRegression().fit(X, y), X[:5]


@pytest.fixture(scope="module")
def runtimes(tmp_path_factory):
    directory = tmp_path_factory.mktemp("v2-clients")
    numeric, sample = _numeric_model()
    accounts = accounts_model()
    bundles = {"accounts": save(directory, accounts, name="accounts", sample=TEXTS),
               "numeric": save(directory, numeric, name="numeric", sample=sample)}
    started = {name: Runtime(path, directory / f"{name}.log", workers=1).__enter__()
               for name, path in bundles.items()}
    try:
        for runtime in started.values():
            runtime.wait_ready()
        yield {"numeric_model": numeric, "sample": sample, "labels": list(accounts.predict(TEXTS)), **started}
    finally:
        for runtime in started.values():
            runtime.__exit__(None, None, None)


def _triton(runtime: Runtime) -> Any:
    return httpclient.InferenceServerClient(url=f"127.0.0.1:{runtime.port}")


# -- tritonclient ----------------------------------------------------------------------------------

def test_tritonclient_health_server_and_model_metadata(runtimes):
    for name in ("accounts", "numeric"):
        client = _triton(runtimes[name])
        assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(name)
        assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
        meta = client.get_model_metadata(name)
        assert meta["name"] == name and [o["name"] for o in meta["outputs"]] == ["predictions", "probabilities"]
    assert _triton(runtimes["numeric"]).get_model_metadata("numeric")["inputs"] == \
        [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]


def test_tritonclient_text_model_binary_by_default_returns_every_output(runtimes):
    text = httpclient.InferInput("text", [2], "BYTES")
    text.set_data_from_numpy(np.array(TEXTS, dtype=object))
    result = _triton(runtimes["accounts"]).infer("accounts", [text])
    labels = [v.decode() for v in result.as_numpy("predictions")]
    assert labels == runtimes["labels"] and labels[0] == TRAVEL
    probabilities = result.as_numpy("probabilities")
    assert probabilities.dtype == np.float64 and probabilities.shape[0] == 2
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)


def test_tritonclient_numeric_model_fp32_and_fp64_inputs_json_and_binary_outputs(runtimes):
    model, sample = runtimes["numeric_model"], runtimes["sample"]
    client = _triton(runtimes["numeric"])
    for dtype, name in ((np.float32, "FP32"), (np.float64, "FP64")):
        tensor = httpclient.InferInput("input", list(sample.shape), name)
        tensor.set_data_from_numpy(sample.astype(dtype))
        result = client.infer("numeric", [tensor])
        assert result.as_numpy("predictions").tolist() == model.predict(sample).tolist()
        np.testing.assert_allclose(result.as_numpy("probabilities"), model.predict_proba(sample), rtol=1e-6)
    json_in = httpclient.InferInput("input", list(sample.shape), "FP32")
    json_in.set_data_from_numpy(sample, binary_data=False)
    wanted = [httpclient.InferRequestedOutput("probabilities", binary_data=False)]
    result = client.infer("numeric", [json_in], outputs=wanted)
    assert [o["name"] for o in result.get_response()["outputs"]] == ["probabilities"]
    assert "data" in result.get_response()["outputs"][0]
    np.testing.assert_allclose(result.as_numpy("probabilities"), model.predict_proba(sample), rtol=1e-6)


def test_tritonclient_errors_are_printable_and_name_the_field(runtimes):
    client = _triton(runtimes["numeric"])
    wrong = httpclient.InferInput("input", [1, 3], "FP32")
    wrong.set_data_from_numpy(np.zeros((1, 3), dtype=np.float32))
    with pytest.raises(InferenceServerException) as caught:
        client.infer("numeric", [wrong])
    assert caught.value.status() == "422" and "inputs[0].data[0]" in str(caught.value)
    with pytest.raises(InferenceServerException) as caught:
        client.get_model_metadata("nope")
    assert caught.value.status() == "404" and "'nope'" in caught.value.message()
    assert not client.is_model_ready("nope")


# -- kserve ----------------------------------------------------------------------------------------

def _kserve_call(method: str, *args: Any, **kwargs: Any) -> Any:
    async def run() -> Any:
        client = kserve.InferenceRESTClient(kserve.RESTConfig(protocol="v2", retries=0))
        try:
            return await getattr(client, method)(*args, **kwargs)
        finally:
            await client.close()

    return asyncio.run(run())


def test_kserve_health_and_metadata_validate_against_its_protocol_models(runtimes):
    import httpx

    for name in ("accounts", "numeric"):
        url = runtimes[name].url
        assert _kserve_call("is_server_live", url) and _kserve_call("is_server_ready", url)
        assert _kserve_call("is_model_ready", url, name)
        with httpx.Client(base_url=url, trust_env=False) as http:
            server = v2_datamodels.ServerMetadataResponse.model_validate(http.get("/v2").json())
            meta = v2_datamodels.ModelMetadataResponse.model_validate(http.get(f"/v2/models/{name}").json())
        assert "binary_tensor_data" in server.extensions
        assert meta.name == name and [o.name for o in meta.outputs] == ["predictions", "probabilities"]


def test_kserve_text_model_binary_inputs(runtimes):
    text = kserve.InferInput("text", [2], "BYTES")
    text.set_data_from_numpy(np.array(TEXTS, dtype=object))  # binary_data=True: its default
    answer = _kserve_call("infer", runtimes["accounts"].url, kserve.InferRequest("accounts", [text]),
                          model_name="accounts")
    outputs = {o.name: o for o in answer.outputs}
    assert set(outputs) == {"predictions", "probabilities"}
    assert outputs["predictions"].data == runtimes["labels"]


def test_kserve_numeric_model_fp32_and_fp64_with_binary_outputs(runtimes):
    model, sample = runtimes["numeric_model"], runtimes["sample"]
    for dtype, name in ((np.float32, "FP32"), (np.float64, "FP64")):
        tensor = kserve.InferInput("input", list(sample.shape), name)
        tensor.set_data_from_numpy(sample.astype(dtype))
        request = kserve.InferRequest("numeric", [tensor], parameters={"binary_data_output": True})
        answer = _kserve_call("infer", runtimes["numeric"].url, request, model_name="numeric")
        outputs = {o.name: o.as_numpy() for o in answer.outputs}
        assert outputs["predictions"].tolist() == model.predict(sample).tolist()
        np.testing.assert_allclose(outputs["probabilities"], model.predict_proba(sample), rtol=1e-6)


def test_kserve_errors_carry_the_message(runtimes):
    import httpx

    tensor = kserve.InferInput("text", [1], "BYTES", data=[1.5])
    with pytest.raises(httpx.HTTPStatusError) as caught:
        _kserve_call("infer", runtimes["accounts"].url, kserve.InferRequest("accounts", [tensor]),
                     model_name="accounts")
    assert caught.value.response.status_code == 422
    assert caught.value.response.json() == {"error": "inputs[0].data[0]: expected a string, got 1.5"}
    assert "inputs[0].data[0]" in str(caught.value)
