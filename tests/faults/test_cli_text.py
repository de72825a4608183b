"""`genq run` and `genq tail` print the job's text: piped, their stdout is exactly the
result's text, with no relay at all, after a relay outage mid-job, and after a worker was
SIGKILLed or SIGSTOPped past its lease and the job resumed elsewhere.

`genq tail` started at submission follows a job as `genq run` does (they share the printing);
the long jobs use it because they need `ignore_eos` and `window_tokens`."""

from __future__ import annotations

import os
import pty
import re
import signal
import subprocess
import threading
import tty
from collections.abc import Callable
from typing import Any

import redis

from genq import Client
from genq.common.frames import (
    ContinuationFrame,
    DoneFrame,
    Frame,
    ResumeData,
    ResumeFrame,
    TokenData,
    TokenFrame,
    WindowData,
    WindowFrame,
    parse_frame,
)
from genq.common.store import channels, run, streams
from genq.producer.cli import terminal_safe
from tests.integration.conftest import Stack
from tests.integration.support import GENQ
from tests.integration.test_failover import JOB, at_window, entries, follow
from tests.state import job_record


class Genq:
    """A genq command running, its stdout a pipe or a terminal (a pseudo-terminal in raw
    mode, so that what genq writes arrives unchanged)."""

    def __init__(self, env: dict[str, str], *args: str, terminal: bool = False) -> None:
        self.chunks: list[bytes] = []
        self.reader: threading.Thread | None = None
        stdout: int = subprocess.PIPE
        if terminal:
            self.master, stdout = pty.openpty()
            tty.setraw(stdout)
        self.proc = subprocess.Popen(
            [str(GENQ), *args], env={**os.environ, **env}, stdout=stdout, stderr=subprocess.PIPE
        )
        if terminal:
            os.close(stdout)
            self.reader = threading.Thread(target=self._read_terminal, daemon=True)
            self.reader.start()

    def _read_terminal(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:  # EIO: the command closed the terminal
                data = b""
            if not data:
                return
            self.chunks.append(data)

    def printed(self) -> tuple[str, str]:
        """(stdout, stderr) of the command, which must succeed."""
        out, err = self.proc.communicate(timeout=90)
        if self.reader is not None:
            self.reader.join(timeout=10)
            os.close(self.master)
            out = b"".join(self.chunks)
        assert self.proc.returncode == 0, err.decode()
        return out.decode(), err.decode()


def same_text(printed: str, result: str) -> bool:
    """`printed == result`, saying how they differ when they do."""
    pairs = zip(printed, result, strict=False)
    differ = next((i for i, (a, b) in enumerate(pairs) if a != b), min(len(printed), len(result)))
    assert printed == result, (
        f"printed {len(printed)} characters, the result has {len(result)}; "
        f"they differ from character {differ}"
    )
    return True


def result_text(client: Client, job_id: str) -> str:
    record = job_record(client.redis, client.keys, job_id)
    assert record.result is not None, record
    return record.result.text


def test_run_prints_the_result_with_no_relay_at_all(make_stack: Callable[[], Stack]) -> None:
    stack = make_stack()
    stack.worker("a")
    out, err = Genq(stack.env, "run", "hello", "--max-tokens", "8", "--seed", "3").printed()
    job_id = re.search(r"job ([0-9a-f]{32})", err)
    assert job_id is not None, err
    with Client(stack.settings) as client:
        assert same_text(out, result_text(client, job_id[1]))
    assert "8 tokens" in err and out != ""


def test_tail_prints_the_result_after_a_relay_outage_mid_job(
    make_stack: Callable[[], Stack],
) -> None:
    stack = make_stack()
    relay = stack.relay()
    stack.worker("a")
    job_spec = {**JOB, "max_tokens": 12_000}  # runs on after the relay is back
    with Client(stack.settings) as client:
        job = client.submit(**job_spec)
        tailing = Genq(stack.env, "tail", job.job_id)
        live = channels.subscribe(client.redis, streams.channel(client.keys, job.job_id))

        def relay_down_for_ten_windows() -> None:
            relay.signal(signal.SIGKILL)
            while True:
                raw = live.message(10)
                frame = parse_frame(raw) if raw is not None else None
                if isinstance(frame, ContinuationFrame) and frame.data.window >= 13:
                    break
            stack.relay("relay-again")

        _, result = follow(client, job.job_id, at_window(3, 0, relay_down_for_ten_windows))
        live.close()
        seqs = [f.seq for f in entries(client, job.job_id)]
        assert seqs != list(range(1, len(seqs) + 1)), "the stream should have a hole"
        out, _ = tailing.printed()
        assert same_text(out, result.text)


Interrupt = Callable[[Client, str], Callable[[Frame], None]]


def resumed_tail(stack: Stack, interrupt: Interrupt, terminal: bool = False) -> tuple[str, str]:
    """Run a job on workers a and b with `genq tail` following it from the start, and let
    `interrupt` stop its worker: (what the tail printed, the result's text)."""
    stack.relay()
    stack.worker("a"), stack.worker("b")
    with Client(stack.settings) as client:
        job = client.submit(**JOB)
        tailing = Genq(stack.env, "tail", job.job_id, terminal=terminal)
        _, result = follow(client, job.job_id, interrupt(client, job.job_id))
        assert any(isinstance(f, ResumeFrame) for f in entries(client, job.job_id))
        out, err = tailing.printed()
        assert "differs" not in err  # a local model regenerates the same text
        return out, result.text


def sigkill(stack: Stack) -> Interrupt:
    def kill(client: Client, job_id: str) -> Callable[[Frame], None]:
        return at_window(3, 0, lambda: stack.holder(client, job_id).signal(signal.SIGKILL))

    return kill


def test_tail_prints_the_result_after_a_worker_sigkill_and_resume(
    make_stack: Callable[[], Stack],
) -> None:
    stack = make_stack()
    assert same_text(*resumed_tail(stack, sigkill(stack)))


def test_tail_prints_the_result_after_a_worker_sigstop_past_its_lease(
    make_stack: Callable[[], Stack],
) -> None:
    stack = make_stack()

    def pause(client: Client, job_id: str) -> Callable[[Frame], None]:
        paused: list[Any] = []

        def act(frame: Frame) -> None:
            if not paused and isinstance(frame, ContinuationFrame) and frame.data.window == 3:
                paused.append(stack.holder(client, job_id))
                paused[0].signal(signal.SIGSTOP)
            elif isinstance(frame, ResumeFrame) and paused:
                paused[0].signal(signal.SIGCONT)  # wakes up past its lease, still generating

        return act

    assert same_text(*resumed_tail(stack, pause))


def test_tail_on_a_terminal_prints_the_text_once_after_a_resume(
    make_stack: Callable[[], Stack],
) -> None:
    """On a terminal text is printed as it comes, also the dead attempt's uncommitted tail;
    its regeneration is not printed twice."""
    stack = make_stack()
    out, text = resumed_tail(stack, sigkill(stack), terminal=True)
    assert same_text(out, terminal_safe(text) + "\n")


def test_tail_on_a_terminal_says_when_a_resumed_attempt_differs_from_what_it_printed(
    client: Client, genq_env: dict[str, str], redis_client: redis.Redis
) -> None:
    """A resumed attempt that regenerates other text (a remote model, a job that is not
    deterministic), written here as the relay would write such a stream."""
    job_id = client.submit("differs", max_tokens=4, seed=1).job_id
    result = client.job(job_id).result(timeout=60).model_copy(update={"text": "Once there was"})

    def token(epoch: int, seq: int, text: str) -> TokenFrame:
        data = TokenData(text=text, token_ids=[1])
        return TokenFrame(job_id=job_id, epoch=epoch, seq=seq, data=data)

    window = WindowData(window=0, token_ids=[1], text="Once ", tokens_total=1)
    resume = ResumeData(from_window=1, committed_tokens=1, committed_chars=5)
    frames: list[Frame] = [
        token(0, 1, "Once "),
        WindowFrame(job_id=job_id, epoch=0, seq=2, data=window),
        token(0, 3, "upon a"),  # printed on a terminal, then taken back by the resume
        ResumeFrame(job_id=job_id, epoch=1, seq=1, data=resume),
        token(1, 2, "there was"),
        DoneFrame(job_id=job_id, epoch=1, seq=3, data=result),
    ]
    # A raw DEL on purpose: the stream is rewritten as the relay would write another attempt's.
    redis_client.delete(streams.stream_key(client.keys, job_id))
    for frame in frames:
        entry_id = f"{frame.epoch}-{frame.seq}"
        run(redis_client, streams.append(client.keys, job_id, entry_id, frame.model_dump_json()))
    out, err = Genq(genq_env, "tail", job_id, terminal=True).printed()
    assert out == "Once upon athere was\n"
    assert "the last 6 characters printed were the earlier attempt's" in err
    assert "from character 5" in err and len(err.strip().splitlines()) == 2  # and the summary
    piped, err = Genq(genq_env, "tail", job_id).printed()
    assert piped == "Once there was" and "differs" not in err
