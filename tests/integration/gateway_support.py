"""What the gateway's tests share: `genq serve` processes, OpenAI's client on them, and a
small SSE reader (httpx) that sees event ids, which OpenAI's client does not show."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai

from genq import Client
from genq.common.schemas import JobRecord
from genq.common.settings import Settings
from genq.common.store import jobs as job_store
from genq.common.store import run
from ops.localstack import Gateway

TIMEOUT_S = 90.0


def start_gateway(env: dict[str, str], logs: Path, name: str = "gateway", **more: str) -> Gateway:
    """`genq serve` on a free port with `env` and `more` variables; the caller stops it."""
    return Gateway(env={**env, **more}, log=logs / f"{name}.log").start()


def sdk(gateway: Gateway, key: str = "unused") -> openai.OpenAI:
    """OpenAI's client on the gateway; no retries, so that each error is seen as answered."""
    return openai.OpenAI(
        base_url=f"{gateway.url}/v1", api_key=key, max_retries=0, timeout=TIMEOUT_S
    )


@dataclass(frozen=True)
class Event:
    id: str
    data: str

    @property
    def json(self) -> Any:
        return json.loads(self.data)

    @property
    def text(self) -> str:
        """The text a completion or chat chunk carries ('' for others)."""
        if self.data == "[DONE]":
            return ""
        choices = self.json.get("choices") or [{}]
        choice = choices[0]
        return str(choice.get("text") or (choice.get("delta") or {}).get("content") or "")


def sse(response: httpx.Response) -> Iterator[Event]:
    """The events of an SSE response (comments, such as pings, skipped)."""
    event_id, data = "", []
    for line in response.iter_lines():
        if line.startswith("id:"):
            event_id = line[3:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
        elif line == "" and data:
            yield Event(event_id, "\n".join(data))
            data = []


def position(event_id: str) -> tuple[int, int]:
    epoch, _, seq = event_id.partition("-")
    return int(epoch), int(seq)


def record(settings: Settings, job_id: str) -> JobRecord:
    with Client(settings) as client:
        found = run(client.redis, job_store.read(client.keys, job_id))
    assert found is not None, job_id
    return found
