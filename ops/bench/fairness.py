"""The fairness section: three tenants share one model's slots, under the fair scheduler and
under today's first-come queue, in the same run.

Two stacks, alike but for GENQ_FAIR_SHARE (false: first-come; true: the fair scheduler), each
with 2 workers of `--slots 4` and a gateway given a keys file of three tenants, weights 1:1:2:
`genq serve` stores their policies where every worker's claim reads them, as a user's
gateway does. Every job is its own task message (GENQ_BUNDLE_TOKENS=0): a bundle is claimed
whole, so no scheduler could choose among its jobs.

The workload lasts about `--fairness-seconds` at the rate a calibration batch measured:
alpha and beta (weight 1) submit their backlogs at once, gamma (weight 2) a quarter of the
way in. Each backlog is what a fair share would serve by the end (5/16, 5/16 and 6/16 of the
run's jobs), so under fair share all three stay backlogged to the end, and under first-come
they are served one after another. Jobs: 3 short to 1 long, EOS banned.

What is measured, from the job records as a user reads them (`Client.record`):
- service: a job's VTC cost, prompt + 2 x completion tokens (w_in=1, w_out=2), spread evenly
  over its run (started_ms to finished_ms);
- a tenant is backlogged while one of its jobs waits (submitted, not started);
- each tenant's service per 10 s window; Jain's index of weight-normalised service over the
  tenants backlogged for half the window or more, in windows with two or more of them;
- the largest service difference: for two tenants over any interval in which both are
  backlogged, |S_f/w_f - S_g/w_g|, with each job's cost counted as it starts (what the
  scheduler bounds), against VTC's bound 2U, U the run's largest job cost; and with it spread
  over the run, where the work in flight on N slots may add 2NU;
- queue wait (`Timings.queue_wait_ms`), p50 and p99 per tenant.
Cost, on both idle stacks in alternating turns: 1-token jobs one at a time (submit to start,
`Timings.queue_wait_ms`), and a batch of them: jobs/s from the first submit to the last start,
and per job the CPU of the workers and redis-server and Redis's time in scripts (INFO
commandstats), which a shared machine's contention moves far less than wall time.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from functools import partial
from operator import attrgetter
from pathlib import Path
from typing import Any

import redis

from genq import BatchHandle, Client, JobHandle, JobRecord, JobSpec
from ops.bench.batches import batch_lines
from ops.bench.report import MS_PER_S, TINY, alternate, job_model, met, percentile, say, table
from ops.bench.scale import tree_cpu_s
from ops.bench.stack import Stack, local_stack, pid, serving
from ops.localstack import Gateway, StackError

WEIGHTS = {"alpha": 1.0, "beta": 1.0, "gamma": 2.0}
ONES = dict.fromkeys(WEIGHTS, 1.0)
LATE, LATE_AT = "gamma", 0.25  # gamma submits a quarter of the way into the run
SHARES = {"alpha": 5 / 16, "beta": 5 / 16, "gamma": 6 / 16}  # of the run's jobs
W_IN, W_OUT, CHARS_PER_TOKEN = 1, 2, 4  # VTC's weights, as genq charges them (README: Fair share)
WINDOW_S = 10.0
SHORT_TOKENS, LONG_EVERY = 16, 4  # every 4th job is long
WORKERS, SLOTS = 2, 4
CALIBRATION_ROUNDS = 3  # calibration jobs: this many per slot of the stack
LATENCY_JOBS, COST_ROUNDS = 10, 5  # 1-token jobs one at a time per round; rounds
TARGET_RATIO = 0.9  # fair share's submit-to-start jobs/s over first-come's
MODES = {"first-come": "false", "fair share": "true"}
SCRIPTS = ("eval", "evalsha")  # INFO commandstats' names of what runs genq's Lua scripts
COST_PER_JOB = (attrgetter("cpu_ms"), attrgetter("script_us"))
TIMEOUT_S, POLL_S = 1800.0, 0.1
Interval = tuple[float, float]


@dataclass(frozen=True)
class Span:
    """One job as the measures see it: seconds from the run's first submit, its VTC cost."""

    tenant: str
    submitted: float
    started: float
    finished: float
    cost: float
    wait_ms: float = 0.0
    reserved: float = 0.0  # what the claim charged before the cost was known


