"""The shared connection table behind the runtime's balanced worker (``gazelle.runtime.worker``)."""
from __future__ import annotations

from gazelle.runtime.worker import ConnectionTable


def test_slots_are_claimed_by_age_and_freed_when_that_worker_exits():
    table = ConnectionTable(2)
    assert table.claim(age=1) == 0 and table.claim(age=2) == 1
    assert table.claim(age=3) is None   # full: the third worker goes unbalanced
    table.release(age=1)
    assert table.claim(age=3) == 0


def test_a_worker_is_ahead_only_of_live_workers_that_hold_fewer():
    table = ConnectionTable(3)
    a, b, c = table.claim(1), table.claim(2), table.claim(3)
    assert a is not None and b is not None and c is not None
    table.start(a, pid=101)
    table.start(b, pid=102)   # c is forked but not started: not live, whatever its count
    table.publish(a, 3)
    table.publish(b, 2)
    assert table.ahead(a) and not table.ahead(a, by=2) and not table.ahead(b)
    table.publish(b, 1)
    assert table.ahead(a, by=2)
    table.release(age=2)
    assert not table.ahead(a)   # the only other live worker is gone
