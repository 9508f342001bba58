import json
import math

import numpy as np
import pandas as pd
import pytest

from gazelle import schema
from gazelle.errors import ModelError, SchemaError

FLOATS = {"type": "tensor", "dtype": "float64", "shape": [None, 20], "container": "ndarray"}


def _rows(n=100, width=20):
    rng = np.random.default_rng(0)
    return rng.random((n, width)).tolist()


def _problem(instances, sch, field="instances"):
    with pytest.raises(SchemaError) as err:
        schema.decode(instances, sch, field)
    return str(err.value)


# -- inference ----------------------------------------------------------------------------------


def test_list_of_strings_is_text():
    assert schema.infer(["taxi to conference", "hotel"]) == {"type": "text"}
    assert schema.rows(["taxi", "hotel"]) == ["taxi", "hotel"]


def test_series_of_strings_is_text():
    assert schema.infer(pd.Series(["taxi", "hotel"])) == {"type": "text"}


def test_ndarray_is_tensor_with_free_batch_dimension():
    sample = np.zeros((5, 20), dtype="float32")
    assert schema.infer(sample) == {"type": "tensor", "dtype": "float32", "shape": [None, 20],
                                    "container": "ndarray"}


def test_list_of_lists_is_tensor_in_a_list_container():
    assert schema.infer([[1.5, 2.0], [3.0, 4.0]]) == {"type": "tensor", "dtype": "float64",
                                                      "shape": [None, 2], "container": "list"}
    assert schema.infer([[1, 2], [3, 4]])["dtype"] == "float64"


def test_plain_int_list_sample_accepts_any_number_while_numpy_ints_stay_integer():
    import numpy as np

    listed = schema.infer([[1, 2, 3], [0, 0, 0]])
    assert listed == {"type": "tensor", "dtype": "float64", "shape": [None, 3], "container": "list"}
    assert schema.decode([[-1, 5, 2.5]], listed) == [[-1.0, 5.0, 2.5]]
    typed = schema.infer(np.array([[1, 2, 3], [0, 0, 0]]))
    assert typed["dtype"] == "int64"
    assert schema.decode([[-1, 5.0, 2]], typed).tolist() == [[-1, 5, 2]]
    assert _problem([[-1, 5, 2.5]], typed) == (
        "instances[0][2]: expected an integer, got 2.5: the sample's dtype is int64; to accept "
        "fractions, deploy with a float sample (sample.astype(float))")
    assert schema.infer([True, False])["dtype"] == "bool"


def test_integer_table_column_refusing_a_fraction_names_the_column_and_how_to_widen_it():
    pd = pytest.importorskip("pandas")

    sch = schema.infer(pd.DataFrame({"amount": [3, 4], "city": ["a", "b"]}))
    assert sch["columns"][0] == {"name": "amount", "dtype": "int64"}
    assert schema.decode([{"amount": 7.0, "city": "c"}], sch)["amount"].tolist() == [7]
    assert _problem([{"amount": 2.5, "city": "c"}], sch) == (
        'instances[0].amount: expected an integer, got 2.5: the sample\'s column "amount" is int64; '
        'to accept fractions, deploy with a float sample (sample.astype({"amount": float}))')


def test_list_of_numbers_is_a_one_dimensional_tensor():
    assert schema.infer([1.0, 2.5])["shape"] == [None]


def test_dataframe_with_numeric_and_categorical_columns_is_table():
    df = pd.DataFrame({
        "amount": [12.5, 3.0],
        "count": [1, 2],
        "city": pd.Series(["paris", "lyon"], dtype=object),
        "kind": pd.Categorical(["a", "b"], categories=["a", "b", "c"]),
        "paid": [True, False],
    })
    assert schema.infer(df) == {"type": "table", "columns": [
        {"name": "amount", "dtype": "float64"},
        {"name": "count", "dtype": "int64"},
        {"name": "city", "dtype": "object"},
        {"name": "kind", "dtype": "category", "categories": ["a", "b", "c"], "ordered": False},
        {"name": "paid", "dtype": "bool"},
    ]}


def test_list_of_objects_passes_through_as_any():
    assert schema.infer([{"a": 1}]) == {"type": "any"}
    assert schema.infer(None) == {"type": "any"}


def test_unsupported_sample_and_column_types_are_refused_with_a_hint():
    with pytest.raises(SchemaError, match="cannot describe a sample of type set"):
        schema.infer({1, 2})
    with pytest.raises(SchemaError, match="not named by a string"):
        schema.infer(pd.DataFrame(np.zeros((2, 2))))
    with pytest.raises(SchemaError, match="Int64"):
        schema.infer(pd.DataFrame({"n": pd.array([1, None], dtype="Int64")}))


