"""Input and output schemas: what a model's rows look like in JSON, and the codecs between the two.

A schema is a small JSON value stored in the bundle's ``gazelle.json``:

- ``{"type": "text"}``: rows are strings; the model receives ``list[str]``.
- ``{"type": "tensor", "dtype": "float64", "shape": [null, 20], "container": "ndarray"|"list"}``: rows
  are lists of numbers (single numbers when the shape is ``[null]``); the model receives an ndarray of
  that dtype, or a list of lists when the sample was a list. A plain-list sample of ints gives float64
  (any number is accepted); only numpy and pandas samples give integer dtypes, which accept integral
  floats and refuse fractions with a message naming the column and how to widen the sample.
- ``{"type": "table", "columns": [{"name": "amount", "dtype": "float64"}, ...]}``: rows are objects
  keyed by column; the model receives a pandas DataFrame with exactly those columns and dtypes.
  Column dtypes: numpy ints, floats and bool; strings (``object``, ``str``, ``string``); ``category``
  (with its ``categories``); ``datetime64[...]`` given as ISO 8601 strings.
- ``{"type": "any"}``: rows are passed to the model as parsed JSON.

Output schemas add ``{"type": "labels", "dtype": ...}``. :func:`decode` sits on the runtime's hot path:
valid input goes through one numpy conversion; the per-field walk runs only to name the first bad
field. Null, NaN and Infinity are never accepted where a value is expected: JSON has no missing value
that every model would read the same way. numpy and pandas are imported on first use, and pandas only
for tables.

The work is split by caller: :mod:`.inference` (the client: schemas from a sample or an output),
:mod:`.decoding` (the runtime's hot path), :mod:`.encoding` (outputs to JSON), :mod:`.comparison`
(the server's sanity check); :mod:`.common` holds what they share. The names below are re-exported.
"""
from __future__ import annotations

from gazelle.schema.common import describe
from gazelle.schema.comparison import compare
from gazelle.schema.decoding import decode
from gazelle.schema.encoding import jsonable
from gazelle.schema.inference import infer, output_schema, rows

__all__ = ["compare", "decode", "describe", "infer", "jsonable", "output_schema", "rows"]
