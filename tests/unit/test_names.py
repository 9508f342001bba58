import pytest

from gazelle.errors import InvalidName
from gazelle.names import validate_name


@pytest.mark.parametrize("name", ["accounts", "a", "model-2", "x" * 40])
def test_valid_names_pass(name):
    assert validate_name(name) == name


@pytest.mark.parametrize("name, words", [
    ("", "empty"), ("Accounts", "DNS-1123"), ("-a", "DNS-1123"), ("a_b", "DNS-1123"),
    ("x" * 41, "limit"), ("../etc", "DNS-1123"), ("x\n", "DNS-1123"), ("churn\n", "DNS-1123"),
    ("\nx", "DNS-1123"),
])
def test_invalid_names_say_why(name, words):
    with pytest.raises(InvalidName) as e:
        validate_name(name)
    assert words in str(e.value)
    assert isinstance(e.value, ValueError)
