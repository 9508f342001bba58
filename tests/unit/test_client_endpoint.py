"""What an Endpoint shows and returns, without a server: its HTML view, curl command, repr, and how JSON
predictions become what the model returned."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gazelle.client.config import Connection
from gazelle.client.endpoints import Endpoint, _as_output
from gazelle.errors import BadRequest

SECRET = "gz_secret_token_never_shown_0123456789"


def make(public=False, sample=("Taxi to conference",)):
    manifest = {"sample": list(sample), "output_schema": {"type": "labels", "dtype": "object"}}
    return Endpoint("accounts", 3, "http://127.0.0.1:8000/m/accounts/", public=public, manifest=manifest,
                    connection=Connection("http://127.0.0.1:8000", SECRET))


def test_html_view_has_url_try_it_link_and_curl_with_a_token_placeholder():
    page = make()._repr_html_()
    assert "http://127.0.0.1:8000/m/accounts/" in page
    assert "curl -X POST http://127.0.0.1:8000/m/accounts/predict" in page
    assert "Bearer %s\\n&#x27; &quot;$GAZELLE_TOKEN&quot; | curl" in page   # the token travels on stdin
    assert "needs a token with the predict scope" in page
    assert SECRET not in page


def test_public_model_says_so_and_its_curl_needs_no_token():
    ep = make(public=True)
    assert "public" in ep._repr_html_()
    assert "Authorization" not in ep.curl()


def test_curl_sends_the_first_sample_row_quoted_for_the_shell():
    curl = make(sample=["it's a taxi"]).curl()
    assert curl.endswith("""-d '{"instances": ["it'\\''s a taxi"]}'""")


def test_repr_names_model_version_and_url_but_never_the_token():
    ep = make()
    assert repr(ep) == "Endpoint(name='accounts', version=3, url='http://127.0.0.1:8000/m/accounts')"
    assert SECRET not in repr(ep) + repr(ep.__dict__.get("_connection"))


def test_string_labels_come_back_as_a_unicode_array_like_scikit_learn():
    got = _as_output(["a", "bb"], {"type": "labels", "dtype": "object"})
    assert isinstance(got, np.ndarray) and got.dtype.kind == "U" and got.tolist() == ["a", "bb"]


def test_integer_labels_and_tensors_keep_their_dtype():
    assert _as_output([1, 2], {"type": "labels", "dtype": "int64"}).dtype == np.int64
    got = _as_output([[0.5, 1.0]], {"type": "tensor", "dtype": "float32", "shape": [None, 2]})
    assert got.dtype == np.float32 and got.shape == (1, 2)


def test_table_output_becomes_a_dataframe_with_the_schema_columns():
    schema = {"type": "table", "columns": [{"name": "b", "dtype": "int64"}, {"name": "a", "dtype": "object"}]}
    got = _as_output([{"a": "x", "b": 1}], schema)
    assert isinstance(got, pd.DataFrame) and list(got.columns) == ["b", "a"]


def test_untyped_output_stays_json():
    assert _as_output([{"k": 1}], {"type": "any"}) == [{"k": 1}]


def test_a_single_text_instead_of_a_list_of_rows_is_refused_before_any_request():
    with pytest.raises(BadRequest) as err:
        make().predict("Taxi to conference")
    assert "pass a list of them, e.g. ['Taxi to conference']" in str(err.value)
