"""One redaction rule: a URL alone and a URL inside a line of text come out the same."""
from __future__ import annotations

import pytest

from gazelle.redaction import redact, redact_url


@pytest.mark.parametrize("url, shown", [
    ("postgresql://gazelle:s3cret@db/g", "postgresql://***@db/g"),
    ("https://user:hunter2@pypi.example/simple", "https://***@pypi.example/simple"),
    ("http://127.0.0.1:5000/v2/a/blobs/uploads/x?_state=SIGNED&digest=sha256:1",
     "http://127.0.0.1:5000/v2/a/blobs/uploads/x?_state=***&digest=***"),
    ("https://registry.example/v2/", "https://registry.example/v2/"),
])
def test_a_url_alone_and_inside_text_are_redacted_alike(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert redact(f"fetching {url} failed") == f"fetching {shown} failed"


def test_redacted_text_keeps_no_password_token_or_known_secret() -> None:
    line = "sqlite://u:pw@h/x Bearer abc.def gz_0123456789abcdefghijXYZ hunter22"
    assert redact(line, ["hunter22"]) == "sqlite://***@h/x Bearer *** *** ***"
