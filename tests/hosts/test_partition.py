"""A worker host cut off from the network mid-job (`ip link set … down` on its link): its
jobs resume on the other worker host once their leases lapse; when the link comes back the
cut-off worker learns it was superseded, none of its late frames reach a stream or a result,
and it serves new jobs again."""

from __future__ import annotations

from typing import Any

from genq import Client, JobState
from genq.common.store import run, streams
from ops.localstack import Worker, wait_for
from tests.hosts.conftest import HostStack

SLOTS = 8
LONG: dict[str, Any] = {"max_tokens": 3000, "window_tokens": 100, "ignore_eos": True}


def frames(client: Client, job_id: str) -> int:
    return len(run(client.redis, streams.raw_frames(client.keys, job_id)))


def read_stream(client: Client, job_id: str) -> str:
    with client.job(job_id).stream(timeout=120) as stream:
        for _ in stream:
            pass
    return stream.text


def holders(client: Client, job_ids: list[str]) -> set[str]:
    """The hosts whose workers hold the jobs now (workers are named after their hosts)."""
    return {client.record(job_id).worker.partition("@")[0] for job_id in job_ids}


def gave_up(worker: Worker, job_ids: list[str]) -> bool:
    """Every one of the jobs' attempts on `worker` ended without its result: superseded (it
    learned its lease had moved on) or abandoned (it lost Redis first)."""
    lines = worker.log.read_text(errors="replace").splitlines()
    ended = [line for line in lines if "job superseded" in line or "job abandoned" in line]
    return all(any(job_id in line for line in ended) for job_id in job_ids)


def test_a_cut_off_worker_hosts_jobs_resume_on_another_host_fenced(stack: HostStack) -> None:
    stack.relay()
    w1 = stack.worker("w1", "--slots", str(SLOTS), "--models", "tiny")
    specs = [{**LONG, "prompt": f"partition {i}", "seed": i} for i in range(SLOTS)]
    with stack.client() as client:
        jobs = [client.submit(**spec) for spec in specs]
        ids = [job.job_id for job in jobs]
        wait_for(lambda: all(frames(client, i) >= 3 for i in ids), 120, "8 jobs to run on w1")
        assert holders(client, ids) == {"w1"}
        w2 = stack.worker("w2", "--slots", str(SLOTS), "--models", "tiny")
        stack.network["w1"].cut()
        wait_for(lambda: holders(client, ids) == {"w2"}, 120, "the jobs to resume on w2")
        # Back while w2 runs them: what w1 had in flight (TCP retransmits it) lands now,
        # among w2's frames, and must be fenced off.
        stack.network["w1"].restore()
        texts = [job.result(timeout=300).text for job in jobs]
        assert holders(client, ids) == {"w2"}
        wait_for(lambda: gave_up(w1, ids), 120, "w1 to give its attempts up (w1.log)")
        assert [read_stream(client, i) for i in ids] == texts
        assert {client.record(i).state for i in ids} == {JobState.SUCCEEDED}
        # w1 serves again: the same jobs, uninterrupted, on w1 alone, are the reference.
        w2.stop()
        again = [client.submit(**spec) for spec in specs]
        assert [job.result(timeout=300).text for job in again] == texts
        assert holders(client, [job.job_id for job in again]) == {"w1"}
