"""genq.common.store.fair and the scripts that keep it (ENTER, SUBMIT, CLAIM, FINISH) against a
real Redis: who waits, who is picked, and what each tenant is charged."""

from __future__ import annotations

import redis

from genq.common.ids import new_batch_id, new_job_id
from genq.common.schemas import JobRecord, JobSpec, JobState
from genq.common.store import batches, fair, jobs, leases, run, run_transaction
from genq.common.store.batches import NewJob, Opening
from genq.common.store.keys import Keys
from genq.common.store.leases import ClaimOutcome, Ending
from genq.common.store.tenants import write_policies
from genq.common.tenants import TenantPolicy

KEYS = Keys("storefair")  # a prefix of its own: the session's workers and relay leave it alone
QUEUE = "cpu.tiny"
NOW = 1_000_000
LEASE_MS = 60_000
SPEC = JobSpec(prompt="x" * 40, max_tokens=10)
RESERVED = fair.W_IN * 10 + fair.W_OUT * 10  # 40 bytes of prompt, 10 tokens at most


def _record(tenant: str, priority: int = 5, **more: object) -> JobRecord:
    return JobRecord(
        spec=SPEC,
        state=JobState.QUEUED,
        queue=QUEUE,
        tenant=tenant,
        priority=priority,
        submitted_ms=1,
        **more,
    )


def _submit(r: redis.Redis, tenant: str, priority: int = 5, **more: object) -> str:
    job_id = new_job_id()
    record = _record(tenant, priority, **more)
    run_transaction(r, [jobs.write(KEYS, job_id, record, 600), fair.enter(KEYS, job_id, record)])
    return job_id


def _tickets(r: redis.Redis, job_ids: list[str]) -> list[leases.Claimed]:
    command = leases.claim(KEYS, [(j, 0) for j in job_ids], "w1", NOW, LEASE_MS, fair=True)
    return run(r, command)


def _counter(r: redis.Redis, tenant: str) -> float:
    return float(r.hget(fair.counters_key(KEYS, QUEUE), tenant) or 0)


def _clean(r: redis.Redis) -> None:
    for key in r.scan_iter(f"{KEYS.prefix}:*"):
        r.delete(key)


def test_a_new_job_waits_in_its_tenants_set_and_counts(redis_client: redis.Redis) -> None:
    _clean(redis_client)
    first = _submit(redis_client, "acme")
    _submit(redis_client, "acme")
    _submit(redis_client, "other")
    assert run(redis_client, fair.waiting_count(KEYS, [QUEUE, "cpu.none"], "acme")) == 2
    assert redis_client.zrange(fair.waiting_key(KEYS, QUEUE, "acme"), 0, 0) == [first]
    assert run(redis_client, fair.tenants(KEYS, QUEUE)) == {"acme": (2, 0.0), "other": (1, 0.0)}


def test_a_job_never_dispatched_leaves_its_set_and_its_tenant_the_backlog(
    redis_client: redis.Redis,
) -> None:
    _clean(redis_client)
    kept, lost = _submit(redis_client, "acme"), _submit(redis_client, "other")
    run(redis_client, fair.forget(KEYS, lost, _record("other")))
    assert run(redis_client, fair.waiting_count(KEYS, [QUEUE], "other")) == 0
    assert redis_client.zrange(fair.backlog_key(KEYS, QUEUE), 0, -1) == ["acme"]
    assert [c.job_id for c in _tickets(redis_client, [kept])] == [kept]


def test_a_batchs_new_jobs_wait_in_the_batchs_tenants_set(redis_client: redis.Redis) -> None:
    _clean(redis_client)
    batch_id = new_batch_id()
    new = [
        NewJob(f"c{i}", new_job_id(), _record("acme", batch_id=batch_id, custom_id=f"c{i}"))
        for i in range(3)
    ]
    opening = Opening(created_ms=1, priority=5, expires_ms=0)
    run_transaction(redis_client, [batches.submit(KEYS, batch_id, new, 600, opening)])
    waiting = redis_client.zrange(fair.waiting_key(KEYS, QUEUE, "acme"), 0, -1)
    assert waiting == [job.job_id for job in new]  # in input order
    again = batches.submit(KEYS, batch_id, new, 600, None)  # a resubmission adds nothing
    run_transaction(redis_client, [again])
    assert run(redis_client, fair.waiting_count(KEYS, [QUEUE], "acme")) == 3


def test_tickets_alternate_between_backlogged_tenants_priority_first_within_one(
    redis_client: redis.Redis,
) -> None:
    _clean(redis_client)
    big = [_submit(redis_client, "big") for _ in range(6)]
    urgent = _submit(redis_client, "big", priority=9)
    small = [_submit(redis_client, "small") for _ in range(2)]
    # Six tickets, all of the big tenant's messages: the small tenant, lifted to the big one's
    # counter when it arrived, gets every other slot; the big one's urgent job goes first.
    claimed = _tickets(redis_client, big)
    picked = [c.job_id for c in claimed]
    assert [c.outcome for c in claimed] == [ClaimOutcome.CLAIMED] * 6
    assert picked == [urgent, small[0], big[0], small[1], big[1], big[2]]
    assert all(c.record is not None and c.record.state == "running" for c in claimed)
    assert run(redis_client, fair.waiting_count(KEYS, [QUEUE], "small")) == 0
    assert _counter(redis_client, "big") == 4 * RESERVED
    assert _counter(redis_client, "small") == 2 * RESERVED


