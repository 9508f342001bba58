"""Joining decoded inputs of several requests into the one input of a batched model call.

The runtime decodes (and so validates) each request on its own; only inputs that passed are joined,
in request order, into one value of the type the model receives for the schema:

- ``tensor`` with an ndarray container: the arrays concatenated along the first axis;
- ``table``: the DataFrames concatenated, with a fresh 0..n-1 index (the index one request alone
  gets), column dtypes kept (categories included, as every part has the schema's categories);
- ``text``, ``tensor`` with a list container, ``any``: the lists concatenated.

Limits: a joined batch is exactly what one request with all those rows would give the model, which
is what batching needs; whether the model answers each row independently of its neighbours is the
model's property, not something this module can check (hence batching is opt-in for custom models).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence


def join(parts: Sequence[Any], schema: Mapping[str, Any]) -> Any:
    """One model input holding the rows of ``parts`` (each what :func:`decode` returned), in order."""
    if len(parts) == 1:
        return parts[0]
    kind = schema.get("type")
    if kind == "tensor" and schema.get("container", "ndarray") == "ndarray":
        import numpy as np

        return np.concatenate(parts, axis=0)
    if kind == "table":
        import pandas as pd

        return pd.concat(parts, ignore_index=True)
    return [row for part in parts for row in part]