# -- decode: the fast path ----------------------------------------------------------------------


def test_valid_tensor_decodes_to_ndarray_of_schema_dtype():
    rows = _rows()
    out = schema.decode(rows, FLOATS)
    assert isinstance(out, np.ndarray) and out.dtype == np.float64 and out.shape == (100, 20)
    assert out.tolist() == rows


def test_integers_are_accepted_as_float_values():
    out = schema.decode([[1] * 20], FLOATS)
    assert out.dtype == np.float64 and out[0, 0] == 1.0


def test_list_container_gives_lists():
    sch = {"type": "tensor", "dtype": "float64", "shape": [None, 2], "container": "list"}
    assert schema.decode([[1, 2.5]], sch) == [[1.0, 2.5]]


def test_text_decodes_to_list_of_strings():
    assert schema.decode(["a", "b"], {"type": "text"}) == ["a", "b"]


def test_table_decodes_to_dataframe_with_the_sample_dtypes():
    df = pd.DataFrame({
        "amount": [12.5, 3.0],
        "count": [1, 2],
        "city": ["paris", "lyon"],
        "kind": pd.Categorical(["a", "b"], categories=["a", "b", "c"]),
        "when": pd.to_datetime(["2024-01-01T10:00", "2024-02-03T00:00"]),
        "paid": [True, False],
    })
    sch = schema.infer(df)
    rows = json.loads(json.dumps(schema.rows(df)))
    assert rows[0]["when"] == "2024-01-01T10:00:00"
    out = schema.decode(rows, sch)
    pd.testing.assert_frame_equal(out, df)


# -- decode: errors name the field --------------------------------------------------------------


def test_string_in_number_field_names_row_and_column():
    rows = _rows()
    rows[3][1] = "abc"
    assert _problem(rows, FLOATS) == 'instances[3][1]: expected number, got "abc"'


def test_booleans_are_not_numbers():
    rows = _rows()
    rows[5][0] = True
    assert _problem(rows, FLOATS) == "instances[5][0]: expected number, got true"


@pytest.mark.parametrize("value, shown", [(math.nan, "NaN"), (math.inf, "Infinity"), (-math.inf, "-Infinity")])
def test_non_finite_numbers_are_rejected(value, shown):
    rows = _rows()
    rows[7][19] = value
    assert _problem(rows, FLOATS) == f"instances[7][19]: expected a finite number, got {shown}"


def test_short_row_says_how_many_values_were_expected():
    rows = _rows()
    rows[0] = rows[0][:3]
    assert _problem(rows, FLOATS) == "instances[0]: expected 20 values, got 3"


def test_row_that_is_not_a_list():
    rows = _rows()
    rows[2] = 7
    assert _problem(rows, FLOATS) == "instances[2]: expected a list of 20 numbers, got 7"


def test_instances_must_be_a_nonempty_list():
    assert _problem({"a": 1}, FLOATS) == "instances: expected a list of rows, got object"
    assert _problem("abc", {"type": "text"}) == 'instances: expected a list of rows, got "abc"'
    assert _problem([], {"type": "text"}) == "instances: expected at least one row"


def test_text_rows_must_be_strings():
    assert _problem(["a", 5], {"type": "text"}) == "instances[1]: expected a string, got 5"
    assert _problem(["a", None], {"type": "text"}, "inputs[0].data") == \
        "inputs[0].data[1]: expected a string, got null"


def test_integer_tensor_refuses_fractions_and_overflow_but_takes_integral_floats():
    sch = {"type": "tensor", "dtype": "int64", "shape": [None, 2], "container": "ndarray"}
    assert schema.decode([[1, 2.0]], sch).tolist() == [[1, 2]]
    assert _problem([[1, 2.5]], sch).startswith("instances[0][1]: expected an integer, got 2.5: ")
    assert "fits int64" in _problem([[1, 2 ** 70]], sch)


def test_objects_where_numeric_rows_belong_are_schema_errors():
    sch = {"type": "tensor", "dtype": "float64", "shape": [None, 4], "container": "ndarray"}
    assert _problem([{}], sch) == "instances[0]: expected a list of 4 numbers, got object"
    assert _problem([[{}, 1, 2, 3]], sch) == "instances[0][0]: expected number, got object"
    assert _problem([{}], {**sch, "shape": [None]}) == "instances[0]: expected number, got object"


def test_single_number_rows():
    sch = {"type": "tensor", "dtype": "float64", "shape": [None], "container": "list"}
    assert schema.decode([1, 2.5], sch) == [1.0, 2.5]
    assert _problem([1, [2]], sch) == "instances[1]: expected number, got array"


