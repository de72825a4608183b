"""A job left `queued` with no task message (a failover kept kombu's take of the message and
lost the worker's record of it) is sent again by the worker that held it, once Redis is back
(workers.celery.takeback); a job of another epoch, running or ended, is not."""

from __future__ import annotations

from collections.abc import Callable

from genq import Client
from genq.common.celery_config import make_celery
from genq.common.routing import queue_name
from genq.common.schemas import GenerateRequest
from genq.common.store import queues, run
from genq.workers.celery.takeback import TakeBack
from tests.integration.conftest import Stack

QUEUE = queue_name("cpu", "tiny")


def lose_messages(stack: Stack) -> None:
    """The queue's task messages gone, as a failover can lose them (kombu's own purge)."""
    with make_celery(stack.settings).connection_for_write() as connection:
        connection.default_channel.queue_purge(QUEUE)


def test_a_queued_job_whose_message_was_lost_is_sent_again(
    make_stack: Callable[[], Stack],
) -> None:
    stack = make_stack()
    with Client(stack.settings) as client:
        job = client.submit("a", model="tiny", max_tokens=8, seed=1, ignore_eos=True)
        lose_messages(stack)
        assert run(client.redis, queues.depth(QUEUE)) == 0
        take_back = TakeBack(client.redis, client.keys, stack.settings)
        taken = GenerateRequest(job_id=job.job_id, epoch=0)
        stale = GenerateRequest(job_id=job.job_id, epoch=1)  # a message of another attempt
        assert take_back.resend([stale]) == 0
        assert take_back.resend([taken]) == 1
        assert run(client.redis, queues.depth(QUEUE)) == 1
        stack.relay(), stack.worker("a", "--models", "tiny")
        result = job.result(timeout=60)
        assert result.usage is not None and result.usage.completion_tokens == 8
        assert take_back.resend([taken]) == 0  # ended: nothing to send
        assert run(client.redis, queues.depth(QUEUE)) == 0
