"""How many requests the gateway follows at once, and the room each needs.

A request follows its job while it is open: an SSE stream, or a non-streaming request waiting
for its result. Each holds one of the AsyncClient's Redis connections for its blocking reads
and two file descriptors (its client's socket and that connection). `Followers` admits at most
GENQ_GATEWAY_MAX_STREAMS; one more is answered 429, with OpenAI's body, before its job is
queued: no job runs for a request that was refused. The Redis pool is sized to the limit
(`pool_size`), so an admitted follower never waits for a connection, and the process's file
descriptor limit is raised to what the limit needs (`raise_fd_limit`).
"""

from __future__ import annotations

import logging
import resource
from collections.abc import Callable

from sse_starlette import EventSourceResponse
from starlette.types import Receive, Scope, Send

from genq.common.connection import POOL_SIZE
from genq.producer.gateway.errors import ApiError

# Descriptors beside the followers': the listening socket, the records' pool, files, logs.
FD_MARGIN = 256
FDS_PER_FOLLOWER = 2
CLIENT_GONE = 499  # the status of an answer no one reads (nginx's "client closed request")
# A stream whose client takes no byte for this long is ended, so that its client counts out
# and the reattach grace starts. A client host cut off from the network never closes its
# connection: without this, the send waits for the kernel to give up retransmitting (about
# 15 minutes) and the job runs on for no one (tests/hosts/test_client_loss.py).
SEND_TIMEOUT_S = 10.0

log = logging.getLogger("genq.gateway")


def pool_size(max_streams: int) -> int:
    """The AsyncClient's pool: a connection per follower, and the client's own for submits,
    cancels and batches beside them."""
    return max_streams + POOL_SIZE


def raise_fd_limit(max_streams: int) -> None:
    """Raise the soft limit on open files to what `max_streams` followers need, up to the
    hard limit (often 1024 soft of a far higher hard). Short of it, say so once."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = max_streams * FDS_PER_FOLLOWER + FD_MARGIN
    if soft != resource.RLIM_INFINITY and soft < needed:
        raised = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
        soft = raised
    if soft != resource.RLIM_INFINITY and soft < needed:
        log.warning(
            "open files are limited to %d, GENQ_GATEWAY_MAX_STREAMS=%d needs %d: streams "
            "past about %d may fail; raise the hard limit (ulimit -Hn) or lower the setting",
            soft,
            max_streams,
            needed,
            (soft - FD_MARGIN) // FDS_PER_FOLLOWER,
        )


class Followers:
    """The count of requests following a job; `admit` refuses past the limit. The event loop
    is the only thread that counts: no lock."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0

    def admit(self) -> Callable[[], None]:
        """Count one more follower, or raise the 429; -> its release (which counts once)."""
        if self.count >= self.limit:
            message = (
                f"the gateway follows {self.limit} requests at once "
                "(GENQ_GATEWAY_MAX_STREAMS); retry shortly"
            )
            raise ApiError(429, message, kind="requests", code="too_many_streams")
        self.count += 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.count -= 1

        return release


class HeldStream(EventSourceResponse):
    """An SSE response that releases its follower when it has ended, however it ends: sent
    whole, its client gone, the gateway shutting down."""

    def __init__(self, release: Callable[[], None], *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()
