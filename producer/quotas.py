"""Admission: the limits a submit is held to before anything of it is queued, on every submit
path (`Client.submit` and `submit_batch`, of both faces; the gateway's completions, chats and
batches and the CLI go through them). In the order they are checked:

- a model's ceiling, GENQ_MAX_QUEUED: waiting jobs in one model's queue, whoever's they are
  (`QueueFull`; a batch is not counted against it);
- its tenant's `max_queued`: the tenant's waiting jobs over every model's queue (counted in
  the fair-share waiting sets, genq.common.store.fair), this submit's included;
- its tenant's `tokens_per_minute`: a token bucket in Redis (genq.common.store.quotas).

A tenant's limits are its TenantPolicy (genq.common.store.tenants, which the gateway writes
from its keys file), read at each submit. Over a limit, the submit raises `QuotaExceeded`
(retryable, with `retry_after_s`) and nothing is queued: no record, no task message, and no
tokens kept from the bucket. A submit that could never pass (a job costing more than a
minute's tokens, a batch of more jobs than `max_queued`) raises InvalidJob instead, so that
nothing retries it for ever. Like GENQ_MAX_QUEUED the counts are soft limits: submitters
racing may pass `max_queued` by as many jobs as they submit at once; the bucket is exact.

A job's cost is its prompt's tokens, estimated from its characters as OpenAI's rate limits
estimate them (fair.CHARS_PER_TOKEN, the fair share's estimate too), plus its `max_tokens`:
what it may cost, known before it runs. A batch is charged whole, before its first job is queued.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from genq.common.errors import InvalidJob, QueueFull, QuotaExceeded
from genq.common.registry import ModelRegistry
from genq.common.routing import model_queue
from genq.common.schemas import JobSpec
from genq.common.settings import Settings
from genq.common.store import fair, queues
from genq.common.store import quotas as buckets
from genq.common.store import tenants as policies
from genq.common.store.command import Command
from genq.common.store.keys import Keys
from genq.common.tenants import TenantPolicy

QUEUED_RETRY_S = 1.0  # retry-after for a full queue: jobs leave it as workers start them
_NONE: Command[int] = Command((), lambda replies: 0)  # a count not asked for


def job_cost(spec: JobSpec) -> int:
    """The tokens a job is charged: its prompt's, estimated, and the most it may generate."""
    return math.ceil(spec.prompt_chars / fair.CHARS_PER_TOKEN) + spec.max_tokens


@dataclass(frozen=True)
class Charge:
    """What one submit asks: its tenant's `jobs` waiting and `tokens`; `queue` is the model
    queue GENQ_MAX_QUEUED holds it to (None for a batch, which it does not count)."""

    tenant: str
    jobs: int
    tokens: int
    queue: str | None = None

    @property
    def what(self) -> str:
        return "this job" if self.queue else f"this batch of {self.jobs} jobs"


@dataclass(frozen=True)
class Standing:
    """What admission reads: the tenant's policy, its waiting jobs, the model queue's depth
    (0 when GENQ_MAX_QUEUED is not set or the charge is a batch's)."""

    policy: TenantPolicy
    waiting: int
    depth: int