def served(spans: Sequence[Span], times: Sequence[float]) -> list[float]:
    """The service the spans gave by each of `times` (ascending), each job's cost spread
    evenly over its run (all of it at its start when it took no time)."""
    events = []  # (time, change of rate, jump)
    for s in spans:
        run = s.finished - s.started
        events += [(s.started, s.cost / run, 0.0), (s.finished, -s.cost / run, 0.0)] if run > 0 \
            else [(s.started, 0.0, s.cost)]  # fmt: skip
    events.sort()
    total = rate = last = 0.0
    out, k = [], 0
    for t in times:
        while k < len(events) and events[k][0] <= t:
            at, change, jump = events[k]
            total, rate, last, k = total + rate * (at - last) + jump, rate + change, at, k + 1
        out.append(total + rate * (t - last))
    return out


def backlog(spans: Sequence[Span]) -> list[Interval]:
    """When the spans' tenant had a job waiting: their [submitted, started) merged."""
    merged: list[Interval] = []
    for start, end in sorted((s.submitted, s.started) for s in spans if s.started > s.submitted):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def overlap(a: Sequence[Interval], b: Sequence[Interval]) -> list[Interval]:
    """Where two sorted lists of disjoint intervals both hold."""
    both = [(max(x[0], y[0]), min(x[1], y[1])) for x in a for y in b]
    return [(start, end) for start, end in both if start < end]


def backlogged(intervals: Sequence[Interval], start: float, end: float) -> bool:
    """Backlogged for at least half of [start, end): a backlog submitted a moment into a
    window counts, one that ran dry early in it does not."""
    return sum(b - a for a, b in overlap(intervals, [(start, end)])) >= (end - start) / 2