TABLE = {"type": "table", "columns": [
    {"name": "amount", "dtype": "float64"},
    {"name": "city", "dtype": "object"},
    {"name": "kind", "dtype": "category", "categories": ["a", "b"], "ordered": False},
]}


def _table_rows():
    return [{"amount": 1.0, "city": "paris", "kind": "a"} for _ in range(4)]


def test_null_in_a_number_column_names_the_column():
    rows = _table_rows()
    rows[2]["amount"] = None
    assert _problem(rows, TABLE) == "instances[2].amount: expected number, got null"


def test_string_in_a_number_column():
    rows = _table_rows()
    rows[3]["amount"] = "abc"
    assert _problem(rows, TABLE) == 'instances[3].amount: expected number, got "abc"'


def test_missing_column_is_named():
    rows = _table_rows()
    del rows[1]["city"]
    assert _problem(rows, TABLE) == 'instances[1]: missing column "city"'


def test_unknown_columns_are_named():
    rows = _table_rows()
    rows[0]["colour"] = "red"
    assert _problem(rows, TABLE) == \
        'instances[0]: unknown column "colour"; the columns are amount, city, kind'


def test_table_row_that_is_not_an_object():
    rows = _table_rows()
    rows[1] = [1.0, "paris", "a"]
    assert _problem(rows, TABLE) == "instances[1]: expected an object keyed by column, got array"


def test_unknown_category_lists_the_choices():
    rows = _table_rows()
    rows[2]["kind"] = "z"
    assert _problem(rows, TABLE) == 'instances[2].kind: expected one of "a", "b", got "z"'


def test_column_names_that_are_not_identifiers_are_quoted_in_paths():
    sch = {"type": "table", "columns": [{"name": "unit price", "dtype": "float64"}]}
    assert _problem([{"unit price": "x"}], sch) == 'instances[0]["unit price"]: expected number, got "x"'


def test_bad_datetime_names_the_field():
    sch = {"type": "table", "columns": [{"name": "when", "dtype": "datetime64[us]"}]}
    assert _problem([{"when": "2024-01-01"}, {"when": "yesterday"}], sch) == \
        'instances[1].when: expected an ISO 8601 date-time string, got "yesterday"'


def test_long_strings_are_shortened_in_messages():
    message = _problem(["x" * 500], FLOATS)
    assert len(message) < 120 and message.endswith('..."')


# -- outputs ------------------------------------------------------------------------------------


def test_jsonable_converts_numpy_and_pandas_outputs():
    assert schema.jsonable(np.array(["a", "b"])) == ["a", "b"]
    assert schema.jsonable(np.array([1, 2], dtype="int32")) == [1, 2]
    assert schema.jsonable(np.array([[0.5, np.nan]])) == [[0.5, None]]
    assert schema.jsonable(pd.Series(["x", "y"])) == ["x", "y"]
    assert schema.jsonable(pd.DataFrame({"a": [1], "b": ["z"]})) == [{"a": 1, "b": "z"}]
    assert schema.jsonable([np.int64(3), np.float32(0.5), np.str_("q")]) == [3, 0.5, "q"]
    assert type(schema.jsonable([np.int64(3)])[0]) is int


def test_jsonable_refuses_a_single_value():
    with pytest.raises(ModelError, match="not one output per row"):
        schema.jsonable(np.float64(1.0))


def test_output_schema_tells_labels_from_tensors():
    assert schema.output_schema(np.array(["a"])) == {"type": "labels", "dtype": "object"}
    assert schema.output_schema(np.array([1, 2])) == {"type": "labels", "dtype": "int64"}
    assert schema.output_schema(np.zeros((2, 3))) == {"type": "tensor", "dtype": "float64", "shape": [None, 3]}
    assert schema.output_schema(["a", "b"]) == {"type": "labels", "dtype": "object"}


def test_compare_labels_exactly_and_floats_within_tolerance():
    assert schema.compare(["x", "y"], ["x", "y"]) is None
    assert schema.compare(["x", "y", "z"], ["x", "y", "x"]) == "row 2: expected 'x', got 'z'"
    assert schema.compare([[0.1 + 1e-12, 0.9]], [[0.1, 0.9]]) is None
    assert schema.compare([[0.1, 0.8]], [[0.1, 0.9]]) == "row 0[1]: expected 0.9, got 0.8"
    assert schema.compare([1], [True]) == "row 0: expected true, got 1"
    assert schema.compare(["x"], ["x", "y"]) == "expected 2 rows, got 1"
