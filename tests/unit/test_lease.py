"""genq.workers.celery.lease.Leases: one job's view of a bundle's shared leases."""

from __future__ import annotations

import pytest
import redis

from genq.common.store.keys import Keys
from genq.workers.celery.lease import LeaseLost, Leases


def test_a_job_superseded_while_waiting_its_turn_stops_at_its_first_frame() -> None:
    client = redis.Redis(host="127.0.0.1", port=1)  # never reached: nothing here renews
    leases = Leases(client, Keys("genq"), {"a" * 32: 3, "b" * 32: 0}, ttl_s=30.0)
    leases._supersede("a" * 32, 3)  # what a failed renewal does
    lease = leases.lease("a" * 32)
    assert lease.epoch == 3
    with pytest.raises(LeaseLost, match="epoch 3 was superseded"):
        lease.check()
    leases.lease("b" * 32).check()  # the other job runs on