def windows(spans: Sequence[Span], end: float, width: float = WINDOW_S) -> list[float]:
    """Service per window of `width` seconds from 0, the last one ending at or after `end`."""
    edges = [k * width for k in range(int(-(-end // width)) + 1)]
    totals = served(spans, edges)
    return [max(b - a, 0.0) for a, b in itertools.pairwise(totals)]  # no -0 from rounding


def jain(values: Sequence[float]) -> float:
    """Jain's fairness index: 1 when all are equal, 1/n when one has everything."""
    squares = sum(v * v for v in values)
    return sum(values) ** 2 / (len(values) * squares) if squares else 1.0


def max_difference(
    by_tenant: Mapping[str, Sequence[Span]], weights: Mapping[str, float]
) -> tuple[float, str]:
    """The largest |S_f/w_f - S_g/w_g| over an interval in which both f and g were
    backlogged, and the pair: D = S_f/w_f - S_g/w_g is linear between the jobs' starts and
    ends, so the range of D over their times within a common interval is its largest change."""
    best = (0.0, "")
    for f, g in itertools.combinations(sorted(by_tenant), 2):
        both = [*by_tenant[f], *by_tenant[g]]
        for start, end in overlap(backlog(by_tenant[f]), backlog(by_tenant[g])):
            inside = {t for s in both for t in (s.started, s.finished) if start < t < end}
            times = sorted({start, end, *inside})
            pairs = zip(served(by_tenant[f], times), served(by_tenant[g], times), strict=True)
            d = [x / weights[f] - y / weights[g] for x, y in pairs]
            best = max(best, (max(d) - min(d), f"{f}/{g}"))
    return best


def spans_of(records: Sequence[JobRecord]) -> list[Span]:
    """The records' finished jobs, in seconds from the earliest submit."""
    origin = min(r.submitted_ms for r in records)
    return [
        Span(r.tenant, (r.submitted_ms - origin) / MS_PER_S, (r.started_ms - origin) / MS_PER_S,
             (r.finished_ms - origin) / MS_PER_S,
             W_IN * r.result.usage.prompt_tokens + W_OUT * r.result.usage.completion_tokens,
             r.result.timings.queue_wait_ms, reserved(r.spec))
        for r in records if r.result is not None
    ]  # fmt: skip


def reserved(spec: JobSpec) -> float:
    """What the claim charges a job before its cost is known, as the README's Fair share
    documents it: its prompt's UTF-8 bytes over 4, rounded up, plus W_OUT x max_tokens."""
    data = (spec.prompt or "").encode() + b"".join(m.content.encode() for m in spec.messages or [])
    return W_IN * -(-len(data) // CHARS_PER_TOKEN) + W_OUT * spec.max_tokens


def section(args: argparse.Namespace, cache: Path) -> None:
    """Three tenants, weights 1:1:2, one arriving late, backlogged with short and long jobs on
    2 workers of --slots 4, under GENQ_FAIR_SHARE=false (first-come) and true: service per 10 s
    window, Jain's index, the largest service difference against VTC's bound, queue wait;
    then the claim path's cost. Target: the fair run's difference within the bound; its
    submit-to-start jobs/s >= 0.90 x first-come's. Opt-in: about 3 minutes on tiny."""
    model, long_tokens = job_model(args.model), args.fairness_long_tokens
    long_tokens = long_tokens or (256 if args.model == TINY else 64)
    say(
        f"tenants {', '.join(f'{t} (weight {w:g})' for t, w in WEIGHTS.items())}; {LATE} "
        f"arrives {LATE_AT:.0%} into the run; jobs on {model!r}: {LONG_EVERY - 1} of "
        f"{SHORT_TOKENS} tokens to 1 of {long_tokens}, EOS banned; {WORKERS} workers of "
        f"--slots {SLOTS}; about {args.fairness_seconds:g} s a run"
    )
    with ExitStack() as started:
        stacks = {
            mode: started.enter_context(tenant_stack(cache, on)) for mode, on in MODES.items()
        }
        clients = [started.enter_context(Client(s.settings)) for s in stacks.values()]
        jobs_per_s = statistics.mean(calibrate(c, model, long_tokens) for c in clients)
        fifo, fair = (partial(cost_round, s, c, model, args.fairness_cost_jobs)
                      for s, c in zip(stacks.values(), clients, strict=True))  # fmt: skip
        costs = alternate(fifo, fair, COST_ROUNDS)
        for (mode, stack), client in zip(stacks.items(), clients, strict=True):
            spans = workload(client, model, long_tokens, jobs_per_s, args.fairness_seconds)
            stack.check_alive()
            report_run(mode, spans)
    report_cost(costs)


@contextmanager
def tenant_stack(cache: Path, fair_share: str) -> Iterator[Stack]:
    """A stack with the tenants' keys file given to a gateway, which stores their policies."""
    overrides = {"GENQ_FAIR_SHARE": fair_share, "GENQ_SLOTS": str(SLOTS), "GENQ_BUNDLE_TOKENS": "0"}
    keys = cache / "fairness-keys.toml"
    keys.write_text("".join(
        f'[[keys]]\nkey = "sk-bench-{t}"\ntenant = "{t}"\nweight = {w:g}\n\n'
        for t, w in WEIGHTS.items()
    ))  # fmt: skip
    with local_stack(cache, overrides, workers=WORKERS) as stack:
        env = {**stack.env, "GENQ_API_KEYS_FILE": str(keys)}
        with serving(Gateway(env, cache / f"fairness-gateway-{fair_share}.log")):
            yield stack


def mixed_lines(model: str, tenant: str, jobs: int, long_tokens: int) -> list[dict[str, Any]]:
    return [
        {"custom_id": f"{tenant}{n}", "prompt": f"{tenant} story {n}:", "model": model,
         "max_tokens": long_tokens if n % LONG_EVERY == LONG_EVERY - 1 else SHORT_TOKENS,
         "seed": n, "ignore_eos": True}
        for n in range(jobs)
    ]  # fmt: skip


def calibrate(client: Client, model: str, long_tokens: int) -> float:
    """Jobs/s of the mix with every slot busy (which also warms the workers)."""
    jobs = CALIBRATION_ROUNDS * WORKERS * SLOTS
    records = finished(client, [client.submit_batch(mixed_lines(model, "warm", jobs, long_tokens))])
    busy_ms = max(r.finished_ms for r in records) - min(r.started_ms for r in records)
    return len(records) / busy_ms * MS_PER_S


def finished(client: Client, handles: Sequence[BatchHandle[JobHandle]]) -> list[JobRecord]:
    """The handles' batches waited for, then every job's record; StackError if one failed."""
    for handle in handles:
        status = handle.wait(timeout=TIMEOUT_S, poll_s=POLL_S)
        if status.succeeded != status.total:
            raise StackError(
                f"batch {status.batch_id}: {status.succeeded}/{status.total} succeeded"
            )
    return [client.record(job) for handle in handles for job in handle.job_ids()]


def workload(
    client: Client, model: str, long_tokens: int, jobs_per_s: float, seconds: float
) -> list[Span]:
    """The tenants' backlogs, the late one's `LATE_AT` of `seconds` in; their jobs' spans."""
    began, jobs = time.monotonic(), jobs_per_s * seconds
    plan = {
        t: mixed_lines(model, t, round(jobs * share), long_tokens) for t, share in SHARES.items()
    }
    handles = [client.submit_batch(plan[t], tenant=t) for t in WEIGHTS if t != LATE]
    time.sleep(max(0.0, began + LATE_AT * seconds - time.monotonic()))
    handles.append(client.submit_batch(plan[LATE], tenant=LATE))
    return spans_of(finished(client, handles))


@dataclass(frozen=True)
class Cost:
    waits_ms: list[float]  # 1-token jobs one at a time, submit to start
    jobs_per_s: float  # a batch of them, first submit to last start
    cpu_ms: float  # the batch's CPU per job: the workers' and Redis's
    script_us: float  # the batch's Redis time in scripts (EVAL, EVALSHA) per job


def cost_round(stack: Stack, client: Client, model: str, jobs: int) -> Cost:
    spec, waits = JobSpec(prompt="Hi", model=model, max_tokens=1), []
    for n in range(LATENCY_JOBS):
        result = client.submit(spec.model_copy(update={"seed": n})).result(timeout=TIMEOUT_S)
        waits.append(result.timings.queue_wait_ms)
    before = usage(stack)
    records = finished(client, [client.submit_batch(batch_lines(model, jobs, 1))])
    cpu_s, script_s = (b - a for a, b in zip(before, usage(stack), strict=True))
    first, last = min(r.submitted_ms for r in records), max(r.started_ms for r in records)
    rate = len(records) / max(last - first, 1) * MS_PER_S
    return Cost(waits, rate, cpu_s / jobs * MS_PER_S, script_s / jobs * 1e6)


def usage(stack: Stack) -> tuple[float, float]:
    """CPU seconds of the workers and redis-server so far, and Redis's seconds in scripts:
    figures a shared machine's contention barely moves, unlike wall time."""
    with redis.Redis.from_url(stack.redis.url) as control:
        stats = control.info("commandstats")
    script_us = sum(stats.get(f"cmdstat_{name}", {}).get("usec", 0) for name in SCRIPTS)
    cpu_s = tree_cpu_s(pid(stack.redis)) + sum(tree_cpu_s(pid(w)) for w in stack.workers)
    return cpu_s, script_us / 1e6


def report_run(mode: str, spans: Sequence[Span]) -> None:
    by_tenant = {t: [s for s in spans if s.tenant == t] for t in WEIGHTS}
    waiting = {t: backlog(by_tenant[t]) for t in WEIGHTS}
    end = max(s.finished for s in spans)
    rows, indexes = window_rows(by_tenant, waiting, end)
    say("", f"{mode} (GENQ_FAIR_SHARE={MODES[mode]}): {len(spans):,} jobs in {end:.1f} s; "
        "service (prompt + 2 x completion tokens) per window, * backlogged half of it or more",
        table(["window s", *WEIGHTS, "Jain"], rows))  # fmt: skip
    say(table(["tenant", "weight", "jobs", "service", "backlogged s", "wait p50 s", "p99 s"], [
        [t, f"{WEIGHTS[t]:g}", f"{len(mine):,}", f"{sum(s.cost for s in mine):,.0f}",
         ", ".join(f"{a:.0f}-{b:.0f}" for a, b in waiting[t]) or "-",
         *(f"{percentile([s.wait_ms for s in mine], p) / MS_PER_S:.1f}" for p in (50, 99))]
        for t, mine in by_tenant.items()
    ]))  # fmt: skip
    report_difference(mode, by_tenant)
    jains = f"mean {statistics.mean(indexes):.3f}, min {min(indexes):.3f}" if indexes else "-"
    say(f"  Jain's index over {len(indexes)} backlogged windows: {jains}")


def report_difference(mode: str, by_tenant: Mapping[str, Sequence[Span]]) -> None:
    """The largest weighted service difference with each job's cost counted as it starts
    (what the scheduler bounds), and spread over its run (the slots' work in flight adds to
    it); with all weights 1 too, which shows whether the weights reached the claims."""
    at_start = {t: [replace(s, finished=s.started) for s in jobs] for t, jobs in by_tenant.items()}
    (gap, pair), (even, even_pair) = (max_difference(at_start, w) for w in (WEIGHTS, ONES))
    spread, spread_pair = max_difference(by_tenant, WEIGHTS)
    spans = [s for jobs in by_tenant.values() for s in jobs]
    bound, slots = 2 * max(s.cost for s in spans), WORKERS * SLOTS
    # genq charges a reservation at claim and the rest at the end (README: Fair share): its
    # bound adds the reservations' error for the jobs in flight at either end of an interval.
    largest, error = max(s.reserved for s in spans), max(abs(s.cost - s.reserved) for s in spans)
    genq_bound = 2 * (largest + slots * error)
    verdict = (
        f"target <= 2(R + ND): {met(gap <= genq_bound)}" if MODES[mode] == "true" else "no target"
    )
    say(f"  largest service difference (weighted), a job's cost counted as it starts: "
        f"{gap:,.0f} ({pair}) = {gap / bound:.2f} x VTC's bound 2U = {bound:,.0f} (U the "
        f"largest job's cost; exact when costs are charged as they accrue); genq's bound "
        f"2(R + ND) = {genq_bound:,.0f} (R the largest reservation {largest:,.0f}, D its "
        f"largest error {error:,.0f}, N = {slots} slots): {verdict}; with weights all 1: "
        f"{even:,.0f} ({even_pair})",
        f"  spread over each job's run: {spread:,.0f} ({spread_pair}), beside 2U + 2 x {slots}U "
        f"for the work in flight = {bound * (1 + slots):,.0f}")  # fmt: skip


def window_rows(
    by_tenant: Mapping[str, Sequence[Span]], waiting: Mapping[str, list[Interval]], end: float
) -> tuple[list[list[str]], list[float]]:
    """The windows' table rows, and Jain's index of each window with two tenants backlogged."""
    per_window = {t: windows(spans, end) for t, spans in by_tenant.items()}
    rows, indexes = [], []
    for k in range(len(per_window[LATE])):
        start, stop = k * WINDOW_S, (k + 1) * WINDOW_S
        busy = [t for t in WEIGHTS if backlogged(waiting[t], start, stop)]
        index = jain([per_window[t][k] / WEIGHTS[t] for t in busy]) if len(busy) > 1 else None
        indexes += [index] if index is not None else []
        rows.append([f"{start:.0f}-{stop:.0f}",
                     *(f"{per_window[t][k]:,.0f}{'*' if t in busy else ''}" for t in WEIGHTS),
                     "-" if index is None else f"{index:.3f}"])  # fmt: skip
    return rows, indexes


def report_cost(rounds: Sequence[tuple[Cost, Cost]]) -> None:
    say("", "cost of the claim path (1-token jobs on the idle stacks, alternating turns):")
    for n, mode in enumerate(MODES):
        waits = [w for r in rounds for w in r[n].waits_ms]
        rate = statistics.median(r[n].jobs_per_s for r in rounds)
        cpu, script = (statistics.median(of(r[n]) for r in rounds) for of in COST_PER_JOB)
        say(f"  {mode}: submit to start, one at a time, p50 {percentile(waits, 50):.1f} ms, "
            f"p99 {percentile(waits, 99):.1f} ms ({len(waits)} jobs); a batch: {rate:,.0f} "
            f"jobs/s submit to start, per job {cpu:.2f} ms CPU (workers and Redis) and "
            f"{script:.0f} us in Redis's scripts (medians of {len(rounds)} rounds)")  # fmt: skip
    ratios = [fair.jobs_per_s / fifo.jobs_per_s for fifo, fair in rounds]
    ratio = statistics.median(ratios)
    per_cpu = statistics.median(fifo.cpu_ms / fair.cpu_ms for fifo, fair in rounds)
    say(f"  fair share / first-come jobs/s, per round: {', '.join(f'{r:.2f}' for r in ratios)}; "
        f"median {ratio:.2f} (target >= {TARGET_RATIO:.2f}: {met(ratio >= TARGET_RATIO)}); "
        f"jobs per CPU-second, fair share / first-come: {per_cpu:.2f}")  # fmt: skip