def test_a_tenant_of_weight_two_gets_two_picks_for_each_of_weight_one(
    redis_client: redis.Redis,
) -> None:
    _clean(redis_client)
    run(redis_client, write_policies(KEYS, {"heavy": TenantPolicy(weight=2)}))
    light = [_submit(redis_client, "light") for _ in range(10)]
    heavy = [_submit(redis_client, "heavy") for _ in range(10)]
    picked = [c.job_id for c in _tickets(redis_client, light[:9])]
    assert sum(j in heavy for j in picked) == 6
    assert _counter(redis_client, "heavy") == 6 * RESERVED / 2
    assert _counter(redis_client, "light") == 3 * RESERVED
    redis_client.delete(f"{KEYS.prefix}:tenants")


def test_an_idle_tenant_coming_back_is_lifted_to_the_least_counter(
    redis_client: redis.Redis,
) -> None:
    _clean(redis_client)
    first = [_submit(redis_client, "steady") for _ in range(5)]
    _tickets(redis_client, first[:4])  # steady, alone, is charged four reservations
    back = _submit(redis_client, "back")
    assert _counter(redis_client, "back") == 4 * RESERVED  # no credit banked while idle
    [claim] = _tickets(redis_client, [back])
    assert claim.job_id == back  # tie at the least counter: by name, "back" < "steady"


def test_finish_charges_a_claimed_job_its_actual_cost(redis_client: redis.Redis) -> None:
    _clean(redis_client)
    job_id = _submit(redis_client, "acme")
    [claim] = _tickets(redis_client, [job_id])
    assert claim.record is not None
    ending = Ending(job_id, 0, "", JobState.RUNNING, {"state": "succeeded"}, "{}", 3, 7)
    assert run(redis_client, leases.finish(KEYS, ending, 60, NOW))
    assert _counter(redis_client, "acme") == fair.W_IN * 7 + fair.W_OUT * 3


def test_an_unstarted_job_that_ends_leaves_its_set_uncharged(redis_client: redis.Redis) -> None:
    _clean(redis_client)
    job_id = _submit(redis_client, "acme")
    ending = Ending(job_id, 0, "", JobState.QUEUED, {"state": "cancelled"}, "{}")
    assert run(redis_client, leases.finish(KEYS, ending, 60, NOW))
    assert run(redis_client, fair.tenants(KEYS, QUEUE)) == {"acme": (0, 0.0)}
    assert redis_client.zcard(fair.backlog_key(KEYS, QUEUE)) == 0


def test_a_ticket_passes_cancelled_and_expired_jobs_then_idles(redis_client: redis.Redis) -> None:
    _clean(redis_client)
    cancelled = _submit(redis_client, "acme")
    expired = _submit(redis_client, "acme", expires_ms=NOW - 1)
    run(redis_client, jobs.request_cancel(KEYS, cancelled, 60))
    [claim] = _tickets(redis_client, [cancelled])
    assert (claim.outcome, claim.record) == (ClaimOutcome.IDLE, None)
    assert claim.dropped == ((cancelled, ClaimOutcome.CANCELLED), (expired, ClaimOutcome.EXPIRED))
    assert run(redis_client, fair.waiting_count(KEYS, [QUEUE], "acme")) == 0


def test_a_job_queued_before_the_fair_share_runs_on_its_own_ticket(
    redis_client: redis.Redis,
) -> None:
    _clean(redis_client)
    waiting = _submit(redis_client, "acme")
    legacy = new_job_id()
    run(redis_client, jobs.write(KEYS, legacy, _record("old"), 600))  # no waiting set entry
    [claim] = _tickets(redis_client, [legacy])
    assert (claim.job_id, claim.outcome) == (legacy, ClaimOutcome.CLAIMED)
    assert redis_client.zscore(fair.waiting_key(KEYS, QUEUE, "acme"), waiting) is not None


def test_first_come_claims_its_own_job_and_it_leaves_its_set(redis_client: redis.Redis) -> None:
    _clean(redis_client)
    first = _submit(redis_client, "big")
    later = _submit(redis_client, "small")
    command = leases.claim(KEYS, [(later, 0)], "w1", NOW, LEASE_MS, fair=False)
    [claim] = run(redis_client, command)
    assert (claim.job_id, claim.outcome) == (later, ClaimOutcome.CLAIMED)
    assert run(redis_client, fair.tenants(KEYS, QUEUE)) == {
        "big": (1, 0.0),
        "small": (0, float(RESERVED)),
    }
    assert redis_client.zscore(fair.waiting_key(KEYS, QUEUE, "big"), first) is not None
