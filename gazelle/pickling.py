"""cloudpickle, made reproducible: the same model pickles to the same bytes in every process.

Two things made a pickle differ between two runs of the same notebook, and both are normalised here:

- scikit-learn's text vectorizers keep ``_stop_words_id``, the memory address of their ``stop_words``
  (a cache key that lets them skip re-validating the stop words). It is left out of the pickled
  state: after unpickling the address is a different one anyway, so the vectorizer re-validates once,
  exactly as it always did after a load.
- cloudpickle gives every class it pickles by value (defined in ``__main__`` or a helper module) a
  tracker id, a random ``uuid4().hex``, so that unpickling in the same process finds the same class.
  Each such id is replaced, in place and at the same length, by one derived from the pickle's content
  (with every tracker id blanked out), and registered as an alias for the class in this process, so
  an in-process round trip still returns the very same class.

Limits: other sources of difference (a model holding a ``set`` of strings pickles in hash order,
which ``PYTHONHASHSEED`` changes; timestamps or random state a model stores itself) are not touched.
"""
from __future__ import annotations

import hashlib
import io
from typing import Any

import cloudpickle
from cloudpickle import cloudpickle as _cp

_ADDRESS_ATTRIBUTES = ("_stop_words_id",)
_SHORT_BINUNICODE_32 = b"\x8c\x20"  # the opcode and length byte in front of a 32-character string


class _Pickler(cloudpickle.Pickler):
    def reducer_override(self, obj: Any) -> Any:
        state = getattr(obj, "__dict__", None)
        if type(state) is dict and any(name in state for name in _ADDRESS_ATTRIBUTES):
            return _without_addresses(obj, self.proto)
        return super().reducer_override(obj)


def _without_addresses(obj: Any, protocol: int) -> Any:
    reduced = obj.__reduce_ex__(protocol)
    if not isinstance(reduced, tuple) or len(reduced) < 3 or not isinstance(reduced[2], dict):
        return reduced
    state = {k: v for k, v in reduced[2].items() if k not in _ADDRESS_ATTRIBUTES}
    return (*reduced[:2], state, *reduced[3:])


def dumps(obj: Any, protocol: int) -> bytes:
    """``cloudpickle.dumps(obj, protocol)``, without process-specific bytes."""
    out = io.BytesIO()
    _Pickler(out, protocol=protocol).dump(obj)
    return _stable_tracker_ids(out.getvalue())


def _stable_tracker_ids(pickled: bytes) -> bytes:
    with _cp._DYNAMIC_CLASS_TRACKER_LOCK:
        trackers = [(tracker, cls) for cls, tracker in _cp._DYNAMIC_CLASS_TRACKER_BY_CLASS.items()
                    if len(tracker) == 32 and _SHORT_BINUNICODE_32 + tracker.encode() in pickled]
    if not trackers:
        return pickled
    # Ordered by first appearance, so the i-th class of the pickle gets the i-th content id.
    trackers.sort(key=lambda item: pickled.index(_SHORT_BINUNICODE_32 + item[0].encode()))
    blank = pickled
    for tracker, _ in trackers:
        blank = blank.replace(_SHORT_BINUNICODE_32 + tracker.encode(), _SHORT_BINUNICODE_32 + b"0" * 32)
    content = hashlib.sha256(blank).digest()
    stable = pickled
    for i, (tracker, cls) in enumerate(trackers):
        new = hashlib.sha256(content + i.to_bytes(4, "big")).hexdigest()[:32]
        stable = stable.replace(_SHORT_BINUNICODE_32 + tracker.encode(), _SHORT_BINUNICODE_32 + new.encode())
        with _cp._DYNAMIC_CLASS_TRACKER_LOCK:
            _cp._DYNAMIC_CLASS_TRACKER_BY_ID.setdefault(new, cls)
    return stable