class Admission:
    """One submit's way in: `read` its standing, `check` it (which raises, or says which
    tokens to take), `took` what the bucket answered; `refund` when it queued nothing after
    all. Does no I/O: a client face runs its commands."""

    def __init__(self, settings: Settings, queues: Sequence[str], charge: Charge) -> None:
        self.settings, self.queues, self.charge = settings, queues, charge
        self.keys = Keys(settings.key_prefix)
        self.policy: TenantPolicy | None = None  # once checked
        self.taken = False

    @property
    def read(self) -> Command[Standing]:
        """The tenant's policy and waiting jobs, and the model queue's depth, in one pipeline."""
        charge, settings = self.charge, self.settings
        policy = policies.read_policy(self.keys, charge.tenant)
        waiting = fair.waiting_count(self.keys, self.queues, charge.tenant)
        depth = queues.depth(charge.queue) if charge.queue and settings.max_queued else _NONE
        cut, end = len(policy.calls), len(policy.calls) + len(waiting.calls)
        return Command(
            policy.calls + waiting.calls + depth.calls,
            lambda r: Standing(
                policy.reply(r[:cut]), waiting.reply(r[cut:end]), depth.reply(r[end:])
            ),
        )

    def check(self, standing: Standing) -> Command[buckets.Take] | None:
        """Raises InvalidJob (never admissible), QueueFull or QuotaExceeded; else the bucket's
        TAKE to run, when the tenant has a token rate."""
        self.policy = policy = standing.policy
        self._never_fits(policy)
        self._ceiling(standing.depth)
        self._waiting(policy, standing.waiting)
        if not policy.tokens_per_minute:
            return None
        charge = self.charge
        return buckets.take(self.keys, charge.tenant, policy.tokens_per_minute, charge.tokens)

    def took(self, take: buckets.Take) -> None:
        """QuotaExceeded when the bucket held too few tokens (it took none)."""
        self.taken = take.taken
        if take.taken:
            return
        charge, per_minute = self.charge, self.policy.tokens_per_minute if self.policy else 0
        retry_s = math.ceil(take.wait_ms / 100) / 10  # shown to a tenth: never "0.0 s"
        raise QuotaExceeded(
            f"tenant {charge.tenant!r}: {charge.what} costs {charge.tokens} tokens and its "
            f"bucket holds {take.held} of its tokens_per_minute ({per_minute}); nothing was "
            f"queued, retry in {retry_s:.1f} s",
            retry_s,
        )

    def refund(self, tokens: int | None = None) -> Command[buckets.Take] | None:
        """Give back the tokens taken (all, or `tokens` of them: those of jobs not queued)."""
        amount = self.charge.tokens if tokens is None else tokens
        if not self.taken or not self.policy or amount <= 0:
            return None
        per_minute = self.policy.tokens_per_minute
        return buckets.give_back(self.keys, self.charge.tenant, per_minute, amount)

    def _never_fits(self, policy: TenantPolicy) -> None:
        charge, per_minute, most = self.charge, policy.tokens_per_minute, policy.max_queued
        if per_minute and charge.tokens > per_minute:
            raise InvalidJob(
                f"tenant {charge.tenant!r}: {charge.what} costs {charge.tokens} tokens (prompt "
                f"tokens, estimated, plus max_tokens), more than its tokens_per_minute "
                f"({per_minute}) can ever hold; {_smaller(charge)}"
            )
        if most is not None and charge.jobs > most:
            raise InvalidJob(
                f"tenant {charge.tenant!r}: {charge.what} is more than its max_queued ({most}) "
                f"lets it hold waiting at once; {_smaller(charge)}"
            )

    def _ceiling(self, depth: int) -> None:
        limit, queue = self.settings.max_queued, self.charge.queue
        if limit and queue and depth >= limit:
            raise QueueFull(
                f"{depth} jobs are waiting in queue {queue}, the most GENQ_MAX_QUEUED allows "
                f"({limit}); nothing was queued, try again later"
            )

    def _waiting(self, policy: TenantPolicy, waiting: int) -> None:
        charge, most = self.charge, policy.max_queued
        if most is not None and waiting + charge.jobs > most:
            raise QuotaExceeded(
                f"tenant {charge.tenant!r}: {waiting} jobs waiting, and {charge.what} would "
                f"pass its max_queued ({most}); nothing was queued, retry once some have "
                "started",
                QUEUED_RETRY_S,
            )


def model_queues(registry: ModelRegistry) -> list[str]:
    """Every model queue of the registry: where a tenant's waiting jobs are counted."""
    return sorted({model_queue(registry, name) for name in registry.names()})


def _smaller(charge: Charge) -> str:
    return "lower its max_tokens" if charge.queue else "split it into smaller batches"
